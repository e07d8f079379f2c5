"""`syncd init DIR`: a starting configuration for the chosen systems, from what the package ships.

Writes into DIR:

- `config.toml`: config.example.toml cut down to the chosen systems (every key still commented),
  the database and state directory under `${STATE_DIRECTORY:-<state dir>}` (systemd sets
  STATE_DIRECTORY for the unit's StateDirectory=, so the same file works under systemd and by hand);
- `mappings/`: the example mappings those systems need;
- `env`: the secrets config.toml reads as `${NAME}`, one commented line each (mode 0600; systemd
  reads it as root through EnvironmentFile=, the daemon's own user never can);
- `syncd.service`: the systemd unit with its paths pointing at DIR and at this installation.

The files are readable by `--group` (the unit's SupplementaryGroups=), the env file only by its
owner. Nothing is written to the database: `syncd run` creates it on first start.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from syncd.resources import CONFIG_EXAMPLE, UNIT, data_path, mapping_files

# connector type -> (system name used by the example config and mappings, mapping files it needs)
SYSTEM_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "shop": ("shop", ("shop.toml",)),
    "bitrix24": ("crm", ("bitrix24.toml", "rules.toml")),  # the rules assign the CRM's managers
    "onec": ("onec", ("onec.toml",)),
    "forms": ("forms", ("forms.toml",)),
    "imap": ("mail", ("mail.toml",)),
    "calls": ("calls", ("calls.toml",)),
    "telegram": ("telegram", ("messengers.toml",)),
    "vk": ("vk", ("messengers.toml",)),
    "amocrm": ("crm", ("amocrm.toml", "rules.toml")),
    "retailcrm": ("crm", ("retailcrm.toml", "rules.toml")),
}
# CRMs besides Bitrix24: their [systems.crm] block and jobs ship beside config.example.toml
# (config.<type>.toml) and take the place of Bitrix24's; one CRM per configuration
CRM_TYPES = ("bitrix24", "amocrm", "retailcrm")
CRM_BLOCKS = {"amocrm": "config.amocrm.toml", "retailcrm": "config.retailcrm.toml"}
# CRMs with no API for a notice to a user: the rules' new-deal notice is left commented out there
NO_NOTICES = {"amocrm": "amoCRM", "retailcrm": "RetailCRM"}
DEFAULT_STATE_DIR = "/var/lib/syncd"

# what each secret in the example config is, for the env file
SECRET_HELP = {
    "SYNCD_ADMIN_TOKEN": "token for the admin actions (status page login, Bearer header); generated",
    "SHOP_PASSWORD": "password of the shop user `login` of [systems.shop] (allowed to exchange)",
    "B24_WEBHOOK_URL": "Bitrix24 inbound webhook https://PORTAL/rest/USER_ID/CODE/ (scopes crm task user im)",
    "B24_APP_TOKEN": "application_token of the Bitrix24 outbound webhook (verifies posted events)",
    "ONEC_PASSWORD": "password 1C uses for the exchange (login `onec` of [systems.onec]); choose one",
    "FORM_CALLBACK_TOKEN": "token the site sends with the callback form (X-Syncd-Token or ?token=); choose one",
    "MAIL_PASSWORD": "password of the mailbox `username` of [systems.mail] (IMAP login)",
    "AMO_TOKEN": "amoCRM long-lived token of your private integration (Settings -> Integrations -> Keys)",
    "AMO_CLIENT_SECRET": "amoCRM integration's secret key (OAuth, instead of a long-lived token)",
    "AMO_AUTH_CODE": "amoCRM authorization code for the first start (OAuth; valid 20 minutes)",
    "AMO_WEBHOOK_SECRET": "the token= of the webhook URL you give amoCRM; choose one",
    "RETAILCRM_API_KEY": "RetailCRM API key (Settings -> Integration -> API access keys)",
    "PBX_SECRET": "the key the PBX signs its call webhooks with (Zadarma: your API secret)",
    "AMI_SECRET": "Asterisk manager.conf secret of syncd's manager user",
    "TG_BOT_TOKEN": "the Telegram bot's token from @BotFather",
    "TG_SECRET": "a secret Telegram sends with every update (16+ of A-Z a-z 0-9 _ -); choose one",
    "VK_SECRET": "the VK community's Callback API secret key",
    "VK_TOKEN": "a VK community access token with the messages right",
}
_NOT_SECRETS = {"STATE_DIRECTORY"}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


class InitError(Exception):
    """The target cannot be written as asked (exists, bad system name, no such group)."""


@dataclass
class InitResult:
    directory: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)


def parse_systems(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SYSTEM_TYPES]
    if unknown or not names:
        raise InitError(
            f"unknown system type(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SYSTEM_TYPES)}"
        )
    crms = [s for s in dict.fromkeys(names) if s in CRM_TYPES]
    if len(crms) > 1:
        raise InitError(f"one CRM per configuration: {', '.join(crms)} were given (system \"crm\" is one of them)")
    return list(dict.fromkeys(names))


def _paragraphs(text: str) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            out[-1].append(line)
        elif out[-1]:
            out.append([])
    return [p for p in out if p]


_HEADER = re.compile(r"^\[\[?([A-Za-z0-9_.\"-]+)\]\]?")


def config_text(types: list[str], state_dir: str = DEFAULT_STATE_DIR) -> str:
    """config.example.toml with only the chosen systems, their jobs and mappings."""
    example = data_path(CONFIG_EXAMPLE).read_text(encoding="utf-8")
    parsed = tomllib.loads(example)
    keep_systems = {name for name, s in parsed.get("systems", {}).items() if s.get("type") in types}
    job_systems = [j["system"] for j in parsed.get("jobs", [])]
    owner: str | None = None
    jobs_seen = 0
    kept: list[list[str]] = []
    for para in _paragraphs(example):
        headers = [m.group(1) for line in para if (m := _HEADER.match(line))]
        if headers:
            owner = headers[0]
            if owner == "jobs":
                owner = f"jobs[{jobs_seen}]"
                jobs_seen += 1
        if owner and owner.startswith("systems."):
            if owner.split(".")[1] not in keep_systems:      # [systems.forms.form.x] is the forms system's
                continue
        elif owner and owner.startswith("jobs[") and headers:
            if job_systems[int(owner[5:-1])] not in keep_systems:
                owner = "jobs:dropped"
                continue
        elif owner == "jobs:dropped":
            continue
        kept.append(para)
    text = "\n\n".join("\n".join(p) for p in kept) + "\n"
    for t in types:
        if t in CRM_BLOCKS:
            text += "\n" + data_path(CRM_BLOCKS[t]).read_text(encoding="utf-8")
    files = ["mappings/sync.toml"] + [f"mappings/{f}" for f in mapping_names(types)]
    listing = "[" + ", ".join(f'"{f}"' for f in files) + "]"
    text, n = re.subn(r"(?ms)^mappings = \[.*?\]", lambda _m: f"mappings = {listing}", text, count=1)
    if n != 1:
        raise InitError("config.example.toml has no `mappings = [...]` line to fill in")
    state = f"${{STATE_DIRECTORY:-{state_dir}}}"
    text = re.sub(
        r'(?m)^database_url = ".*"$', lambda _m: f'database_url = "sqlite:///{state}/syncd.db"', text
    )
    text = re.sub(r'(?m)^state_dir = ".*"$', lambda _m: f'state_dir = "{state}"', text)
    header = (
        f"# written by `syncd init` for: {', '.join(types)}. Secrets go to the `env` file beside\n"
        f"# this one; `syncd check -c {{this file}}` tells what is still wrong.\n"
    )
    return header + text


def mapping_names(types: list[str]) -> list[str]:
    """The example mappings the chosen systems need, each once (telegram and vk share one file). A
    source's mapping carries its CRM side (calls.toml: Bitrix24's call map); with another CRM its
    variant for that CRM is taken (calls-amocrm.toml, messengers-amocrm.toml) where one ships."""
    crm = next((t for t in types if t in CRM_TYPES and t != "bitrix24"), None)
    shipped = mapping_files()
    out = []
    for t in types:
        for f in SYSTEM_TYPES[t][1]:
            variant = f.replace(".toml", f"-{crm}.toml") if crm else None
            out.append(variant if variant and variant in shipped else f)
    return list(dict.fromkeys(out))


def mapping_text(name: str, types: list[str], text: str) -> str:
    """A shipped mapping as this configuration needs it. For a CRM with no API to notify a user,
    the rules' new-deal notice is commented out and a timer's notice becomes a task for the
    responsible (a notice would be made and no map would take it)."""
    crm = next((NO_NOTICES[t] for t in types if t in NO_NOTICES), None)
    if name != "rules.toml" or crm is None:
        return text
    head, sep, timers = text.partition("[[rules.timers]]")
    head = re.sub(r"(?m)^(notify = .*)$",
                  lambda m: f"# {crm} has no API for a notice to a user: no new-deal notice\n# {m.group(1)}", head)
    timers = re.sub(r'(?m)^notify = ("[^"\n]*")$',
                    lambda m: f'# {crm} has no notices: a task instead\ntask = {{ title = {m.group(1)}, deadline = "1d" }}',
                    timers)
    return head + sep + timers


def env_text(config: str, admin_token: str | None = None) -> tuple[str, list[str]]:
    """The env file for the secrets `config` reads as ${NAME} (those without a default)."""
    names = [m.group(1) for m in _ENV_REF.finditer(_uncommented(config)) if m.group(2) is None]
    names = [n for n in dict.fromkeys(names) if n not in _NOT_SECRETS]
    lines = [
        "# syncd secrets, one NAME=value per line (no quotes, no comments after a value).",
        "# config.toml reads each as ${NAME}. systemd reads this file as root (EnvironmentFile=)",
        "# before the daemon starts; keep it mode 0600. Fill in every value, then uncomment it.",
        "",
    ]
    for name in names:
        lines.append(f"# {SECRET_HELP.get(name, 'referenced by config.toml')}")
        if name == "SYNCD_ADMIN_TOKEN":
            lines.append(f"{name}={admin_token or secrets.token_urlsafe(24)}")
        else:
            lines.append(f"# {name}=")
        lines.append("")
    return "\n".join(lines), names


def _uncommented(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def unit_text(directory: Path, executable: str | None = None, group: str | None = None) -> str:
    """The shipped unit with its paths pointing at `directory`, this installation's `syncd`, `group`."""
    unit = data_path(UNIT).read_text(encoding="utf-8")
    if group and not group.isdigit():
        unit = re.sub(r"(?m)^SupplementaryGroups=\S+", lambda _m: f"SupplementaryGroups={group}", unit)
    exe = executable or _syncd_executable()
    unit = re.sub(
        r"(?m)^ExecStart=\S+ --config \S+",
        lambda _m: f"ExecStart={exe} --config {directory}/config.toml",
        unit,
    )
    unit = re.sub(r"(?m)^EnvironmentFile=-?\S+", lambda _m: f"EnvironmentFile=-{directory}/env", unit)
    unit = re.sub(r"(?m)^WorkingDirectory=\S+", lambda _m: f"WorkingDirectory={directory}", unit)
    return unit


