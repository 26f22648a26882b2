"""AMI frames → decode → call tracker → outbox: the daemon's hot path.

:class:`CallCore` is the part without I/O that ``pbxlink replay`` and ``pbxlink explain`` run
too: frames and resync listings in, outcomes (routing completed) and live events out, the decoder
told by the tracker which events it handles. :class:`CallPipeline` is the daemon around it,
synchronous and fast: it feeds a frame to the core and hands
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
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import msgspec
import structlog

from pbxlink.ami.cel import cel_to_events
from pbxlink.ami.decode import AmiDecoder, FrameLike, MalformedEvent, cel_event_type
from pbxlink.ami.events import (
    AmiEvent,
    Cel,
    CelEventType,
    CoreShowChannel,
    CoreShowChannelsComplete,
    FullyBooted,
)
from pbxlink.ami.framing import Frame
from pbxlink.calls.model import CallOutcome, RoutingDecision, TrackerOutput
from pbxlink.calls.tracker import TRACKED_EVENTS, CallTracker
from pbxlink.daemon.envelope import DEFAULT_TOPIC_PREFIX, Envelope, build_envelope
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
                self._metrics.outbox_written.labels(kind=envelope.kind.value).inc()
            if batch:
                self._on_commit()


RoutingLookup = Callable[[Iterable[str]], RoutingDecision | None]


class CallCore:
    """The daemon's call path without its I/O, shared by ``pbxlink run``, ``replay`` and ``explain``.

    Frames are decoded with exactly the events the tracker has handlers for; outcomes leave
    with their routing completed from the FastAGI side's own record (``routing_lookup``), when
    there is one. Malformed frames raise :class:`MalformedEvent` (the caller reports them).
    """

    def __init__(
        self,
        tracker: CallTracker,
        *,
        routing_lookup: RoutingLookup | None = None,
        final_on_linkedid_end: bool = True,
    ) -> None:
        self.tracker = tracker
        # CEL LINKEDID_END finalizes a call at once; without it the settle timer does.
        cel_types = (CelEventType.LINKEDID_END,) if final_on_linkedid_end else ()
        self.decoder = AmiDecoder(TRACKED_EVENTS, cel_types=cel_types)
        # The FastAGI side's own record of a call's decision (by linkedid): it knows what the
        # channel variables seen on AMI do not carry (how long the decision took, the rule).
        self._routing_lookup = routing_lookup

    def decode(self, frame: FrameLike) -> AmiEvent | None:
        """The typed event of a frame, None when the tracker has no use for it."""
        return self.decoder.decode(frame)

    def handle(self, event: AmiEvent) -> list[TrackerOutput]:
        return self._complete(self.tracker.handle(event))

    def resync(
        self, channels: Sequence[FrameLike], now: float, *, malformed: Callable[[MalformedEvent], None]
    ) -> list[TrackerOutput]:
        """Reconcile the tracker with a ``CoreShowChannels`` listing taken after a (re)login."""
        listed: list[CoreShowChannel] = []
        for frame in channels:
            try:
                event = self.decoder.decode(frame)
            except MalformedEvent as exc:
                malformed(exc)
                continue
            if isinstance(event, CoreShowChannel):
                listed.append(event)
        return self._complete(self.tracker.resync(listed, now))

    def tick(self, now: float) -> list[TrackerOutput]:
        return self._complete(self.tracker.tick(now))

    def backfill(self, records: Sequence[Cel]) -> list[TrackerOutput]:
        """Fold Asterisk's CEL records of a gap through the tracker (``reconstructed`` calls)."""
        return self._complete(self.tracker.backfill(cel_to_events(records)))

    def flush_ended(self) -> list[TrackerOutput]:
        """At the end of a recording: every call whose channels are all gone ends now."""
        return self._complete(self.tracker.flush_ended())

    def _complete(self, outputs: list[TrackerOutput]) -> list[TrackerOutput]:
        lookup = self._routing_lookup
        if lookup is None:
            return outputs
        return [
            complete_routing(o, lookup(o.linkedids)) if isinstance(o, CallOutcome) and o.routing else o
            for o in outputs
        ]


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
        routing_lookup: RoutingLookup | None = None,
        final_on_linkedid_end: bool = True,
    ) -> None:
        self.core = CallCore(
            tracker, routing_lookup=routing_lookup, final_on_linkedid_end=final_on_linkedid_end
        )
        self.tracker = tracker
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
            self._metrics.ami_events.labels(event=name).inc()
        try:
            event = self.core.decode(frame)
        except MalformedEvent as exc:
            self._metrics.ami_frames_rejected.labels(reason="malformed_event").inc()
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
        self._emit(self.core.handle(event))
        if self.tracker.active_calls == 0 and not self._listing and not replaying:
            self._writer.reset_journal(self.tracker.clock)

    def resync(self, channels: Sequence[FrameLike], now: float, *, replaying: bool = False) -> None:
        """Reconcile the tracker with a ``CoreShowChannels`` snapshot taken after a (re)login:
        calls that ended while AMI was away get their outcome now (``reconstructed``)."""
        if not replaying:
            self._writer.journal(
                JournalEntry(JournalKind.RESYNC, pack_frames(bytes(f.raw) for f in channels), now)
            )
        self._emit(self.core.resync(channels, now, malformed=self._rejected))
        if self.tracker.active_calls == 0 and not self._listing and not replaying:
            self._writer.reset_journal(self.tracker.clock)

    def backfill(self, records: Sequence[Cel], until: float, *, replaying: bool = False) -> int:
        """Fold Asterisk's CEL records of a gap (AMI down, or no daemon) through the tracker:
        the calls they touch come out ``reconstructed``, a call already finalized is not
        reported again. Returns the outcomes produced."""
        if not replaying:
            self._writer.journal(JournalEntry(JournalKind.CEL, pack_cel(records), until))
        outputs = self.core.backfill(records)
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
        self._emit(self.core.tick(now))
        if self.tracker.active_calls == 0 and not self._listing and not replaying:
            self._writer.reset_journal(self.tracker.clock)

    def _emit(self, outputs: list[TrackerOutput]) -> None:
        self._metrics.active_calls.set(self.tracker.active_calls)
        if not outputs:
            return
        now = self._wallclock()
        envelopes = []
        for output in outputs:
            if isinstance(output, CallOutcome):
                self._metrics.outcomes.labels(
                    direction=output.direction.value,
                    answered=str(output.answered).lower(),
                    missed_at="none" if output.missed_at is None else output.missed_at.value,
                ).inc()
                _log_finished_call(output)
            envelopes.append(build_envelope(output, node=self._node, now=now, prefix=self._prefix))
        self._writer.submit(envelopes)

    def _rejected(self, exc: MalformedEvent) -> None:
        self._metrics.ami_frames_rejected.labels(reason="malformed_event").inc()
        log.warning("ami_frame_rejected", reason="malformed_event", error=str(exc))


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


