"""Compute valid Russian requisites (for test factories and the sandbox seed data).

Every helper takes optional leading digits and fills the rest from a `random.Random` (seedable for
reproducible data), then computes the check digit(s). The results pass `syncd.keys.requisites`.
"""

from __future__ import annotations

import random as _random

from syncd.keys.requisites import (
    account_key_sum,
    inn_check_digits,
    ogrn_check_digit,
    ogrnip_check_digit,
)

__all__ = [
    "make_account",
    "make_bik",
    "make_corr_account",
    "make_inn",
    "make_kpp",
    "make_ogrn",
    "make_ogrnip",
]


def _fill(prefix: str, length: int, rng: _random.Random | None, *, first_nonzero: bool = False) -> str:
    prefix = "".join(ch for ch in str(prefix) if not ch.isspace())
    if not (prefix == "" or (prefix.isascii() and prefix.isdigit())):
        raise ValueError(f"prefix must be digits, got {prefix!r}")
    if len(prefix) > length:
        raise ValueError(f"prefix {prefix!r} longer than {length} digits")
    r = rng or _random
    out = prefix
    while len(out) < length:
        lo = 1 if (first_nonzero and not out) else 0
        out += str(r.randint(lo, 9))
    return out


def make_inn(prefix_digits: str = "77", *, individual: bool = False, rng: _random.Random | None = None) -> str:
    """A valid ИНН: 10 digits (ЮЛ) or, with ``individual=True``, 12 digits (ФЛ/ИП).

    ``prefix_digits`` are the leading digits (region + inspection code, e.g. "7701"), at most 9
    (ЮЛ) or 10 (ФЛ) of them.
    """
    body = _fill(prefix_digits, 10 if individual else 9, rng)
    return body + inn_check_digits(body)


def make_kpp(prefix_digits: str = "7701", reason: str = "01", *, rng: _random.Random | None = None) -> str:
    """A well-formed КПП: 4 digits (НО) + 2 chars (причина) + 3 digits."""
    head = _fill(prefix_digits, 4, rng)
    return head + reason + _fill("", 3, rng)


def make_ogrn(prefix_digits: str = "1", *, rng: _random.Random | None = None) -> str:
    """A valid 13-digit ОГРН (first digit 1 or 5 for legal entities by default 1)."""
    body = _fill(prefix_digits, 12, rng, first_nonzero=True)
    if body[0] == "0":
        raise ValueError("ОГРН must not start with 0")
    return body + ogrn_check_digit(body)


def make_ogrnip(prefix_digits: str = "3", *, rng: _random.Random | None = None) -> str:
    """A valid 15-digit ОГРНИП (starts with 3, or 4 for some registrations)."""
    body = _fill(prefix_digits, 14, rng)
    if body[0] not in "34":
        raise ValueError("ОГРНИП must start with 3 or 4")
    return body + ogrnip_check_digit(body)


def make_bik(prefix_digits: str = "0445", *, rng: _random.Random | None = None) -> str:
    """A Russian-format БИК (9 digits starting 04). Avoids the РКЦ endings 000/001/002 unless given."""
    if prefix_digits and not str(prefix_digits).startswith("04") and len(str(prefix_digits)) >= 2:
        raise ValueError("a Russian БИК starts with 04")
    prefix = "04" if not prefix_digits or len(str(prefix_digits)) < 2 else str(prefix_digits)
    r = rng or _random
    for _ in range(1000):
        bik = _fill(prefix, 9, r)
        if len(prefix) >= 9 or bik[-3:] not in ("000", "001", "002"):
            return bik
    raise ValueError(f"cannot make a non-РКЦ БИК from prefix {prefix_digits!r}")  # pragma: no cover


def _set_key(key_prefix: str, acc: str) -> str:
    """Set the 9th digit of a 20-digit account (the key) so the 7-1-3 sum is 0 mod 10."""
    acc = acc[:8] + "0" + acc[9:]
    weight = (7, 1, 3)[(len(key_prefix) + 8) % 3]
    rem = account_key_sum(key_prefix + acc)
    # weights 7, 1, 3 are invertible mod 10, so exactly one k fits
    k = next(k for k in range(10) if (rem + weight * k) % 10 == 0)
    return acc[:8] + str(k) + acc[9:]


def _check_bik(bik: str) -> str:
    bik = str(bik).strip()
    if len(bik) != 9 or not (bik.isascii() and bik.isdigit()):
        raise ValueError(f"БИК must be 9 digits, got {bik!r}")
    return bik


def make_account(bik: str, prefix_digits: str = "40702810", *, rng: _random.Random | None = None) -> str:
    """A valid расчётный счёт for ``bik`` (default: balance account 40702, currency 810).

    ``prefix_digits`` may fix at most the first 8 digits; the 9th is the computed key.
    """
    bik = _check_bik(bik)
    if len(str(prefix_digits)) > 8:
        raise ValueError("account prefix may fix at most the first 8 digits (the 9th is the key)")
    key = ("0" + bik[4:6]) if bik[-3:] in ("000", "001", "002") else bik[-3:]
    return _set_key(key, _fill(prefix_digits, 20, rng))


def make_corr_account(bik: str, *, rng: _random.Random | None = None) -> str:
    """A valid корр. счёт for ``bik``: 30101810 + key + 8 digits + BIK[-3:] (the usual layout)."""
    bik = _check_bik(bik)
    acc = _fill("30101810", 17, rng) + bik[-3:]
    return _set_key("0" + bik[4:6], acc)
