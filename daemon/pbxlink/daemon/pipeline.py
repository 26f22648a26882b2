"""AMI frames → decode → call tracker → outbox: the daemon's hot path.

:class:`CallPipeline` is synchronous and fast: it decodes a frame, feeds the tracker and hands
what the tracker produced (live events, outcomes) to the :class:`OutboxWriter`, which commits
them in batches (one SQLite transaction for everything that queued up meanwhile) and then wakes
the publisher. Nothing reaches MQTT before its commit.

When a write fails (disk full, read-only state directory) the writer keeps the batch in memory,
retries with backoff, reports not-ready on /readyz and counts every failure: the daemon never
publishes a message it could not store, and loses nothing while the process lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from pbxlink.ami.cel import cel_to_events
from pbxlink.ami.decode import AmiDecoder, FrameLike, MalformedEvent, cel_event_type
from pbxlink.ami.events import Cel, CelEventType, CoreShowChannel, CoreShowChannelsComplete, FullyBooted
from pbxlink.ami.framing import Frame
from pbxlink.calls.model import CallOutcome, TrackerOutput
from pbxlink.calls.outcome import to_json
from pbxlink.calls.tracker import CallTracker
from pbxlink.daemon.envelope import DEFAULT_TOPIC_PREFIX, Envelope, MessageKind, build_envelope
from pbxlink.daemon.metrics import DaemonMetrics
from pbxlink.daemon.outbox import (
    JournalEntry,
    JournalKind,
    Outbox,
    OutboxWriteError,
    pack_frames,
    unpack_frames,
)

log = structlog.get_logger(__name__)

WRITE_RETRY_INITIAL = 0.5
WRITE_RETRY_MAX = 10.0
# Uncommitted envelopes held in memory while the outbox cannot be written. Past this the daemon
# stops reading AMI (the shell pauses its socket; TCP pushes back to Asterisk) until they are
# committed: memory stays bounded, and if Asterisk drops the session meanwhile the reconnect
# resync still ends the calls that finished.
MAX_BACKLOG = 20_000
# The AMI journal (see CallPipeline) is committed at most this often when nothing else is
# (a crash loses at most this much of it), and dropped when it grows past MAX_JOURNAL entries
# without the tracker ever being idle (e.g. a call up for days): recovery then falls back to
# the AMI snapshot alone.
JOURNAL_DELAY = 0.2
MAX_JOURNAL = 500_000


class OutboxWriter:
    """Commits queued envelopes in batches; run :meth:`run` as a task."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        metrics: DaemonMetrics,
        event_ttl: float,
        on_commit: Callable[[], None],
        clock: Callable[[], float] = time.time,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self._outbox = outbox
        self._max_backlog = max_backlog
        self._metrics = metrics
        self._event_ttl = event_ttl
        self._on_commit = on_commit
        self._clock = clock
        self._queue: deque[Envelope] = deque()
        self._queued = asyncio.Event()  # anything to commit (envelopes or journal entries)
        self._submitted = asyncio.Event()  # envelopes (or a stop): commit now
        self._room = asyncio.Event()
        self._room.set()
        self._journal: list[JournalEntry] = []
        self._journal_reset = False
        self._journal_generation = 0
        self._journal_length = 0  # entries written since the last reset
        self._stopping = False
        self.writable = True
        self.last_error: str | None = None

    @property
    def backlog(self) -> int:
        """Envelopes produced but not yet committed."""
        return len(self._queue)

    def submit(self, envelopes: Iterable[Envelope]) -> None:
        self._queue.extend(envelopes)
        self._queued.set()
        self._submitted.set()
        if len(self._queue) >= self._max_backlog and self._room.is_set():
            self._room.clear()
            log.error(
                "outbox_backlog_full",
                held_in_memory=len(self._queue),
                action="AMI reading paused until the outbox accepts writes",
            )

    def journal(self, entry: JournalEntry) -> None:
        """Keep a tracker input so that a restart can replay it (committed lazily)."""
        self._journal.append(entry)
        self._journal_length += 1
        if self._journal_length > MAX_JOURNAL:
            log.warning(
                "ami_journal_dropped",
                entries=self._journal_length,
                reason="no idle moment; crash recovery falls back to the AMI snapshot",
            )
            self.reset_journal(entry.at or 0.0)
        self._queued.set()

    def reset_journal(self, clock: float) -> None:
        """The tracker follows no call: what was journaled so far is not needed any more,
        except the tracker's clock (AMI time), which starts the new journal."""
        if self._journal_length == 1:
            return  # nothing journaled since the last reset: no write while idle
        self._journal.clear()
        self._journal.append(JournalEntry(JournalKind.CLOCK, b"", clock))
        self._journal_reset = True
        self._journal_generation += 1
        self._journal_length = 1
        self._queued.set()

    async def wait_for_room(self) -> None:
        """Return at once unless the in-memory backlog is full (the outbox cannot be written)."""
        if not self._room.is_set():
            await self._room.wait()

    def stop(self) -> None:
        """Commit what is queued, then let :meth:`run` return."""
        self._stopping = True
        self._queued.set()
        self._submitted.set()

    async def run(self) -> None:
        retry = WRITE_RETRY_INITIAL
        while True:
            if not self._queue and not self._journal and not self._journal_reset:
                if self._stopping:
                    return
                self._queued.clear()
                await self._queued.wait()
                continue
            if not self._queue and not self._stopping:
                # Only journal entries: give envelopes a moment to join this commit. Only an
                # envelope (or a stop) cuts the wait short; more journal entries do not, so a
                # busy AMI stream does not keep the disk busy with journal-only commits that an
                # outcome would then have to wait behind.
                self._submitted.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._submitted.wait(), JOURNAL_DELAY)
            batch = list(self._queue)
            journal = list(self._journal)
            reset = self._journal_reset
            generation = self._journal_generation
            try:
                await self._outbox.add(
                    batch, now=self._clock(), event_ttl=self._event_ttl, journal=journal, reset_journal=reset
                )
            except OutboxWriteError as exc:
                self._metrics.outbox_write_errors.inc()
                if self.writable or str(exc) != self.last_error:
                    log.error(
                        "outbox_write_failed", error=str(exc), held_in_memory=len(batch), retry_in=retry
                    )
                self.writable = False
                self.last_error = str(exc)
                if self._stopping:
                    log.error(
                        "outbox_unwritten_at_shutdown",
                        lost=len(batch),
                        ids=[e.message_id for e in batch[:20]],
                    )
                    return
                await asyncio.sleep(retry)
                retry = min(WRITE_RETRY_MAX, retry * 2)
                continue
            for _ in batch:
                self._queue.popleft()
            if generation == self._journal_generation:
                del self._journal[: len(journal)]
                self._journal_reset = False
            if not self._room.is_set() and len(self._queue) < self._max_backlog // 2:
                self._room.set()
                log.info("outbox_backlog_drained", held_in_memory=len(self._queue))
            if not self.writable:
                log.info("outbox_writable_again", committed=len(batch))
            self.writable = True
            self.last_error = None
            retry = WRITE_RETRY_INITIAL
            for envelope in batch:
                self._metrics.outbox_written.inc(kind=envelope.kind.value)
            if batch:
                self._on_commit()


