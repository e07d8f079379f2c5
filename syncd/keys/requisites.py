"""Validators for Russian requisites: ИНН, КПП, ОГРН/ОГРНИП, БИК, расчётный и корр. счёт.

Each ``validate_*`` returns the normalized value (spaces, dashes, dots and NBSPs removed) or raises
`InvalidRequisite` (a `BadInput`, so the record goes to quarantine with the reason). The reason
names the field and the value, e.g. ``"ИНН 7701234561: checksum mismatch"``.

Algorithms: see docs ``reference/protocols.md`` §7. ИНН is checked with python-stdnum
(``stdnum.ru.inn``); ОГРН/ОГРНИП are hand-written because stdnum's ОГРНИП check digit is
``% 13`` without the final ``% 10`` and so rejects every valid ОГРНИП whose remainder is 10..12
(see ``tests/keys/test_keys_requisites.py::test_ogrnip_stdnum_disagrees``).
"""

from __future__ import annotations

import re

from stdnum.exceptions import InvalidChecksum, InvalidLength, ValidationError
from stdnum.ru import inn as _stdnum_inn

from syncd.errors import BadInput

__all__ = [
    "InvalidRequisite",
    "account_key_sum",
    "inn_check_digits",
    "is_valid_account",
    "is_valid_bik",
    "is_valid_corr_account",
    "is_valid_inn",
    "is_valid_kpp",
    "is_valid_ogrn",
    "is_valid_ogrn_any",
    "is_valid_ogrnip",
    "normalize_digits",
    "ogrn_check_digit",
    "ogrnip_check_digit",
    "requisite_issues",
    "validate_account",
    "validate_bik",
    "validate_corr_account",
    "validate_inn",
    "validate_kpp",
    "validate_ogrn",
    "validate_ogrn_any",
    "validate_ogrnip",
]


class InvalidRequisite(BadInput):
    """An ИНН/КПП/ОГРН/БИК/account failed format or checksum validation."""

    def __init__(self, field: str, value: object, problem: str, **kw: object) -> None:
        self.field, self.value, self.problem = field, value, problem
        super().__init__(f"{field} {value}: {problem}", **kw)  # type: ignore[arg-type]


_SEPARATORS = str.maketrans("", "", " -.\u00a0\u2009\u202f\t\r\n")
_KPP_RE = re.compile(r"^\d{4}[\dA-Z]{2}\d{3}$")
_WEIGHTS_713 = (7, 1, 3) * 8  # 24 >= 23


def normalize_digits(value: object) -> str:
    """Strip surrounding whitespace and separators (space, NBSP, dash, dot)."""
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    return value.strip().translate(_SEPARATORS)


def _shown(value: object) -> str:
    s = value if isinstance(value, str) else repr(value)
    s = s.strip()
    return s if s else "''"


def _digits(field: str, value: object, lengths: tuple[int, ...]) -> str:
    try:
        v = normalize_digits(value)
    except TypeError as e:
        raise InvalidRequisite(field, _shown(value), str(e)) from None
    if not v:
        raise InvalidRequisite(field, "''", "empty value")
    if not (v.isascii() and v.isdigit()):
        raise InvalidRequisite(field, v, "must contain digits only")
    if len(v) not in lengths:
        want = " or ".join(str(n) for n in lengths)
        raise InvalidRequisite(field, v, f"must have {want} digits, got {len(v)}")
    return v


# --- check digit arithmetic (also used by syncd.keys.generate) ---------------------------------

