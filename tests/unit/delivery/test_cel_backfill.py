"""Asterisk's CEL records read back from its backends and folded through the tracker.

``tests/data/cel`` holds what a real Asterisk 22 wrote through cel_sqlite3_custom (SQLite) and
cel_custom (CSV) while the lab ran a set of scenarios (``tests/lab/record_cel.py``), and the
ground truth of every call from the SIP side. The calls the tracker rebuilds from CEL alone
must agree with that truth; the AMI recordings (tests/data/ami, which carry the CEL events
too) check that a backfill never reports a call the tracker saw live, and that a gap in the
middle of a call is filled.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pbxlink.ami.cel import cel_to_events
from pbxlink.ami.decode import AmiDecoder
from pbxlink.ami.events import AmiEvent, Cel, CelEventType
from pbxlink.ami.framing import AmiFramer
from pbxlink.calls.model import CallOutcome
from pbxlink.calls.outcome import to_json
from pbxlink.calls.parties import PartyRules
from pbxlink.calls.tracker import CallTracker, CallTrackerSettings
from pbxlink.daemon.cel_reader import CelReader, CelReadError, CsvCelReader, SqliteCelReader
from pbxlink.daemon.config import DEFAULT_CEL_FIELDS
from pbxlink.daemon.pipeline import pack_cel, unpack_cel
from pbxlink.daemon.replay import read_chunks

DATA = Path(__file__).resolve().parents[2] / "data"
CEL_DIR = DATA / "cel"
AMI_DIR = DATA / "ami"
SETTINGS = CallTrackerSettings(
    node="pbx1", parties=PartyRules(r"^1\d\d$", frozenset({"trunk"})), settle_seconds=2.0
)
EVERYTHING = (0.0, 10_000_000_000.0)
# The facts the SIP side knows for certain (truth.json keys), compared one by one.
FACTS = (
    "direction",
    "answered",
    "missed_at",
    "line",
    "initiator",
    "first_answered_by",
    "last_handled_by",
    "handlers",
    "rang",
    "queue",
    "hangup_by",
)


def _sqlite() -> SqliteCelReader:
    return SqliteCelReader(CEL_DIR / "cel.sqlite")


def _csv(path: Path = CEL_DIR / "cel.csv") -> CsvCelReader:
    return CsvCelReader(path, fields=DEFAULT_CEL_FIELDS)


def _view(outcome: dict[str, Any]) -> dict[str, Any]:
    view = {key: outcome[key] for key in FACTS}
    view["handlers"] = [h["agent"] for h in outcome["handlers"]]
    view["rang"] = sorted(outcome["rang"])
    view["external"] = None if outcome["external"] is None else outcome["external"]["raw"]
    return view


def _truth(call: dict[str, Any]) -> dict[str, Any]:
    view = {key: call[key] for key in FACTS}
    view["rang"] = sorted(call["rang"])
    view["external"] = None if call["external"] is None else call["external"]["raw"]
    return view


def _rebuild(records: Sequence[Cel]) -> list[CallOutcome]:
    tracker = CallTracker(SETTINGS)
    out = tracker.backfill(cel_to_events(records)) + tracker.flush_ended()
    return [o for o in out if isinstance(o, CallOutcome)]


@pytest.mark.parametrize("reader", [_sqlite, _csv], ids=["sqlite", "csv"])
def test_calls_rebuilt_from_the_cel_backend_agree_with_the_sip_side(reader: Any) -> None:
    read = reader().read(*EVERYTHING)
    assert read.skipped == []
    outcomes = _rebuild(read.records)
    truth = json.loads((CEL_DIR / "truth.json").read_text(encoding="utf-8"))
    want = sorted((_truth(c) for s in truth for c in s["calls"]), key=json.dumps)
    got = sorted((_view(to_json(o)) for o in outcomes), key=json.dumps)
    assert got == want
    assert all(o.reconstructed for o in outcomes)


def test_the_sqlite_and_the_csv_backend_hold_the_same_records() -> None:
    from_sqlite = _sqlite().read(*EVERYTHING).records
    from_csv = _csv().read(*EVERYTHING).records
    assert len(from_sqlite) > 100
    assert from_sqlite == from_csv


def test_a_malformed_csv_line_is_skipped_with_its_line_number_and_the_rest_is_read(tmp_path: Path) -> None:
    lines = (CEL_DIR / "cel.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    broken = [*lines[:10], '"CHAN_START","not a time"\n', *lines[10:20]]
    cells = lines[20].split('","')
    cells[DEFAULT_CEL_FIELDS.index("eventtime")] = "yesterday"
    broken += ['","'.join(cells), *lines[20:]]  # a copy of the next line with a bad time
    path = tmp_path / "cel.csv"
    path.write_text("".join(broken), encoding="utf-8")
    read = _csv(path).read(*EVERYTHING)
    assert [(s.where, s.reason) for s in read.skipped] == [
        ("line 11", f"2 columns, {len(DEFAULT_CEL_FIELDS)} expected"),
        ("line 22", "eventtime 'yesterday' is neither epoch seconds nor a date and time"),
    ]
    assert read.records == _csv().read(*EVERYTHING).records


def test_only_the_records_of_the_gap_are_read() -> None:
    records = _sqlite().read(*EVERYTHING).records
    times = sorted(r.time or 0.0 for r in records)
    since, until = times[len(times) // 3], times[2 * len(times) // 3]
    for reader in (_sqlite(), _csv()):
        window = reader.read(since, until).records
        assert window
        assert all(since < (r.time or 0.0) <= until for r in window)
        assert len(window) == sum(1 for t in times if since < t <= until)


def test_a_long_csv_file_is_searched_not_read_whole(tmp_path: Path) -> None:
    """Days of records before the gap: the reader starts near the gap (binary search by byte
    offset) and still returns exactly the gap's records."""
    original = _csv().read(*EVERYTHING).records
    span = (original[-1].time or 0.0) - (original[0].time or 0.0) + 1.0
    lines = (CEL_DIR / "cel.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    time_column = DEFAULT_CEL_FIELDS.index("eventtime")
    path = tmp_path / "cel.csv"
    with path.open("w", encoding="utf-8") as out:
        for day in range(200, 0, -1):  # older copies first, then the real records
            for line in lines:
                cells = line.rstrip("\n").split('","')
                cells[time_column] = f"{float(cells[time_column]) - day * span:.6f}"
                out.write('","'.join(cells) + "\n")
        out.writelines(lines)
    reader = _csv(path)
    first, last = original[0].time or 0.0, original[-1].time or 0.0
    assert reader.read(first - 0.5, last).records == original
    with path.open("rb") as handle:
        start, _ = reader.start_offset(handle, first - 60)
    assert start > path.stat().st_size * 0.9


def test_a_missing_backend_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CelReadError, match=r"no CEL database at .*missing\.sqlite"):
        SqliteCelReader(tmp_path / "missing.sqlite").read(*EVERYTHING)
    with pytest.raises(CelReadError, match=r"cannot read the CEL file .*missing\.csv"):
        _csv(tmp_path / "missing.csv").read(*EVERYTHING)


