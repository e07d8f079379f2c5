"""The engine's intake hook for messages: what a new mail or chat message becomes in the CRM.

A batch read from a mailbox goes to the mail routing stage (route_mail.py), one read from a
Telegram or VK system to the chat routing stage (route_chat.py); other systems' batches pass
through. The routes are the systems' settings (`routes_from`), replaced once names in them
resolve to ids (the daemon's live check).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from syncd.pipeline.route_chat import ChatRoute, ChatRouting, chat_routes_from
from syncd.pipeline.route_mail import MailRoute, MailRouter
from syncd.pipeline.route_mail import routes_from as mail_routes_from


def routes_from(settings: Any) -> dict[str, MailRoute | ChatRoute]:
    """Every message-bringing system's route: mailboxes and chat channels, by system name."""
    return {**mail_routes_from(settings), **chat_routes_from(settings)}


class Router:
    """Routes each batch's new messages by the kind of system they came from."""

    def __init__(self, routes: Mapping[str, MailRoute | ChatRoute]) -> None:
        self.routes = dict(routes)

    @property
    def routes(self) -> dict[str, MailRoute | ChatRoute]:
        return {**self.mail.routes, **self.chats}

    @routes.setter
    def routes(self, routes: Mapping[str, MailRoute | ChatRoute]) -> None:
        self.mail = MailRouter({s: r for s, r in routes.items() if isinstance(r, MailRoute)})
        self.chats = {s: r for s, r in routes.items() if isinstance(r, ChatRoute)}

    def __call__(self, run: Any, ents: dict[str, Any], new_ids: Sequence[str], region: str) -> set[str]:
        route = self.chats.get(run.system)
        if route is None:
            return self.mail(run, ents, new_ids, region)
        msgs = [e for e in new_ids if ents[e].type == "message" and ents[e].golden and not ents[e].hold]
        return ChatRouting(run, route, ents, list(self.chats)).decide_all(msgs) if msgs else set()


__all__ = ["Router", "routes_from"]
