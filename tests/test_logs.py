"""syncd.logs: JSON/console output, stdlib routing, run context, and that secrets never reach the output."""

from __future__ import annotations

import io
import json
import logging
import warnings

import pytest
import structlog
from structlog.testing import capture_logs

from syncd.logs import (
    MASK,
    REDACTING_PROCESSORS,
    bind_run,
    clear_secrets,
    configure_logging,
    redact_secrets,
    redact_text,
    register_secret,
    unregister_secret,
)

PASSWORD = "hunter2-Pa55"
TOKEN = "tok_9f8e7d6c5b4a"
WEBHOOK_CODE = "x7k2m9p4q1w8e5r3"
WEBHOOK = f"https://shop.bitrix24.ru/rest/1/{WEBHOOK_CODE}/crm.deal.list.json?start=0"
BASIC = "dXNlcjpodW50ZXIyLVBhNTU="  # base64("user:hunter2-Pa55")
REGISTERED = "Env-Secret-from-ONEC_PASSWORD"
ALL_SECRETS = (PASSWORD, TOKEN, WEBHOOK_CODE, BASIC, REGISTERED)


@pytest.fixture(autouse=True)
def _clean_logging():
    clear_secrets()
    yield
    clear_secrets()
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root = logging.getLogger()
    for h in list(root.handlers):
        if type(h).__name__ == "_SyncdHandler":
            root.removeHandler(h)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(False)


@pytest.fixture
def json_out():
    buf = io.StringIO()
    configure_logging("json", level="debug", stream=buf)

    def lines() -> list[dict]:
        out = []
        for raw in buf.getvalue().splitlines():
            out.append(json.loads(raw))  # every line is one JSON object
        return out

    lines.buf = buf  # type: ignore[attr-defined]
    return lines


def _log_everything(log) -> None:
    register_secret(REGISTERED)
    log.info("pull", password=PASSWORD, api_token=TOKEN, webhook_url=WEBHOOK, url=WEBHOOK,
             headers={"Authorization": f"Basic {BASIC}", "Accept": "application/json",
                      "nested": {"client_secret": "abcd1234", "Cookie": "PHPSESSID=abcdef123"}},
             message=f"sending Authorization: Basic {BASIC} to {WEBHOOK}",
             dsn=f"postgresql://syncd:{PASSWORD}@db:5432/syncd",
             items=[{"token": TOKEN}, f"Bearer {TOKEN}"])
    try:
        raise ConnectionError(f"1C refused login with password {REGISTERED} at {WEBHOOK}")
    except ConnectionError:
        log.exception("exchange failed")
    log.warning(f"retry with {REGISTERED}")


def _assert_clean(text: str) -> None:
    for secret in ALL_SECRETS:
        assert secret not in text, f"{secret!r} leaked into {text!r}"


# --- capture_logs ---------------------------------------------------------------------------------

def test_capture_logs_redacts():
    with capture_logs(processors=REDACTING_PROCESSORS) as logs:
        _log_everything(structlog.get_logger("t"))
    assert len(logs) == 3
    _assert_clean(repr(logs))
    first = logs[0]
    assert first["password"] == MASK and first["api_token"] == MASK and first["webhook_url"] == MASK
    assert first["url"] == f"https://shop.bitrix24.ru/rest/1/{MASK}/crm.deal.list.json?start=0"
    assert first["headers"]["Authorization"] == MASK
    assert first["headers"]["Accept"] == "application/json"
    assert first["headers"]["nested"] == {"client_secret": MASK, "Cookie": MASK}
    assert first["dsn"] == f"postgresql://syncd:{MASK}@db:5432/syncd"
    assert first["items"] == [{"token": MASK}, f"Bearer {MASK}"]
    assert f"Authorization: Basic {MASK}" in first["message"]
    assert "ConnectionError" in logs[1]["exception"] and MASK in logs[1]["exception"]


def test_capture_logs_carries_run_context():
    with capture_logs(processors=REDACTING_PROCESSORS) as logs:
        log = structlog.get_logger()
        with bind_run("shop-b24", "orders", "run-42"):
            log.info("a")
            log.bind(n=1).warning("b")
        log.info("outside")
    assert [(e.get("integration"), e.get("stream"), e.get("run_id")) for e in logs] == [
        ("shop-b24", "orders", "run-42"), ("shop-b24", "orders", "run-42"), (None, None, None)]


# --- real JSON output -----------------------------------------------------------------------------

def test_json_output_redacts(json_out):
    _log_everything(structlog.get_logger("syncd.test"))
    _assert_clean(json_out.buf.getvalue())
    lines = json_out()
    assert [line["event"] for line in lines] == ["pull", "exchange failed", f"retry with {MASK}"]
    assert lines[0]["password"] == MASK
    assert "Traceback" in lines[1]["exception"] and f"password {MASK} at" in lines[1]["exception"]
    assert lines[1]["level"] == "error"


