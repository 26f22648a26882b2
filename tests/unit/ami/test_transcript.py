"""TranscriptItems: a recorded session turned back into the live shell's items.

``data/mid_call_snapshot.ami`` was recorded from the lab Asterisk 22 with ``pbxlink record``
while an inbound call from "Иван Петров" was already bridged with agent 101; it ends after
the call hung up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pbxlink.ami.framing import Frame
from pbxlink.daemon.amiclient.record import TranscriptItems, iter_transcript
from pbxlink.daemon.amiclient.shell import AmiItem, Resynced

DATA = Path(__file__).parent / "data"


def replay(name: str, chunk_size: int = 1 << 16) -> list[AmiItem]:
    items = TranscriptItems()
    out = [i for c in iter_transcript(DATA / name, chunk_size=chunk_size) for i in items.feed(c)]
    assert items.framer.take_problems() == []
    assert items.framer.pending_bytes == 0
    return out


def test_snapshot_of_a_call_already_up_becomes_the_resync_marker() -> None:
    items = replay("mid_call_snapshot.ami")
    (marker,) = [i for i in items if isinstance(i, Resynced)]
    assert marker.session == 1
    assert marker.asterisk_version.startswith("22.")
    assert marker.banner == "Asterisk Call Manager/11.0.0"
    caller, agent = marker.channels
    assert caller.get("CallerIDName") == "Иван Петров"
    assert (agent.get("Channel") or "").startswith("PJSIP/101-")
    assert caller.get("Linkedid") == agent.get("Linkedid")
    assert caller.get("BridgeId") == agent.get("BridgeId") != ""
    (bridge,) = marker.bridges
    assert bridge.get("BridgeUniqueid") == caller.get("BridgeId")
    assert marker.taken_at > 1.7e9  # an AMI Timestamp from the recording, not 0


def test_the_call_ends_after_the_marker_in_the_replay() -> None:
    items = replay("mid_call_snapshot.ami")
    marker = next(i for i in items if isinstance(i, Resynced))
    after = items[items.index(marker) + 1 :]
    hung_up = {f.get("Channel") for f in after if isinstance(f, Frame) and f.event == "Hangup"}
    assert {c.get("Channel") for c in marker.channels} <= hung_up


def test_replies_to_pbxlinks_own_actions_are_not_passed_on() -> None:
    for name in ("mid_call_snapshot.ami", "inbound_answered_cyrillic.ami"):
        frames = [i for i in replay(name) if isinstance(i, Frame)]
        assert not any((f.action_id or "").startswith("pbxlink/") for f in frames)
        assert all(f.event is not None for f in frames)


@pytest.mark.parametrize("chunk_size", [1, 13, 4096])
def test_replay_does_not_depend_on_read_sizes(chunk_size: int) -> None:
    assert replay("mid_call_snapshot.ami", chunk_size) == replay("mid_call_snapshot.ami")
