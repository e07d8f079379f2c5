"""`syncd run` and `syncd check`: the daemon, and whether everything it needs answers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from syncd.cli.base import (
    EXIT_FAIL,
    EXIT_OK,
    _database_error,
    _fail_config,
    _runtime,
    _safe_url,
    _settings,
    _version,
    main,
)
from syncd.errors import ConfigError


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon (scheduler, HTTP) until SIGTERM.

    Creates and migrates the database on first start.
    """
    import structlog

    from syncd.daemon.main import Daemon

    settings = _settings(ctx)
    structlog.get_logger("syncd").info("starting", version=_version(), config=str(settings.path),
                                       database=_safe_url(settings.daemon.database_url))
    rt = _runtime(ctx, create=True, settings=settings)     # a daemon creates its database on first start
    try:
        Daemon(settings, runtime=rt).run_forever()
    except ConfigError as exc:
        _fail_config(exc)


@main.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check config, mappings, jobs and rules against live systems.

    One ✓/✗ line per finding, each fault naming its file and key; exit 1 if any fails.
    """
    import shutil
    import tempfile

    from syncd import check as checks
    from syncd.versions import describe

    settings = _settings(ctx)
    # first, so a support request that pastes the output carries them
    findings: list[checks.Finding] = [checks.Finding("versions", True, describe(settings.daemon.database_url))]
    db_file = checks.sqlite_file(settings.daemon.database_url)
    scratch = None
    if db_file is not None and not db_file.exists():
        # not created yet: check everything else against a scratch database, say whether it can be
        problem = checks.creatable(db_file, settings.daemon.state_dir)
        refused = checks.missing_database(db_file, settings.daemon.state_dir, settings.path)
        findings.append(checks.Finding(
            "database", problem is None and refused is None,
            refused or (f"{db_file} does not exist yet; `syncd run` creates it" if problem is None
                        else f"{db_file} cannot be created: {problem}")))
        scratch = tempfile.mkdtemp(prefix="syncd-check-")
        settings = settings.model_copy(update={"daemon": settings.daemon.model_copy(
            update={"database_url": f"sqlite:///{scratch}/check.db"})})
    if not Path(settings.daemon.state_dir).exists():
        # nor is the state directory (systemd's StateDirectory= makes it): check creates nothing there
        scratch = scratch or tempfile.mkdtemp(prefix="syncd-check-")
        settings = settings.model_copy(update={"daemon": settings.daemon.model_copy(
            update={"state_dir": f"{scratch}/state"})})
    rt = None
    try:
        rt = _runtime(ctx, settings=settings, create=db_file is not None and not db_file.exists(), mark=False)
        if not any(f.name == "database" for f in findings):
            try:
                rt.store.ping()
                findings.append(checks.Finding("database", True, _safe_url(settings.daemon.database_url)))
            except Exception as exc:  # noqa: BLE001
                findings.append(checks.Finding("database", False, _database_error(exc) or str(exc)))
        for name, h in rt.health().items():
            # a connector's error names its system already ("shop: checkauth: …"): said once
            detail = h.detail[len(name) + 2:] if h.detail.startswith(f"{name}: ") else h.detail
            findings.append(checks.Finding(name, h.ok, detail))
        findings += checks.check_waiting(rt)
        try:
            origins = checks.MappingOrigins(settings)
        except ConfigError as exc:
            _fail_config(exc)
        findings += checks.check_jobs(settings, rt.connectors)
        findings += checks.check_map_targets(settings, rt.mapper, rt.connectors, origins)
        findings += checks.check_flows(settings, rt.mapper, rt.connectors, origins)
        findings += checks.check_routes(settings, rt.mapper)
        findings += checks.check_names(rt)          # first: names become ids the checks below compare
        findings += checks.check_live_mappings(rt.mapper, rt.connectors, origins)
        findings += checks.check_rules(rt.mapper, rt.connectors, origins, rt.rules_cfg)
        findings += checks.check_extensions(settings, rt.connectors)
    finally:
        if rt is not None:
            rt.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    ok = all(f.ok for f in findings)
    if ctx.obj["json"]:
        click.echo(json.dumps([f.as_dict() for f in findings], ensure_ascii=False))
    else:
        for f in findings:
            mark = click.style("✓", fg="green") if f.ok else click.style("✗", fg="red")
            click.echo(f"{mark} {f.name}: {f.detail}")
    sys.exit(EXIT_OK if ok else EXIT_FAIL)
