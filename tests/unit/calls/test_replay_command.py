"""``pbxlink replay``: outcomes on stdout (one JSON per line, nothing else), problems on stderr."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pbxlink.cli import main as pbxlink

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "ami"


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_replay_prints_exactly_the_outcomes_one_json_per_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = DATA_DIR / "blind_transfer_refer.ami"
    assert pbxlink(["replay", str(path)]) == 0
    captured = capsys.readouterr()
    expected = json.loads((DATA_DIR / "blind_transfer_refer.expected.json").read_text())
    assert _lines(captured.out) == expected
    assert captured.err == ""


def test_replay_reads_gzip_by_content(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    packed = tmp_path / "session.bin"  # no .gz suffix on purpose
    packed.write_bytes(gzip.compress((DATA_DIR / "ivr_hangup.ami").read_bytes()))
    assert pbxlink(["replay", str(packed)]) == 0
    expected = json.loads((DATA_DIR / "ivr_hangup.expected.json").read_text())
    assert _lines(capsys.readouterr().out) == expected


def test_replay_with_events_interleaves_live_events_before_each_outcome(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert pbxlink(["replay", "--events", str(DATA_DIR / "inbound_answered.ami")]) == 0
    items = _lines(capsys.readouterr().out)
    assert [i.get("type", "outcome") for i in items] == ["ringing", "answered", "ended", "outcome"]


def test_node_and_region_options_shape_the_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA_DIR / "inbound_agent_rings_caller_hangs_up.ami"
    assert pbxlink(["replay", "--node", "kyiv", "--default-region", "de", str(path)]) == 0
    [outcome] = _lines(capsys.readouterr().out)
    assert str(outcome["id"]).startswith("kyiv:")
    # "0501110002" is a Ukrainian national number: invalid on a German line, so no E.164
    assert outcome["external"] == {"raw": "0501110002", "e164": None}


def test_a_recording_cut_mid_call_reports_the_open_call_on_stderr_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (DATA_DIR / "attended_transfer_completed.ami").read_bytes()
    cut = tmp_path / "cut.ami"
    cut.write_bytes(data[: data.index(b"Event: AttendedTransfer")])
    assert pbxlink(["replay", str(cut)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "still up at the end of the recording" in captured.err
    assert "PJSIP/trunk-" in captured.err


def test_a_malformed_frame_is_reported_and_the_rest_still_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (DATA_DIR / "inbound_answered.ami").read_bytes()
    first_frame_end = data.index(b"\r\n\r\n") + 4
    garbage = b"Event: Hangup\r\nTimestamp: not-a-time\r\nChannel: PJSIP/x-1\r\nUniqueid: 1.1\r\n\r\n"
    broken = tmp_path / "broken.ami"
    broken.write_bytes(data[:first_frame_end] + garbage + data[first_frame_end:])
    assert pbxlink(["replay", str(broken)]) == 0
    captured = capsys.readouterr()
    expected = json.loads((DATA_DIR / "inbound_answered.expected.json").read_text())
    assert _lines(captured.out) == expected
    assert "malformed AMI Hangup event" in captured.err


def test_a_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert pbxlink(["replay", str(tmp_path / "nope.ami")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no such file" in captured.err


def test_a_bad_agent_pattern_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA_DIR / "inbound_answered.ami"
    assert pbxlink(["replay", "--agents", "(", str(path)]) == 2
    assert "--agents is not a regular expression" in capsys.readouterr().err
