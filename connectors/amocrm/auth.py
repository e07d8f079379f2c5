"""Access tokens: a long-lived token, or OAuth 2 with single-use refresh tokens kept in the connector's
state ("oauth": {access, refresh, expires_at}).

amoCRM's refresh tokens (and authorization codes) work ONCE. Two instances (or two threads) that
refreshed with the same token would leave one of them with a revoked token, so:

- within a process a lock serialises refreshes;
- across instances the new pair is stored with `state_swap(key, old, new)` (compare-and-set) as soon
  as the token endpoint answers; an instance that loses the swap, or whose refresh token was
  "revoked" by the other's refresh, re-reads the state and uses the winner's tokens;
- only when the state holds nothing newer is a revoked/expired grant an error, telling the admin how
  to re-authorise (a new auth_code).

Tokens never appear in logs or exception messages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
import structlog

from connectors.amocrm.settings import AmoCRMSettings
from syncd.errors import PermanentError, TransientError

log = structlog.get_logger("syncd.amocrm")

STATE_KEY = "oauth"
EARLY = 60.0               # refresh this many seconds before the access token expires

REAUTHORIZE = ("amoCRM refused the OAuth grant ({hint}). Re-authorise the integration: open amoCRM -> "
               "Настройки -> Интеграции -> the integration -> Ключи и доступы, copy a new authorization "
               "code and set it as auth_code of system {system!r}, then restart syncd. / Получите новый код "
               "авторизации (auth_code) в настройках интеграции amoCRM и перезапустите syncd.")


class MemoryState:
    """State for a connector without a context (unit tests): a dict with compare-and-set."""

    def __init__(self) -> None:
        self._kv: dict[str, Any] = {}
        self._lock = threading.Lock()

    def state_get(self, key: str, default: Any = None) -> Any:
        return self._kv.get(key, default)

    def state_swap(self, key: str, expected: Any, value: Any) -> bool:
        with self._lock:
            if self._kv.get(key) != expected:
                return False
            if value is None:
                self._kv.pop(key, None)
            else:
                self._kv[key] = value
            return True


class Tokens:
    """The bearer token for the next request, refreshed when it expires or the API says 401."""

    def __init__(self, settings: AmoCRMSettings, name: str, state: Any, session: requests.Session,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings, self.name, self.state, self.session = settings, name, state, session
        self._clock = clock
        self._lock = threading.Lock()
        self.refreshes = 0                  # grants this process spent (tests, diagnostics)
        self._cur: dict[str, Any] | None = None   # the pair in use (the state is read when it expires)

    def _saved(self) -> dict[str, Any] | None:
        got = self.state.state_get(STATE_KEY, None)
        return dict(got) if isinstance(got, Mapping) and got.get("access") else None

    def access(self) -> str:
        """A token good for now (a refresh first when the saved one is expired or missing)."""
        s = self.settings
        if s.token is not None:
            return s.token.get_secret_value()
        for pair in (self._cur, self._saved()):
            if pair is not None and float(pair.get("expires_at") or 0) > self._clock() + EARLY:
                self._cur = pair
                return str(pair["access"])
        return self.refresh(self._cur.get("access") if self._cur else None)

    def refresh(self, rejected: str | None) -> str:
        """New tokens, unless another thread or instance has replaced `rejected` already."""
        s = self.settings
        if s.token is not None:
            raise PermanentError("amoCRM refused the long-lived token (401): issue a new one in the "
                                 "integration's Keys and access and set it as token / выпустите новый "
                                 "долгосрочный токен", connector=self.name, code="UNAUTHORIZED")
        with self._lock:
            before = self.state.state_get(STATE_KEY, None)
            saved = self._saved()
            if saved is not None and saved.get("access") != rejected and \
                    float(saved.get("expires_at") or 0) > self._clock() + EARLY:
                self._cur = saved                    # somebody refreshed meanwhile
                return str(saved["access"])
            if saved is not None and saved.get("refresh"):
                body = {"grant_type": "refresh_token", "refresh_token": saved["refresh"]}
            elif s.auth_code is not None and saved is None:
                body = {"grant_type": "authorization_code", "code": s.auth_code.get_secret_value()}
            elif s.refresh_token is not None:
                body = {"grant_type": "refresh_token", "refresh_token": s.refresh_token.get_secret_value()}
            else:
                raise PermanentError(REAUTHORIZE.format(hint="no refresh token", system=self.name),
                                     connector=self.name, code="NO_GRANT")
            try:
                data = self._grant(body)
            except PermanentError:
                # a spent grant: another instance may have used it and be saving the pair it got
                # (its save follows its answer by milliseconds): wait for that before giving up
                now_saved = self._wait_for_other(saved)
                if now_saved is not None:
                    self._cur = now_saved
                    return str(now_saved["access"])
                if body["grant_type"] == "authorization_code" and s.refresh_token is not None:
                    data = self._grant({"grant_type": "refresh_token",
                                        "refresh_token": s.refresh_token.get_secret_value()})
                else:
                    raise
            new = {"access": data["access_token"], "refresh": data.get("refresh_token"),
                   "expires_at": self._clock() + float(data.get("expires_in") or 86400)}
            self.refreshes += 1
            # store at once: the refresh token just spent is dead, the new one is the only one
            if not self.state.state_swap(STATE_KEY, before, new):
                winner = self._saved()
                if winner is not None:
                    # another instance stored its pair first: use it (ours stays valid, unused)
                    log.info("oauth_refresh_lost_race", system=self.name)
                    self._cur = winner
                    return str(winner["access"])
            self._cur = new
            log.info("oauth_refreshed", system=self.name, grant=body["grant_type"])
            return str(new["access"])

    def _wait_for_other(self, saved: dict[str, Any] | None, wait: float = 3.0) -> dict[str, Any] | None:
        """The pair another instance saved after spending the grant `saved` held, if it saves one
        within `wait` seconds; None when nobody does (then the grant was spent elsewhere: re-authorize)."""
        deadline = time.monotonic() + wait
        while True:
            now_saved = self._saved()
            if now_saved is not None and now_saved != saved:
                return now_saved
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def _grant(self, body: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        assert s.client_id and s.client_secret and s.redirect_uri
        payload = {**body, "client_id": s.client_id, "client_secret": s.client_secret.get_secret_value(),
                   "redirect_uri": s.redirect_uri}
        try:
            r = self.session.post(s.origin + "/oauth2/access_token", json=payload, timeout=s.timeout)
        except requests.RequestException as exc:
            raise TransientError(f"token endpoint: {type(exc).__name__}", connector=self.name,
                                 code="CONNECTION") from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code == 200 and isinstance(data, dict) and data.get("access_token"):
            return data
        if r.status_code == 429 or r.status_code >= 500 or not isinstance(data, dict):
            raise TransientError(f"token endpoint: HTTP {r.status_code}", connector=self.name,
                                 code=f"HTTP_{r.status_code}")
        hint = str(data.get("hint") or data.get("detail") or data.get("title") or r.status_code)
        raise PermanentError(REAUTHORIZE.format(hint=hint, system=self.name), connector=self.name,
                             code="OAUTH_" + str(r.status_code))
