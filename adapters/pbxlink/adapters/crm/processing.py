"""Applies stored inbox messages: facts → plan → CRM writes → inbox row done, in one transaction.

A failure rolls the whole message back and counts an attempt; after `max_attempts` the message
is dead-lettered. Nothing here raises on bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from pbxlink.adapters.crm.actions import Action
from pbxlink.adapters.crm.backend import AppliedPlan, apply_plan, gather_facts
from pbxlink.adapters.crm.calls import (
    CallInputError,
    CallOutcome,
    Direction,
    Envelope,
    EventType,
    LiveEvent,
)
from pbxlink.adapters.crm.facts import Stage
from pbxlink.adapters.crm.inbox import Inbox, InboxMessage, validate
from pbxlink.adapters.crm.planner import caller_identity, plan_call, plan_event
from pbxlink.adapters.crm.settings import CrmSettings
from pbxlink.adapters.crm.sqlite_crm import SqliteCrm

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
    return body.id if isinstance(body, CallOutcome) else body.call_id


def _stage(envelope: Envelope) -> Stage | None:
    body = envelope.body
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

    async def apply(self, message: InboxMessage) -> Processed:
        """Apply one message in one transaction (raises on a CRM failure; nothing is kept)."""
        envelope = validate(message.topic, message.payload)
        body = envelope.body
        call_id = _call_id(envelope)
        identity = caller_identity(body.external, body.line, self.settings)
        async with self.crm.store.transaction():
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

    async def run_pending(self) -> list[Processed]:
        """Process every pending message once, oldest first."""
        done: list[Processed] = []
        while True:
            batch = await self.inbox.pending()
            progressed = False
            for message in batch:
                try:
                    processed = await self.apply(message)
                except CallInputError as exc:  # stored before a schema change; dead at once
                    await self.inbox.mark_failed(message.id, exc.reason, self.clock(), 1)
                    log.warning("crm.message.invalid", id=message.id, reason=exc.reason)
                    continue
                except Exception as exc:  # noqa: BLE001 - any CRM failure: retry, then dead letter
                    dead = await self.inbox.mark_failed(
                        message.id, f"{type(exc).__name__}: {exc}", self.clock(), self.max_attempts
                    )
                    log.error("crm.message.failed", id=message.id, error=str(exc), dead=dead)
                    continue
                progressed = True
                done.append(processed)
                log.info(
                    "crm.message.applied",
                    id=processed.message_id,
                    call_id=processed.call_id,
                    actions=[type(a).__name__ for a in processed.actions],
                    created=processed.created,
                )
            if not batch or not progressed:
                return done