class CallPipeline:
    """Frames in; envelopes to the writer; metrics and one log line per finished call."""

    def __init__(
        self,
        tracker: CallTracker,
        writer: OutboxWriter,
        *,
        node: str,
        metrics: DaemonMetrics,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
        routing_lookup: Callable[[Iterable[str]], Mapping[str, object] | None] | None = None,
        final_on_linkedid_end: bool = True,
    ) -> None:
        self.tracker = tracker
        # The FastAGI side's own record of a call's decision (by linkedid): it knows what the
        # channel variables seen on AMI do not carry (how long the decision took, the rule).
        self._routing_lookup = routing_lookup
        # CEL LINKEDID_END finalizes a call at once; without it the settle timer does.
        self._decoder = AmiDecoder(cel_types=(CelEventType.LINKEDID_END,) if final_on_linkedid_end else ())
        self.last_event_time: float | None = None  # the newest AMI Timestamp fed (not replayed)
        self._writer = writer
        self._node = node
        self._metrics = metrics
        self._prefix = topic_prefix
        self._wallclock = wallclock
        self._listing = False

    def feed(self, frame: FrameLike, *, replaying: bool = False) -> None:
        """One AMI frame. ``replaying``: from the journal at start (not counted or re-journaled)."""
        name = frame.event
        if name is not None and not replaying:
            self._metrics.ami_events.inc(event=name)
        try:
            event = self._decoder.decode(frame)
        except MalformedEvent as exc:
            self._metrics.ami_frames_rejected.inc(reason="malformed_event")
            log.warning(
                "ami_frame_rejected",
                reason="malformed_event",
                error=str(exc),
                head=bytes(frame.raw[:96]).decode("utf-8", "replace"),
            )
            return
        if event is None:
            return
        if not replaying:
            self._writer.journal(JournalEntry(JournalKind.FRAME, bytes(frame.raw)))
        if event.time is not None and (self.last_event_time is None or event.time > self.last_event_time):
            self.last_event_time = event.time
        # A CoreShowChannels listing in the stream is tracker state before it creates any call.
        if isinstance(event, CoreShowChannel):
            self._listing = True
        elif isinstance(event, CoreShowChannelsComplete | FullyBooted):
            self._listing = False
        self._emit(self.tracker.handle(event))
        if self.tracker.active_calls == 0 and not self._listing and not replaying:
            self._writer.reset_journal(self.tracker.clock)

    def resync(self, channels: Sequence[FrameLike], now: float, *, replaying: bool = False) -> None:
        """Reconcile the tracker with a ``CoreShowChannels`` snapshot taken after a (re)login:
        calls that ended while AMI was away get their outcome now (``reconstructed``)."""
        if not replaying:
            self._writer.journal(
                JournalEntry(JournalKind.RESYNC, pack_frames(bytes(f.raw) for f in channels), now)
            )
        listed: list[CoreShowChannel] = []
        for frame in channels:
            try:
                event = self._decoder.decode(frame)
            except MalformedEvent as exc:
                self._metrics.ami_frames_rejected.inc(reason="malformed_event")
                log.warning("ami_frame_rejected", reason="malformed_event", error=str(exc))
                continue
            if isinstance(event, CoreShowChannel):
                listed.append(event)
        self._emit(self.tracker.resync(listed, now))
        if self.tracker.active_calls == 0 and not self._listing and not replaying:
            self._writer.reset_journal(self.tracker.clock)

    def backfill(self, records: Sequence[Cel], until: float, *, replaying: bool = False) -> int:
        """Fold Asterisk's CEL records of a gap (AMI down, or no daemon) through the tracker:
        the calls they touch come out ``reconstructed``, a call already finalized is not
        reported again. Returns the outcomes produced."""
        if not replaying:
            self._writer.journal(JournalEntry(JournalKind.CEL, pack_cel(records), until))
        outputs = self.tracker.backfill(cel_to_events(records))
        self._emit(outputs)
        if self.tracker.active_calls == 0 and not self._listing and not replaying:
            self._writer.reset_journal(self.tracker.clock)
        return sum(1 for o in outputs if isinstance(o, CallOutcome))

    def replay_journal(self, entries: Iterable[JournalEntry]) -> int:
        """Rebuild the tracker after a restart from the journal of the previous run.

        What the replay produces goes to the outbox as usual: outcomes and live events already
        committed before the crash have the same ids and are ignored there; the rest (calls that
        finished unseen) follows the next AMI snapshot. Returns the entries replayed.
        """
        count = 0
        for entry in entries:
            if entry.kind is JournalKind.FRAME:
                self.feed(Frame(entry.data), replaying=True)
            elif entry.kind is JournalKind.CLOCK:
                self.tick(entry.at or 0.0, replaying=True)
            elif entry.kind is JournalKind.CEL:
                self.backfill(unpack_cel(entry.data), entry.at or 0.0, replaying=True)
            else:
                frames = [Frame(raw) for raw in unpack_frames(entry.data)]
                self.resync(frames, entry.at or 0.0, replaying=True)
            count += 1
        return count

    def tick(self, now: float, *, replaying: bool = False) -> None:
        """Finalize calls whose settle time passed while AMI was quiet."""
        self._emit(self.tracker.tick(now))
        if self.tracker.active_calls == 0 and not self._listing and not replaying:
            self._writer.reset_journal(self.tracker.clock)

    def _emit(self, outputs: list[TrackerOutput]) -> None:
        self._metrics.active_calls.set(self.tracker.active_calls)
        if not outputs:
            return
        now = self._wallclock()
        envelopes = []
        for output in outputs:
            data = to_json(output)
            if isinstance(output, CallOutcome):
                self._complete_routing(data, output)
                kind = MessageKind.OUTCOME
                self._metrics.outcomes.inc(
                    direction=output.direction.value, answered=str(output.answered).lower()
                )
                _log_finished_call(data)
            else:
                kind = MessageKind.EVENT
            envelopes.append(build_envelope(kind, data, node=self._node, now=now, prefix=self._prefix))
        self._writer.submit(envelopes)

    def _complete_routing(self, data: dict[str, Any], outcome: CallOutcome) -> None:
        """Fill what the AMI variables left unknown from the AGI server's decision, never
        overriding what the dialplan really received (a restarted daemon has no such record and
        keeps the tracker's view)."""
        routing = data.get("routing")
        if self._routing_lookup is None or not isinstance(routing, dict):
            return
        decided = self._routing_lookup(outcome.linkedids)
        if decided is None or decided.get("target") != routing.get("target"):
            return
        for key, value in decided.items():
            if routing.get(key) is None and value is not None:
                routing[key] = value


