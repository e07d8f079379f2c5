"""Settings of one 1C:Enterprise exchange endpoint (syncd plays the site 1C exchanges with)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

DEFAULT_FILE_LIMIT = 2 * 1024 * 1024     # 1C splits uploads into chunks of this size
# where 1C-Bitrix serves the exchange: the URL most 1C nodes were configured with
BITRIX_PATH = "/bitrix/admin/1c_exchange.php"


def _check_path(v: str) -> str:
    if not v.startswith("/") or v.endswith("/") and v != "/" or "?" in v or "#" in v:
        raise ValueError(f"{v!r}: a path must start with '/', not end with '/' and carry no query "
                         "(e.g. /1c/exchange)")
    return v


class OneCSettings(BaseModel):
    """`login`/`password` are what 1C's "exchange with a site" node is configured with."""

    model_config = ConfigDict(extra="forbid")

    path: str = "/1c/exchange"                  # the URL 1C is given: http(s)://HOST:PORT<path>
    # further paths serving the same exchange (1C nodes set up for a 1C-Bitrix site call its path);
    # left default, it yields to another onec system that also serves it
    aliases: list[str] = Field(default_factory=lambda: [BITRIX_PATH])
    login: str                                  # the exchange user 1C's node is configured with
    password: SecretStr                         # its password (Basic auth, UTF-8 or windows-1251)
    # further exchange users (login = password), e.g. a second 1C base on the same endpoint
    users: dict[str, SecretStr] = Field(default_factory=dict)
    encoding: Literal["windows-1251", "utf-8"] = "windows-1251"   # status lines and the query XML
    file_limit: int = Field(DEFAULT_FILE_LIMIT, ge=1024)   # bytes per `mode=file` chunk (told at init)
    zip: bool = True                            # offer zip uploads at init
    spool_dir: str | None = None                # default: <daemon state_dir>/onec/<system name>; shared by instances
    session_ttl: float = Field(3600.0, gt=0)    # s a session (cookie) stays valid after its last use
    # s an upload holds the exchange lock while idle: then another login may take it (a newer
    # session of the holder's own login takes it over at once once the holder has gone quiet)
    lock_timeout: float = Field(120.0, gt=0)
    max_upload: int = Field(512 * 1024**2, ge=1)   # bytes uploaded per exchange (all files)
    max_files: int = Field(100, ge=1)           # files uploaded per exchange
    version: Literal["2.03", "2.04", "2.05", "2.07", "2.08", "2.09", "2.10"] = "2.08"  # answered at init
    import_step: int = Field(200, ge=1)         # records ingested per `mode=import` call (then `progress`)
    container: bool = True                      # wrap query documents in <Контейнер> (Bitrix module >= 6.5)
    send_all_counterparties: bool = False       # False: a new counterparty goes to 1C with its first order
    price_type: str | None = None               # offers: Ид or name of the price type to read (None: first)
    statuses: dict[str, str] = Field(default_factory=lambda: {
        "N": "Принят", "P": "Оплачен", "S": "Отгружен", "F": "Выполнен"})   # answered by `mode=info`

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _check_path(v)

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(_check_path(x) for x in v))

    @model_validator(mode="after")
    def _distinct(self) -> OneCSettings:
        if self.path in self.aliases:
            self.aliases = [a for a in self.aliases if a != self.path]
        if self.login in self.users:
            raise ValueError(f"users: {self.login!r} is already `login`")
        if not self.login or any(not x or ":" in x for x in (self.login, *self.users)):
            raise ValueError("a login must be non-empty and hold no ':' (HTTP Basic auth)")
        return self

    def credentials(self) -> dict[str, str]:
        """login -> password of everyone allowed to exchange."""
        return {self.login: self.password.get_secret_value(),
                **{k: v.get_secret_value() for k, v in self.users.items()}}
