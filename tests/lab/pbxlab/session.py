"""A lab instance for one test session: pick a free offset, start, restart, stop.

Concurrent pytest sessions (several engineers, CI) must not share an
instance, so an offset is claimed with an exclusive flock on
/run/pbxlab/offset-<N>.lock that lives as long as the session; the lock goes
away with the process, whatever happens.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from pbxlab.ami_client import AmiClient
from pbxlab.driver import LabDriver, ScenarioResult
from pbxlab.instance import (
    LabError,
    LabInstance,
    LabTimings,
    hold_offset,
    release_offset,
    running_instance,
    setup_asterisk,
    start_asterisk,
    stop_asterisk,
    try_hold_offset,
)

# 0 is the developer's default, 9 record_all.py's, 10-12 are left to scripts that want a
# fixed offset of their own
AUTO_OFFSETS = range(13, 40)


def _block_free(offset: int) -> bool:
    """Are the instance's AMI, SIP, trunk and agent ports all unbound right now?"""
    base = 15000 + 100 * offset
    checks = [(socket.SOCK_STREAM, base + 38)] + [(socket.SOCK_DGRAM, base + p) for p in (60, 90, 1, 2, 3)]
    for kind, port in checks:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def claim_offset(preferred: int | None) -> int:
    """Take an instance offset for this process (see pbxlab.instance.hold_offset)."""
    if preferred is not None:
        hold_offset(preferred)
        return preferred
    for offset in AUTO_OFFSETS:
        if not try_hold_offset(offset):
            continue
        if running_instance(offset) is not None or not _block_free(offset):
            release_offset(offset)  # someone runs it by hand or uses its ports; leave it alone
            continue
        return offset
    raise LabError(f"no free lab instance among offsets {AUTO_OFFSETS.start}-{AUTO_OFFSETS.stop - 1}")


@dataclass
class LabSession:
    """A started instance plus its driver; what the `asterisk_lab` fixture yields."""

    instance: LabInstance
    driver: LabDriver
    timings: LabTimings
    setup_seconds: float = 0.0
    profile: str = "lab"

    @classmethod
    def open(
        cls,
        offset: int | None = None,
        timings: LabTimings | None = None,
        workdir: Path | None = None,
        *,
        profile: str = "lab",
    ) -> LabSession:
        if os.geteuid() != 0:
            raise LabError(
                "the Asterisk lab needs root (chroot + bind mounts); run pytest as root or "
                "deselect lab tests with -m 'not lab'"
            )
        setup_s = setup_asterisk()
        offset = claim_offset(offset)
        timings = timings or LabTimings()
        try:
            stop_asterisk(offset, keep_hold=True)  # a leftover of a crashed session
            instance = start_asterisk(offset, timings, profile=profile)
            driver = LabDriver(instance, workdir)
        except BaseException:
            release_offset(offset)
            raise
        return cls(instance, driver, timings, setup_s, profile)

    # ---- what tests use -------------------------------------------------------------
    @property
    def offset(self) -> int:
        return self.instance.offset

    @property
    def host(self) -> str:
        return self.instance.host

    @property
    def ami_port(self) -> int:
        return self.instance.ami_port

    @property
    def ami_user(self) -> str:
        return self.instance.ami_user

    @property
    def ami_secret(self) -> str:
        return self.instance.ami_secret

    @property
    def sip_port(self) -> int:
        return self.instance.sip_port

    @property
    def agi_port(self) -> int:
        return self.instance.agi_port

    def ami(self, events: str = "on") -> AmiClient:
        """A new stdlib AMI session (close it when done, or use `with`)."""
        return self.driver.new_ami(events)

    def run(
        self,
        scenario: str,
        *,
        record_to: Path | None = None,
        truth_to: Path | None = None,
        route_stub: bool = True,
    ) -> ScenarioResult:
        """Place a named scenario (see pbxlab.scenarios.SCENARIOS)."""
        return self.driver.run(scenario, record_to=record_to, truth_to=truth_to, route_stub=route_stub)

    def stop_asterisk(self, *, kill: bool = False) -> None:
        """Stop Asterisk (fault tests; kill=True: SIGKILL, a crash);
        start_asterisk() brings it back on the same ports."""
        self.driver.ami.close()
        stop_asterisk(self.offset, kill=kill, keep_hold=True)

    def start_asterisk(self) -> None:
        self.instance = start_asterisk(self.offset, self.timings, profile=self.profile)
        self.driver.instance = self.instance
        self.driver.reconnect()

    def restart_asterisk(self, *, kill: bool = False) -> None:
        self.stop_asterisk(kill=kill)
        self.start_asterisk()

    def close(self) -> None:
        try:
            self.driver.close()
        finally:
            try:
                stop_asterisk(self.offset)
            finally:
                release_offset(self.offset)
