"""The recorded lab sessions in tests/data/ami are complete, raw and agree with their truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pbxlab.recording_reader import read_bytes, read_frames
from pbxlab.scenarios import SCENARIOS
from pbxlab.scenarios_freepbx import FREEPBX_SCENARIOS

from pbxlink.ami.framing import AmiFramer

DATA = Path(__file__).resolve().parents[2] / "data" / "ami"
# other parts keep their own files here too (e.g. resync sessions): only the lab's scenarios
TRUTHS = [DATA / f"{name}.truth.json" for name in sorted([*SCENARIOS, *FREEPBX_SCENARIOS])]
CONTRACT_KEYS = {
    "direction", "answered", "missed_at", "external", "line", "initiator",
    "first_answered_by", "last_handled_by", "handlers", "rang", "transfers",
    "queue", "hangup_by", "routing",
}  # fmt: skip


def _truth(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_every_scenario_has_a_recording_and_a_truth() -> None:
    for path in TRUTHS:
        truth = _truth(path)
        assert truth["scenario"] == path.name.removesuffix(".truth.json")
        assert (DATA / str(truth["recording"])).exists()


@pytest.mark.parametrize("truth_path", TRUTHS, ids=lambda p: p.name.removesuffix(".truth.json"))
def test_recording_is_a_raw_ami_session_that_matches_its_truth(truth_path: Path) -> None:
    truth = _truth(truth_path)
    assert truth["check_problems"] == []
    rec = DATA / str(truth["recording"])
    raw = read_bytes(rec)
    banner, _, rest = raw.partition(b"\r\n")
    assert banner.startswith(b"Asterisk Call Manager/")
    assert rest.startswith(b"Response: Success\r\n")  # the login response comes first
    assert raw.endswith(b"\r\n\r\n")
    frames = list(read_frames(rec))
    assert frames[0]["Message"] == "Authentication accepted"
    assert frames[-1]["Response"] == "Goodbye"
    events = [f for f in frames if "Event" in f]
    # timestampevents=yes: every call-related event carries its time
    assert all("Timestamp" in e for e in events if "Linkedid" in e)
    calls = truth["calls"]
    assert isinstance(calls, list)
    assert calls
    for call in calls:
        assert set(call) >= CONTRACT_KEYS
        if call["line"]:
            assert any(
                e["Event"] == "Newchannel"
                and e["Exten"] == call["line"]
                and e["CallerIDNum"] == call["external"]["raw"]
                for e in events
            ), call


@pytest.mark.parametrize("truth_path", TRUTHS, ids=lambda p: p.name.removesuffix(".truth.json"))
def test_pbxlink_framer_reads_the_recording_like_the_lab_reader(truth_path: Path) -> None:
    rec = DATA / str(_truth(truth_path)["recording"])
    framer = AmiFramer()
    raw = read_bytes(rec)
    frames = []
    for i in range(0, len(raw), 1000):  # arbitrary chunking, as a socket would deliver
        frames += framer.feed(raw[i : i + 1000])
    assert framer.take_problems() == []
    assert framer.banner is not None
    assert framer.banner.startswith("Asterisk Call Manager/")
    assert len(frames) == len(list(read_frames(rec)))
    assert framer.pending_bytes == 0


def test_non_ascii_caller_name_is_recorded_as_utf8() -> None:
    raw = read_bytes(DATA / "non_ascii_caller_name.ami")
    assert "CallerIDName: Олена Петренко ☎ Київ\r\n".encode() in raw
