"""A PBX sandbox for testing syncd's calls connector: an Asterisk Manager Interface (AMI) server and a
Zadarma-style cloud PBX that POSTs call notifications, both fed by the same scripted calls. Checked by
``panoramisk`` 1.4 (``from panoramisk import Manager``, run unchanged) and by a local HTTP receiver that
recomputes Zadarma's signature (tests/sandbox/test_pbx_sandbox.py). Shares no code with any connector.

Start it::

    from syncd.sandbox.pbx import Call, start
    h = start(webhook_url="http://127.0.0.1:8080/zadarma")   # -> PbxHandle (a ServerHandle)
    h.ami_port, h.extra["ami_username"], h.extra["ami_secret"] # AMI on 127.0.0.1:h.ami_port
    h.url                                                      # the control API / Zadarma API origin
    pbx = h.extra["state"]                                     # the Pbx (scenario.py)
    pbx.add_extension("103", "Вера Козлова")
    pbx.call("+79161234567", "101", answered=True, talk_seconds=42)          # inbound, answered
    pbx.call("+79161234567", "102", answered=False)                          # inbound, nobody answered
    pbx.call("101", "+74951112233", direction="outbound", talk_seconds=10)   # extension 101 dials out
    pbx.place(Call.inbound("+79160000000", "101", busy=True))                # the extension was busy
    h.extra["ami"].faults = AmiFaults(duplicate=["Hangup"], swap=[("DialEnd", "Cdr")], drop_after="DialEnd")
    h.extra["cloud"].faults = CloudFaults(duplicate=["NOTIFY_END"], swap=[("NOTIFY_START", "NOTIFY_END")],
                                          retries=2, retry_delay=0.1)
    h.extra["ami"].log, h.extra["cloud"].log                   # what was sent (events; posts with status)
    ...; h.stop()

``Pbx.call``/``place`` returns once every AMI session has been written to and (unless the sender runs with
``background=True``) every webhook delivery has been answered. A call's times come from the PBX clock,
not real time: a 60 s call is emitted at once, its events carrying the scripted start/answer/end.
``Call`` is the reusable scenario object: ``Call(from_number, to_extension, answered, talk_seconds,
direction, busy=, ring_seconds=, caller_name=, did=, recorded=, start=)``; once placed, ``call.ids`` holds
its Asterisk ``uniqueid``/``linkedid``/``channel``/``peer_channel`` and Zadarma ``pbx_call_id``/
``call_id_with_rec``. For outbound calls ``from_number`` is the extension and ``to_extension`` the
outside number (``Call.outbound(ext, number)``).

Control API (JSON, not part of any PBX; control.py)::

    GET|POST  /_sandbox/extensions   {"number", "name"}
    GET|POST  /_sandbox/calls        {"from_number", "to_extension", "answered", "talk_seconds", "direction",
                                     "busy", "ring_seconds", "caller_name", "did", "recorded"} -> 201 the call
    GET|PATCH /_sandbox/faults       {"ami": {"duplicate": [..], "swap": [[a, b]], "drop_after": n|"Event"},
                                      "cloud": {"duplicate": [..], "swap": [[a, b]], "retries", "retry_delay"}}
    GET|PATCH /_sandbox/webhook      {"url", "secret", "verify": true (runs the zd_echo check)}
    GET|DELETE /_sandbox/log         {"ami": [...], "cloud": [...]}
    GET /v1/pbx/record/request/?call_id=|pbx_call_id=  Zadarma's recording-link method -> {"status":
        "success", "link" (or "links"), "lifetime_till"}; the link serves a stub MP3. API auth not checked.

AMI (ami.py), as main/manager.c of Asterisk 20.20.1 (the asterisk/asterisk repository) does it:
  * greeting ``Asterisk Call Manager/<AMI_VERSION>\\r\\n``; AMI_VERSION is 5.0.5 in Asterisk 16.30, 7.0.3 in
    18.26, 9.0.0 in 20.20 (include/asterisk/manager.h). Default ``ami_version="18"`` -> ``7.0.3``; pass
    "16"/"20" or a literal. (The "5.0.x" of the brief is Asterisk 16's.)
  * ``Login`` (Username/Secret; optional ``Events`` = the eventmask): success -> ``Response: Success``,
    ``Message: Authentication accepted`` then ``Event: FullyBooted`` (Privilege system,all; Uptime,
    LastReload, ``Status: Fully Booted``) if the mask takes "system". Wrong user/secret -> after a 1 s
    pause (manager.c ``sleep(1)``; ``auth_fail_delay``) ``Response: Error`` ``Message: Authentication
    failed`` and the connection is closed (action_login returns -1). Before login every action but
    Login/Logoff/Challenge -> ``Message: Permission denied``.
  * ``Ping`` -> ``Response: Success``, ``Ping: Pong``, ``Timestamp: <sec>.<usec>`` (no Message).
    ``Logoff`` -> ``Response: Goodbye``, ``Message: Thanks for all the fish.``, then close.
    ``Events`` (``EventMask: on|off|call,cdr|<number>``) -> ``Response: Success`` ``Events: On|Off``,
    bad mask -> ``Invalid event mask``. Unknown -> ``Response: Error``, ``Message: Invalid/unknown
    command: <Action>. Use Action: ListCommands to show available commands.`` ``ActionID`` is echoed
    right after ``Response``. Missing Action -> ``Missing action in request``.
  * event masks: strings_to_mask (digits, on/yes/true = all, off/no/false = none, class list); events are
    sent only to logged-in sessions whose mask has the event's class; ``Privilege: <class>,all``.
  * channel headers (main/manager_channels.c ast_manager_build_channel_state_string_prefix): Channel,
    ChannelState, ChannelStateDesc, CallerIDNum, CallerIDName, ConnectedLineNum, ConnectedLineName (empty
    -> ``<unknown>``), Language, AccountCode, Context, Exten, Priority, Uniqueid, Linkedid; the dialed
    channel's copy prefixed ``Dest`` in DialBegin/DialEnd (+ ``DialString`` / ``DialStatus``). Hangup adds
    ``Cause`` and ``Cause-txt`` (ast_cause2str: 16 Normal Clearing, 17 User busy, 0 Unknown). Bridge
    headers (main/manager_bridges.c): BridgeUniqueid, BridgeType ``basic``, BridgeTechnology
    ``simple_bridge``, BridgeCreator/BridgeName ``<unknown>``, BridgeNumChannels, BridgeVideoSourceMode
    ``none``. Newexten (class dialplan): Extension, Application, AppData.
  * ``Cdr`` (class cdr, cdr/cdr_manager.c): AccountCode, Source, Destination, DestinationContext, CallerID
    (``"Name" <num>``), Channel, DestinationChannel, LastApplication ``Dial``, LastData, StartTime,
    AnswerTime (empty if unanswered), EndTime (``%Y-%m-%d %H:%M:%S``, server local time, ``tz``),
    Duration (end-start), BillableSeconds (end-answer), Disposition (ast_cdr_disp2str: ANSWERED, ``NO
    ANSWER``, BUSY), AMAFlags DOCUMENTATION, UniqueID (the first channel's), UserField.
  * channel states (ast_state2str): 0 Down, 4 Ring, 5 Ringing, 6 Up. Uniqueid ``<epoch>.<seq>``;
    Linkedid = the first channel's Uniqueid; channel names ``PJSIP/<endpoint>-<8 hex>``.

  Sequences (inbound, trunk channel A -> extension channel B; outbound, B and A swap roles):
    answered: Newchannel A (Ring) · Newexten A (Dial) · Newchannel B (Down) · DialBegin · Newstate B
    (Ringing) · Newstate B (Up) · DialEnd ANSWER · Newstate A (Up) · BridgeCreate · BridgeEnter B ·
    BridgeEnter A · BridgeLeave (company side) · Hangup (company side, 16) · BridgeLeave · BridgeDestroy ·
    Hangup (16) · Cdr ANSWERED.
    no answer: … Newstate B (Ringing) · DialEnd NOANSWER · Hangup B (0 Unknown) · Hangup A (16) · Cdr
    ``NO ANSWER`` (BillableSeconds 0).
    busy: … DialBegin · DialEnd BUSY · Hangup B (17) · Hangup A (17) · Cdr BUSY.
  The dialed channel's Newchannel comes BEFORE DialBegin (app_dial.c publishes the dial after creating the
  peer channel: DialBegin carries the peer's snapshot); the peer's Exten is the caller's (app_dial copies
  it), its context is the endpoint's (``from-internal``).
  Assumed (not confirmed from a live capture): which side's BridgeEnter/Hangup comes first; Cause 0 on
  the dialed channel after a Dial timeout (app_dial's hanguptree passes -1, so no cause is set) and 17
  on the caller after BUSY; the outbound trunk channel's CallerIDNum = the dialed number; Newexten is
  the only dialplan event (a real PBX also sends VarSet, NewConnectedLine, DeviceStateChange, …, which a
  client must ignore anyway); no Timestamp header (timestampevents=no, the default).
  Faults (``AmiFaults``): ``duplicate`` event names (sent twice), ``swap`` pairs, ``drop_after`` (n events
  or an event name): the server aborts every AMI connection mid-call; panoramisk reconnects by itself.

Cloud PBX (cloud.py): Zadarma. Chosen because its notification format is public in code form: the
vendor's own PHP library zadarma/user-api-v1 (lib/Webhook/Notify*.php: each event's fields and its
getSignatureString; lib/Api.php getWebhookEvent: ``Signature`` header, ``event`` form field;
examples/callinfo_callback.php: ``base64_encode(hash_hmac('sha1', caller_id.called_did.call_start,
secret))``, the ``zd_echo`` URL check), confirmed by an independent Python receiver (DjangoCRM's
voip/views ``VoIPWebHook``: ``request.POST``, hex HMAC-SHA1 compared after base64-decoding
``Signature``), and zadarma.com/support/api (the "notifications of the external server" feature).
  * POST ``application/x-www-form-urlencoded``; header ``Signature`` = base64(hex(HMAC-SHA1(secret,
    signed string))) — sent only when a secret is set (as Zadarma: only with an API key and secret).
  * NOTIFY_START: event, call_start, pbx_call_id, caller_id, called_did; signs caller_id+called_did+call_start.
    NOTIFY_INTERNAL: + internal; same signature. NOTIFY_ANSWER: caller_id, destination (the extension that
    answered), call_start, pbx_call_id, internal; signs caller_id+destination+call_start. NOTIFY_END: event,
    call_start, pbx_call_id, caller_id, called_did, internal, duration, disposition (answered|busy|no answer),
    status_code (Q.931: 16|17|19), is_recorded (1|0), call_id_with_rec; signs caller_id+called_did+call_start.
    NOTIFY_OUT_START: call_start, pbx_call_id, internal, destination; NOTIFY_OUT_END: + caller_id, duration,
    disposition, status_code, is_recorded, call_id_with_rec; both sign internal+destination+call_start.
    NOTIFY_RECORD: call_id_with_rec, pbx_call_id; signs pbx_call_id+call_id_with_rec. The recording itself
    is fetched with ``GET /v1/pbx/record/request/`` (call_id or pbx_call_id) -> link, lifetime_till
    (lib/Response/PbxRecordRequest.php); this sandbox serves that method at ``h.url``.
  * ``pbx_call_id`` is the same across a call's events (the PHP docs: "permanent ID of the external call").
  Assumed: call_start is ``YYYY-MM-DD HH:MM:SS`` in the account's time zone; pbx_call_id looks like
  ``in_<hex>``/``out_<hex>`` and call_id_with_rec like ``<epoch>.<n>``; ``duration`` is the talk time
  (0 unanswered); NOTIFY_OUT_END's caller_id is the company DID; NOTIFY_RECORD follows NOTIFY_END; the
  User-Agent; retries (Zadarma documents none: ``CloudFaults.retries`` is a sandbox knob); Zadarma's
  source address (185.45.152.42 in the examples) cannot be reproduced on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syncd.sandbox.pbx.ami import AmiEvent, AmiFaults, AmiServer, AmiUser, call_events
from syncd.sandbox.pbx.cloud import CloudFaults, CloudSender, notifications, signed_string, zadarma_signature
from syncd.sandbox.pbx.control import create_app
from syncd.sandbox.pbx.scenario import Call, Extension, Pbx
from syncd.sandbox.server import ServerHandle, serve_in_thread

__all__ = ["AmiEvent", "AmiFaults", "AmiServer", "AmiUser", "Call", "CloudFaults", "CloudSender", "Extension",
           "Pbx", "PbxHandle", "call_events", "create_app", "notifications", "signed_string", "start",
           "zadarma_signature"]


@dataclass
class PbxHandle(ServerHandle):
    """The control API's ServerHandle; ``stop()`` also stops the AMI server."""

    @property
    def ami_port(self) -> int:
        return int(self.extra["ami"].port)

    def stop(self, timeout: float = 10.0) -> None:
        self.extra["ami"].stop()
        self.extra["cloud"].detach()
        super().stop(timeout)


