"""Settings of the `forms` connector: one system, any number of site forms, each at its own URL.

    [systems.forms]
    type = "forms"
    [systems.forms.form.callback]          # served at POST /hooks/forms/callback
    token = "${FORM_CALLBACK_TOKEN}"
    fields = { your_name = "lead.name", tel = "lead.phone" }
    required = ["tel"]

Every key is documented on `FormSettings`; an unknown key stops the daemon at start.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

# canonical fields a form may fill, per target: the rest (responsible, source, consent, form) come
# from the form's settings, never from what a visitor posts
LEAD_FIELDS = ("lead.title", "lead.name", "lead.email", "lead.phone", "lead.comment", "lead.company_name")
DEAL_FIELDS = ("order.title", "order.comment")
# a deal has no person fields: what a visitor typed into them is written into the deal's comment
PERSON_IN_COMMENT = ("lead.name", "lead.company_name", "lead.email", "lead.phone")
FORM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class FormSettings(BaseModel):
    """One site form: who may post, what its fields mean, where the lead goes, and its guards."""

    model_config = ConfigDict(extra="forbid")

    # the form's secret: the site sends it as the `X-Syncd-Token` header or `?token=`; a post
    # without it (or with another) is answered 401
    token: SecretStr
    # optional HMAC-SHA256 of the raw body with this key, hex, in `signature_header` (a leading
    # "sha256=" is accepted); when set, a post without a valid signature is answered 403
    signature_secret: SecretStr | None = None
    signature_header: str = "X-Syncd-Signature"  # the header carrying the signature
    # the form's field names -> canonical fields (lead.name, lead.email, lead.phone, lead.comment,
    # lead.title); fields not listed are ignored (a site's hidden fields, captcha answers)
    fields: dict[str, str] = Field(default_factory=dict)
    # form field names that must be present and non-empty: a post lacking one is answered 400
    # naming the field
    required: list[str] = Field(default_factory=list)
    # groups of form fields of which at least one must be filled: [["phone", "email"]] — "a phone or
    # an e-mail"; a post with none of a group is answered 400 naming them all
    required_any: list[list[str]] = Field(default_factory=list)
    # lead: a CRM lead; deal: a deal in `pipeline` at `stage` (for CRMs run without leads)
    target: Literal["lead", "deal"] = "lead"
    pipeline: str | None = None                 # deal target: the pipeline, by name («Заявки с сайта») or id ("3")
    stage: str | None = None                    # deal target: its stage, by name («Новая заявка») or id ("C3:NEW")
    # the responsible manager set on every lead of this form (e-mail, «Имя Фамилия» or user id; see
    # syncd.names: names are resolved through the portal at start); leave it out to let
    # [rules.assign.lead] decide (e.g. `keep`: a known client's own manager)
    responsible: str | None = None
    source: str = "WEB"                         # the lead's source, by name («Веб-сайт») or SOURCE_ID
    title: str | None = None                    # the lead's title (default: the form's name), then ": <name>"
    # send: the lead goes to the CRM at once; review: it waits for an operator (`syncd review`, the
    # status page), who sends it (resolve --create) or throws it away as junk
    mode: Literal["send", "review"] = "send"
    # the consent checkbox's field name; a checked box ("on", "1", "true", "yes", "y", "да") is
    # stored as lead.consent with lead.consent_at (when syncd took the post) and lead.consent_version
    consent_field: str | None = None
    consent_version: str | None = None          # version of the consent text on the site (e.g. "2024-05")
    require_consent: bool = False               # a post without consent is answered 400
    # a field hidden from people that bots fill in: a post with it non-empty is answered like a
    # success, and nothing is stored
    honeypot: str | None = None
    # posts per `rate_window` seconds from one IP (0: no limit). A site that posts from its own
    # server (not the visitor's browser) is one IP for every visitor: give `client_ip_header` if it
    # forwards the visitor's address, else raise the limit or set 0
    rate_limit: int = Field(20, ge=0)
    rate_window: float = Field(60.0, gt=0)     # seconds of the rate limit's sliding window
    # the client IP is taken from this header's first address (a reverse proxy's X-Forwarded-For)
    # instead of the socket's peer; only when syncd sits behind a proxy that sets it
    client_ip_header: str | None = None
    # seconds within which an identical post (same fields) is the same submission: the same answer
    # and id, no second lead (0: off)
    duplicate_window: float = Field(600.0, ge=0)
    max_body: int = Field(64 * 1024, ge=256)    # bytes; a larger body is answered 413 unread

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict[str, str]) -> dict[str, str]:
        known = set(LEAD_FIELDS)
        for form_field, canonical in v.items():
            if canonical not in known:
                raise ValueError(f"fields.{form_field}: {canonical!r} is not a field a form may fill "
                                 f"(one of {', '.join(LEAD_FIELDS)})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> FormSettings:
        if not self.fields:
            # nothing mapped would make every post the same, empty submission
            raise ValueError("fields: map at least one of the form's fields (e.g. { name = \"lead.name\" })")
        if self.target == "deal" and not (self.pipeline and self.stage):
            raise ValueError("target = \"deal\" needs `pipeline` and `stage`")
        if self.require_consent and not self.consent_field:
            raise ValueError("require_consent needs `consent_field` (the checkbox's field name)")
        for group in self.required_any:
            if len(group) < 2:
                raise ValueError(f"required_any: {group!r} needs at least two fields (one alone goes in `required`)")
        if self.honeypot and (self.honeypot in self.fields or self.honeypot in self.required
                              or any(self.honeypot in g for g in self.required_any)):
            raise ValueError(f"honeypot {self.honeypot!r} is also a mapped or required field")
        if len(self.token.get_secret_value()) < 8:
            raise ValueError("token: at least 8 characters (e.g. `openssl rand -hex 16`)")
        return self


class FormsSettings(BaseModel):
    """The forms of one site (or several): `form.<name>` tables, each served at /hooks/forms/<name>."""

    model_config = ConfigDict(extra="forbid")

    # the forms by name ([systems.<name>.form.<form>]); <form> is the last part of the form's URL
    form: dict[str, FormSettings] = Field(default_factory=dict)

    @field_validator("form")
    @classmethod
    def _names(cls, v: dict[str, FormSettings]) -> dict[str, FormSettings]:
        for name in v:
            if not FORM_NAME.match(name):
                raise ValueError(f"form name {name!r}: lower-case letters, digits, '-' and '_' (it is a URL part)")
        return v
