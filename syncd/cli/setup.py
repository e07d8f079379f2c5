"""`syncd init`, `syncd demo` and the CommerceML tools: getting started."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from syncd.cli.base import EXIT_CONFIG, EXIT_FAIL, _emit, main


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--systems", default="shop,bitrix24,onec", show_default=True,
              help="connector types to configure: shop, bitrix24, onec (comma-separated)")
@click.option("--state-dir", default="/var/lib/syncd", show_default=True,
              help="where the daemon keeps its database (systemd's StateDirectory overrides it)")
@click.option("--group", default=None, help="group that may read the config (the unit's SupplementaryGroups)")
@click.option("--force", is_flag=True, help="overwrite config.toml, mappings and the unit (never env)")
@click.pass_context
def init(ctx: click.Context, directory: str, systems: str, state_dir: str, group: str | None,
         force: bool) -> None:
    """Write a config, mappings, env template and unit into a folder.

    DIRECTORY gets config.toml (commented), mappings/, env (secrets, mode 0600) and syncd.service.
    """
    from syncd.init import InitError, init_directory, parse_systems

    try:
        res = init_directory(directory, parse_systems(systems), state_dir=state_dir, group=group, force=force)
    except InitError as exc:
        click.echo(f"syncd init: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except OSError as exc:
        click.echo(f"syncd init: {exc.strerror or exc}: {exc.filename or directory}", err=True)
        sys.exit(EXIT_FAIL)
    data = {"directory": str(res.directory), "written": [str(p) for p in res.written],
            "kept": [str(p) for p in res.kept], "secrets": res.secrets}

    def text(d: dict[str, Any]) -> None:
        for p in d["written"]:
            click.echo(f"wrote {p}")
        for p in d["kept"]:
            click.echo(f"kept  {p} (holds your secrets; not overwritten)")
        cfg = Path(d["directory"]) / "config.toml"
        env = Path(d["directory"]) / "env"
        click.echo(f"next: fill in {env} ({', '.join(d['secrets'])}) and the URLs in {cfg}, "
                   f"then `syncd -c {cfg} --env-file {env} check`")

    _emit(ctx, data, text)


@main.command()
@click.option("--until-synced", is_flag=True, help="exit 0 once the seeded work has flowed; print /stats")
@click.option("--port", type=int, default=8787, show_default=True, help="daemon HTTP port")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None, help="where the demo keeps its SQLite file")
@click.option("--timeout", type=float, default=180.0, show_default=True)
@click.option("--no-1c-client", "no_onec_client", is_flag=True,
              help="do not run the demo's own 1C client: your 1C (or exchange tool) takes the documents")
@click.option("--crm", type=click.Choice(["bitrix24", "amocrm", "retailcrm"]), default="bitrix24", show_default=True,
              help="which CRM's sandbox the shop's orders land in")
def demo(until_synced: bool, port: int, state_dir: str | None, timeout: float, no_onec_client: bool,
         crm: str) -> None:
    """Run the daemon against the sandbox peers on SQLite.

    Nothing to configure; --until-synced exits once the seeded work has flowed.
    """
    from syncd.demo import run_demo

    sys.exit(run_demo(until_synced=until_synced, port=port, state_dir=state_dir, timeout=timeout,
                      onec_client=not no_onec_client, crm=crm))


@main.group()
def cml() -> None:
    """CommerceML tools."""


@cml.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path())
def cml_check(files: tuple[str, ...]) -> None:
    """Validate CommerceML files; print their documents as JSON lines."""
    from syncd.commerceml.check import check_files

    sys.exit(check_files(list(files)))