def start(host: str = "127.0.0.1", port: int = 0, *, ami_port: int = 0, pbx: Pbx | None = None,
          ami_username: str = "syncd", ami_secret: str = "syncd-secret", ami_version: str = "18",
          auth_fail_delay: float = 1.0, pace: float = 0.0, webhook_url: str | None = None,
          webhook_secret: str | None = "zadarma-secret", background_webhooks: bool = False,
          **uvicorn_opts: Any) -> PbxHandle:
    """Start the AMI server, the webhook sender and the control API; ``handle.extra`` has ``state``
    (the Pbx), ``ami``, ``cloud``, ``app``, ``ami_host``, ``ami_port``, ``ami_username``, ``ami_secret``,
    ``webhook_secret``."""
    pbx = pbx or Pbx()
    ami = AmiServer(pbx, host, ami_port, users=[AmiUser(ami_username, ami_secret)], version=ami_version,
                    auth_fail_delay=auth_fail_delay, pace=pace).start()
    cloud = CloudSender(pbx, webhook_url, secret=webhook_secret, background=background_webhooks).attach()
    app = create_app(pbx, ami, cloud)
    try:
        h = serve_in_thread(app, host, port, **uvicorn_opts)
    except Exception:
        ami.stop()
        raise
    handle = PbxHandle(h.server, h.thread, h.host, h.port, scheme=h.scheme)
    app.state.base_url["url"] = handle.url
    handle.extra.update(state=pbx, ami=ami, cloud=cloud, app=app, ami_host=host, ami_port=ami.port,
                        ami_username=ami_username, ami_secret=ami_secret, webhook_secret=webhook_secret)
    return handle