def test_a_cel_table_without_a_linkedid_column_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cel.sqlite"
    shutil.copyfile(CEL_DIR / "cel.sqlite", path)
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE cel DROP COLUMN linkedid")
    with pytest.raises(CelReadError, match="no column for linkedid"):
        SqliteCelReader(path).read(*EVERYTHING)


def test_cel_records_survive_the_journal_round_trip() -> None:
    records = _sqlite().read(*EVERYTHING).records
    assert unpack_cel(pack_cel(records)) == records


# ---- backfill against what the tracker saw live (the AMI recordings carry CEL events too) ----


def _recording(name: str) -> tuple[list[AmiEvent], list[Cel]]:
    """The tracker's AMI events of a recording, and every CEL record in it."""
    decoder = AmiDecoder(cel_types=())  # the live stream without CEL
    cel_decoder = AmiDecoder(["CEL"], cel_types=None)
    framer = AmiFramer()
    events: list[AmiEvent] = []
    records: list[Cel] = []
    for chunk in read_chunks(AMI_DIR / f"{name}.ami"):
        for frame in framer.feed(chunk):
            event = decoder.decode(frame)
            if event is not None:
                events.append(event)
            record = cel_decoder.decode(frame)
            if isinstance(record, Cel):
                records.append(record)
    return events, records


