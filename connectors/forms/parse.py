"""A form post's body as field name -> text: urlencoded, multipart/form-data or a JSON object.

Pure functions of (content type, bytes), so the size limit and the signature check see exactly
the bytes parsed here. Files in a multipart post are ignored (a lead carries no attachments);
repeated fields (checkbox groups) are joined with ", ".
"""

from __future__ import annotations

import json
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl

from connectors.forms.errors import FormError


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value if v is not None and _text(v) != "")
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _add(out: dict[str, str], name: str, value: str) -> None:
    out[name] = f"{out[name]}, {value}" if out.get(name) and value else (value or out.get(name, ""))


def parse_body(content_type: str, body: bytes) -> dict[str, str]:
    """Field values of a post. Raises FormError(415/400) for an unknown type or a broken body."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype in ("application/x-www-form-urlencoded", ""):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise FormError(400, None, "Тело запроса не в кодировке UTF-8", "body is not UTF-8") from None
        out: dict[str, str] = {}
        for name, value in parse_qsl(text, keep_blank_values=True):
            _add(out, name, value)
        return out
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            doc = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise FormError(400, None, "Тело запроса — не JSON", "body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise FormError(400, None, "Ожидается JSON-объект с полями формы", "JSON body is not an object")
        return {str(k): _text(v) for k, v in doc.items()}
    if ctype == "multipart/form-data":
        return _multipart(content_type, body)
    raise FormError(415, None, "Неподдерживаемый тип содержимого", f"unsupported content type {ctype!r}")


def _multipart(content_type: str, body: bytes) -> dict[str, str]:
    if "boundary=" not in content_type:
        raise FormError(400, None, "В multipart-запросе нет boundary", "multipart without boundary")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        if b"content-disposition" not in body.lower():
            return {}                     # only the closing boundary: a form with no fields
        raise FormError(400, None, "Повреждённое multipart-тело", "broken multipart body")
    out: dict[str, str] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name or part.get_param("filename", header="content-disposition") is not None:
            continue                      # no field name, or a file: not part of a lead
        payload = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "utf-8"
        try:
            value = payload.decode(charset)
        except (LookupError, UnicodeDecodeError):
            raise FormError(400, str(name), f"Поле «{name}» не в кодировке UTF-8", "field is not UTF-8") from None
        _add(out, str(name), value)
    return out