def test_json_line_shape(json_out):
    structlog.get_logger("syncd.shape").info("hello", count=3, name="Иван")
    (line,) = json_out()
    assert line["event"] == "hello" and line["level"] == "info" and line["count"] == 3
    assert line["name"] == "Иван" and line["logger"] == "syncd.shape"
    assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]
    assert list(line)[:3] == ["timestamp", "level", "logger"]


def test_level_filter():
    buf = io.StringIO()
    configure_logging("json", level="warning", stream=buf)
    structlog.get_logger().info("quiet")
    logging.getLogger("sqlalchemy.engine").info("quiet too")
    structlog.get_logger().warning("loud")
    assert [json.loads(x)["event"] for x in buf.getvalue().splitlines()] == ["loud"]


def test_run_context_on_every_line(json_out):
    log = structlog.get_logger("syncd.run")
    with bind_run("shop-b24", "orders", 7):
        log.info("start")
        logging.getLogger("apscheduler.scheduler").info("job %s fired", "x")
        log.bind(batch=1).info("batch")
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            log.exception("oops")
    log.info("after")
    lines = json_out()
    assert len(lines) == 5
    for line in lines[:4]:
        assert (line["integration"], line["stream"], line["run_id"]) == ("shop-b24", "orders", "7")
    assert "integration" not in lines[4] and "run_id" not in lines[4]


def test_nested_bind_run_restores_outer(json_out):
    log = structlog.get_logger()
    with bind_run("a", "s1", "r1"):
        with bind_run("b", "s2", "r2"):
            log.info("inner")
        log.info("outer")
    inner, outer = json_out()
    assert inner["integration"] == "b" and outer["integration"] == "a" and outer["run_id"] == "r1"


def test_stdlib_logging_is_json_and_redacted(json_out):
    register_secret(REGISTERED)
    logging.getLogger("uvicorn.error").warning("auth failed for %s with %s", "user", REGISTERED)
    logging.getLogger("sqlalchemy.pool").error("connect to postgresql://u:%s@db/x", PASSWORD,
                                               extra={"api_key": TOKEN, "attempt": 2})
    try:
        raise ValueError(f"bad webhook {WEBHOOK}")
    except ValueError:
        logging.getLogger("apscheduler.executors").exception("job crashed")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"SAWarning: something about {REGISTERED}")
    _assert_clean(json_out.buf.getvalue())
    lines = json_out()
    assert [(x["logger"], x["level"]) for x in lines] == [
        ("uvicorn.error", "warning"), ("sqlalchemy.pool", "error"), ("apscheduler.executors", "error"),
        ("py.warnings", "warning")]
    assert lines[0]["event"] == f"auth failed for user with {MASK}"
    assert lines[1]["api_key"] == MASK and lines[1]["attempt"] == 2
    assert "Traceback" in lines[2]["exception"] and f"/rest/1/{MASK}/" in lines[2]["exception"]
    assert all(x["timestamp"].endswith("Z") for x in lines)


def test_other_handlers_never_see_secrets(json_out, caplog):
    caplog.set_level(logging.INFO)
    structlog.get_logger("syncd.x").info("login", password=PASSWORD, url=WEBHOOK)
    assert caplog.records
    _assert_clean(repr([r.msg for r in caplog.records]) + caplog.text)


def test_reconfigure_replaces_own_handler_only():
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    try:
        buf1, buf2 = io.StringIO(), io.StringIO()
        configure_logging("json", stream=buf1)
        configure_logging("json", stream=buf2)
        structlog.get_logger().info("once")
        assert buf1.getvalue() == "" and len(buf2.getvalue().splitlines()) == 1
        assert other in logging.getLogger().handlers
    finally:
        logging.getLogger().removeHandler(other)


# --- console / auto -------------------------------------------------------------------------------

class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_picks_json_for_pipes_and_console_for_tty():
    pipe, tty = io.StringIO(), _Tty()
    configure_logging("auto", stream=pipe)
    structlog.get_logger().info("to pipe", k=1)
    assert json.loads(pipe.getvalue())["event"] == "to pipe"
    configure_logging("auto", stream=tty)
    structlog.get_logger().info("to tty", k=1)
    out = tty.getvalue()
    assert "to tty" in out and not out.lstrip().startswith("{")


def test_console_output_redacts():
    buf = io.StringIO()
    configure_logging("console", stream=buf)
    _log_everything(structlog.get_logger("syncd.console"))
    logging.getLogger("uvicorn").error("with %s", REGISTERED)
    text = buf.getvalue()
    _assert_clean(text)
    assert "Traceback" in text and "exchange failed" in text


def test_bad_arguments():
    with pytest.raises(ValueError):
        configure_logging("xml")
    with pytest.raises(ValueError):
        configure_logging("json", level="loud")