def complete_routing(outcome: CallOutcome, decided: RoutingDecision | None) -> CallOutcome:
    """The outcome with the routing fields the dialplan's variables do not carry (decided_in_ms,
    rule, agent, caller_e164) taken from the router's own decision, when the targets agree;
    never overriding what the dialplan really received (a restarted daemon has no such record
    and keeps the tracker's view)."""
    seen = outcome.routing
    if seen is None or decided is None or decided.target != seen.target:
        return outcome
    missing = {
        name: getattr(decided, name)
        for name in seen.__struct_fields__
        if getattr(seen, name) is None and getattr(decided, name) is not None
    }
    if not missing:
        return outcome
    return msgspec.structs.replace(outcome, routing=msgspec.structs.replace(seen, **missing))


def _log_finished_call(outcome: CallOutcome) -> None:
    """The one canonical line per finished call (the outcome's summary fields)."""
    external = outcome.external
    log.info(
        "call_finished",
        call_id=outcome.id,
        direction=outcome.direction.value,
        answered=outcome.answered,
        missed_at=None if outcome.missed_at is None else outcome.missed_at.value,
        external=None if external is None else external.e164 or external.raw,
        line=outcome.line,
        initiator=outcome.initiator,
        first_answered_by=outcome.first_answered_by,
        last_handled_by=outcome.last_handled_by,
        queue=outcome.queue,
        ring_seconds=outcome.ring_seconds,
        talk_seconds=outcome.talk_seconds,
        transfers=len(outcome.transfers),
        reconstructed=outcome.reconstructed,
    )
