"""A form's field values -> the record the engine takes in (a lead, or a deal in a pipeline).

The record's field names are the short names of the canonical fields (`name` for lead.name) plus
what the form's settings add (`source`, `responsible`, `form`, the consent); mappings/forms.toml
maps them to the canonical model. Pure functions: the connector checks the token, signature, size
and rate before, and the duplicate window after.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Any, Mapping

from connectors.forms.errors import FormError
from connectors.forms.settings import PERSON_IN_COMMENT, FormSettings
from syncd.keys.match import normalize_email, normalize_phone

MAX_FIELD = 10_000              # characters of one value (a comment); more is refused, never cut
_TRUE = {"on", "1", "true", "yes", "y", "да", "checked", "agree"}
_LABELS = {"lead.name": "Имя", "lead.company_name": "Компания", "lead.email": "E-mail", "lead.phone": "Телефон"}


def consent_given(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def mapped(settings: FormSettings, values: Mapping[str, str]) -> dict[str, str]:
    """canonical field -> the visitor's text (trimmed; empty values left out). Raises FormError
    naming the form's field for a required field missing, a bad e-mail or phone, an oversized value."""
    for name in settings.required:
        if not (values.get(name) or "").strip():
            raise FormError(400, name, f"Заполните поле «{name}»", f"required field {name!r} is missing or empty")
    for group in settings.required_any:
        if not any((values.get(name) or "").strip() for name in group):
            named = " или ".join(f"«{n}»" for n in group)
            raise FormError(400, group[0], f"Заполните поле {named}",
                            f"one of the fields {', '.join(map(repr, group))} is required; all are missing or empty")
    out: dict[str, str] = {}
    for form_field, canonical in settings.fields.items():
        text = (values.get(form_field) or "").strip()
        if not text:
            continue
        if len(text) > MAX_FIELD:
            raise FormError(400, form_field, f"Поле «{form_field}» слишком длинное",
                            f"field {form_field!r} is longer than {MAX_FIELD} characters")
        out[canonical] = f"{out[canonical]}\n{text}" if canonical in out else text
    return out


def check_values(fields: dict[str, str], settings: FormSettings, region: str) -> None:
    """An e-mail or phone that cannot be one is the visitor's typo: say so instead of storing it.
    Valid ones are kept normalized (lower-case e-mail, E.164 phone), as the CRM's duplicate search
    and syncd's match keys compare them."""
    back = {c: f for f, c in settings.fields.items()}
    if email := fields.get("lead.email"):
        norm = normalize_email(email)
        if norm is None:
            raise FormError(400, back.get("lead.email"), "Проверьте адрес электронной почты",
                            "not a valid e-mail address")
        fields["lead.email"] = norm
    if phone := fields.get("lead.phone"):
        norm = normalize_phone(phone, region)
        if norm is None:
            raise FormError(400, back.get("lead.phone"), "Проверьте номер телефона", "not a valid phone number")
        fields["lead.phone"] = norm


def _consent(settings: FormSettings, consent: bool | None, now: dt.datetime) -> dict[str, Any]:
    """consent, consent_at (when syncd took the post), consent_version — for any target."""
    out: dict[str, Any] = {}
    if consent is not None:
        out["consent"] = consent
        if consent:
            out["consent_at"] = now.isoformat()
            if settings.consent_version:
                out["consent_version"] = settings.consent_version
    return out


def _consent_line(settings: FormSettings, consent: bool | None, now: dt.datetime) -> str | None:
    """The consent as a manager reads it in a deal's comment (a deal has no consent field)."""
    if consent is None:
        return None
    if not consent:
        return "Согласие на обработку персональных данных: не дано"
    msk = now.astimezone(dt.timezone(dt.timedelta(hours=3))).strftime("%d.%m.%Y %H:%M МСК")
    version = f", текст согласия версии {settings.consent_version}" if settings.consent_version else ""
    return f"Согласие на обработку персональных данных: дано {msk}{version}"


