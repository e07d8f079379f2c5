"""Credentials: JWT access tokens, single-use authorization codes and refresh tokens, the OAuth 2 token
endpoint's grants and the check of ``Authorization: Bearer``.

Access tokens are JWTs because amocrm-api reads their ``exp`` claim to decide when to refresh (its
`TokenManager._is_expire`); they are signed HS256 with the account's secret (real ones are RS256).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from syncd.sandbox.amocrm.state import Account, AmoError, Grant, Integration, Token, problem

ACCESS_TTL = 86400                 # 24 h (Kommo docs)
REFRESH_TTL = 90 * 86400           # 3 months (unconfirmed)
CODE_TTL = 20 * 60                 # 20 min (amoCRM docs, as quoted by aioamocrm)
LONG_LIVED_TTL = 365 * 86400       # chosen by the admin in the UI: 1 day to 5 years


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(acc: Account, claims: dict[str, Any]) -> str:
    head = _b64(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(acc.secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def add_integration(acc: Account, name: str, redirect_uri: str) -> Integration:
    with acc.lock:
        i = Integration(secrets.token_hex(16)[:8] + "-" + secrets.token_hex(14), secrets.token_urlsafe(48),
                        redirect_uri, name)
        acc.integrations[i.client_id] = i
        return i


def issue_access(acc: Account, client_id: str, user_id: int, expires_in: float = ACCESS_TTL, *,
                 long_lived: bool = False) -> Token:
    """An access token valid for `expires_in` seconds of the account's clock."""
    now = acc.now()
    claims = {"aud": client_id, "jti": secrets.token_hex(16), "iat": int(now), "nbf": int(now),
              "exp": int(now + expires_in), "sub": str(user_id), "account_id": acc.id,
              "base_domain": "amocrm.ru", "version": 2, "scopes": ["crm", "files", "notifications"],
              "api_domain": "api-b.amocrm.ru"}
    with acc.lock:
        tok = Token(_jwt(acc, claims), client_id, user_id, now + expires_in, long_lived)
        acc.tokens[tok.value] = tok
        return tok


def issue_code(acc: Account, client_id: str, user_id: int) -> str:
    code = "def50200" + secrets.token_hex(48)
    with acc.lock:
        acc.grants[code] = Grant("code", client_id, user_id, acc.now() + CODE_TTL)
    return code


def token_pair(acc: Account, client_id: str, user_id: int, expires_in: float = ACCESS_TTL) -> dict[str, Any]:
    """The token endpoint's answer: a new access token and a new single-use refresh token."""
    access = issue_access(acc, client_id, user_id, expires_in)
    refresh = "def50200" + secrets.token_hex(96)
    with acc.lock:
        acc.grants[refresh] = Grant("refresh", client_id, user_id, acc.now() + REFRESH_TTL)
    return {"token_type": "Bearer", "expires_in": int(expires_in), "access_token": access.value,
            "refresh_token": refresh}


def oauth_error(status: int, hint: str) -> AmoError:
    """The token endpoint's refusal, as amoCRM sends it (body seen in amocrm-api-php issues #123, #315)."""
    return AmoError(status, {"hint": hint, "title": "Некорректный запрос",
                             "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
                             "status": status,
                             "detail": "В запросе отсутствует ряд параметров или параметры невалидны"})


def grant(acc: Account, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /oauth2/access_token``: trade a code or a refresh token (each once) for a token pair."""
    with acc.lock:
        integ = acc.integrations.get(str(body.get("client_id")))
        if integ is None or not hmac.compare_digest(integ.client_secret, str(body.get("client_secret", ""))):
            raise oauth_error(401, "Client authentication failed")
        kind = {"authorization_code": "code", "refresh_token": "refresh"}.get(str(body.get("grant_type")))
        if kind is None:
            raise oauth_error(400, "Check the `grant_type` parameter")
        if kind == "code" and body.get("redirect_uri") != integ.redirect_uri:
            raise oauth_error(401, "Client authentication failed")
        # a bad code is a 400, a bad refresh token a 401 (what the PHP SDK's users report)
        status, what, noun = (400, "Authorization code", "authorization code") if kind == "code" else (
            401, "Token", "refresh token")
        g = acc.grants.get(str(body.get("code" if kind == "code" else "refresh_token")))
        if g is None or g.kind != kind or g.client_id != integ.client_id:
            raise oauth_error(status, f"Cannot decrypt the {noun}")
        if g.used:
            raise oauth_error(status, f"{what} has been revoked")
        if g.expires_at <= acc.now():
            raise oauth_error(status, f"{what} has expired")
        g.used = True
        return token_pair(acc, integ.client_id, g.user_id)


def bearer(acc: Account, header: str) -> Token:
    """The token of a request; 401 when it is missing, unknown or expired by the account's clock."""
    value = header[7:].strip() if header[:7].lower() == "bearer " else ""
    with acc.lock:
        tok = acc.tokens.get(value)
        if tok is None or tok.expires_at <= acc.now():
            raise problem(401, "Неверный логин или пароль")
        return tok


def default_credentials(acc: Account) -> dict[str, Any]:
    """A private integration with a long-lived token of the admin: what ``start()`` puts in
    ``handle.extra``."""
    integ = add_integration(acc, "syncd", "https://example.com/amocrm/oauth")
    admin = min(acc.users) if acc.users else 0
    tok = issue_access(acc, integ.client_id, admin, LONG_LIVED_TTL, long_lived=True)
    return {"subdomain": acc.subdomain, "account_id": acc.id, "client_id": integ.client_id,
            "client_secret": integ.client_secret, "redirect_uri": integ.redirect_uri,
            "long_lived_token": tok.value, "user_id": admin}
