"""The AMI decoder: real frames from a lab transcript in, typed events out."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxlink.ami.decode import (
    DECODABLE_EVENTS,
    AmiDecoder,
    MalformedEvent,
    unescape_c,
)
from pbxlink.ami.events import (
    BridgeEnter,
    ChannelState,
    DialBegin,
    DialEnd,
    DialStatus,
    Hangup,
    HangupRequest,
    Newchannel,
    TrackedVariable,
    VarSet,
)
from pbxlink.ami.framing import AmiFramer, Frame
from pbxlink.daemon.replay import read_chunks

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "ami"


def _frames(name: str) -> list[Frame]:
    framer = AmiFramer()
    frames: list[Frame] = []
    for chunk in read_chunks(DATA_DIR / name):
        frames.extend(framer.feed(chunk))
    return frames


@pytest.fixture(scope="module")
def answered_frames() -> list[Frame]:
    return _frames("inbound_answered.ami")


def test_newchannel_of_the_trunk_decodes_to_a_typed_snapshot(answered_frames: list[Frame]) -> None:
    frame = next(f for f in answered_frames if f.event == "Newchannel")
    event = AmiDecoder().decode(frame)
    assert isinstance(event, Newchannel)
    assert event.time == float(frame.get("Timestamp") or "nan")
    chan = event.channel
    assert chan.name.startswith("PJSIP/trunk-")
    assert chan.uniqueid == chan.linkedid == frame.get("Uniqueid")
    assert chan.caller_num == "+380501110001"
    assert chan.caller_name == "Alice Caller"
    assert chan.exten == "4930100200"
    assert chan.state is ChannelState.RING


def test_dial_hangup_and_bridge_events_carry_both_parties(answered_frames: list[Frame]) -> None:
    decoder = AmiDecoder()
    events = [decoder.decode(f) for f in answered_frames]
    begin = next(e for e in events if isinstance(e, DialBegin))
    assert begin.caller is not None
    assert begin.caller.name.startswith("PJSIP/trunk-")
    assert begin.dest.name.startswith("PJSIP/101-")
    assert begin.dial_string == "101"
    end = next(e for e in events if isinstance(e, DialEnd))
    assert end.status is DialStatus.ANSWER
    enters = [e for e in events if isinstance(e, BridgeEnter)]
    assert len(enters) == 2
    assert enters[0].bridge.uniqueid == enters[1].bridge.uniqueid
    assert not enters[0].bridge.holding
    request = next(e for e in events if isinstance(e, HangupRequest))
    assert request.soft is False
    assert request.channel.name.startswith("PJSIP/trunk-")
    assert [e.cause for e in events if isinstance(e, Hangup)] == [16, 16]


def test_only_tracked_variables_are_decoded_the_rest_is_counted(
    answered_frames: list[Frame],
) -> None:
    decoder = AmiDecoder()
    varsets = [f for f in answered_frames if f.event == "VarSet"]
    decoded = [e for e in map(decoder.decode, varsets) if e is not None]
    assert all(isinstance(e, VarSet) for e in decoded)
    names = {e.variable for e in decoded if isinstance(e, VarSet)}
    assert TrackedVariable.INBOUND_DID in names  # set as __INBOUND_DID by the dialplan
    assert TrackedVariable.PBXLINK_ROUTE in names
    assert decoder.ignored["VarSet"] == len(varsets) - len(decoded) > 0


def test_unknown_events_and_responses_are_dropped_and_counted(
    answered_frames: list[Frame],
) -> None:
    decoder = AmiDecoder()
    for frame in answered_frames:
        decoder.decode(frame)
    assert decoder.ignored["<response>"] >= 1  # the login response
    unknown = {f.event for f in answered_frames} - DECODABLE_EVENTS - {None}
    assert unknown, "the transcript has events the tracker does not use (TestEvent, CEL …)"
    for name in unknown:
        assert decoder.ignored[str(name)] > 0


def test_a_tracked_event_without_its_channel_raises_one_error_type() -> None:
    frame = Frame(b"Event: Hangup\r\nTimestamp: 1795389354.5\r\nCause: 16")
    with pytest.raises(MalformedEvent) as caught:
        AmiDecoder().decode(frame)
    assert caught.value.event == "Hangup"


def test_a_garbage_timestamp_is_malformed_not_a_crash() -> None:
    frame = Frame(
        b"Event: Newchannel\r\nTimestamp: yesterday\r\nChannel: PJSIP/101-1\r\nUniqueid: 1.1\r\nLinkedid: 1.1"
    )
    with pytest.raises(MalformedEvent, match="Timestamp"):
        AmiDecoder().decode(frame)


def test_caller_names_are_c_unescaped() -> None:
    frame = Frame(
        b"Event: Newchannel\r\nChannel: PJSIP/trunk-1\r\nChannelState: 4\r\n"
        b'CallerIDNum: 0501110002\r\nCallerIDName: Bob \\"The Boss\\" \\\\ Co\r\n'
        b"Uniqueid: 1.1\r\nLinkedid: 1.1"
    )
    event = AmiDecoder().decode(frame)
    assert isinstance(event, Newchannel)
    assert event.channel.caller_name == 'Bob "The Boss" \\ Co'
    assert event.time is None


@given(st.text())
def test_unescaping_undoes_c_escaping(text: str) -> None:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    assert unescape_c(escaped) == text


def test_a_non_ascii_caller_name_survives_reads_that_split_its_characters() -> None:
    data = (DATA_DIR / "non_ascii_caller_name.ami").read_bytes()
    name = "Олена Петренко ☎ Київ"
    at = data.index(name.encode()) + 3  # inside the second Cyrillic letter's two bytes
    framer = AmiFramer()
    decoder = AmiDecoder()
    events = [decoder.decode(f) for chunk in (data[:at], data[at:]) for f in framer.feed(chunk)]
    first = next(e for e in events if isinstance(e, Newchannel))
    assert first.channel.caller_name == name


def test_event_names_match_case_insensitively_and_unknown_ones_are_counted() -> None:
    decoder = AmiDecoder()
    lower = Frame(b"Event: newchannel\r\nChannel: PJSIP/trunk-1\r\nUniqueid: 1.1\r\nLinkedid: 1.1")
    assert isinstance(decoder.decode(lower), Newchannel)
    made_up = Frame(b"Event: NoSuchEvent\r\nChannel: PJSIP/trunk-1")
    assert decoder.decode(made_up) is None
    assert decoder.decode(made_up) is None
    assert decoder.ignored["NoSuchEvent"] == 2


def test_a_decoder_limited_to_some_events_drops_the_others() -> None:
    decoder = AmiDecoder({"Hangup"})
    frame = Frame(b"Event: Newchannel\r\nChannel: PJSIP/trunk-1\r\nUniqueid: 1.1\r\nLinkedid: 1.1")
    assert decoder.decode(frame) is None
    assert decoder.ignored["Newchannel"] == 1
    with pytest.raises(ValueError, match="NoSuchEvent"):
        AmiDecoder({"NoSuchEvent"})