def _syncd_executable() -> str:
    here = Path(sys.executable).parent / "syncd"
    return str(here) if here.exists() else "/opt/syncd/.venv/bin/syncd"


def _write(path: Path, text: str, mode: int, gid: int | None, written: list[Path]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)  # O_CREAT's mode passes the umask; this one does not
    if gid is not None:
        os.chown(path, -1, gid)
    written.append(path)


def _group_id(group: str | None) -> int | None:
    if group is None:
        return None
    if group.isdigit():
        return int(group)
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise InitError(f"no group named {group!r} (create it: groupadd --system {group})") from None


def init_directory(
    directory: str | Path,
    types: list[str],
    *,
    state_dir: str = DEFAULT_STATE_DIR,
    group: str | None = None,
    force: bool = False,
    executable: str | None = None,
) -> InitResult:
    d = Path(directory).absolute()
    gid = _group_id(group)
    if (d / "config.toml").exists() and not force:
        raise InitError(f"{d / 'config.toml'} exists; pass --force to overwrite the files syncd init writes")
    readable = 0o640 if gid is not None else 0o600
    dir_mode = 0o750 if gid is not None else 0o700
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, dir_mode)
    if gid is not None:
        os.chown(d, -1, gid)
    res = InitResult(d)
    config = config_text(types, str(Path(state_dir).absolute()))
    _write(d / "config.toml", config, readable, gid, res.written)
    maps = d / "mappings"
    maps.mkdir(exist_ok=True)
    os.chmod(maps, dir_mode)
    if gid is not None:
        os.chown(maps, -1, gid)
    shipped = mapping_files()
    for name in ["sync.toml"] + mapping_names(types):
        _write(maps / name, mapping_text(name, types, shipped[name].read_text(encoding="utf-8")),
               readable, gid, res.written)
    env, res.secrets = env_text(config)
    if (d / "env").exists():
        res.kept.append(d / "env")  # it holds the secrets someone filled in: never overwritten
    else:
        _write(d / "env", env, 0o600, None, res.written)  # root's alone: systemd reads it, not the daemon
    _write(d / "syncd.service", unit_text(d, executable, group), 0o644, None, res.written)
    return res
