"""The form-field -> record mapping and the body parsing, as properties (Hypothesis) and examples."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connectors.forms.convert import fingerprint, to_fields
from connectors.forms.errors import FormError
from connectors.forms.parse import parse_body
from connectors.forms.settings import FormSettings, FormsSettings

NOW = dt.datetime(2026, 5, 4, 10, 30, tzinfo=dt.timezone.utc)
FS = FormSettings(token="tok-0123456789", fields={"n": "lead.name", "c": "lead.comment", "t": "lead.title"},
                  consent_field="ok", consent_version="v1", responsible="7", source="WEB")

# field names a site may use (letters, digits, brackets as PHP forms do) and visitors' text
names = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="_[]-"),
                min_size=1, max_size=12)
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=60)


def multipart(values: dict[str, str], boundary: str = "XyZ-boundary-42") -> tuple[str, bytes]:
    parts = []
    for k, v in values.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n')
    return f"multipart/form-data; boundary={boundary}", ("".join(parts) + f"--{boundary}--\r\n").encode()


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(names, texts, max_size=6))
def test_every_encoding_parses_to_the_same_fields(values: dict[str, str]) -> None:
    as_url = parse_body("application/x-www-form-urlencoded", urlencode(values).encode())
    as_json = parse_body("application/json", json.dumps(values, ensure_ascii=False).encode())
    assert as_url == values
    assert as_json == values
    if all('"' not in k for k in values):
        ctype, body = multipart({k: v for k, v in values.items()})
        # MIME parts end lines with CRLF; a visitor's lone "\n" survives, edge whitespace may not
        got = parse_body(ctype, body)
        assert set(got) == set(values)
        plain = {k: v for k, v in values.items() if "\n" not in v and v == v.strip()}
        assert {k: got[k] for k in plain} == plain


@settings(max_examples=200)
@given(name=texts, comment=texts, title=texts, consent=st.sampled_from(["on", "1", "да", "", "off", "no"]),
       noise=st.dictionaries(names.filter(lambda s: s not in ("n", "c", "t", "ok")), texts, max_size=3))
def test_mapped_fields_land_trimmed_and_nothing_else_does(name: str, comment: str, title: str, consent: str,
                                                          noise: dict[str, str]) -> None:
    values = {"n": name, "c": comment, "t": title, "ok": consent, **noise}
    kind, fields = to_fields("callback", FS, values, now=NOW)
    assert kind == "lead"
    assert fields.get("name") == (name.strip() or None)
    assert fields.get("comment") == (comment.strip() or None)
    # settings, not the visitor, give the manager, source and form
    assert (fields["responsible"], fields["source"], fields["form"]) == ("7", "WEB", "callback")
    assert fields["title"] == (title.strip() or (f"callback: {name.strip()}" if name.strip() else "callback"))
    given_ = consent in ("on", "1", "да")
    assert fields["consent"] is given_
    assert ("consent_at" in fields) is given_ and ("consent_version" in fields) is given_
    # unmapped fields (a site's hidden inputs) never reach the record
    assert set(fields) <= {"name", "comment", "title", "responsible", "source", "form", "consent",
                           "consent_at", "consent_version"}
    # identical posts are one submission; the fingerprint ignores unmapped noise
    assert fingerprint("callback", FS, values) == fingerprint("callback", FS, {**values, "zz_noise": "x"})


@given(st.sampled_from(["ivan@example.ru", "IVAN@EXAMPLE.RU", " ivan@example.ru "]))
def test_emails_and_phones_are_normalized(email: str) -> None:
    fs = FormSettings(token="tok-0123456789", fields={"e": "lead.email", "p": "lead.phone"})
    _, fields = to_fields("f", fs, {"e": email, "p": "8 (903) 111-22-33"}, now=NOW)
    assert fields["email"] == "ivan@example.ru" and fields["phone"] == "+79031112233"


def test_errors_name_the_forms_own_field() -> None:
    fs = FormSettings(token="tok-0123456789", fields={"mail": "lead.email", "tel": "lead.phone"},
                      required=["tel"], consent_field="agree", require_consent=True)
    for values, field in (({"mail": "a@b.ru"}, "tel"), ({"tel": "+79031112233", "mail": "nope", "agree": "on"}, "mail"),
                          ({"tel": "42", "agree": "on"}, "tel"), ({"tel": "+79031112233"}, "agree")):
        with pytest.raises(FormError) as e:
            to_fields("f", fs, values, now=NOW)
        assert e.value.status == 400 and e.value.field == field, (values, e.value.body())
        assert e.value.body()["error"]


def test_a_deal_target_carries_the_pipeline_and_the_visitor_in_its_comment() -> None:
    fs = FormSettings(token="tok-0123456789", fields={"n": "lead.name", "p": "lead.phone", "m": "lead.comment"},
                      target="deal", pipeline="3", stage="C3:NEW")
    kind, fields = to_fields("order-call", fs, {"n": "Иван", "p": "+79031112233", "m": "Нужен счёт"}, now=NOW)
    assert kind == "deal" and fields["pipeline"] == "3" and fields["stage"] == "C3:NEW"
    assert fields["comment"] == "Имя: Иван\nТелефон: +79031112233\nНужен счёт"


@pytest.mark.parametrize("body,ctype", [(b"{not json", "application/json"), (b"[1, 2]", "application/json"),
                                        (b"x=1", "text/plain"), (b"\xff\xfe=1", "application/x-www-form-urlencoded")])
def test_bodies_that_are_not_a_form(body: bytes, ctype: str) -> None:
    with pytest.raises(FormError) as e:
        parse_body(ctype, body)
    assert e.value.status in (400, 415)


def test_settings_refuse_what_cannot_work() -> None:
    for bad in ({"fields": {"x": "lead.responsible"}}, {"target": "deal"}, {"require_consent": True},
                {"honeypot": "x", "fields": {"x": "lead.name"}}, {"surprise": 1}):
        with pytest.raises(ValidationError):
            FormSettings(token="tok-0123456789", **{"fields": {"n": "lead.name"}, **bad})
    with pytest.raises(ValidationError):
        FormSettings(token="short", fields={"n": "lead.name"})
    with pytest.raises(ValidationError, match="at least one"):
        FormSettings(token="tok-0123456789")
    with pytest.raises(ValidationError, match="form name"):
        FormsSettings(form={"Bad Name": {"token": "tok-0123456789", "fields": {"n": "lead.name"}}})
