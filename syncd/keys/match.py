"""Match keys for dedup (design.md, Guarantee 5): normalized e-mail, E.164 phone, ИНН+КПП, SKU, barcode.

Keys are strings prefixed by their kind, so keys of different kinds never collide::

    email:ivan@example.ru    phone:+74951234567    inn_kpp:7701234560/770101001    inn:500100732259
    sku:A-100                barcode:4601234567893

Normalizers never raise on garbage: they return None. Phone parsing (the expensive part) and e-mail
normalisation are cached with `functools.lru_cache` on the raw string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

from syncd.keys.requisites import is_valid_inn, is_valid_kpp

__all__ = [
    "DEFAULT_KEYS",
    "KNOWN_KEYS",
    "PRODUCT_KEYS",
    "inn_kpp_key",
    "match_keys",
    "normalize_email",
    "normalize_phone",
]

DEFAULT_KEYS: tuple[str, ...] = ("email", "phone", "inn_kpp")
PRODUCT_KEYS: tuple[str, ...] = ("sku", "barcode")
KNOWN_KEYS = frozenset(DEFAULT_KEYS + PRODUCT_KEYS)

_MAX_PHONE_LEN = 100
_MAX_EMAIL_LEN = 320
_E164_FORMAT = PhoneNumberFormat.E164

# --- e-mail -------------------------------------------------------------------------------------

_LOCAL_RE = re.compile(r"^[^\s@\"(),:;<>\[\]\\]+$")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ANGLE_RE = re.compile(r"<([^<>]*)>")


@lru_cache(maxsize=16384)
def _normalize_email(s: str) -> str | None:
    s = s.strip()
    m = _ANGLE_RE.search(s)  # "Иван Петров <ivan@example.ru>"
    if m:
        s = m.group(1).strip()
    if s[:7].lower() == "mailto:":
        s = s[7:].split("?", 1)[0].strip()
    if s.count("@") != 1:
        return None
    local, domain = s.split("@")
    if not local or len(local) > 64 or not _LOCAL_RE.match(local) or local[0] == "." or local[-1] == "." \
            or ".." in local:
        return None
    domain = domain.lower().rstrip(".")
    if not domain or "." not in domain:
        return None
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except (UnicodeError, ValueError):
            return None
    labels = domain.split(".")
    if not all(_LABEL_RE.match(lab) for lab in labels) or labels[-1].isdigit():
        return None
    return f"{local.lower()}@{domain}"


def normalize_email(s: object) -> str | None:
    """Lower-cased ``local@domain`` with an IDNA (punycode) domain, or None if `s` is not an e-mail.

    Accepts surrounding whitespace, ``mailto:`` and ``Name <addr>`` forms. Never raises.
    """
    if not isinstance(s, str) or not s or len(s) > _MAX_EMAIL_LEN:
        return None
    return _normalize_email(s)


# --- phone --------------------------------------------------------------------------------------

@lru_cache(maxsize=16384)
def _normalize_phone(s: str, region: str) -> str | None:
    try:
        n = phonenumbers.parse(s, region)
    except NumberParseException:
        return None
    except Exception:  # noqa: BLE001 - phonenumbers on pathological input: never raise to the caller
        return None
    if not phonenumbers.is_valid_number(n):
        return None
    return phonenumbers.format_number(n, _E164_FORMAT)  # E.164 drops the extension


def normalize_phone(s: object, region: str = "RU") -> str | None:
    """E.164 (``+74951234567``) or None for an invalid number. Extensions are dropped. Never raises.

    ``8 (495) 123-45-67``, ``+7 495 1234567``, ``74951234567``, ``84951234567`` are one number;
    a bare 10-digit ``9123456789`` is read in `region` (RU: ``+79123456789``).
    """
    if isinstance(s, int) and not isinstance(s, bool):
        s = str(s)
    if not isinstance(s, str) or not s or len(s) > _MAX_PHONE_LEN:
        return None
    if not isinstance(region, str):
        return None
    return _normalize_phone(s, region.upper() if region else "RU")


# --- ИНН / КПП ----------------------------------------------------------------------------------

_SEP = str.maketrans("", "", " -.\u00a0\t")


def _clean_code(v: object) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if not isinstance(v, str):
        return ""
    return v.strip().translate(_SEP).upper()


@lru_cache(maxsize=16384)
def _inn_kpp_key(inn: str, kpp: str) -> str | None:
    if not is_valid_inn(inn):
        return None
    if len(inn) == 12:  # ФЛ / ИП: no КПП
        return f"inn:{inn}"
    if not kpp:
        return f"inn:{inn}"
    if not is_valid_kpp(kpp):
        return None
    return f"inn_kpp:{inn}/{kpp}"


def inn_kpp_key(inn: object, kpp: object = None) -> str | None:
    """``inn_kpp:<ИНН>/<КПП>`` for a legal entity, ``inn:<ИНН>`` for an ИП/ФЛ (12 digits) or without КПП.

    None when the ИНН is missing or invalid, or a given КПП is malformed (no key beats a wrong key).
    """
    i = _clean_code(inn)
    if not i:
        return None
    return _inn_kpp_key(i, _clean_code(kpp))


# --- match_keys ---------------------------------------------------------------------------------

def _values(fields: Mapping[str, Any], names: tuple[str, ...]) -> Iterable[Any]:
    for name in names:
        v = fields.get(name)
        if v is None:
            continue
        if isinstance(v, (str, int)):
            yield v
        elif isinstance(v, Mapping):  # {"VALUE": "...", "VALUE_TYPE": "WORK"} (Bitrix24 multifield)
            yield v.get("value", v.get("VALUE"))
        elif isinstance(v, (list, tuple, set, frozenset)):
            for item in v:
                if isinstance(item, Mapping):
                    yield item.get("value", item.get("VALUE"))
                else:
                    yield item


_NAMES_CACHE: dict[tuple[str, str], tuple[str, ...]] = {}


def _names(entity_type: str, kind: str) -> tuple[str, ...]:
    key = (entity_type, kind)
    names = _NAMES_CACHE.get(key)
    if names is None:
        t = entity_type
        if kind == "email":
            names = (f"{t}.email", f"{t}.emails")
        elif kind == "phone":
            names = (f"{t}.phone", f"{t}.phones")
        else:
            names = (f"{t}.{kind}",)
        _NAMES_CACHE[key] = names
    return names


def _code_key(kind: str, v: Any) -> str | None:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        return None
    v = v.strip()
    if not v:
        return None
    if kind == "barcode":
        v = v.replace(" ", "")
    return f"{kind}:{v}"


def match_keys(entity_type: str, fields: Mapping[str, Any], *, region: str = "RU",
               keys: Iterable[str] = DEFAULT_KEYS) -> set[str]:
    """The set of match keys of one entity, from its canonical fields.

    `fields` use canonical names prefixed by the entity type: ``person.email``/``person.emails``,
    ``person.phone``/``person.phones``, ``company.inn`` + ``company.kpp``, ``product.sku``,
    ``product.barcode``. List values and Bitrix24-style ``{"VALUE": ...}`` items are accepted.
    `keys` selects the kinds: email, phone, inn_kpp, sku, barcode. With the default kinds a
    ``product`` uses `PRODUCT_KEYS` (sku, barcode) instead, since it has no e-mail/phone/ИНН.
    Invalid values give no key. Never raises on bad values.
    """
    if entity_type == "product" and keys is DEFAULT_KEYS:
        keys = PRODUCT_KEYS
    out: set[str] = set()
    if not fields:
        return out
    for kind in keys:
        if kind == "email":
            for v in _values(fields, _names(entity_type, "email")):
                e = normalize_email(v)
                if e is not None:
                    out.add("email:" + e)
        elif kind == "phone":
            for v in _values(fields, _names(entity_type, "phone")):
                p = normalize_phone(v, region)
                if p is not None:
                    out.add("phone:" + p)
        elif kind == "inn_kpp":
            inn = fields.get(f"{entity_type}.inn")
            if inn is not None:
                k = inn_kpp_key(inn, fields.get(f"{entity_type}.kpp"))
                if k is not None:
                    out.add(k)
        elif kind in ("sku", "barcode"):
            for v in _values(fields, _names(entity_type, kind)):
                k = _code_key(kind, v)
                if k is not None:
                    out.add(k)
        else:
            raise ValueError(f"unknown match key kind {kind!r} (known: {', '.join(sorted(KNOWN_KEYS))})")
    return out
