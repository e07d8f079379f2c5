"""Serve an ASGI app on loopback in a background thread (sandboxes, the daemon in tests)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.responses import Response


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerHandle:
    """A running uvicorn server; `url` has no trailing slash."""

    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int
    extra: dict[str, Any] = field(default_factory=dict)
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, *,
                    log_level: str = "warning", ssl_certfile: str | None = None,
                    ssl_keyfile: str | None = None) -> ServerHandle:
    """Start `app` under uvicorn in a daemon thread and wait until it accepts connections
    (HTTPS when a certificate and its key are given)."""
    port = port or free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            lifespan="off", timeout_keep_alive=30, ssl_certfile=ssl_certfile,
                            ssl_keyfile=ssl_keyfile)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on {host}:{port} did not start")
        time.sleep(0.01)
    return ServerHandle(server, thread, host, port, scheme="https" if ssl_certfile else "http")


# -- the "answer lost" fault every sandbox offers ---------------------------------------------------
class AnswerLost(Exception):
    """Raised mid-answer so the server closes the connection (a sandbox's dropped-answer fault)."""


class DroppedResponse(Response):
    """Starts an answer as the peer would (its content type, the first bytes of its body) and closes
    the connection before the body is complete."""

    def __init__(self, content_type: str, head: bytes) -> None:
        super().__init__()
        self.dropped_type, self.dropped_head = content_type, head

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", self.dropped_type.encode()), (b"content-length", b"4096")]})
        await send({"type": "http.response.body", "body": self.dropped_head, "more_body": True})
        raise AnswerLost("connection dropped by the sandbox")


class _QuietAnswerLost(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], AnswerLost))


def quiet_dropped_answers() -> None:
    """uvicorn logs the AnswerLost a DroppedResponse raises as an error: it is the fault asked for."""
    err_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietAnswerLost) for f in err_log.filters):
        err_log.addFilter(_QuietAnswerLost())
