"""Applies stored inbox messages: facts → plan → CRM writes → inbox row done, in one transaction.

A failure rolls the whole message back and counts an attempt; after `max_attempts` the message
is dead-lettered. Nothing here raises on bad input.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
import structlog

from pbxlink.adapters.backends.protocol import AppliedPlan, apply_plan, gather_facts, gather_request_facts
from pbxlink.adapters.backends.sqlite_crm import SqliteCrm, iso
from pbxlink.adapters.inbox import Inbox, InboxMessage, validate
from pbxlink.adapters.store import Store
from pbxlink.rules.actions import Action
from pbxlink.rules.calls import (
    CallInputError,
    CallOutcome,
    Direction,
    Envelope,
    EventType,
    InboundRequest,
    LiveEvent,
)
from pbxlink.rules.facts import ClientFact, CrmFacts, Stage
from pbxlink.rules.planner import caller_identity, plan_call, plan_event
from pbxlink.rules.request_rules import plan_request, sender_identity
from pbxlink.rules.settings import CrmSettings

log = structlog.get_logger()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Processed:
    message_id: str
    call_id: str
    actions: tuple[Action, ...]
    created: dict[str, list[str]]


def _call_id(envelope: Envelope) -> str:
    body = envelope.body
    return body.call_id if isinstance(body, LiveEvent) else body.id


def _stage(envelope: Envelope) -> Stage | None:
    body = envelope.body
    if isinstance(body, InboundRequest):
        return None
    if isinstance(body, CallOutcome):
        return Stage.OUTCOME
    if body.type is EventType.ANSWERED and body.direction is Direction.INBOUND:
        return Stage.ANSWER
    return None


@dataclass(slots=True)
class _Prefetched:
    """A batch's facts looked up in bulk, and what its own messages changed since."""

    clients: dict[str, tuple[ClientFact, ...]] = field(default_factory=dict)
    stages: dict[str, frozenset[Stage]] = field(default_factory=dict)
    touched_numbers: set[str] = field(default_factory=set)
    touched_calls: set[str] = field(default_factory=set)
    # An A7 request may write to a client found by e-mail, whatever its numbers: after one, the
    # rest of the batch looks its facts up message by message.
    all_touched: bool = False


@dataclass(slots=True)
class _BatchResult:
    seen: int = 0
    applied: list[Processed] = field(default_factory=list)
    problems: list[tuple[str, str, bool]] = field(default_factory=list)


def _caller(envelope: Envelope, settings: CrmSettings) -> str | None:
    body = envelope.body
    if isinstance(body, InboundRequest):
        return None
    return caller_identity(body.external, body.line, settings).e164


