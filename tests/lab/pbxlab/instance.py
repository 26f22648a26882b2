"""Set up, start and stop lab Asterisk instances through the shell scripts.

The scripts (tests/lab/asterisk-*.sh) do the work; this module runs them,
reads the instance.json that asterisk-start.sh writes and returns it typed.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

LAB_DIR = Path(__file__).resolve().parent.parent
STATE_ROOT = Path("/run/pbxlab")


class LabError(RuntimeError):
    """The lab could not be set up, started or stopped; the message says why."""


@dataclass(frozen=True, slots=True)
class LabTimings:
    """Dialplan timings of an instance in seconds (short: scenarios finish fast)."""

    agent_ring_timeout: int = 6
    queue_timeout: int = 8
    queue_member_timeout: int = 4
    queue_retry: int = 1
    internal_ring_timeout: int = 8
    outbound_ring_timeout: int = 20
    atxfer_noanswer_timeout: int = 5
    ivr_wait: int = 3
    greeting: str = "beep"

    def as_env(self) -> dict[str, str]:
        return {
            "PBXLAB_AGENT_RING_TIMEOUT": str(self.agent_ring_timeout),
            "PBXLAB_QUEUE_TIMEOUT": str(self.queue_timeout),
            "PBXLAB_QUEUE_MEMBER_TIMEOUT": str(self.queue_member_timeout),
            "PBXLAB_QUEUE_RETRY": str(self.queue_retry),
            "PBXLAB_INTERNAL_RING_TIMEOUT": str(self.internal_ring_timeout),
            "PBXLAB_OUTBOUND_RING_TIMEOUT": str(self.outbound_ring_timeout),
            "PBXLAB_ATXFER_NOANSWER_TIMEOUT": str(self.atxfer_noanswer_timeout),
            "PBXLAB_IVR_WAIT": str(self.ivr_wait),
            "PBXLAB_GREETING": self.greeting,
        }


@dataclass(frozen=True, slots=True)
class LabInstance:
    """A running lab Asterisk: where it listens and where its files are."""

    offset: int
    pid: int
    host: str
    ami_port: int
    ami_user: str
    ami_secret: str
    sip_port: int
    agi_port: int
    trunk_port: int
    mqtt_port: int
    agent_ports: dict[str, int]
    rtp_start: int
    rtp_end: int
    sipp_media_base: int
    sipp_local_base: int
    timings: LabTimings
    conf_dir: Path
    log_dir: Path
    spool_dir: Path
    state_dir: Path
    console_log: Path
    started_in_ms: int = 0
    profile: str = "lab"  # the dialplan profile: "lab" or "freepbx" (docs/lab.md)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabInstance:
        t = data["timings"]
        return cls(
            offset=int(data["offset"]),
            pid=int(data["pid"]),
            host=str(data["host"]),
            ami_port=int(data["ami_port"]),
            ami_user=str(data["ami_user"]),
            ami_secret=str(data["ami_secret"]),
            sip_port=int(data["sip_port"]),
            agi_port=int(data["agi_port"]),
            trunk_port=int(data["trunk_port"]),
            mqtt_port=int(data["mqtt_port"]),
            agent_ports={str(k): int(v) for k, v in data["agent_ports"].items()},
            rtp_start=int(data["rtp_start"]),
            rtp_end=int(data["rtp_end"]),
            sipp_media_base=int(data["sipp_media_base"]),
            sipp_local_base=int(data["sipp_local_base"]),
            timings=LabTimings(
                agent_ring_timeout=int(t["agent_ring_timeout"]),
                queue_timeout=int(t["queue_timeout"]),
                queue_member_timeout=int(t["queue_member_timeout"]),
                queue_retry=int(t["queue_retry"]),
                internal_ring_timeout=int(t["internal_ring_timeout"]),
                outbound_ring_timeout=int(t["outbound_ring_timeout"]),
                atxfer_noanswer_timeout=int(t["atxfer_noanswer_timeout"]),
                ivr_wait=int(t["ivr_wait"]),
                greeting=str(t["greeting"]),
            ),
            conf_dir=Path(data["conf_dir"]),
            log_dir=Path(data["log_dir"]),
            spool_dir=Path(data["spool_dir"]),
            state_dir=Path(data["state_dir"]),
            console_log=Path(data["console_log"]),
            started_in_ms=int(data.get("started_in_ms", 0)),
            profile=str(data.get("profile", "lab")),
            raw=data,
        )

    @property
    def alive(self) -> bool:
        try:
            comm = Path(f"/proc/{self.pid}/comm").read_text().strip()
        except OSError:
            return False
        return comm == "asterisk"


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the pbxlink lab needs root (chroot + bind mounts for Asterisk); run the tests as "
            "root, or deselect the lab tests with -m 'not lab'"
        )


def _run_script(name: str, offset: int, extra_env: dict[str, str] | None, timeout: float) -> str:
    _require_root()
    env = dict(os.environ)
    env["PBXLAB_OFFSET"] = str(offset)
    if extra_env:
        env.update(extra_env)
    script = LAB_DIR / name
    try:
        proc = subprocess.run(
            ["bash", str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{name} did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise LabError(f"{name} failed (exit {proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
    return proc.stdout


# Offsets this process uses: an exclusive flock on /run/pbxlab/offset-<N>.lock, held from
# start_asterisk() to stop_asterisk() (or process exit), so two test sessions never share an
# instance and tear it down under each other.  The shell scripts do not take it.
_held: dict[int, IO[bytes]] = {}
LOCK_WAIT_S = float(os.environ.get("PBXLAB_LOCK_WAIT", "600"))


def try_hold_offset(offset: int) -> bool:
    """Take instance `offset` for this process if no other process has it."""
    if offset in _held:
        return True
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    lock = (STATE_ROOT / f"offset-{offset}.lock").open("ab")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return False
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n".encode())
    lock.flush()
    _held[offset] = lock
    return True


def hold_offset(offset: int, wait: float = LOCK_WAIT_S) -> None:
    """Take instance `offset`, waiting up to `wait` s for another process to let it go."""
    deadline = time.monotonic() + wait
    while not try_hold_offset(offset):
        if time.monotonic() >= deadline:
            try:
                owner = (STATE_ROOT / f"offset-{offset}.lock").read_text().strip()
            except OSError:
                owner = "?"
            raise LabError(
                f"lab instance {offset} is in use by another process (pid {owner}); waited {wait:.0f} s"
            )
        time.sleep(0.5)


def release_offset(offset: int) -> None:
    lock = _held.pop(offset, None)
    if lock is not None:
        lock.close()


def setup_asterisk(timeout: float = 900.0) -> float:
    """Build the cached sid root if needed; returns the seconds it took."""
    t0 = time.monotonic()
    _run_script("asterisk-setup.sh", 0, None, timeout)
    return time.monotonic() - t0


PROFILES = ("lab", "freepbx")


def start_asterisk(
    offset: int = 0, timings: LabTimings | None = None, timeout: float = 90.0, *, profile: str = "lab"
) -> LabInstance:
    """Start instance `offset` (idempotent) with dialplan `profile` and return where it listens.

    The calling process holds the instance until stop_asterisk(offset) (see hold_offset)."""
    if profile not in PROFILES:
        raise LabError(f"unknown dialplan profile {profile!r} (one of {', '.join(PROFILES)})")
    _require_root()
    hold_offset(offset)
    env = (timings or LabTimings()).as_env()
    env["PBXLAB_PROFILE"] = profile
    out = _run_script("asterisk-start.sh", offset, env, timeout)
    try:
        return LabInstance.from_json(json.loads(out))
    except (ValueError, KeyError) as exc:
        raise LabError(f"asterisk-start.sh printed no instance description: {out!r}") from exc


def stop_asterisk(
    offset: int = 0, timeout: float = 60.0, *, kill: bool = False, keep_hold: bool = False
) -> None:
    """Stop instance `offset` by its pid (no-op when it is not running).

    kill=True sends SIGKILL at once: Asterisk crashes (fault tests).  keep_hold=True keeps
    this process' hold on the offset (a restart follows)."""
    _run_script("asterisk-stop.sh", offset, {"PBXLAB_STOP_KILL": "1"} if kill else None, timeout)
    if not keep_hold:
        release_offset(offset)


def running_instance(offset: int = 0) -> LabInstance | None:
    """The running instance `offset`, from its instance.json, or None."""
    path = STATE_ROOT / str(offset) / "instance.json"
    try:
        inst = LabInstance.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError):
        return None
    return inst if inst.alive else None