def visitor(settings: FormSettings, values: Mapping[str, str], *, now: dt.datetime, region: str = "RU"
            ) -> dict[str, Any] | None:
    """A deal form's visitor as a contact record (name in its parts, e-mail, phone, source, consent):
    identified like every person — one match binds, several go to review, none makes a new contact.
    None when the post names nobody (no name, e-mail or phone) or the form makes leads."""
    if settings.target != "deal":
        return None
    canon = mapped(settings, values)
    check_values(canon, settings, region)
    if not any(canon.get(c) for c in ("lead.name", "lead.email", "lead.phone")):
        return None
    from syncd.keys.names import person_parts

    out: dict[str, Any] = {"source": settings.source}
    if canon.get("lead.name"):
        out["name"] = canon["lead.name"]
        out.update(person_parts(canon["lead.name"]))
    for c in ("lead.email", "lead.phone"):
        if canon.get(c):
            short = c.split(".", 1)[1]
            out[short] = canon[c]
            out[short + "s"] = [canon[c]]          # a CRM keeps a person's e-mails and phones as lists
    consent = consent_given(values.get(settings.consent_field)) if settings.consent_field else None
    out.update(_consent(settings, consent, now))
    return out


def company(settings: FormSettings, values: Mapping[str, str], *, now: dt.datetime, region: str = "RU"
            ) -> dict[str, Any] | None:
    """A deal form's visitor's company, when the form has a company field filled: a company record
    (its name, the visitor's e-mail and phone as the company's) identified like every company — by
    its e-mail (the ИНН is not asked), one match binds, several go to review, none makes a new one."""
    if settings.target != "deal":
        return None
    canon = mapped(settings, values)
    check_values(canon, settings, region)
    if not canon.get("lead.company_name"):
        return None
    out: dict[str, Any] = {"name": canon["lead.company_name"], "source": settings.source}
    for c in ("lead.email", "lead.phone"):
        if canon.get(c):
            short = c.split(".", 1)[1]
            out[short] = canon[c]
            out[short + "s"] = [canon[c]]
    return out


def to_fields(form: str, settings: FormSettings, values: Mapping[str, str], *, now: dt.datetime,
              region: str = "RU") -> tuple[str, dict[str, Any]]:
    """(record kind, record fields) of one post; raises FormError for what the visitor must fix."""
    canon = mapped(settings, values)
    check_values(canon, settings, region)
    consent = consent_given(values.get(settings.consent_field)) if settings.consent_field else None
    if settings.require_consent and not consent:
        raise FormError(400, settings.consent_field, "Нужно согласие на обработку персональных данных",
                        "consent is required")
    title = settings.title or form
    if canon.get("lead.title"):
        title = canon["lead.title"]
    elif canon.get("lead.name"):
        title = f"{title}: {canon['lead.name']}"
    common: dict[str, Any] = {"title": title, "source": settings.source, "form": form}
    if settings.responsible:
        common["responsible"] = settings.responsible
    if settings.target == "deal":
        # a deal has no person fields: what the visitor typed goes into the comment, readable
        lines = [f"{_LABELS[c]}: {canon[c]}" for c in PERSON_IN_COMMENT if canon.get(c)]
        if canon.get("lead.comment"):
            lines.append(canon["lead.comment"])
        if (said := _consent_line(settings, consent, now)) is not None:
            lines.append(said)
        out = dict(common, pipeline=settings.pipeline, stage=settings.stage, **_consent(settings, consent, now))
        if lines:
            out["comment"] = "\n".join(lines)
        # the visitor's e-mail and phone: the deal links to the known client who has them
        for c in ("lead.email", "lead.phone"):
            if canon.get(c):
                out[c.split(".", 1)[1]] = canon[c]
        return "deal", out
    out = dict(common)
    for c in ("lead.name", "lead.email", "lead.phone", "lead.comment", "lead.company_name"):
        if canon.get(c):
            out[c.split(".", 1)[1]] = canon[c]
    out.update(_consent(settings, consent, now))
    return "lead", out


def fingerprint(form: str, settings: FormSettings, values: Mapping[str, str]) -> str:
    """What makes two posts "identical": the form and the values it maps (plus the consent box),
    keyed with the form's token so the id a visitor sees reveals nothing of other posts."""
    keep = {f: (values.get(f) or "").strip() for f in sorted(settings.fields)}
    if settings.consent_field:
        keep["\0consent"] = str(consent_given(values.get(settings.consent_field)))
    text = json.dumps([form, keep], ensure_ascii=False, sort_keys=True)
    key = settings.token.get_secret_value().encode()
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:24]
