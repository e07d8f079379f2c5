"""Small helpers the Telegram and VK sandboxes share (request parameters, the call log, opaque ids)."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

SAMPLE_JPEG = b"\xff\xd8\xff\xe0sandbox-jpeg"    # stand-in bytes for a photo


async def request_params(request: Request) -> dict[str, Any]:
    """The parameters of an API call, merged as both platforms read them: the query string, then a
    form (urlencoded or multipart) or a JSON object body (JSON values kept as they are)."""
    params: dict[str, Any] = dict(request.query_params)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if not body:
        return params
    if ctype == "application/json":
        try:
            data = json.loads(body)
        except ValueError:
            return params
        if isinstance(data, dict):
            params.update(data)
    elif ctype == "application/x-www-form-urlencoded":
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    elif ctype == "multipart/form-data":
        form = await request.form()
        for key, value in form.multi_items():
            params[key] = value if isinstance(value, str) else await value.read()
    return params


def opaque_id(prefix: str, nbytes: int) -> str:
    """An opaque, URL-safe identifier (base64url without padding) after a fixed prefix."""
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).decode().rstrip("=")


class CallLog:
    """A thread-safe list of dicts, each with ``kind`` and ``time``; newest last."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        item = {"kind": kind, "time": time.time(), **fields}
        with self._lock:
            self._items.append(item)
        return item

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(i) for i in self._items if kind is None or i["kind"] == kind]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
