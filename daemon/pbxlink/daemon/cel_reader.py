"""Read Asterisk's own CEL records of a gap back from the backend an admin enabled.

After an AMI outage, or when the daemon starts again after a crash, the daemon asks the CEL
backend for the records written between the last AMI event it saw and the first one of the new
session (:meth:`CelReader.read`), converts them (:func:`pbxlink.ami.cel.cel_to_events`) and
folds them through the same tracker. Two backends, both written by Asterisk itself:

* ``sqlite`` — the database of ``cel_sqlite3_custom`` (one table, columns named as in
  docs/cel.md; the reader finds them by name, so their order does not matter);
* ``csv`` — the file of ``cel_custom`` (columns in the order of ``[cel] fields``).

A record that cannot be read (a CSV line with the wrong number of columns, a time that is not
a time, no uniqueid) is skipped and reported in :attr:`CelRead.skipped` with its line or row
number and the reason; the caller logs each one. Reading never raises for bad content; it
raises :class:`CelReadError` when the file itself cannot be read.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pbxlink.ami.decode import cel_event_type
from pbxlink.ami.events import Cel
from pbxlink.daemon.config import CelSettings
from pbxlink.foundation.errors import PbxlinkError

# Our field → the column names Asterisk's mappings use for it (cel_custom / cel_sqlite3_custom
# "fields", the legacy sample's column names, and the AMI CEL header names).
_ALIASES: dict[str, tuple[str, ...]] = {
    "type": ("eventtype", "eventname", "eventenum"),
    "time": ("eventtime",),
    "caller_name": ("cidname", "name", "calleridname"),
    "caller_num": ("cidnum", "num", "calleridnum"),
    "exten": ("exten",),
    "context": ("context",),
    "channel": ("channame", "channel"),
    "application": ("appname", "application"),
    "app_data": ("appdata",),
    "uniqueid": ("uniqueid",),
    "linkedid": ("linkedid",),
    "peer": ("peer",),
    "extra": ("eventextra", "extra"),
}
_REQUIRED = ("type", "time", "uniqueid", "linkedid", "channel")
# How far before the gap the CSV search starts (records are written nearly, not exactly, in
# time order: several Asterisk threads write them).
_CSV_SLACK_SECONDS = 60.0
_UNKNOWN = "<unknown>"


class CelReadError(PbxlinkError):
    """The CEL backend could not be read at all (missing file, not SQLite, no such table)."""


@dataclass(frozen=True, slots=True)
class SkippedRecord:
    where: str  # "line 17" / "row 17"
    reason: str


@dataclass(frozen=True, slots=True)
class CelRead:
    records: list[Cel] = field(default_factory=list)  # oldest first
    skipped: list[SkippedRecord] = field(default_factory=list)


class CelReader(Protocol):
    path: Path

    def read(self, since: float, until: float) -> CelRead:
        """The records with ``since < time <= until`` (epoch seconds), oldest first."""
        ...


def open_cel_reader(settings: CelSettings) -> CelReader | None:
    """The reader the ``[cel]`` section configures, or ``None`` (backend "none")."""
    if settings.backend == "none" or settings.path is None:
        return None
    zone = zoneinfo.ZoneInfo(settings.timezone)
    if settings.backend == "sqlite":
        return SqliteCelReader(settings.path, table=settings.table, zone=zone)
    return CsvCelReader(settings.path, fields=settings.fields, zone=zone)


def parse_event_time(text: str, zone: zoneinfo.ZoneInfo) -> float:
    """``1796282589.660215`` (epoch seconds) or ``2026-12-03 07:22:04[.123]`` (in ``zone``)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"eventtime {text!r} is neither epoch seconds nor a date and time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


def _caller(value: str) -> str | None:
    return None if value in ("", _UNKNOWN) else value


def _record(values: dict[str, str], zone: zoneinfo.ZoneInfo) -> Cel:
    """A Cel from one row (our field names → text); ``ValueError`` says what is wrong."""
    for name in ("uniqueid", "channel", "type"):
        if not values.get(name):
            raise ValueError(f"no {name}")
    uniqueid = values["uniqueid"]
    return Cel(
        time=parse_event_time(values.get("time", ""), zone),
        type=cel_event_type(values["type"]),
        channel=values["channel"],
        uniqueid=uniqueid,
        linkedid=values.get("linkedid") or uniqueid,
        caller_num=_caller(values.get("caller_num", "")),
        caller_name=_caller(values.get("caller_name", "")),
        context=values.get("context", ""),
        exten=values.get("exten", ""),
        application=values.get("application", ""),
        app_data=values.get("app_data", ""),
        peer=values.get("peer", ""),
        extra=values.get("extra", ""),
    )


def _mapping(columns: list[str]) -> dict[str, int]:
    """Our field → the column index, by Asterisk's names; missing required ones raise."""
    lowered = [c.strip().lower() for c in columns]
    found: dict[str, int] = {}
    for ours, names in _ALIASES.items():
        for name in names:
            if name in lowered:
                found[ours] = lowered.index(name)
                break
    missing = [ours for ours in _REQUIRED if ours not in found]
    if missing:
        wanted = ", ".join(_ALIASES[m][0] for m in missing)
        raise CelReadError(f"the CEL records have no column for {wanted} (columns: {', '.join(columns)})")
    return found


