"""Russian requisites: table-driven valid/invalid cases, generators, property tests."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.ru import ogrn as stdnum_ogrn

from syncd.errors import BadInput
from syncd.keys import generate as gen
from syncd.keys.requisites import (
    InvalidRequisite,
    is_valid_account,
    is_valid_bik,
    is_valid_corr_account,
    is_valid_inn,
    is_valid_kpp,
    is_valid_ogrn,
    is_valid_ogrn_any,
    is_valid_ogrnip,
    ogrnip_check_digit,
    requisite_issues,
    validate_account,
    validate_bik,
    validate_corr_account,
    validate_inn,
    validate_kpp,
    validate_ogrn,
    validate_ogrn_any,
    validate_ogrnip,
)

RNG = random.Random(20261124)


def flip(value: str, pos: int, delta: int = 1) -> str:
    """Change one digit of `value` at `pos` by `delta` (mod 10)."""
    return value[:pos] + str((int(value[pos]) + delta) % 10) + value[pos + 1:]


INN10 = gen.make_inn("7701", rng=RNG)
INN12 = gen.make_inn("5001", individual=True, rng=RNG)
OGRN = gen.make_ogrn("102770", rng=RNG)
OGRNIP = gen.make_ogrnip("3047700", rng=RNG)
BIK = gen.make_bik("044525", rng=RNG)
ACCOUNT = gen.make_account(BIK, rng=RNG)
CORR = gen.make_corr_account(BIK, rng=RNG)

# Published, real requisites (ПАО Сбербанк): known-good cross-check of the algorithms.
SBER = {"inn": "7707083893", "kpp": "773601001", "ogrn": "1027700132195", "bik": "044525225",
        "corr_account": "30101810400000000225"}


@pytest.mark.parametrize("fn,value", [
    (validate_inn, INN10), (validate_inn, INN12), (validate_inn, SBER["inn"]),
    (validate_kpp, SBER["kpp"]), (validate_kpp, "7701AB001"), (validate_kpp, gen.make_kpp(rng=RNG)),
    (validate_ogrn, OGRN), (validate_ogrn, SBER["ogrn"]), (validate_ogrnip, OGRNIP),
    (validate_ogrnip, "304500116000157"), (validate_ogrn_any, OGRN), (validate_ogrn_any, OGRNIP),
    (validate_bik, BIK), (validate_bik, SBER["bik"]),
])
def test_valid(fn, value):
    assert fn(value) == value


def test_valid_accounts():
    assert validate_account(ACCOUNT, BIK) == ACCOUNT
    assert validate_corr_account(CORR, BIK) == CORR
    assert validate_corr_account(SBER["corr_account"], SBER["bik"]) == SBER["corr_account"]
    rkc_bik = "044525000"
    acc = gen.make_account(rkc_bik, rng=RNG)
    assert is_valid_account(acc, rkc_bik)


@pytest.mark.parametrize("fn,value", [
    (validate_inn, " 7707-083-893 "), (validate_inn, "7707 083 893"), (validate_inn, "\u00a07707083893"),
    (validate_ogrn, "1027700132195 "), (validate_kpp, " 773601001"), (validate_kpp, "7701ab001"),
])
def test_normalized(fn, value):
    assert fn(value) == "".join(ch for ch in value if ch.isalnum()).upper()


@pytest.mark.parametrize("fn,value,needle", [
    (validate_inn, flip(INN10, 9), "ИНН"), (validate_inn, flip(INN12, 11), "checksum mismatch"),
    (validate_inn, flip(INN12, 10), "checksum mismatch"), (validate_inn, flip(INN10, 3), "checksum"),
    (validate_inn, "770708389", "10 or 12 digits"), (validate_inn, "77070838931", "10 or 12 digits"),
    (validate_inn, "77070838AB", "digits only"), (validate_inn, "", "empty"), (validate_inn, None, "empty"),
    (validate_kpp, "77360100", "9 characters"), (validate_kpp, "7736010AB", "format"),
    (validate_kpp, "77AB01001", "format"), (validate_kpp, "", "empty"),
    (validate_ogrn, flip(OGRN, 12), "checksum"), (validate_ogrn, flip(SBER["ogrn"], 5), "checksum"),
    (validate_ogrn, "0" + OGRN[1:], "start with 0"), (validate_ogrn, OGRN[:-1], "13 digits"),
    (validate_ogrnip, flip(OGRNIP, 14), "checksum"), (validate_ogrnip, "5" + OGRNIP[1:], "start with 3 or 4"),
    (validate_ogrn_any, "12345678901234", "13 or 15"),
    (validate_bik, "144525225", "starts with 04"), (validate_bik, "04452522", "9 digits"),
])
def test_invalid(fn, value, needle):
    with pytest.raises(InvalidRequisite) as ei:
        fn(value)
    assert needle in str(ei.value)
    assert isinstance(ei.value, BadInput)  # quarantined as bad input (Guarantee 7)


def test_reason_names_field_and_value():
    bad = flip(SBER["inn"], 9)
    with pytest.raises(BadInput) as ei:
        validate_inn(bad)
    assert ei.value.reason == f"ИНН {bad}: checksum mismatch"
    assert ei.value.field == "ИНН" and ei.value.value == bad


def test_invalid_accounts():
    with pytest.raises(InvalidRequisite, match="key mismatch with БИК"):
        validate_account(flip(ACCOUNT, 15), BIK)
    with pytest.raises(InvalidRequisite, match="key mismatch"):
        validate_account(ACCOUNT, flip(BIK, 8))  # the account belongs to another bank
    with pytest.raises(InvalidRequisite, match="30101"):
        validate_corr_account("40101810400000000225", SBER["bik"])
    with pytest.raises(InvalidRequisite, match="Корр. счёт"):
        validate_corr_account(flip(SBER["corr_account"], 19), SBER["bik"])
    with pytest.raises(InvalidRequisite, match="20 digits"):
        validate_account(ACCOUNT[:-1], BIK)


def test_booleans():
    assert is_valid_inn(INN10) and not is_valid_inn(flip(INN10, 0)) and not is_valid_inn(None)
    assert is_valid_kpp("773601001") and not is_valid_kpp("77360100X")
    assert is_valid_ogrn(OGRN) and not is_valid_ogrn(OGRNIP)
    assert is_valid_ogrnip(OGRNIP) and not is_valid_ogrnip(OGRN)
    assert is_valid_ogrn_any(OGRN) and is_valid_ogrn_any(OGRNIP)
    assert is_valid_bik(BIK) and not is_valid_bik("123")
    assert is_valid_account(ACCOUNT, BIK) and not is_valid_account(ACCOUNT, "junk")
    assert is_valid_corr_account(CORR, BIK) and not is_valid_corr_account(flip(CORR, 10), BIK)


def test_requisite_issues():
    assert requisite_issues(**SBER) == []
    assert requisite_issues() == []
    assert requisite_issues(inn=INN12, ogrn=OGRNIP, bik=BIK, account=ACCOUNT) == []
    issues = requisite_issues(inn=flip(SBER["inn"], 9), kpp="77", ogrn=SBER["ogrn"], bik=SBER["bik"],
                              account=flip(ACCOUNT, 12), corr_account=SBER["corr_account"])
    assert len(issues) == 3
    assert issues[0].startswith("ИНН ") and "checksum" in issues[0]
    assert issues[1].startswith("КПП 77:")
    assert issues[2].startswith("Расчётный счёт ")
    assert any("has no КПП" in i for i in requisite_issues(inn=INN12, kpp="773601001"))
    assert any("does not go with ИНН" in i for i in requisite_issues(inn=INN10, ogrn=OGRNIP))
    assert any("without БИК" in i for i in requisite_issues(account=ACCOUNT))


def _ogrnip_with_remainder(target: int) -> str:
    rng = random.Random(target)
    while True:
        body = "3" + "".join(str(rng.randint(0, 9)) for _ in range(13))
        if int(body) % 13 == target:
            return body + ogrnip_check_digit(body)


@pytest.mark.parametrize("remainder", [10, 11, 12])
def test_ogrnip_stdnum_disagrees(remainder):
    """protocols.md §7: the ОГРНИП check digit is the LAST DIGIT of int(d1..d14) % 13.

    For remainders 10..12 that digit is 0..2. python-stdnum compares str(% 13) (two characters) to
    one digit, so it rejects every such ОГРНИП — about 3 in 13 of all valid numbers. Our hand-written
    check accepts them, and rejects every other last digit.
    """
    number = _ogrnip_with_remainder(remainder)
    assert number[-1] == str(remainder % 10)
    assert is_valid_ogrnip(number)
    assert not stdnum_ogrn.is_valid(number)  # stdnum's bug; if this starts failing, stdnum was fixed
    for d in "0123456789":
        if d != number[-1]:
            assert not is_valid_ogrnip(number[:-1] + d)


def test_ogrnip_agrees_with_stdnum_below_ten():
    for target in range(10):
        number = _ogrnip_with_remainder(target)
        assert is_valid_ogrnip(number) and stdnum_ogrn.is_valid(number)


def test_generators_reject_bad_prefix():
    with pytest.raises(ValueError):
        gen.make_inn("12345678901")
    with pytest.raises(ValueError):
        gen.make_ogrnip("5")
    with pytest.raises(ValueError):
        gen.make_bik("12")
    with pytest.raises(ValueError):
        gen.make_account("123")


# --- property tests ---------------------------------------------------------------------------

seeds = st.integers(min_value=0, max_value=2**32)
positions = st.integers(min_value=0, max_value=19)
deltas = st.integers(min_value=1, max_value=9)


# ИНН, ОГРН and ОГРНИП end with "% 11 % 10" / "% 13 % 10": remainders 10 (and 11, 12) fold onto
# 0 (1, 2), so a single changed BODY digit can, rarely, land on a number that is itself valid. The
# exact property: a changed check digit is always rejected; a changed body digit is rejected unless the
# reference formula (written out independently here) gives the same check digit for the new body.

def _ref_inn_ok(n: str) -> bool:
    def c(ds, ws):
        return str(sum(int(d) * w for d, w in zip(ds, ws)) % 11 % 10)
    if len(n) == 10:
        return c(n[:9], (2, 4, 10, 3, 5, 9, 4, 6, 8)) == n[9]
    return (c(n[:10], (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) == n[10]
            and c(n[:11], (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) == n[11])


@settings(max_examples=300, deadline=None)
@given(seed=seeds, individual=st.booleans(), pos=positions, delta=deltas)
def test_inn_property(seed, individual, pos, delta):
    inn = gen.make_inn("", individual=individual, rng=random.Random(seed))
    assert validate_inn(inn) == inn
    p = pos % len(inn)
    bad = flip(inn, p, delta)
    if p == len(inn) - 1:  # the (last) check digit itself
        assert not is_valid_inn(bad)
    assert is_valid_inn(bad) == _ref_inn_ok(bad)


@settings(max_examples=300, deadline=None)
@given(seed=seeds, pos=positions, delta=deltas)
def test_ogrn_property(seed, pos, delta):
    ogrn = gen.make_ogrn("", rng=random.Random(seed))
    assert validate_ogrn(ogrn) == ogrn
    p = pos % 13
    bad = flip(ogrn, p, delta)
    if p == 12:
        assert not is_valid_ogrn(bad)
    expected = bad[0] != "0" and str(int(bad[:12]) % 11 % 10) == bad[12]
    assert is_valid_ogrn(bad) == expected


@settings(max_examples=300, deadline=None)
@given(seed=seeds, pos=positions, delta=deltas)
def test_ogrnip_property(seed, pos, delta):
    ogrnip = gen.make_ogrnip("3", rng=random.Random(seed))
    assert validate_ogrnip(ogrnip) == ogrnip
    p = pos % 15
    bad = flip(ogrnip, p, delta)
    if p == 14:
        assert not is_valid_ogrnip(bad)
    expected = bad[0] in "34" and str(int(bad[:14]) % 13 % 10) == bad[14]
    assert is_valid_ogrnip(bad) == expected


def test_single_digit_changes_mostly_rejected():
    """Exhaustive over every position and delta for a sample: the %10 fold lets few through."""
    rng = random.Random(7)
    for make, ok, share in ((lambda: gen.make_inn(rng=rng), is_valid_inn, 0.05),
                            (lambda: gen.make_inn(individual=True, rng=rng), is_valid_inn, 0.01),
                            (lambda: gen.make_ogrn(rng=rng), is_valid_ogrn, 0.05),
                            (lambda: gen.make_ogrnip(rng=rng), is_valid_ogrnip, 0.10)):
        passed = total = 0
        for _ in range(50):
            n = make()
            for p in range(len(n)):
                for d in range(1, 10):
                    total += 1
                    passed += ok(flip(n, p, d))
        assert passed / total < share


@settings(max_examples=200, deadline=None)
@given(seed=seeds, pos=positions, delta=deltas)
def test_account_property(seed, pos, delta):
    rng = random.Random(seed)
    bik = gen.make_bik(rng=rng)
    acc = gen.make_account(bik, rng=rng)
    corr = gen.make_corr_account(bik, rng=rng)
    assert validate_account(acc, bik) == acc
    assert validate_corr_account(corr, bik) == corr
    # weights 7, 1, 3 are coprime with 10: any single-digit change breaks the key
    assert not is_valid_account(flip(acc, pos, delta), bik)
    assert not is_valid_corr_account(flip(corr, pos, delta), bik)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.none(), st.integers(), st.binary(max_size=10)))
def test_garbage_never_raises_anything_but_invalid_requisite(value):
    for fn in (validate_inn, validate_kpp, validate_ogrn, validate_ogrnip, validate_ogrn_any, validate_bik):
        try:
            fn(value)
        except InvalidRequisite:
            pass
    for fn in (is_valid_inn, is_valid_kpp, is_valid_ogrn, is_valid_ogrnip, is_valid_bik):
        assert fn(value) in (True, False)
    assert isinstance(requisite_issues(inn=value, kpp=value, ogrn=value, bik=value, account=value), list)