def test_a_call_the_tracker_saw_live_is_not_reported_again_by_a_backfill() -> None:
    events, records = _recording("inbound_answered")
    tracker = CallTracker(SETTINGS)
    live = [o for e in events for o in tracker.handle(e)] + tracker.flush_ended()
    assert len([o for o in live if isinstance(o, CallOutcome)]) == 1
    again = tracker.backfill(cel_to_events(records)) + tracker.flush_ended()
    assert again == []


@pytest.mark.parametrize(
    "name",
    [
        p.name.removesuffix(".ami")
        for p in sorted(AMI_DIR.glob("*.ami"))
        # resync_*: recorded from the middle of a call (no CEL of its start); the number of a
        # click-to-call whose agent never answered is only in AMI's OriginateResponse; these
        # AMI recordings predate APP_START in the lab's cel.conf, so where the gap starts
        # before the Dial()/Queue(), the dialed number and the queue's name are unknown
        # (tests/data/cel, recorded with APP_START, covers those calls); so do the FreePBX
        # profile's fpbx_outbound_busy and fpbx_queue_local_members_abandoned; and CEL cannot tell
        # a leg the PBX played busy/congestion (Busy(), Congestion(): HANGUP's hangupsource is
        # the leg itself) from one that hung up, which AMI shows (HangupRequest in state Busy):
        # fpbx_outbound_busy, fpbx_internal_declined (hangup_by)
        if not p.name.startswith(
            (
                "resync_",
                "click_to_call_agent_no_answer",
                "outbound_busy",
                "queue_abandoned",
                "fpbx_outbound_busy",
                "fpbx_queue_local_members_abandoned",
                "fpbx_internal_declined",
            )
        )
    ],
)
def test_a_gap_in_the_middle_of_a_call_is_filled_from_cel(name: str) -> None:
    """AMI lost from the first third of the call on; CEL of the rest is folded in: the call
    gets its one outcome, with the facts of the SIP side, marked reconstructed."""
    events, records = _recording(name)
    timed = [e.time for e in events if e.time is not None]
    cut = timed[0] + (timed[-1] - timed[0]) / 3
    tracker = CallTracker(SETTINGS)
    before = [o for e in events if e.time is not None and e.time <= cut for o in tracker.handle(e)]
    assert not [o for o in before if isinstance(o, CallOutcome)]
    gap = [r for r in records if (r.time or 0.0) > cut]
    outcomes = [
        o for o in tracker.backfill(cel_to_events(gap)) + tracker.flush_ended() if isinstance(o, CallOutcome)
    ]
    truth = json.loads((AMI_DIR / f"{name}.truth.json").read_text(encoding="utf-8"))
    got = sorted((_view(to_json(o)) for o in outcomes), key=json.dumps)
    assert got == sorted((_truth(c) for c in truth["calls"]), key=json.dumps)
    assert all(o.reconstructed for o in outcomes)
    live = CallTracker(SETTINGS)
    fed = [o for e in events for o in live.handle(e)] + live.flush_ended()
    started = {o.id: o.started_at for o in fed if isinstance(o, CallOutcome)}
    # the CEL record of a channel's start can be a few microseconds after AMI's Newchannel
    assert {o.id: o.started_at.timestamp() for o in outcomes} == pytest.approx(
        {key: value.timestamp() for key, value in started.items()}, abs=0.01
    )


def test_cel_event_types_decode_from_ami() -> None:
    _, records = _recording("inbound_answered")
    kinds = {r.type for r in records}
    assert {CelEventType.CHAN_START, CelEventType.HANGUP, CelEventType.LINKEDID_END} <= kinds
    assert CelEventType.OTHER not in kinds
    assert all(isinstance(r, Cel) and r.uniqueid and r.linkedid for r in records)


def _unused(reader: CelReader) -> None:  # the readers implement the protocol (mypy checks it)
    _ = reader


_unused(_sqlite())
_unused(_csv())