def pack_cel(records: Iterable[Cel]) -> bytes:
    """CEL records as the journal keeps them (JSON rows)."""
    rows = [
        [
            r.time,
            r.type.value,
            r.channel,
            r.uniqueid,
            r.linkedid,
            r.caller_num,
            r.caller_name,
            r.context,
            r.exten,
            r.application,
            r.app_data,
            r.peer,
            r.extra,
        ]
        for r in records
    ]
    return json.dumps(rows, separators=(",", ":")).encode()


def unpack_cel(blob: bytes) -> list[Cel]:
    return [
        Cel(
            time=row[0],
            type=cel_event_type(row[1]),
            channel=row[2],
            uniqueid=row[3],
            linkedid=row[4],
            caller_num=row[5],
            caller_name=row[6],
            context=row[7],
            exten=row[8],
            application=row[9],
            app_data=row[10],
            peer=row[11],
            extra=row[12],
        )
        for row in json.loads(blob)
    ]


def _log_finished_call(outcome: dict[str, object]) -> None:
    """The one canonical line per finished call (the outcome's summary fields)."""
    external = outcome.get("external")
    log.info(
        "call_finished",
        call_id=outcome.get("id"),
        direction=outcome.get("direction"),
        answered=outcome.get("answered"),
        missed_at=outcome.get("missed_at"),
        external=external.get("e164") or external.get("raw") if isinstance(external, dict) else None,
        line=outcome.get("line"),
        initiator=outcome.get("initiator"),
        first_answered_by=outcome.get("first_answered_by"),
        last_handled_by=outcome.get("last_handled_by"),
        queue=outcome.get("queue"),
        ring_seconds=outcome.get("ring_seconds"),
        talk_seconds=outcome.get("talk_seconds"),
        transfers=len(outcome.get("transfers") or ()),  # type: ignore[arg-type]
        reconstructed=outcome.get("reconstructed"),
    )
