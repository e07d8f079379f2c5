"""`im.notify.system.add` / `im.notify.personal.add` / `im.notify` as the portal answers them
(b24restdocs `api-reference/chats/notifications/im-notify-system-add.md`).

`TAG` is "a unique tag for the notification within the application: when adding a notification
with an existing tag, other notifications will be removed", and via a webhook it is to be passed
"with `CLIENT_ID`". So the tag's namespace is the application: an OAuth app's own client id, or
the `CLIENT_ID` a webhook caller sends. A new notice with the same tag for the same user replaces
the earlier one: the user sees one. Sandbox choice where the docs are silent: a webhook call with
`TAG` but without `CLIENT_ID` has no application to scope the tag to, so the tag does not replace
anything (the notice is added, the tag kept as given).

`MESSAGE` is trimmed; errors as documented: 400 `USER_ID_EMPTY`, 400 `MESSAGE_EMPTY`.
"""

from __future__ import annotations

from typing import Any

from syncd.sandbox.bitrix24.common import Ctx, arg
from syncd.sandbox.bitrix24.portal import BxError


def notify(ctx: Ctx, params: dict[str, Any], kind: str = "system") -> int:
    p = ctx.portal
    raw_uid = arg(params, "USER_ID") or arg(params, "to")
    try:
        uid = int(raw_uid)
    except (TypeError, ValueError):
        uid = 0
    if uid <= 0:
        raise BxError("USER_ID_EMPTY", "User ID can't be empty", 400)
    msg = str(arg(params, "MESSAGE") or arg(params, "message") or "").strip()
    if not msg:
        raise BxError("MESSAGE_EMPTY", "Message can't be empty", 400)
    tag = arg(params, "TAG")
    tag = str(tag) if tag not in (None, "") else None
    app = p.client_id if ctx.auth == "oauth" else (str(arg(params, "CLIENT_ID") or "") or None)
    with p.lock:
        if uid not in p.users:
            raise BxError("ERROR_CORE", "User not found", 400)    # sandbox choice: the docs are silent
        nid = p.next_id("notify")
        note = {"ID": nid, "USER_ID": uid, "MESSAGE": msg, "FROM": ctx.user_id, "TYPE": kind, "TAG": tag,
                "SUB_TAG": arg(params, "SUB_TAG"), "CLIENT_ID": app, "DATE": p.now_bx(), "REPLACED": []}
        scope = (app, tag) if (app and tag) else None
        if scope is not None:
            kept = []
            for n in p.notifications:
                if n["USER_ID"] == uid and n.get("_scope") == scope:
                    note["REPLACED"].append(n["ID"])
                else:
                    kept.append(n)
            p.notifications = kept
        note["_scope"] = scope
        p.notifications.append(note)
        p.notify_log.append(note)
    return nid


def public(n: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in n.items() if not k.startswith("_")}
