"""The rules that hold on any dialplan (docs/outcome.md), each on a recording of the FreePBX-style
lab profile (tests/data/ami/fpbx_*), and the proof that the contexts' names play no part."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "ami"
Replay = Any


def _recording(name: str) -> Path:
    plain = DATA_DIR / f"{name}.ami"
    return plain if plain.exists() else DATA_DIR / f"{name}.ami.gz"


def _one(replay: Replay, name: str) -> dict[str, Any]:
    outcomes: list[dict[str, Any]] = replay(_recording(name))
    [outcome] = outcomes
    return outcome


def test_a_ring_group_nobody_answers_is_a_group_miss(replay: Replay) -> None:
    outcome = _one(replay, "fpbx_ring_group_abandoned")
    assert (outcome["answered"], outcome["missed_at"], outcome["queue"]) == (False, "queue", None)
    assert sorted(outcome["rang"]) == ["101", "102", "103"]


def test_ring_group_answered_by_one_is_not_missed_for_others(replay: Replay) -> None:
    outcome = _one(replay, "fpbx_ring_group_answered_by_one")
    assert outcome["answered"] is True
    assert outcome["missed_at"] is None
    assert [h["agent"] for h in outcome["handlers"]] == ["102"]
    assert sorted(outcome["rang"]) == ["101", "102", "103"]


def test_a_ring_group_that_times_out_to_voicemail_is_a_voicemail_miss(replay: Replay) -> None:
    assert _one(replay, "fpbx_ring_group_timeout_voicemail")["missed_at"] == "voicemail"


def test_a_member_on_dnd_never_rings(replay: Replay) -> None:
    outcome = _one(replay, "fpbx_ring_group_member_dnd")
    assert sorted(outcome["rang"]) == ["101", "103"]
    assert [h["agent"] for h in outcome["handlers"]] == ["103"]


def test_one_agent_alone_unanswered_is_an_agent_miss(replay: Replay) -> None:
    assert _one(replay, "fpbx_extension_no_answer_abandoned")["missed_at"] == "agent"


@pytest.mark.parametrize(
    "name",
    [
        "fpbx_followme_answered_on_mobile",
        "fpbx_cf_unconditional_external_answered",
        "fpbx_cf_busy_external_answered",
        "fpbx_cf_no_answer_external_answered",
    ],
)
def test_a_forward_answered_outside_is_answered_and_credited_to_the_agent(replay: Replay, name: str) -> None:
    outcome = _one(replay, name)
    assert outcome["answered"] is True
    assert outcome["direction"] == "inbound"
    assert outcome["handlers"][0]["agent"] == "101"
    assert outcome["handlers"][0]["forwarded_to"] == "0671234567"
    assert outcome["first_answered_by"] == outcome["last_handled_by"] == "101"


def test_an_unanswered_forward_of_one_agent_is_an_agent_miss(replay: Replay) -> None:
    outcome = _one(replay, "fpbx_cf_unconditional_external_unanswered")
    assert (outcome["answered"], outcome["missed_at"], outcome["rang"]) == (False, "agent", [])


def test_a_forward_to_voicemail_is_a_voicemail_miss(replay: Replay) -> None:
    assert _one(replay, "fpbx_cf_unconditional_voicemail")["missed_at"] == "voicemail"


def test_after_an_answer_an_outside_leg_is_a_transfer_not_a_forward(replay: Replay) -> None:
    outcome = _one(replay, "fpbx_blind_transfer_to_external")
    assert [h["agent"] for h in outcome["handlers"]] == ["101"]
    assert "forwarded_to" not in outcome["handlers"][0]
    assert [(t["kind"], t["from"], t["to"]) for t in outcome["transfers"]] == [("blind", "101", "0671234567")]


def test_agents_who_dial_into_the_caller_s_conference_are_its_handlers(replay: Replay) -> None:
    outcomes = replay(_recording("fpbx_conference_caller_and_two_agents"))
    assert len(outcomes) == 1  # the agents' dial-ins are part of the caller's call
    assert [h["agent"] for h in outcomes[0]["handlers"]] == ["101", "102"]
    assert outcomes[0]["direction"] == "inbound"


def test_a_spying_supervisor_is_no_handler(replay: Replay) -> None:
    for name in ("fpbx_chanspy_supervisor", "fpbx_whisper_supervisor"):
        inbound, spy = sorted(replay(_recording(name)), key=lambda o: o["direction"])
        assert [h["agent"] for h in inbound["handlers"]] == ["101"]
        assert (spy["direction"], spy["initiator"], spy["answered"], spy["missed_at"]) == (
            "internal",
            "103",
            False,
            None,
        )


def test_a_park_timeout_rings_the_parker_back_who_handles_the_call_again(replay: Replay) -> None:
    outcome = _one(replay, "fpbx_park_timeout_rings_parker_back")
    assert [h["agent"] for h in outcome["handlers"]] == ["101", "101"]


def test_a_parked_call_picked_up_by_another_agent_has_both_handlers(replay: Replay) -> None:
    outcome = _one(replay, "fpbx_park_picked_up_by_another")
    assert [h["agent"] for h in outcome["handlers"]] == ["101", "102"]
    assert outcome["rang"] == ["101"]


def test_a_leg_the_pbx_played_busy_did_not_hang_up_itself(replay: Replay) -> None:
    assert _one(replay, "fpbx_outbound_busy")["hangup_by"] == "external"
    assert _one(replay, "fpbx_internal_declined")["hangup_by"] == "system"


# The contexts and subroutines of the recordings renamed: Context headers, Local channel names,
# dial strings all change; the outcomes must not (the tracker reads channels, dials, bridges).
RENAMES = [
    (b"from-internal", b"kitchen-phones"),
    (b"from-queue", b"agents-line"),
    (b"from-pstn", b"carrier-in"),
    (b"ext-group", b"hunt-lists"),
    (b"ext-findmefollow", b"find-me"),
    (b"ext-local", b"desks"),
    (b"macro-", b"sub-"),
]


@pytest.mark.parametrize(
    "name",
    [
        "fpbx_ring_group_abandoned",
        "fpbx_followme_answered_on_mobile",
        "fpbx_queue_local_members_optimized",
        "fpbx_mix_50_overlapping",
    ],
)
def test_outcomes_do_not_depend_on_the_dialplan_s_context_names(
    replay: Replay, tmp_path: Path, name: str
) -> None:
    source = _recording(name)
    raw = source.read_bytes()
    if source.suffix == ".gz":
        raw = gzip.decompress(raw)
    renamed = raw
    for old, new in RENAMES:
        renamed = renamed.replace(old, new)
    assert renamed != raw
    copy = tmp_path / f"{name}.ami"
    copy.write_bytes(renamed)
    assert replay(copy) == replay(source)
