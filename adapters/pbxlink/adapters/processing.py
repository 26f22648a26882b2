"""Applies stored inbox messages: facts → plan → CRM writes → inbox row done, in one transaction.

A failure rolls the whole message back and counts an attempt; after `max_attempts` the message
is dead-lettered. Nothing here raises on bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from pbxlink.adapters.backends.protocol import AppliedPlan, apply_plan, gather_facts, gather_request_facts
from pbxlink.adapters.backends.sqlite_crm import SqliteCrm
from pbxlink.adapters.inbox import Inbox, InboxMessage, validate
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
from pbxlink.rules.facts import Stage
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


class Processor:
    def __init__(
        self,
        inbox: Inbox,
        crm: SqliteCrm,
        settings: CrmSettings,
        *,
        max_attempts: int = 5,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.inbox = inbox
        self.crm = crm
        self.settings = settings
        self.max_attempts = max_attempts
        self.clock = clock

    async def _apply_in_transaction(self, message: InboxMessage) -> Processed:
        envelope = validate(message.topic, message.payload)
        body = envelope.body
        call_id = _call_id(envelope)
        if isinstance(body, InboundRequest):
            sender = sender_identity(body, self.settings)
            facts = await gather_request_facts(
                self.crm, sender.e164 if sender else None, body.sender_email, body.deal_id
            )
            actions = plan_request(body, facts, self.settings)
        else:
            identity = caller_identity(body.external, body.line, self.settings)
            facts = await gather_facts(self.crm, identity.e164, call_id)
            if isinstance(body, LiveEvent):
                actions = plan_event(body, facts, self.settings)
            else:
                actions = plan_call(body, facts, self.settings)
        applied: AppliedPlan = await apply_plan(self.crm, call_id, actions)
        stage = _stage(envelope)
        if stage is not None:
            await self.crm.mark_stage(call_id, stage)
        await self.inbox.mark_done(message.id, self.clock())
        return Processed(message.id, call_id, actions, applied.created)

    async def apply(self, message: InboxMessage) -> Processed:
        """Apply one message in its own transaction (raises on a CRM failure; nothing is kept)."""
        async with self.crm.store.transaction():
            self.crm.forget_cached()
            return await self._apply_in_transaction(message)

    async def run_pending(self, batch_size: int = 100) -> list[Processed]:
        """Process every pending message once, oldest first.

        Messages are applied in batches, one transaction per batch and a savepoint per message:
        a failing message is rolled back alone and counted; after `max_attempts` it is dead.
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
                        invalid = isinstance(exc, CallInputError)
                        reason = (
                            exc.reason
                            if isinstance(exc, CallInputError)
                            else (f"{type(exc).__name__}: {exc}")
                        )
                        dead = await self.inbox.mark_failed(
                            message.id, reason, self.clock(), 1 if invalid else self.max_attempts
                        )
                        failed.add(message.id)
                        problems.append((message.id, reason, dead))
                        continue
                    await db.execute("RELEASE message")
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
            done.extend(applied)
        return done