_INN10_W = (2, 4, 10, 3, 5, 9, 4, 6, 8)
_INN11_W = (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
_INN12_W = (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)


def _wsum(digits: str, weights: tuple[int, ...]) -> int:
    return sum(w * int(d) for w, d in zip(weights, digits))


def inn_check_digits(body: str) -> str:
    """Check digit(s) for a 9-digit (ЮЛ) or 10-digit (ФЛ) ИНН body."""
    if len(body) == 9:
        return str(_wsum(body, _INN10_W) % 11 % 10)
    if len(body) == 10:
        d11 = str(_wsum(body, _INN11_W) % 11 % 10)
        d12 = str(_wsum(body + d11, _INN12_W) % 11 % 10)
        return d11 + d12
    raise ValueError("ИНН body must have 9 or 10 digits")


def ogrn_check_digit(body: str) -> str:
    """Check digit for a 12-digit ОГРН body: int(body) % 11 % 10."""
    return str(int(body) % 11 % 10)


def ogrnip_check_digit(body: str) -> str:
    """Check digit for a 14-digit ОГРНИП body: int(body) % 13 % 10 (the last digit of the remainder)."""
    return str(int(body) % 13 % 10)


def account_key_sum(key_digits: str) -> int:
    """Sum of digit*weight with weights 7,1,3 repeated, modulo 10 (0 means valid)."""
    return _wsum(key_digits, _WEIGHTS_713) % 10


# --- validators -----------------------------------------------------------------------------------

def validate_inn(value: str) -> str:
    """ИНН: 10 digits (ЮЛ) or 12 digits (ФЛ/ИП), checksum via python-stdnum."""
    v = _digits("ИНН", value, (10, 12))
    try:
        _stdnum_inn.validate(v)
    except InvalidChecksum:
        raise InvalidRequisite("ИНН", v, "checksum mismatch") from None
    except InvalidLength:  # pragma: no cover - length checked above
        raise InvalidRequisite("ИНН", v, "must have 10 or 12 digits") from None
    except ValidationError as e:  # pragma: no cover
        raise InvalidRequisite("ИНН", v, f"invalid ({e.message})") from None
    # belt and braces against a future stdnum change: our own arithmetic must agree
    if inn_check_digits(v[:-1] if len(v) == 10 else v[:-2]) != (v[-1:] if len(v) == 10 else v[-2:]):
        raise InvalidRequisite("ИНН", v, "checksum mismatch")  # pragma: no cover
    return v


def validate_kpp(value: str) -> str:
    """КПП: 4 digits + 2 digits or A–Z (since 2019) + 3 digits; format only."""
    try:
        v = normalize_digits(value).upper()
    except TypeError as e:
        raise InvalidRequisite("КПП", _shown(value), str(e)) from None
    if not v:
        raise InvalidRequisite("КПП", "''", "empty value")
    if len(v) != 9:
        raise InvalidRequisite("КПП", v, f"must have 9 characters, got {len(v)}")
    if not _KPP_RE.match(v):
        raise InvalidRequisite("КПП", v, "bad format (expected NNNNPPNNN, PP digits or A-Z)")
    return v


def validate_ogrn(value: str) -> str:
    """ОГРН: 13 digits, first not 0, int(d1..d12) % 11 % 10 == d13."""
    v = _digits("ОГРН", value, (13,))
    if v[0] == "0":
        raise InvalidRequisite("ОГРН", v, "must not start with 0")
    if ogrn_check_digit(v[:12]) != v[12]:
        raise InvalidRequisite("ОГРН", v, "checksum mismatch")
    return v


def validate_ogrnip(value: str) -> str:
    """ОГРНИП: 15 digits, first 3 or 4, int(d1..d14) % 13 % 10 == d15 (hand-written, not stdnum)."""
    v = _digits("ОГРНИП", value, (15,))
    if v[0] not in "34":
        raise InvalidRequisite("ОГРНИП", v, "must start with 3 or 4")
    if ogrnip_check_digit(v[:14]) != v[14]:
        raise InvalidRequisite("ОГРНИП", v, "checksum mismatch")
    return v


def validate_ogrn_any(value: str) -> str:
    """ОГРН (13 digits) or ОГРНИП (15 digits), by length."""
    v = _digits("ОГРН", value, (13, 15))
    return validate_ogrn(v) if len(v) == 13 else validate_ogrnip(v)


def validate_bik(value: str, *, russian: bool = True) -> str:
    """БИК: 9 digits; with ``russian=True`` (default) it must start with 04."""
    v = _digits("БИК", value, (9,))
    if russian and not v.startswith("04"):
        raise InvalidRequisite("БИК", v, "a Russian БИК starts with 04")
    return v


def validate_account(value: str, bik: str) -> str:
    """Расчётный счёт: 20 digits; key over BIK[-3:] + account with weights 7,1,3 — sum % 10 == 0.

    Accounts at a РКЦ (БИК ending 000/001/002) use the корр-style key ("0" + BIK[4:6]).
    """
    v = _digits("Расчётный счёт", value, (20,))
    b = _digits("БИК", bik, (9,))
    if b[-3:] in ("000", "001", "002"):
        key = "0" + b[4:6] + v
    else:
        key = b[-3:] + v
    if account_key_sum(key) != 0:
        raise InvalidRequisite("Расчётный счёт", v, f"key mismatch with БИК {b}")
    return v


def validate_corr_account(value: str, bik: str) -> str:
    """Корр. счёт: 20 digits, starts 30101; key over "0" + BIK[4:6] + account — sum % 10 == 0."""
    v = _digits("Корр. счёт", value, (20,))
    b = _digits("БИК", bik, (9,))
    if not v.startswith("30101"):
        raise InvalidRequisite("Корр. счёт", v, "must start with 30101")
    if account_key_sum("0" + b[4:6] + v) != 0:
        raise InvalidRequisite("Корр. счёт", v, f"key mismatch with БИК {b}")
    return v


def _ok(fn, *a: object) -> bool:
    try:
        fn(*a)
        return True
    except (InvalidRequisite, TypeError, ValueError):
        return False


def is_valid_inn(value: str) -> bool:
    return _ok(validate_inn, value)


def is_valid_kpp(value: str) -> bool:
    return _ok(validate_kpp, value)


def is_valid_ogrn(value: str) -> bool:
    return _ok(validate_ogrn, value)


def is_valid_ogrnip(value: str) -> bool:
    return _ok(validate_ogrnip, value)


def is_valid_ogrn_any(value: str) -> bool:
    return _ok(validate_ogrn_any, value)


def is_valid_bik(value: str) -> bool:
    return _ok(validate_bik, value)


def is_valid_account(value: str, bik: str) -> bool:
    return _ok(validate_account, value, bik)


def is_valid_corr_account(value: str, bik: str) -> bool:
    return _ok(validate_corr_account, value, bik)


def _blank(v: object) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def requisite_issues(*, inn: str | None = None, kpp: str | None = None, ogrn: str | None = None,
                     bik: str | None = None, account: str | None = None,
                     corr_account: str | None = None) -> list[str]:
    """All problems with a set of requisites, as reasons (empty list: all good). Blank fields are skipped.

    Cross-checks: КПП only goes with a 10-digit ИНН (ЮЛ); ОГРН (13) with a 10-digit ИНН, ОГРНИП (15)
    with a 12-digit ИНН; accounts need a valid БИК.
    """
    issues: list[str] = []
    inn_v = kpp_v = ogrn_v = bik_v = None

    def run(fn, *a):
        try:
            return fn(*a)
        except InvalidRequisite as e:
            issues.append(e.reason)
            return None

    if not _blank(inn):
        inn_v = run(validate_inn, inn)
    if not _blank(kpp):
        kpp_v = run(validate_kpp, kpp)
    if not _blank(ogrn):
        ogrn_v = run(validate_ogrn_any, ogrn)
    if not _blank(bik):
        bik_v = run(validate_bik, bik)
    if inn_v and kpp_v and len(inn_v) == 12:
        issues.append(f"КПП {kpp_v}: an individual's ИНН {inn_v} has no КПП")
    if inn_v and ogrn_v and (len(inn_v) == 10) != (len(ogrn_v) == 13):
        kind = "ОГРН" if len(ogrn_v) == 13 else "ОГРНИП"
        issues.append(f"{kind} {ogrn_v}: does not go with ИНН {inn_v} ({len(inn_v)} digits)")
    for field, value, fn in (("Расчётный счёт", account, validate_account),
                             ("Корр. счёт", corr_account, validate_corr_account)):
        if _blank(value):
            continue
        if bik_v is None:
            if _blank(bik):
                issues.append(f"{field} {_shown(value)}: cannot check without БИК")
            else:  # БИК invalid, already reported; still check the format
                run(_digits, field, value, (20,))
            continue
        run(fn, value, bik_v)
    return issues
