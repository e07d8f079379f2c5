"""A real Dovecot IMAP server on loopback for tests, the demo and bench/intake_mail.py: an unprivileged
config in a temp dir, a free loopback port. (Not an emulator: Debian's `dovecot-imapd` itself.)

Debian's `dovecot-imapd` (2.3 syntax, Debian 12). No system config is read and nothing outside the
temp dir is written: `base_dir`, logs, mail (Maildir) and the users file all live there. Runs as the
current user (root in CI included: `first_valid_uid = 0`, the login processes as the same user).

    with Dovecot(tmp_path) as d:
        c = d.client()                   # imapclient.IMAPClient, logged in as d.user
        d.append("INBOX", raw_bytes)     # delivered over IMAP (APPEND), as a mail client would

Also runnable: `python -m syncd.sandbox.dovecot DIR` serves until interrupted. Plain IMAP (no TLS):
loopback only, which is why the connector allows `tls = "none"` only for a loopback host.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


def available() -> bool:
    return os.path.exists(DOVECOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CONFIG = """\
# written by syncd.sandbox.dovecot: a throw-away server on loopback
protocols = imap
listen = 127.0.0.1
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = {login}
default_internal_user = {internal}
default_internal_group = {group}
first_valid_uid = 0
first_valid_gid = 0
mail_location = maildir:{mail}/%u
mail_privileged_group =
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
  chroot =
  user = {login}
}}
service anvil {{
  chroot =
}}
service auth {{
  user = {auth}
}}
service stats {{
  chroot =
}}
service imap {{
  process_limit = 64
}}
protocol imap {{
  imap_idle_notify_interval = 1 secs
}}
"""


def _accounts() -> dict[str, Any]:
    """Who the processes run as. Unprivileged: everything as the current user. As root (CI), Dovecot
    refuses to run its login and auth processes as root: they run as the package's own unprivileged
    users (dovenull, dovecot; `nobody` when missing), auth as root, mail as the internal user."""
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        me = pwd.getpwuid(uid).pw_name
        return dict(login=me, internal=me, auth=me, group=grp.getgrgid(gid).gr_name, uid=uid, gid=gid)

    def have(name: str) -> bool:
        try:
            pwd.getpwnam(name)
            return True
        except KeyError:
            return False

    login = "dovenull" if have("dovenull") else "nobody"
    internal = "dovecot" if have("dovecot") else "nobody"
    # auth stays root: it reads the users file inside the test's own (0700) temp dir; mail is
    # accessed as the internal user (Dovecot refuses uid 0), in a directory of its own
    pw = pwd.getpwnam(internal)
    return dict(login=login, internal=internal, auth="root", group=grp.getgrgid(pw.pw_gid).gr_name,
                uid=pw.pw_uid, gid=pw.pw_gid)


class Dovecot:
    """One Dovecot instance; `user`/`password` can log in (more with `add_user`)."""

    def __init__(self, root: Path, *, user: str = "sales", password: str = "s3cret-pw", tls: bool = False,
                 capability: str | None = None) -> None:
        """`tls`: also serve implicit TLS (`tls_port`) and STARTTLS on the plain port, with a
        throw-away CA (trustme; `ca_file` is its PEM). `capability`: the capabilities announced
        (e.g. without IDLE, to test a server that cannot)."""
        self.tls, self.capability = tls, capability
        self.tls_port = free_port() if tls else 0
        self.ca_file: str | None = None
        self.root = Path(root)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.user, self.password = user, password
        self.proc: subprocess.Popen[bytes] | None = None
        self._users: dict[str, str] = {user: password}
        self._mail: Path | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "Dovecot":
        for d in ("run", "state", "mail"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self._write_users()
        acc = _accounts()
        # the mail store: inside the test's dir when we are its owner; as root, a directory of the
        # mail user's own (the test dir's parents are not open to it)
        if os.getuid() == 0:
            self._mail = Path(tempfile.mkdtemp(prefix="syncd-imap-mail-"))
            os.chown(self._mail, acc["uid"], acc["gid"])
        else:
            self._mail = self.root / "mail"
        ssl = "ssl = no"
        if self.tls:
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            cert.private_key_and_cert_chain_pem.write_to_path(str(self.root / "server.pem"))
            ca.cert_pem.write_to_path(str(self.root / "ca.pem"))
            self.ca_file = str(self.root / "ca.pem")
            ssl = (f"ssl = yes\nssl_cert = <{self.root}/server.pem\nssl_key = <{self.root}/server.pem\n"
                   "ssl_min_protocol = TLSv1.2")
        if self.capability:
            ssl += f"\nimap_capability = {self.capability}"
        (self.root / "dovecot.conf").write_text(CONFIG.format(dir=self.root, mail=self._mail, port=self.port,
                                                              ssl=ssl, tls_port=self.tls_port, **acc),
                                                encoding="utf-8")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.root / "dovecot.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"dovecot exited ({self.proc.returncode}): {err}{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not answer on {self.host}:{self.port}: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._mail is not None and os.getuid() == 0:
            shutil.rmtree(self._mail, ignore_errors=True)
        self._mail = None

    def __enter__(self) -> "Dovecot":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def log(self) -> str:
        p = self.root / "dovecot.log"
        return p.read_text(encoding="utf-8", errors="replace")[-3000:] if p.exists() else ""

    # -- users and mail ----------------------------------------------------------------------------
    def _write_users(self) -> None:
        (self.root / "users").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self._users.items()),
                                         encoding="utf-8")

    def add_user(self, user: str, password: str) -> None:
        self._users[user] = password
        self._write_users()          # passwd-file is re-read when it changes

    def client(self, user: str | None = None, password: str | None = None) -> Any:
        from imapclient import IMAPClient

        c = IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        c.login(user or self.user, password or self._users[user or self.user])
        return c

    def append(self, folder: str, raw: bytes, *, flags: tuple[Any, ...] = (), when: Any = None,
               user: str | None = None) -> None:
        c = self.client(user)
        try:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            c.append(folder, raw, flags=flags, msg_time=when)
        finally:
            c.logout()

    def append_many(self, folder: str, raws: list[bytes], *, user: str | None = None) -> None:
        c = self.client(user)
        try:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            for raw in raws:
                c.append(folder, raw)
        finally:
            c.logout()

    def recreate(self, folder: str, raws: list[bytes], *, user: str | None = None) -> None:
        """Delete the folder and make it anew with these mails: a new UIDVALIDITY (what a server
        restored from a backup or a mailbox rebuilt does), the same mails under new UIDs."""
        c = self.client(user)
        try:
            if folder.upper() == "INBOX":
                raise ValueError("INBOX cannot be deleted; use another folder")
            c.delete_folder(folder)
            c.create_folder(folder)
            for raw in raws:
                c.append(folder, raw)
        finally:
            c.logout()

    def settings(self, **over: Any) -> dict[str, Any]:
        """The connector's settings for this server (plain IMAP: loopback tests only)."""
        s: dict[str, Any] = {"host": self.host, "port": self.port, "tls": "none", "username": self.user,
                             "password": self.password}
        s.update(over)
        return s


if __name__ == "__main__":
    import sys

    d = Dovecot(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/syncd-dovecot")).start()
    print(f"dovecot on {d.host}:{d.port} user {d.user}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        d.stop()
