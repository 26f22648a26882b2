"""What pbxlink sends to Bitrix24 for an outcome, an event or an action (pure; no I/O).

The backend and `pbxlink explain` both build their requests here, so what explain shows is
what the backend sends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pbxlink.adapters.backends.bitrix24.settings import Bitrix24Settings
from pbxlink.rules.actions import CreateClient, CreateDeal, CreateTask
from pbxlink.rules.calls import CallOutcome, Direction, LiveEvent, MissedAt
from pbxlink.rules.settings import ClientCreation, CrmSettings

ORIGINATOR = "pbxlink"  # ORIGINATOR_ID of the contacts and deals pbxlink creates


def origin_id(key: str) -> str:
    """ORIGIN_ID of what pbxlink creates: a contact → its first call's id, a deal → its message's
    id. Finds it again after an interrupted attempt; the contact's tells the rules which call
    made it (a redelivered first call is no repeat call)."""
    return f"pbxlink-{key}"


def call_of_origin(value: object) -> str | None:
    text = str(value or "")
    return text.removeprefix("pbxlink-") if text.startswith("pbxlink-") else None


def task_marker(call_id: str) -> str:
    return f"[pbxlink call {call_id}]"


def call_type(direction: Direction) -> int:
    """TYPE: 1 outgoing, 2 incoming."""
    return 1 if direction is Direction.OUTBOUND else 2


def phone_number(body: CallOutcome | LiveEvent) -> str | None:
    if body.external is None:
        return None
    return body.external.e164 or body.external.raw or None


def status_code(outcome: CallOutcome) -> str:
    """STATUS_CODE of finish: 200 talked; inbound unanswered 304 (missed); an outbound call the
    other side did not take 603-S (cancelled) when our agent gave up ringing, else 304."""
    if outcome.answered:
        return "200"
    if outcome.direction is Direction.OUTBOUND:
        return "304" if outcome.missed_at is MissedAt.EXTERNAL else "603-S"
    return "304"


def owner(outcome: CallOutcome, s: Bitrix24Settings) -> str | None:
    """The agent who should own the call record: who handled it last, else who answered, else
    who placed it, else the first who rang, else the configured default user."""
    return (
        outcome.last_handled_by
        or outcome.first_answered_by
        or outcome.initiator
        or (outcome.rang[0] if outcome.rang else None)
        or s.default_user
        or None
    )


def user_params(agent: str | None, s: Bitrix24Settings) -> dict[str, Any]:
    """USER_ID when [users] maps the extension, else USER_PHONE_INNER = the extension."""
    user = s.user_id(agent)
    if user is not None:
        return {"USER_ID": user}
    if agent:
        return {"USER_PHONE_INNER": agent}
    return {}


def creates_client(crm: CrmSettings, body: CallOutcome | LiveEvent) -> bool:
    """Whether the rules create a contact for a new number on this kind of call."""
    c = crm.clients
    if body.direction is Direction.OUTBOUND:
        trigger = c.outgoing
    elif isinstance(body, CallOutcome) and not body.answered:
        trigger = c.missed
    elif isinstance(body, LiveEvent):
        return any(t.create is not ClientCreation.NOTHING for t in (c.answered, c.missed))
    else:
        trigger = c.answered
    return trigger.create is not ClientCreation.NOTHING


def register_params(
    body: CallOutcome | LiveEvent,
    agent: str | None,
    s: Bitrix24Settings,
    crm: CrmSettings,
    *,
    show: bool,
    entity: tuple[str, str] | None = None,
) -> dict[str, Any] | None:
    """telephony.externalCall.register, or None for a call without an external number."""
    number = phone_number(body)
    if number is None or body.direction is Direction.INTERNAL:
        return None
    call_id = body.id if isinstance(body, CallOutcome) else body.call_id
    started: datetime = body.started_at if isinstance(body, CallOutcome) else body.time
    params: dict[str, Any] = {
        **user_params(agent or s.default_user or None, s),
        "PHONE_NUMBER": number,
        "TYPE": call_type(body.direction),
        "CALL_START_DATE": started.isoformat(timespec="seconds"),
        "CRM_CREATE": 1 if s.crm_create and not creates_client(crm, body) else 0,
        "CRM_SOURCE": s.crm_source,
        "SHOW": 1 if show and s.show_card else 0,
        "EXTERNAL_CALL_ID": call_id,
    }
    if body.line:
        params["LINE_NUMBER"] = body.line
    if entity is not None:
        params["CRM_ENTITY_TYPE"], params["CRM_ENTITY_ID"] = entity
    return params


def finish_params(outcome: CallOutcome, call_id: str, s: Bitrix24Settings) -> dict[str, Any]:
    """telephony.externalCall.finish: who owns it, how long they talked, how it ended."""
    params = {
        "CALL_ID": call_id,
        **user_params(owner(outcome, s), s),
        "DURATION": round(outcome.talk_seconds),
        "STATUS_CODE": status_code(outcome),
        "ADD_TO_CHAT": 1,
    }
    if not outcome.answered and outcome.missed_at is not None:
        params["FAILED_REASON"] = f"missed at {outcome.missed_at.value}"
    return params


def contact_fields(
    action: CreateClient, message_id: str, user: int | None, line: str | None
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "NAME": action.name,
        "OPENED": "Y",
        "PHONE": [{"VALUE": action.phone_e164 or action.phone_raw, "VALUE_TYPE": "WORK"}],
        "SOURCE_ID": "CALL",
        "SOURCE_DESCRIPTION": f"{action.reason}; line {line}" if line else action.reason,
        "ORIGINATOR_ID": ORIGINATOR,
        "ORIGIN_ID": origin_id(action.origin_call or message_id),
    }
    if user is not None:
        fields["ASSIGNED_BY_ID"] = user
    if action.email:
        fields["EMAIL"] = [{"VALUE": action.email, "VALUE_TYPE": "WORK"}]
    return fields


def deal_fields(
    action: CreateDeal, contact_id: str, message_id: str, user: int | None, s: Bitrix24Settings
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "TITLE": action.deal_type,
        "CONTACT_ID": int(contact_id),
        "STAGE_ID": s.deal_stage,
        "CATEGORY_ID": s.deal_category,
        "SOURCE_ID": "CALL",
        "COMMENTS": action.reason,
        "ORIGINATOR_ID": ORIGINATOR,
        "ORIGIN_ID": origin_id(message_id),
    }
    if user is not None:
        fields["ASSIGNED_BY_ID"] = user
    return fields


def task_fields(
    action: CreateTask,
    *,
    responsible: int,
    accomplices: tuple[int, ...],
    author: int | None,
    deal_id: str | None,
    contact_id: str | None,
    call_id: str,
) -> dict[str, Any]:
    bindings = []
    if deal_id is not None:
        bindings.append(f"D_{deal_id}")
    if contact_id is not None:
        bindings.append(f"C_{contact_id}")
    fields: dict[str, Any] = {
        "TITLE": action.title,
        "RESPONSIBLE_ID": responsible,
        "DEADLINE": action.deadline.isoformat(timespec="seconds"),
        "DESCRIPTION": f"{action.reason}\n{task_marker(call_id)}",
    }
    if accomplices:
        fields["ACCOMPLICES"] = list(accomplices)
    if author is not None:
        fields["CREATED_BY"] = author
    if bindings:
        fields["UF_CRM_TASK"] = bindings
    return fields