# --- redaction units ------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,expected", [
    (f"POST {WEBHOOK}", f"POST https://shop.bitrix24.ru/rest/1/{MASK}/crm.deal.list.json?start=0"),
    ("https://x.bitrix24.ru/rest/15/abcdEFGH1234/", f"https://x.bitrix24.ru/rest/15/{MASK}/"),
    ("https://x.bitrix24.ru/rest/crm.deal.list", "https://x.bitrix24.ru/rest/crm.deal.list"),
    ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {MASK}"),
    ("authorization=Bearer abc.def.ghi", f"authorization=Bearer {MASK}"),
    ('{"Authorization": "Bearer abcdefgh12"}', f'{{"Authorization": "Bearer {MASK}"}}'),
    ("sent Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", f"sent Bearer {MASK}"),
    ("https://admin:s3cret@1c.local/exchange", f"https://admin:{MASK}@1c.local/exchange"),
    ("/cml?type=sale&sessid=abc123&mode=query", f"/cml?type=sale&sessid={MASK}&mode=query"),
    ("?auth=xyz789&application_token=qwe", f"?auth={MASK}&application_token={MASK}"),
    ("basic setup done", "basic setup done"),
    ("author: Пушкин", "author: Пушкин"),
    ("orders pulled: 12", "orders pulled: 12"),
])
def test_redact_text(raw, expected):
    assert redact_text(raw) == expected


def test_registered_secret_forms():
    register_secret("p@ss word/1")
    assert redact_text("x p@ss word/1 y") == f"x {MASK} y"
    assert redact_text("q=p%40ss%20word%2F1") == f"q={MASK}"
    assert redact_text("q=p%40ss+word%2F1") == f"q={MASK}"
    register_secret("ab")  # too short to mask as a substring ...
    assert redact_text("tab") == "tab"
    assert redact_text("ab") == MASK  # ... but masked as a whole value
    register_secret(None)
    register_secret("")
    unregister_secret("p@ss word/1")
    assert redact_text("x p@ss word/1 y") == "x p@ss word/1 y"


def test_redact_processor_keys_and_values():
    class Url:
        def __str__(self) -> str:
            return WEBHOOK

    ed = {"event": "e", "Password": "x", "X-Api-Key": "k", "SESSID": "s", "authToken": "t", "count": 3,
          "none_token": None, "exc": RuntimeError(f"at {WEBHOOK}"), "obj": Url(), "raw": WEBHOOK.encode(),
          "deep": [{"a": {"cookie": "c", "ok": (1, f"Bearer {TOKEN}")}}]}
    out = redact_secrets(None, "info", ed)
    assert out["Password"] == out["X-Api-Key"] == out["SESSID"] == out["authToken"] == MASK
    assert out["count"] == 3 and out["none_token"] is None and out["event"] == "e"
    assert WEBHOOK_CODE not in out["exc"] and out["exc"].startswith("RuntimeError")
    assert WEBHOOK_CODE not in out["obj"] and WEBHOOK_CODE not in out["raw"]
    assert out["deep"] == [{"a": {"cookie": MASK, "ok": (1, f"Bearer {MASK}")}}]


def test_library_chatter_is_quiet_at_info_and_back_at_debug():
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    logging.getLogger("apscheduler.executors.default").info('Running job "x"')
    logging.getLogger("apscheduler.executors.default").warning("Run time of job was missed")
    structlog.get_logger("syncd").info("starting")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["Run time of job was missed", "starting"]
    out = io.StringIO()
    configure_logging("json", "debug", stream=out)
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    assert "Context impl" in out.getvalue()


def test_daemon_first_line_is_syncd_and_only_runs_that_did_something(tmp_path):
    """`syncd run` at info: its own `starting` line first, no Alembic or APScheduler lines, one `run`
    line per run that did something and none for empty polls."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from factories import write_config

    cfg = write_config(tmp_path, systems={"src": {"type": "memory", "seed": 2}, "dst": {"type": "memory"}},
                       daemon={"push_interval": 0.2},
                       jobs=[{"system": "src", "stream": "person", "every": "1s"},
                             {"system": "dst", "stream": "person", "every": "1s"}])
    proc = subprocess.Popen([sys.executable, "-m", "syncd.cli", "-c", str(cfg), "--log-format", "json", "run"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        time.sleep(4)           # the first poll pulls the seed; several empty polls and pushes follow
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len(err.strip().splitlines()), err[-2000:]
    assert (lines[0]["logger"], lines[0]["event"]) == ("syncd", "starting") and lines[0]["database"]
    assert not [x for x in lines if x["logger"].startswith(("alembic", "apscheduler"))]
    runs = [x for x in lines if x["event"] == "run"]
    assert {(x["system"], x["stream"]) for x in runs} >= {("src", "person"), ("dst", "push")}
    assert all(any(v for k, v in x.items() if k in ("created", "updated", "pushed", "planned")) for x in runs)
    # ~4 polls of each stream and ~20 pushes happened; only the few that did something are logged
    assert len(runs) <= 4, runs
    assert [x["event"] for x in lines][-2:] == ["daemon_stopping", "daemon_stopped"]