class SqliteCelReader:
    """The table ``cel_sqlite3_custom`` writes (opened read-only; Asterisk keeps writing)."""

    def __init__(self, path: Path, *, table: str = "cel", zone: zoneinfo.ZoneInfo | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
            raise ValueError(f"not a plain table name: {table!r}")
        self.path = path
        self.table = table
        self.zone = zone or zoneinfo.ZoneInfo("UTC")

    def read(self, since: float, until: float) -> CelRead:
        if not self.path.is_file():
            raise CelReadError(f"no CEL database at {self.path}")
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise CelReadError(f"cannot open the CEL database {self.path}: {exc}") from exc
        try:
            try:
                head = conn.execute(f"SELECT * FROM {self.table} LIMIT 0")  # noqa: S608 - name checked above
                columns = [d[0] for d in head.description]
                mapping = _mapping(columns)
                first = self._first_row(conn, columns[mapping["time"]], since)
                cursor = conn.execute(f"SELECT rowid, * FROM {self.table} WHERE rowid >= ?", (first,))  # noqa: S608
            except sqlite3.Error as exc:
                raise CelReadError(f"cannot read table {self.table!r} of {self.path}: {exc}") from exc
            result = CelRead()
            for row in cursor:
                rowid, values = row[0], row[1:]
                texts = {ours: "" if values[i] is None else str(values[i]) for ours, i in mapping.items()}
                try:
                    record = _record(texts, self.zone)
                except ValueError as exc:
                    result.skipped.append(SkippedRecord(f"row {rowid}", str(exc)))
                    continue
                if record.time is not None and since < record.time <= until:
                    result.records.append(record)
        finally:
            conn.close()
        result.records.sort(key=lambda r: r.time or 0.0)
        return result

    def _first_row(self, conn: sqlite3.Connection, time_column: str, since: float) -> int:
        """A rowid at or before the first record newer than ``since - slack``: rows are
        appended in (nearly) time order, so a binary search on the rowid keeps a long table
        from being read whole. Rows whose time cannot be read end the search early (safe)."""
        sql_last = f"SELECT max(rowid) FROM {self.table}"  # noqa: S608 - checked name
        quoted = '"' + time_column.replace('"', '""') + '"'
        sql_at = f"SELECT rowid, {quoted} FROM {self.table} WHERE rowid >= ? ORDER BY rowid LIMIT 1"  # noqa: S608
        try:
            (last,) = conn.execute(sql_last).fetchone()
        except sqlite3.Error:
            return 0
        if last is None:
            return 0
        low, high = 0, int(last)
        target = since - _CSV_SLACK_SECONDS
        try:
            while high - low > 64:
                middle = (low + high) // 2
                row = conn.execute(sql_at, (middle,)).fetchone()
                if row is None:
                    break
                if parse_event_time(str(row[1]), self.zone) < target:
                    low = middle
                else:
                    high = middle
        except (sqlite3.Error, ValueError):
            return 0
        return low


class CsvCelReader:
    """The file ``cel_custom`` writes: one quoted CSV line per record, columns as ``fields``."""

    def __init__(self, path: Path, *, fields: tuple[str, ...], zone: zoneinfo.ZoneInfo | None = None) -> None:
        self.path = path
        self.fields = fields
        self.zone = zone or zoneinfo.ZoneInfo("UTC")
        self._mapping = _mapping([re.sub(r"\(.*\)$", "", f) for f in fields])
        self._time_column = self._mapping["time"]

    def read(self, since: float, until: float) -> CelRead:
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise CelReadError(f"cannot read the CEL file {self.path}: {exc}") from exc
        result = CelRead()
        with handle:
            start, line_number = self.start_offset(handle, since - _CSV_SLACK_SECONDS)
            handle.seek(start)
            text = io.TextIOWrapper(handle, encoding="utf-8", errors="replace", newline="")
            for number, row in enumerate(csv.reader(text), start=line_number):
                where = f"line {number}" if line_number else f"line +{number} after byte {start}"
                if len(row) != len(self.fields):
                    result.skipped.append(
                        SkippedRecord(where, f"{len(row)} columns, {len(self.fields)} expected")
                    )
                    continue
                values = {ours: row[i] for ours, i in self._mapping.items()}
                try:
                    record = _record(values, self.zone)
                except ValueError as exc:
                    result.skipped.append(SkippedRecord(where, str(exc)))
                    continue
                if record.time is not None and since < record.time <= until:
                    result.records.append(record)
        result.records.sort(key=lambda r: r.time or 0.0)
        return result

    def start_offset(self, handle: io.BufferedReader, target: float) -> tuple[int, int]:
        """Where to start reading: a line start whose record is older than ``target`` (binary
        search over byte offsets; lines are appended in nearly time order). Returns (offset,
        1) when reading from the start (line numbers known), else (offset, 0)."""
        size = handle.seek(0, io.SEEK_END)
        low, high = 0, size
        while high - low > 65_536:
            middle = (low + high) // 2
            handle.seek(middle)
            handle.readline()  # the rest of a line cut in the middle
            line = handle.readline()
            moment = self._line_time(line)
            if moment is None or moment >= target:
                high = middle
            else:
                low = middle
        if low == 0:
            return 0, 1
        handle.seek(low)
        handle.readline()
        return handle.tell(), 0

    def _line_time(self, line: bytes) -> float | None:
        try:
            row = next(csv.reader([line.decode("utf-8", "replace")]))
            return parse_event_time(row[self._time_column], self.zone)
        except (StopIteration, IndexError, ValueError):
            return None