class Processor:
    """Applies pending inbox messages. `batched` (the default) applies each batch of messages
    in one transaction in one thread hop (`Store.in_thread`) with its facts looked up in bulk;
    `batched=False` is the earlier path, a statement per hop (kept to compare, bench/)."""

    def __init__(
        self,
        inbox: Inbox,
        crm: SqliteCrm,
        settings: CrmSettings,
        *,
        max_attempts: int = 5,
        clock: Callable[[], datetime] = _utcnow,
        batched: bool = True,
        batch_size: int = 500,
    ) -> None:
        self.inbox = inbox
        self.crm = crm
        self.settings = settings
        self.max_attempts = max_attempts
        self.clock = clock
        self.batched = batched
        self.batch_size = batch_size
        # Envelopes parsed when their message was received (the consumer fills it), by id.
        self.parsed: dict[str, Envelope] = {}

    async def _facts(
        self, crm: SqliteCrm, envelope: Envelope, known: _Prefetched | None, settings: CrmSettings
    ) -> tuple[str, CrmFacts]:
        body = envelope.body
        call_id = _call_id(envelope)
        if isinstance(body, InboundRequest):
            sender = sender_identity(body, settings)
            return call_id, await gather_request_facts(
                crm, sender.e164 if sender else None, body.sender_email, body.deal_id
            )
        e164 = caller_identity(body.external, body.line, settings).e164
        if (
            known is None
            or known.all_touched
            or (e164 is not None and e164 in known.touched_numbers)
            or call_id in known.touched_calls
        ):
            return call_id, await gather_facts(crm, e164, call_id)
        counter, last_type = await crm.inquiry_numbering()
        return call_id, CrmFacts(
            clients=() if e164 is None else known.clients[e164],
            employees=await crm.employees(),
            next_inquiry_counter=counter,
            last_inquiry_type=last_type,
            stages_applied=known.stages[call_id],
        )

    async def _apply_envelope(
        self,
        crm: SqliteCrm,
        message_id: str,
        envelope: Envelope,
        settings: CrmSettings,
        known: _Prefetched | None = None,
    ) -> Processed:
        """Facts → plan → CRM writes → stage marks, inside the caller's transaction."""
        body = envelope.body
        linked: str | None = None
        if isinstance(body, InboundRequest) and body.deal_id is None and body.replies_to:
            # A7: a reply in a thread / a chat links to the open interest its conversation made
            linked = await crm.open_deal_of_requests(body.replies_to)
            if linked is not None:
                body = msgspec.structs.replace(body, deal_id=linked)
                envelope = msgspec.structs.replace(envelope, data=body)
        call_id, facts = await self._facts(crm, envelope, known, settings)
        if isinstance(body, InboundRequest):
            if not facts.clients and body.replies_to:
                # not recognised by phone or e-mail (a messenger chat): the conversation's client
                facts = dataclasses.replace(facts, clients=await crm.clients_of_requests(body.replies_to))
            actions = plan_request(body, facts, settings)
        elif isinstance(body, LiveEvent):
            actions = plan_event(body, facts, settings)
        else:
            actions = plan_call(body, facts, settings)
        applied: AppliedPlan = await apply_plan(crm, call_id, actions)
        if linked is not None and applied.newest("deal") is None:
            await crm.link_request(call_id, linked)
        stage = _stage(envelope)
        if stage is not None:
            await crm.mark_stage(call_id, stage)
        return Processed(message_id, call_id, actions, applied.created)

    async def _apply_in_transaction(self, message: InboxMessage) -> Processed:
        envelope = validate(message.topic, message.payload)
        processed = await self._apply_envelope(self.crm, message.id, envelope, self.settings)
        await self.inbox.mark_done(message.id, self.clock())
        return processed

    async def apply(self, message: InboxMessage) -> Processed:
        """Apply one message in its own transaction (raises on a CRM failure; nothing is kept)."""
        async with self.crm.store.transaction():
            self.crm.forget_cached()
            return await self._apply_in_transaction(message)

    def _reason(self, exc: Exception) -> tuple[str, int]:
        if isinstance(exc, CallInputError):
            return exc.reason, 1  # bad input: dead at once
        return f"{type(exc).__name__}: {exc}", self.max_attempts

    async def _apply_batch(self, store: Store, skip: frozenset[str]) -> _BatchResult:
        """One batch, inside `Store.in_thread`: bulk look-ups, then a savepoint per message.
        The whole batch uses the rules in force when it starts (a reload takes the next one)."""
        settings = self.settings
        inbox, crm = Inbox(store), SqliteCrm(store)
        db = store.db
        result = _BatchResult()
        messages = await inbox.pending(self.batch_size, skip)
        result.seen = len(messages)
        now = self.clock()
        envelopes: list[Envelope | CallInputError] = []
        for message in messages:
            known_envelope = self.parsed.pop(message.id, None)
            if known_envelope is not None:
                envelopes.append(known_envelope)
                continue
            try:
                envelopes.append(validate(message.topic, message.payload))
            except CallInputError as exc:
                envelopes.append(exc)
        valid = [e for e in envelopes if isinstance(e, Envelope)]
        numbers = {n for n in (_caller(e, settings) for e in valid) if n is not None}
        known = _Prefetched(
            clients=await crm.clients_by_phones(numbers),
            stages=await crm.stages_of({_call_id(e) for e in valid}),
        )
        done: list[str] = []
        for message, envelope in zip(messages, envelopes, strict=True):
            await db.execute("SAVEPOINT message")
            try:
                if isinstance(envelope, CallInputError):
                    raise envelope
                processed = await self._apply_envelope(crm, message.id, envelope, settings, known)
            except Exception as exc:  # noqa: BLE001 - bad input or CRM failure: count it
                await db.execute("ROLLBACK TO message")
                await db.execute("RELEASE message")
                reason, attempts = self._reason(exc)
                dead = await inbox.mark_failed(message.id, reason, now, attempts)
                result.problems.append((message.id, reason, dead))
                continue
            await db.execute("RELEASE message")
            result.applied.append(processed)
            done.append(message.id)
            if isinstance(envelope.body, InboundRequest):
                known.all_touched = True
            number = _caller(envelope, settings)
            if number is not None:
                known.touched_numbers.add(number)
            known.touched_calls.add(processed.call_id)
        await db.executemany(
            "UPDATE inbox SET state = 'done', finished_at = ?, error = NULL WHERE id = ?",
            [(iso(now), message_id) for message_id in done],
        )
        return result

    async def run_pending(self, batch_size: int | None = None) -> list[Processed]:
        """Process every pending message once, oldest first (see the class for the two paths)."""
        if batch_size is not None:
            self.batch_size = batch_size
        if not self.batched:
            return await self.run_pending_per_message(self.batch_size)
        done: list[Processed] = []
        failed: set[str] = set()
        while True:
            skip = frozenset(failed)
            result = await self.crm.store.in_thread(functools.partial(self._apply_batch, skip=skip))
            if not result.seen:
                break
            failed.update(message_id for message_id, _, _ in result.problems)
            self._log(result.applied, result.problems)
            done.extend(result.applied)
        return done

    def _log(self, applied: list[Processed], problems: list[tuple[str, str, bool]]) -> None:
        for message_id, reason, dead in problems:
            log.error("crm_message_failed", id=message_id, error=reason, dead=dead)
        for processed in applied:
            log.info(
                "crm_message_applied",
                id=processed.message_id,
                call_id=processed.call_id,
                actions=[type(a).__name__ for a in processed.actions],
                created=processed.created,
            )

    async def run_pending_per_message(self, batch_size: int = 100) -> list[Processed]:
        """The earlier path: one transaction per batch and a savepoint per message, every
        statement a hop to aiosqlite's thread (bench/bench_crm.py compares the two).

        A failing message is rolled back alone and counted; after `max_attempts` it is dead.
        """
        done: list[Processed] = []
        failed: set[str] = set()
        while batch := await self.inbox.pending(batch_size, frozenset(failed)):
            applied: list[Processed] = []
            problems: list[tuple[str, str, bool]] = []
            async with self.crm.store.transaction() as db:
                self.crm.forget_cached()
                for message in batch:
                    await db.execute("SAVEPOINT message")
                    try:
                        applied.append(await self._apply_in_transaction(message))
                    except Exception as exc:  # noqa: BLE001 - bad input or CRM failure: count it
                        await db.execute("ROLLBACK TO message")
                        await db.execute("RELEASE message")
                        reason, attempts = self._reason(exc)
                        dead = await self.inbox.mark_failed(message.id, reason, self.clock(), attempts)
                        failed.add(message.id)
                        problems.append((message.id, reason, dead))
                        continue
                    await db.execute("RELEASE message")
            self._log(applied, problems)
            done.extend(applied)
        return done
