"""Replays of the recorded lab transcripts (tests/data/ami) against their expected outcomes.

For every ``<scenario>.ami`` the lab recorded there is a ``<scenario>.truth.json`` (what the
driver did) and a ``<scenario>.expected.json`` (the outcomes, written from the truth and from
reading the transcript: times are the AMI timestamps of the events that define them).

When a recording is added or re-recorded, its expected file is written by hand-checking
``pbxlink replay FILE`` against the truth and the transcript; three tests here keep that honest
independently of the expected file: the outcome must agree with every fact the driver's truth
states, every time in it must be the timestamp of one of the call's own AMI events, and it must
fit the published schema.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs published
import pytest

from pbxlink.ami.framing import AmiFramer
from pbxlink.daemon.replay import read_chunks

Replay = Any
DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "ami"
RECORDINGS = sorted([*DATA_DIR.glob("*.ami"), *DATA_DIR.glob("*.ami.gz")])


def scenario_name(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".ami")


IDS = [scenario_name(p) for p in RECORDINGS]


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(scenario_name(path) + suffix)


def test_the_lab_recordings_are_present() -> None:
    assert len(RECORDINGS) >= 10, f"expected the lab's recordings in {RECORDINGS}"


@pytest.mark.parametrize("path", RECORDINGS, ids=IDS)
def test_replay_gives_the_expected_outcomes(path: Path, replay: Replay) -> None:
    expected_file = _sibling(path, ".expected.json")
    assert expected_file.is_file(), f"no expected outcomes written for {path.name}"
    expected = json.loads(expected_file.read_text(encoding="utf-8"))
    assert replay(path) == expected


def _truth_view(outcome: dict[str, Any]) -> dict[str, Any]:
    """The part of an outcome the lab driver knows for certain (its truth.json keys)."""
    routing = outcome["routing"]
    return {
        "direction": outcome["direction"],
        "answered": outcome["answered"],
        "missed_at": outcome["missed_at"],
        "external": None if outcome["external"] is None else {"raw": outcome["external"]["raw"]},
        "line": outcome["line"],
        "initiator": outcome["initiator"],
        "first_answered_by": outcome["first_answered_by"],
        "last_handled_by": outcome["last_handled_by"],
        "handlers": [h["agent"] for h in outcome["handlers"]],
        "handler_forwarded_to": [h.get("forwarded_to") for h in outcome["handlers"]],
        "rang": sorted(outcome["rang"]),
        "transfers": [{"kind": t["kind"], "from": t["from"], "to": t["to"]} for t in outcome["transfers"]],
        "queue": outcome["queue"],
        "hangup_by": outcome["hangup_by"],
        "reconstructed": outcome["reconstructed"],
        "recordings": outcome["recordings"],
        "routing": None
        if routing is None
        else {
            "target": routing["target"],
            "reason": routing["reason"] or None,
            "owner": routing["owner"],
        },
    }


def _truth_expectation(call: dict[str, Any]) -> dict[str, Any]:
    routing = call["routing"]
    external = call["external"]
    return {
        "direction": call["direction"],
        "answered": call["answered"],
        "missed_at": call["missed_at"],
        "external": None if external is None else {"raw": external["raw"]},
        "line": call["line"],
        "initiator": call["initiator"],
        "first_answered_by": call["first_answered_by"],
        "last_handled_by": call["last_handled_by"],
        "handlers": call["handlers"],
        # the FreePBX profile's truths name the outside number that took the call for an agent
        "handler_forwarded_to": call.get("handler_forwarded_to", [None] * len(call["handlers"])),
        "rang": sorted(call["rang"]),
        "transfers": [{"kind": t["kind"], "from": t["from"], "to": t["to"]} for t in call["transfers"]],
        "queue": call["queue"],
        "hangup_by": call["hangup_by"],
        "reconstructed": call.get("reconstructed", False),
        "recordings": call.get("recordings", []),
        "routing": None
        if routing is None
        else {
            "target": routing["target"],
            # the lab's "no FastAGI server" truth has no reason; pbxlink says why
            "reason": routing["reason"] if routing["reason"] is not None else "agi_failure",
            "owner": routing["owner"],
        },
    }


@pytest.mark.parametrize("path", RECORDINGS, ids=IDS)
def test_outcomes_agree_with_what_the_lab_driver_did(path: Path, replay: Replay) -> None:
    truth = json.loads(_sibling(path, ".truth.json").read_text(encoding="utf-8"))
    outcomes = replay(path)
    got = sorted((_truth_view(o) for o in outcomes), key=json.dumps)
    want = sorted((_truth_expectation(c) for c in truth["calls"]), key=json.dumps)
    assert got == want


@pytest.mark.parametrize("path", RECORDINGS, ids=IDS)
def test_every_outcome_and_live_event_fits_the_published_schema(
    path: Path, replay: Replay, outcome_schema: jsonschema.protocols.Validator
) -> None:
    items = replay(path, events=True)
    assert items
    for item in items:
        errors = sorted(outcome_schema.iter_errors(item), key=str)
        assert not errors, (item, [e.message for e in errors])


@pytest.mark.parametrize("path", RECORDINGS, ids=IDS)
def test_live_events_count_from_one_per_call_and_end_with_ended(path: Path, replay: Replay) -> None:
    items = replay(path, events=True)
    outcomes = {o["id"]: o for o in items if "linkedids" in o}
    events_by_call: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        if "type" in item:
            events_by_call.setdefault(item["call_id"], []).append(item)
    assert set(events_by_call) >= set(outcomes)
    for call_id, outcome in outcomes.items():
        seqs = [e["seq"] for e in events_by_call[call_id]]
        assert seqs == list(range(1, len(seqs) + 1))
        assert events_by_call[call_id][-1]["type"] == "ended"
        answered_agents = [e["agent"] for e in events_by_call[call_id] if e["type"] == "answered"]
        assert answered_agents == [h["agent"] for h in outcome["handlers"]]


def _iso(epoch: float) -> str:
    moment = datetime.fromtimestamp(round(epoch, 3), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@pytest.mark.parametrize("path", RECORDINGS, ids=IDS)
def test_outcome_times_are_timestamps_of_the_call_s_own_events(path: Path, replay: Replay) -> None:
    """Read straight from the transcript: start = the first Newchannel, end = the last Hangup,
    talk segments begin and end at bridge or hangup events, transfers at transfer events."""
    framer = AmiFramer()
    frames = [f for chunk in read_chunks(path) for f in framer.feed(chunk)]
    for outcome in replay(path):
        linkedids = set(outcome["linkedids"])
        uniqueids = {f.get("Uniqueid") for f in frames if f.get("Linkedid") in linkedids}
        stamped = [
            (f.event, float(f.get("Timestamp") or "nan"))
            for f in frames
            if f.event and f.get("Timestamp") and f.get("Uniqueid") in uniqueids
        ]
        if not outcome["reconstructed"]:
            assert outcome["started_at"] == _iso(min(t for e, t in stamped if e == "Newchannel"))
            assert outcome["ended_at"] == _iso(max(t for e, t in stamped if e == "Hangup"))
        talk_moments = {_iso(t) for e, t in stamped if e in ("BridgeEnter", "BridgeLeave", "Hangup")}
        for handler in outcome["handlers"]:
            if not outcome["reconstructed"]:
                assert handler["answered_at"] in talk_moments
                assert handler["ended_at"] in talk_moments
        transfer_moments = {
            _iso(float(f.get("Timestamp") or "nan"))
            for f in frames
            if f.event in ("BlindTransfer", "AttendedTransfer")
        }
        for transfer in outcome["transfers"]:
            assert transfer["at"] in transfer_moments
