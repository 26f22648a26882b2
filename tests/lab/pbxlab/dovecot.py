"""A real IMAP server for tests: Debian's dovecot-imapd, our own config, IMAPS on 127.0.0.1.

``tests/lab/host-packages.sh mail`` installs it. Each server is a ``dovecot -F`` process the
test starts (and stops by its PID), with its config, TLS certificate (the lab's throw-away PKI),
passwd file and Maildirs in a directory of its own. Mail is delivered into it with dovecot's
own ``doveadm save`` (what an MTA's LDA does), so the gateway sees what a real mailbox shows.

Dovecot drops to an unprivileged uid for mail (it refuses uid 0): the Maildirs belong to the
system user ``mail`` and the directory lives outside pytest's root-only tmp tree.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pbxlab.pki import LabPki, make_test_pki
from pbxlab.ports import free_port

__all__ = ["TEST_MAILBOX", "TEST_PASSWORD", "Dovecot", "dovecot_available", "running_dovecot"]

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
MAIL_USER = "mail"
TEST_MAILBOX = "service@shop.example"  # the tests' and the demo's mailbox
TEST_PASSWORD = "imap-s3cret"  # a throw-away test mailbox


def dovecot_available() -> bool:
    return os.path.exists(DOVECOT) and os.path.exists(DOVEADM) and os.geteuid() == 0


def _config(d: Path, port: int, pki: LabPki) -> str:
    dh = "ssl_dh = </usr/share/dovecot/dh.pem\n" if Path("/usr/share/dovecot/dh.pem").exists() else ""
    return f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
ssl = required
ssl_cert = <{pki.server_cert}
ssl_key = <{pki.server_key}
{dh}disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:{d}/mail/%u/Maildir
first_valid_uid = 1
shutdown_clients = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid={MAIL_USER} gid={MAIL_USER} home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
"""


@dataclass
class Dovecot:
    directory: Path
    port: int
    pki: LabPki
    users: Mapping[str, str]
    process: subprocess.Popen[bytes] | None = None
    config_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.config_file = self.directory / "dovecot.conf"

    @property
    def ca_file(self) -> Path:
        return self.pki.ca_file

    @property
    def log_file(self) -> Path:
        return self.directory / "dovecot.log"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends the children too
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"dovecot exited with {self.process.returncode}: {self.log_text()[-2000:]}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen on {self.port}: {self.log_text()[-2000:]}")

    def stop(self) -> None:
        """Stop the master and every child (imap, imap-login keep client connections open after
        the master alone has gone): SIGTERM to the process group, SIGKILL after 15 s."""
        if self.process is None:
            return
        group = self.process.pid  # the session leader's pid is the group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def deliver(self, user: str, raw: bytes, *, folder: str = "INBOX") -> None:
        """Deliver one message into ``user``'s folder with dovecot's own ``doveadm save``."""
        subprocess.run(
            [DOVEADM, "-c", str(self.config_file), "save", "-u", user, "-m", folder],
            input=raw,
            check=True,
            capture_output=True,
            timeout=30,
        )

    def recreate_inbox(self, user: str) -> None:
        """Remove the user's Maildir: the next access makes a new INBOX with a new UIDVALIDITY."""
        shutil.rmtree(self.directory / "mail" / user / "Maildir", ignore_errors=True)

    def mark_seen(self, user: str, uid: int) -> None:
        """What a person reading the mail in another client does: set \\Seen."""
        subprocess.run(
            [
                DOVEADM,
                "-c",
                str(self.config_file),
                "flags",
                "add",
                "-u",
                user,
                "\\Seen",
                "mailbox",
                "INBOX",
                "uid",
                str(uid),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def flags(self, user: str) -> list[tuple[int, str]]:
        """(uid, flags) of every message in the user's INBOX, by doveadm."""
        out = subprocess.run(
            [
                DOVEADM,
                "-c",
                str(self.config_file),
                "-f",
                "tab",
                "fetch",
                "-u",
                user,
                "uid flags",
                "mailbox",
                "INBOX",
            ],
            check=True,
            capture_output=True,
            timeout=30,
            text=True,
        ).stdout.splitlines()
        return [(int(line.split("\t")[0]), line.split("\t")[1]) for line in out[1:] if line.strip()]


def start_dovecot(users: Mapping[str, str], *, port: int | None = None) -> Dovecot:
    directory = Path(tempfile.mkdtemp(prefix="pbxlab-dovecot-"))
    directory.chmod(0o755)
    pki = make_test_pki(directory / "pki")
    mail = pwd.getpwnam(MAIL_USER)
    (directory / "mail").mkdir()
    os.chown(directory / "mail", mail.pw_uid, mail.pw_gid)
    (directory / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in users.items()))
    server = Dovecot(directory, port or free_port(), pki, users)
    server.config_file.write_text(_config(directory, server.port, pki))
    server.start()
    return server


@contextlib.contextmanager
def running_dovecot(users: Mapping[str, str]) -> Iterator[Dovecot]:
    server = start_dovecot(users)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
