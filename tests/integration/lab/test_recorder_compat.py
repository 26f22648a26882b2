"""The lab's raw recorder and `pbxlink record` write the same session format.

Both record the same live scenario at once; the events they hold must be the
same, in the same order (only per-session frames differ: each session's own
login response, SuccessfulAuth and pbxlink's resync replies).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pbxlab.ami_client import Frame
from pbxlab.ami_recorder import PbxlinkRecorder
from pbxlab.recording_reader import read_bytes, read_frames
from pbxlab.session import LabSession

pytestmark = pytest.mark.lab


def _call_events(path: Path) -> list[tuple[str, str, str]]:
    def key(f: Frame) -> tuple[str, str, str]:
        return (f["Event"], f.get("Uniqueid", ""), f.get("Timestamp", ""))

    return [key(f) for f in read_frames(path) if "Event" in f and "Linkedid" in f]


def test_lab_recorder_and_pbxlink_record_capture_the_same_events(
    asterisk_lab: LabSession, tmp_path: Path
) -> None:
    i = asterisk_lab.instance
    theirs = tmp_path / "pbxlink.ami"
    ours = tmp_path / "pbxlab.ami"
    recorder = PbxlinkRecorder(i.host, i.ami_port, i.ami_user, i.ami_secret, theirs).start()
    try:
        result = asterisk_lab.run("internal_answered", record_to=ours)
    finally:
        recorder.stop()
    assert result.problems == []
    for path in (ours, theirs):
        raw = read_bytes(path)
        assert raw.startswith(b"Asterisk Call Manager/")
        assert raw.endswith(b"\r\n\r\n")
    ours_events, theirs_events = _call_events(ours), _call_events(theirs)
    assert len(ours_events) > 20
    # pbxlink's session started earlier and ended later: ours is a contiguous part of it
    start = theirs_events.index(ours_events[0])
    assert theirs_events[start : start + len(ours_events)] == ours_events
