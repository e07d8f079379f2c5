"""The HTTP control API of the PBX sandbox (not part of any PBX), plus Zadarma's recording-link method
``GET /v1/pbx/record/request/`` and the recordings it links to. Routes: the package docstring."""

from __future__ import annotations

import time
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncd.sandbox.pbx.ami import AmiFaults, AmiServer
from syncd.sandbox.pbx.cloud import CloudFaults, CloudSender
from syncd.sandbox.pbx.scenario import Call, Pbx

# a few bytes that start like an MP3 (ID3 tag): the sandbox has no audio
FAKE_MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 118


def create_app(pbx: Pbx, ami: AmiServer, cloud: CloudSender) -> Starlette:
    base_url = {"url": ""}

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        return (await request.json()) if raw else {}

    async def extensions(request: Request) -> Response:
        if request.method == "POST":
            b = await body(request)
            if not b.get("number"):
                return JSONResponse({"error": "number is required"}, 400)
            pbx.add_extension(str(b["number"]), str(b.get("name", "")))
        return JSONResponse([vars(e) for e in pbx.extensions.values()])

    async def calls(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse([c.to_dict() for c in pbx.calls])
        b = await body(request)
        allowed = {"from_number", "to_extension", "answered", "talk_seconds", "direction", "busy",
                   "ring_seconds", "caller_name", "did", "recorded"}
        unknown = sorted(set(b) - allowed)
        if unknown or not b.get("from_number") or not b.get("to_extension"):
            return JSONResponse({"error": f"from_number and to_extension are required; unknown keys {unknown}"},
                                400)
        try:
            call = Call(**{k: (str(v) if k in ("from_number", "to_extension") else v) for k, v in b.items()})
            # the AMI and webhook deliveries block; run them off the event loop
            await anyio.to_thread.run_sync(pbx.place, call)
        except ValueError as e:
            return JSONResponse({"error": str(e)}, 400)
        return JSONResponse(call.to_dict(), 201)

    async def faults(request: Request) -> Response:
        if request.method == "PATCH":
            b = await body(request)
            if "ami" in b:
                a = b["ami"]
                ami.faults = AmiFaults(list(a.get("duplicate", [])), [tuple(p) for p in a.get("swap", [])],
                                       a.get("drop_after"))
            if "cloud" in b:
                c = b["cloud"]
                cloud.faults = CloudFaults(list(c.get("duplicate", [])), [tuple(p) for p in c.get("swap", [])],
                                           int(c.get("retries", 0)), float(c.get("retry_delay", 0.2)))
        return JSONResponse({"ami": vars(ami.faults), "cloud": vars(cloud.faults)})

    async def webhook(request: Request) -> Response:
        if request.method == "PATCH":
            b = await body(request)
            if "url" in b:
                cloud.url = b["url"]
            if "secret" in b:
                cloud.secret = b["secret"]
            if b.get("verify"):
                return JSONResponse({"url": cloud.url, "verified": cloud.verify_url()})
        return JSONResponse({"url": cloud.url, "secret": cloud.secret})

    async def log(request: Request) -> Response:
        if request.method == "DELETE":
            ami.log.clear()
            cloud.log.clear()
            return Response(status_code=204)
        return JSONResponse({"ami": ami.log, "cloud": cloud.log})

    async def record_request(request: Request) -> Response:
        q = request.query_params
        call_id, pbx_call_id = q.get("call_id"), q.get("pbx_call_id")
        found = [c for c in pbx.calls if c.ids.get("call_id_with_rec")
                 and (c.ids["call_id_with_rec"] == call_id or c.ids["pbx_call_id"] == pbx_call_id)]
        if not found:
            return JSONResponse({"status": "error", "message": "Record not found"}, 400)
        lifetime = int(q.get("lifetime", 1800))
        till = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + lifetime))
        origin = base_url["url"] or str(request.base_url).rstrip("/")
        links = [f"{origin}/records/{c.ids['call_id_with_rec']}.mp3" for c in found]
        if call_id:
            return JSONResponse({"status": "success", "link": links[0], "lifetime_till": till})
        return JSONResponse({"status": "success", "links": links, "lifetime_till": till})

    async def record_file(request: Request) -> Response:
        rec = request.path_params["rec"]
        if not any(c.ids.get("call_id_with_rec") == rec for c in pbx.calls):
            return Response(status_code=404)
        return Response(FAKE_MP3, media_type="audio/mpeg")

    app = Starlette(routes=[
        Route("/_sandbox/extensions", extensions, methods=["GET", "POST"]),
        Route("/_sandbox/calls", calls, methods=["GET", "POST"]),
        Route("/_sandbox/faults", faults, methods=["GET", "PATCH"]),
        Route("/_sandbox/webhook", webhook, methods=["GET", "PATCH"]),
        Route("/_sandbox/log", log, methods=["GET", "DELETE"]),
        Route("/v1/pbx/record/request/", record_request, methods=["GET"]),
        Route("/records/{rec}.mp3", record_file, methods=["GET"]),
    ])
    app.state.base_url = base_url
    return app
