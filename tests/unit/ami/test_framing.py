"""AmiFramer / Frame: byte framing of AMI sessions.

The main fixture is a real session recorded from the lab Asterisk 22 with ``pbxlink record``
(an inbound call to 4930100200 from "Іван Петренко", answered by agent 101 through the
support queue): ``data/inbound_answered_cyrillic.ami``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbxlink.ami.framing import (
    BARE_LINE_KEY,
    AmiFramer,
    Frame,
    ProblemKind,
)

DATA = Path(__file__).parent / "data"
REAL = (DATA / "inbound_answered_cyrillic.ami").read_bytes()
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
NAME_UA = "Іван Петренко"
NAME_RU = "Иван Петров"


def frames_of(data: bytes, cuts: list[int] | None = None, **kwargs: int) -> list[Frame]:
    framer = AmiFramer(**kwargs)  # type: ignore[arg-type]
    out: list[Frame] = []
    last = 0
    for cut in sorted(cuts or []):
        out += framer.feed(data[last:cut])
        last = cut
    out += framer.feed(data[last:])
    return out


def ami(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- the real transcript ---------------------------------------------------------------------


def test_real_session_yields_banner_and_every_frame_in_one_read() -> None:
    framer = AmiFramer()
    frames = framer.feed(REAL)
    assert framer.banner == "Asterisk Call Manager/11.0.0"
    assert framer.pending_bytes == 0
    assert framer.take_problems() == []
    # every blank line after the banner ends exactly one frame
    assert len(frames) == REAL.count(b"\r\n\r\n") == framer.counters.frames
    assert frames[0].response == "Success"
    assert frames[0].get("Message") == "Authentication accepted"
    assert frames[-1].response == "Goodbye"


def test_real_session_cyrillic_caller_name_survives_one_byte_reads() -> None:
    framer = AmiFramer()
    frames: list[Frame] = []
    for i in range(len(REAL)):
        frames += framer.feed(REAL[i : i + 1])
    names = {f.get("CallerIDName") for f in frames if f.event == "Newchannel"}
    assert NAME_UA in names
    assert not any(f.lossy for f in frames)
    assert frames == AmiFramer().feed(REAL)


def test_split_utf8_character_at_every_position_survives() -> None:
    data = BANNER + ami("Event: Newchannel", f"CallerIDName: {NAME_RU}", "Uniqueid: 1.1")
    for cut in range(1, len(data)):
        (frame,) = frames_of(data, [cut])
        assert frame.get("CallerIDName") == NAME_RU, cut
        assert not frame.lossy


# -- fields and headers ------------------------------------------------------------------


def test_event_and_response_names_come_from_the_first_line() -> None:
    event = Frame(b"Event: Hangup\r\nUniqueid: 1.2")
    response = Frame(b"Response: Error\r\nActionID: x\r\nMessage: nope")
    assert (event.event, event.response) == ("Hangup", None)
    assert (response.event, response.response) == (None, "Error")
    assert response.action_id == "x"
    assert event.action_id is None


def test_event_header_not_first_is_still_found() -> None:
    frame = Frame(b"ActionID: 7\r\nEvent: CoreShowChannel\r\nChannel: PJSIP/101-1")
    assert frame.event == "CoreShowChannel"
    assert frame.response is None
    assert frame.action_id == "7"


def test_repeated_headers_are_kept_in_order_and_get_is_case_insensitive() -> None:
    frame = Frame(b"Event: Newchannel\r\nChanVariable: A=1\r\nChanVariable: B=2\r\nchanvariable: C=3")
    assert frame.get_all("ChanVariable") == ("A=1", "B=2", "C=3")
    assert frame.get("CHANVARIABLE") == "A=1"
    assert frame.header_map["ChanVariable"] == "A=1"
    assert frame.headers[1:] == (
        ("ChanVariable", "A=1"),
        ("ChanVariable", "B=2"),
        ("chanvariable", "C=3"),
    )
    assert frame.get("Missing") is None
    assert frame.get("Missing", "-") == "-"


def test_value_by_byte_search_agrees_with_parsed_headers_on_the_real_session() -> None:
    frames = AmiFramer().feed(REAL)
    keys = {key for frame in frames for key, _ in frame.headers}
    for frame in frames:
        for key in keys:
            assert frame.value(key) == frame.header_map.get(key), (key, frame.raw[:60])


def test_value_finds_first_line_and_misses_partial_key_names() -> None:
    frame = Frame(b"Event: Dial\r\nDestChannel: PJSIP/102-2\r\nChannel: PJSIP/101-1\nX: 1")
    assert frame.value("Event") == "Dial"
    assert frame.value("Channel") == "PJSIP/101-1"
    assert frame.value("X") == "1"
    assert frame.value("Chan") is None


def test_values_keep_colons_spaces_and_empty_values() -> None:
    frame = Frame(b"Event: X\r\nURI: sip:101@127.0.0.1:5060\r\nAccountCode: \r\nName:  two\r\nK:v")
    assert frame.get("URI") == "sip:101@127.0.0.1:5060"
    assert frame.get("AccountCode") == ""
    assert frame.get("Name") == " two"
    assert frame.get("K") == "v"


def test_lines_without_colon_become_output_entries() -> None:
    data = BANNER + ami(
        "Response: Follows",
        "Privilege: Command",
        "Name/username             Host",
        "101/101                   (Unspecified)",
        "--END COMMAND--",
    )
    (frame,) = frames_of(data)
    assert frame.response == "Follows"
    assert frame.get_all(BARE_LINE_KEY) == (
        "Name/username             Host",
        "101/101                   (Unspecified)",
        "--END COMMAND--",
    )


def test_invalid_utf8_is_replaced_and_flagged_not_raised() -> None:
    frame = Frame(b"Event: Newchannel\r\nCallerIDName: \xcf\xf0\xe8\xe2\xe5\xf2")  # cp1251
    assert frame.lossy
    assert frame.get("CallerIDName") == "\ufffd" * 6
    assert frame.event == "Newchannel"


def test_frame_equality_and_hash_follow_the_raw_bytes() -> None:
    a, b = Frame(b"Event: X"), Frame(b"Event: X")
    assert a == b
    assert hash(a) == hash(b)
    assert a != Frame(b"Event: Y")


# -- stream shapes -----------------------------------------------------------------------------


def test_bare_newline_frames_are_tolerated() -> None:
    data = b"Asterisk Call Manager/11.0.0\nEvent: A\nK: 1\n\nEvent: B\r\nK: 2\r\n\r\nEvent: C\n\r\n"
    frames = frames_of(data)
    assert [f.event for f in frames] == ["A", "B", "C"]
    assert [f.get("K") for f in frames] == ["1", "2", None]
    assert frames[0].raw == b"Event: A\nK: 1"


def test_extra_blank_lines_between_frames_are_skipped() -> None:
    data = BANNER + b"\r\n\r\n" + ami("Event: A") + b"\r\n" + ami("Event: B")
    assert [f.event for f in frames_of(data)] == ["A", "B"]


def test_incomplete_last_frame_waits_for_its_blank_line() -> None:
    framer = AmiFramer()
    assert framer.feed(BANNER + b"Event: A\r\nK: 1\r\n") == []
    assert framer.banner == "Asterisk Call Manager/11.0.0"
    assert framer.pending_bytes > 0
    (frame,) = framer.feed(b"\r\n")
    assert frame.get("K") == "1"


def test_stream_without_banner_is_framed_and_reported() -> None:
    framer = AmiFramer()
    frames = framer.feed(ami("Event: A") + ami("Event: B"))
    assert [f.event for f in frames] == ["A", "B"]
    assert framer.banner is None
    (problem,) = framer.take_problems()
    assert problem.kind is ProblemKind.MISSING_BANNER
    assert problem.head == b"Event: A\r"
    assert framer.counters.missing_banner == 1
    assert framer.take_problems() == []


def test_framer_without_banner_expectation_reports_nothing() -> None:
    framer = AmiFramer(expect_banner=False)
    assert [f.event for f in framer.feed(ami("Event: A"))] == ["A"]
    assert framer.take_problems() == []


def test_banner_waits_for_its_line_end() -> None:
    framer = AmiFramer()
    assert framer.feed(b"Asterisk Call Man") == []
    assert framer.banner is None
    assert framer.feed(b"ager/11.0.0\r\n") == []
    assert framer.banner == "Asterisk Call Manager/11.0.0"


# -- oversized frames -------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [10**9, 4096, 7])
def test_oversized_frame_is_dropped_counted_and_the_stream_goes_on(chunk: int) -> None:
    huge = ami("Event: Huge", "Data: " + "x" * 5000)
    data = BANNER + ami("Event: Before") + huge + ami("Event: After", f"Name: {NAME_UA}")
    framer = AmiFramer(max_frame_bytes=2048)
    frames: list[Frame] = []
    for i in range(0, len(data), chunk):
        frames += framer.feed(data[i : i + chunk])
    assert [f.event for f in frames] == ["Before", "After"]
    assert frames[1].get("Name") == NAME_UA
    (problem,) = framer.take_problems()
    assert problem.kind is ProblemKind.OVERSIZED_FRAME
    assert problem.head.startswith(b"Event: Huge\r\nData: xxx")
    assert problem.size > 2048
    assert framer.counters.oversized_frames == 1
    assert framer.counters.discarded_bytes > 5000
    assert framer.pending_bytes <= 2048 + 3


def test_endless_frame_never_holds_more_than_the_limit() -> None:
    framer = AmiFramer(max_frame_bytes=1024)
    framer.feed(BANNER)
    for _ in range(1000):
        assert framer.feed(b"y" * 997) == []
        assert framer.pending_bytes <= 1024 + 2
    assert framer.counters.oversized_frames == 1
    assert framer.feed(b"\r\n\r\n" + ami("Event: Back")) == [Frame(b"Event: Back")]


def test_frame_of_exactly_the_limit_is_kept() -> None:
    body = b"Event: E\r\nD: " + b"z" * 100
    framer = AmiFramer(max_frame_bytes=len(body), expect_banner=False)
    assert framer.feed(body + b"\r\n\r\n") == [Frame(body)]


def test_non_positive_limit_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_frame_bytes"):
        AmiFramer(max_frame_bytes=0)


# -- properties -------------------------------------------------------------------------------

_header_key = st.text(
    st.characters(min_codepoint=0x41, max_codepoint=0x7A, exclude_characters=":[\\]^`"),
    min_size=1,
    max_size=12,
)
_header_value = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=30)
_frame = st.lists(st.tuples(_header_key, _header_value), min_size=1, max_size=8)


@st.composite
def _session(draw: st.DrawFn) -> bytes:
    frames = draw(st.lists(_frame, max_size=12))
    body = b"".join(
        ("\r\n".join(f"{k}: {v}" for k, v in headers) + "\r\n\r\n").encode() for headers in frames
    )
    return BANNER + body


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=_session(), cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20))
def test_any_rechunking_of_a_session_gives_the_same_frames(data: bytes, cuts: list[int]) -> None:
    whole = frames_of(data)
    pieces = frames_of(data, [c % (len(data) + 1) for c in cuts])
    assert pieces == whole
    assert [f.headers for f in pieces] == [f.headers for f in whole]


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(REAL)), max_size=40))
def test_any_rechunking_of_the_real_session_gives_the_same_frames(cuts: list[int]) -> None:
    assert frames_of(REAL, cuts) == frames_of(REAL)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=20),
    limit=st.integers(min_value=1, max_value=200),
)
def test_garbage_never_raises_and_rechunking_never_changes_the_result(
    data: bytes, cuts: list[int], limit: int
) -> None:
    framer = AmiFramer(max_frame_bytes=limit)
    frames = framer.feed(data)
    for frame in frames:  # every accessor copes with anything
        _ = (frame.event, frame.response, frame.headers, frame.action_id, frame.lossy)
        assert len(frame.raw) <= limit
    kinds = [p.kind for p in framer.take_problems()]
    assert framer.pending_bytes <= max(limit, 0) + 2 + len(b"\r\n")

    other = AmiFramer(max_frame_bytes=limit)
    pieces: list[Frame] = []
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        pieces += other.feed(data[last:cut])
        last = cut
    pieces += other.feed(data[last:])
    assert pieces == frames
    assert [p.kind for p in other.take_problems()] == kinds
    assert other.banner == framer.banner


@settings(max_examples=200)
@given(name=st.text(min_size=1, max_size=20).filter(lambda s: "\r" not in s and "\n" not in s))
def test_fast_event_name_matches_the_parsed_header(name: str) -> None:
    frame = Frame(f"Event: {name}\r\nK: v".encode())
    assert frame.event == Frame(f"Event: {name}\r\nK: v".encode()).get("Event")
