"""Settings of one 1C:Enterprise exchange endpoint (syncd plays the site 1C exchanges with)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

DEFAULT_FILE_LIMIT = 2 * 1024 * 1024     # 1C splits uploads into chunks of this size


class OneCSettings(BaseModel):
    """`login`/`password` are what 1C's "exchange with a site" node is configured with."""

    model_config = ConfigDict(extra="forbid")

    path: str = "/1c/exchange"                  # the URL 1C is given: http(s)://HOST:PORT<path>
    login: str
    password: SecretStr
    encoding: Literal["windows-1251", "utf-8"] = "windows-1251"   # status lines and the query XML
    file_limit: int = Field(DEFAULT_FILE_LIMIT, ge=1024)   # bytes per `mode=file` chunk (told at init)
    zip: bool = True                            # offer zip uploads at init
    spool_dir: str | None = None                # default: <daemon state_dir>/onec/<system name>
    session_ttl: float = Field(3600.0, gt=0)    # s a cookie stays valid after its last use
    lock_timeout: float = Field(120.0, gt=0)    # s an unfinished exchange holds the endpoint while idle
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
        if not v.startswith("/") or v.endswith("/") and v != "/":
            raise ValueError("path must start with '/' and not end with '/' (e.g. /1c/exchange)")
        return v
