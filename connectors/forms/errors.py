"""The one error a form post is refused with: an HTTP status, the field at fault, and why."""

from __future__ import annotations

from typing import Any


class FormError(Exception):
    """Answered as JSON `{"ok": false, "error": <Russian text for the site's visitor>, "field": <the
    form's field name or null>, "detail": <English, for the site's developer>}`."""

    def __init__(self, status: int, field: str | None, message: str, detail: str = "") -> None:
        super().__init__(detail or message)
        self.status, self.field, self.message, self.detail = status, field, message, detail or message

    def body(self) -> dict[str, Any]:
        return {"ok": False, "error": self.message, "field": self.field, "detail": self.detail}
