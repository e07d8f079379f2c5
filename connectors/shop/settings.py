"""Settings of one shop exchange endpoint (the shop's `1c_exchange.php`; syncd logs in the way 1C does)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class ShopSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str                                   # https://SITE/bitrix/admin/1c_exchange.php
    login: str                                 # a shop user allowed to exchange (admin / group 1)
    password: SecretStr
    version: str = "2.08"                      # CommerceML version sent at `init`
    timeout: float = Field(30.0, gt=0)         # seconds per HTTP request
    encoding: str = "windows-1251"             # of the files syncd uploads (windows-1251 | UTF-8)
    catalog: bool = False                      # products stream: Bitrix sites do not export the catalog
                                               # through this protocol, so it stays off (see README of
                                               # the connector); products come with the order items
    import_polls: int = Field(100, ge=1)       # `mode=import` repeats at most this many `progress` answers
    split_uploads: bool = False                # a document over the shop's file_limit may go up in
                                               # chunks: only for sites that append them (1C-Bitrix);
                                               # off, it goes whole or zipped, or is refused
    # a site that stores the order files it is sent but has no sale&mode=import (django-cml and its
    # forks), whose admin imports them: every write is uploaded and settled once the site stored it
    # (applied when the admin imports; the order's next export shows it). Off: such a site gets no
    # writes, and `syncd check` says so
    upload_only: bool = False
    chunk_offsets: bool = True                 # send `offset=` with each file chunk (sandbox idempotency
                                               # extension; real Bitrix ignores it)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("url must be the http(s) address of the exchange endpoint")
        return v

    @field_validator("encoding")
    @classmethod
    def _enc(cls, v: str) -> str:
        if v.lower() not in ("windows-1251", "cp1251", "utf-8", "utf8"):
            raise ValueError("encoding must be windows-1251 or UTF-8")
        return v
