"""What pbxlink sends to RetailCRM, as pure functions of actions, outcomes and events.

The backend sends these; `pbxlink explain` prints them (the RetailCRM requests a recorded
session would cause). Field names and enums are RetailCRM API v5's (see docs/crm-retailcrm.md
for the mapping of outcome fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import phonenumbers

from pbxlink.adapters.backends.retailcrm.settings import RetailCrmSettings
from pbxlink.rules.actions import CreateClient, CreateOrder, CreateTask
from pbxlink.rules.calls import CallOutcome, Direction, EventType, ExternalParty, LiveEvent

EXTERNAL_ID_PREFIX = "pbxlink-"


@dataclass(frozen=True, slots=True)
class Request:
    """One RetailCRM API call: method, path, form or query fields (JSON-valued where structured)."""

    method: str
    path: str
    fields: dict[str, Any]

    def describe(self) -> str:
        import json  # noqa: PLC0415 - only explain prints requests

        shown = json.dumps(self.fields, ensure_ascii=False, separators=(",", ":"))
        return f"{self.method} {self.path} {shown}"


def external_id(call_id: str) -> str:
    """RetailCRM `externalId` of the customer or order a call created (unique in RetailCRM)."""
    return EXTERNAL_ID_PREFIX + call_id


def call_of_external_id(value: str | None) -> str | None:
    if value and value.startswith(EXTERNAL_ID_PREFIX):
        return value[len(EXTERNAL_ID_PREFIX) :]
    return None


def local(moment: datetime, zone: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """RetailCRM's dates: the account's local time, no zone ("Y-m-d H:i:s")."""
    return moment.astimezone(zone).strftime(fmt)


def from_local(text: str, zone: ZoneInfo) -> datetime:
    return datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)


def crm_phone(external: ExternalParty | None) -> str:
    """The caller's number as pbxlink writes it into RetailCRM: E.164 when known, else as dialled."""
    if external is None:
        return ""
    return external.e164 or external.raw


def written_forms(e164: str) -> tuple[str, ...]:
    """The forms a person may have typed a number in: +380981234567, 380981234567, 0981234567."""
    forms = [e164, e164.lstrip("+")]
    try:
        number = phonenumbers.parse(e164, None)
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        forms.append("".join(ch for ch in national if ch.isdigit()))
    except phonenumbers.NumberParseException:
        pass
    return tuple(dict.fromkeys(f for f in forms if f))


def module_request(s: RetailCrmSettings) -> Request:
    """Register/update the telephony integration module: extensions and DIDs."""
    telephony: dict[str, Any] = {
        "allowEdit": False,
        "inputEventSupported": True,
        "outputEventSupported": True,
        "hangupEventSupported": True,
        "additionalCodes": [{"userId": user, "code": ext} for ext, user in s.users.items()],
        "externalPhones": [{"siteCode": site, "externalPhone": line} for line, site in s.sites.items()],
    }
    if s.make_call_url:
        telephony["makeCallUrl"] = s.make_call_url
    module = {
        "code": s.module_code,
        "integrationCode": s.module_code,
        "active": True,
        "name": "pbxlink",
        "clientId": s.client_id.reveal() if s.client_id is not None else s.module_code,
        "integrations": {"telephony": telephony},
    }
    return Request("POST", f"/api/v5/integration-modules/{s.module_code}/edit", {"integrationModule": module})


def customer_request(action: CreateClient, s: RetailCrmSettings, zone: ZoneInfo, call_id: str) -> Request:
    customer: dict[str, Any] = {
        "externalId": external_id(action.origin_call or call_id),
        "firstName": action.name,
        "phones": [{"number": action.phone_e164 or action.phone_raw}],
        "createdAt": local(action.created_at, zone),
        "source": {"source": "pbxlink", "medium": "phone"},
    }
    manager = s.user_id(action.responsible)
    if manager is not None:
        customer["managerId"] = manager
    if action.email:
        customer["email"] = action.email
    return Request(
        "POST", "/api/v5/customers/create", {"customer": customer, "site": s.site_for(action.source_line)}
    )


def order_request(
    action: CreateOrder,
    s: RetailCrmSettings,
    zone: ZoneInfo,
    *,
    customer_id: str,
    call_id: str,
    phone: str,
    line: str | None,
) -> Request:
    order: dict[str, Any] = {
        "externalId": external_id(call_id),
        "status": action.status,
        "customer": {"id": int(customer_id)} if customer_id.isdigit() else {"externalId": customer_id},
        "phone": phone,
        "createdAt": local(action.created_at, zone),
        "managerComment": f"pbxlink: {action.reason}",
    }
    if s.order_method:
        order["orderMethod"] = s.order_method
    manager = s.user_id(action.responsible)
    if manager is not None:
        order["managerId"] = manager
    return Request("POST", "/api/v5/orders/create", {"order": order, "site": s.site_for(line)})


def task_marker(call_id: str) -> str:
    return f"[pbxlink {call_id}]"


def task_request(
    action: CreateTask,
    s: RetailCrmSettings,
    zone: ZoneInfo,
    *,
    performer: int,
    call_id: str,
    order_id: str | None,
    customer_id: str | None,
    line: str | None,
) -> Request:
    task: dict[str, Any] = {
        "text": action.title,
        "commentary": f"{action.reason} {task_marker(call_id)}",
        "datetime": local(action.deadline, zone, "%Y-%m-%d %H:%M"),
        "performerId": performer,
    }
    if order_id is not None:
        task["order"] = {"id": int(order_id)}
    if customer_id is not None:
        task["customer"] = {"id": int(customer_id)}
    return Request("POST", "/api/v5/tasks/create", {"task": task, "site": s.site_for(line)})


def _code(call: CallOutcome) -> str | None:
    """The extension the call belongs to: who answered, who called out, else who rang first."""
    if call.direction is Direction.OUTBOUND:
        return call.initiator
    return call.first_answered_by or (call.rang[0] if call.rang else None)


def call_record(call: CallOutcome, s: RetailCrmSettings, zone: ZoneInfo) -> dict[str, Any] | None:
    """One `telephony/calls/upload` item; None for internal calls (never sent)."""
    if call.direction is Direction.INTERNAL:
        return None
    waited_until = call.answered_at or call.ended_at
    record: dict[str, Any] = {
        "date": local(call.started_at, zone),
        "type": "in" if call.direction is Direction.INBOUND else "out",
        "phone": crm_phone(call.external),
        "result": "answered" if call.answered else "no answer",
        "duration": round(call.talk_seconds),
        "durationWaiting": max(0, round((waited_until - call.started_at).total_seconds())),
        "externalId": call.id,
        "site": s.site_for(call.line),
    }
    code = _code(call)
    if code is not None:
        record["code"] = code
        user = s.user_id(code)
        if user is not None:
            record["userId"] = user
    if call.line:
        record["externalPhone"] = call.line
    url = recording_url(call, s)
    if url is not None:
        record["recordUrl"] = url
    return record


def recording_url(call: CallOutcome, s: RetailCrmSettings) -> str | None:
    """Where RetailCRM fetches the call's recording: `recordings_base_url` + the file name of the
    first recording (MIXMONITOR_FILENAME); None without a base URL or a recording."""
    if s.recordings_base_url is None or not call.recordings:
        return None
    name = call.recordings[0].rsplit("/", 1)[-1]
    return f"{s.recordings_base_url.rstrip('/')}/{quote(name)}"


def upload_request(records: list[dict[str, Any]]) -> Request:
    return Request("POST", "/api/v5/telephony/calls/upload", {"calls": records})


def live_event(event: LiveEvent, s: RetailCrmSettings) -> dict[str, Any] | None:
    """`telephony/call/event` for a live event: the popup of the manager whose phone rings."""
    if event.direction is Direction.INTERNAL:
        return None
    if event.type is EventType.RINGING:
        kind, agent = ("in" if event.direction is Direction.INBOUND else "out"), event.agent
    elif event.type is EventType.TRANSFERRED and event.direction is Direction.INBOUND:
        kind, agent = "in", event.to_agent if isinstance(event.to_agent, str) else None
    else:
        return None
    return _event(kind, external=event.external, agent=agent, line=event.line, call_id=event.call_id, s=s)


def hangup_event(call: CallOutcome, s: RetailCrmSettings) -> dict[str, Any] | None:
    """`telephony/call/event` type hangup when the call ended: closes the popup."""
    if call.direction is Direction.INTERNAL:
        return None
    event = _event("hangup", external=call.external, agent=_code(call), line=call.line, call_id=call.id, s=s)
    event["hangupStatus"] = "answered" if call.answered else "no answered"
    return event


def _event(
    kind: str,
    *,
    external: ExternalParty | None,
    agent: str | None,
    line: str | None,
    call_id: str,
    s: RetailCrmSettings,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "phone": crm_phone(external),
        "type": kind,
        "codes": [agent] if agent else [],
        "site": s.site_for(line),
        "callExternalId": call_id,
    }
    user = s.user_id(agent)
    if user is not None:
        event["userIds"] = [user]
    if line:
        event["externalPhone"] = line
    return event


def event_request(event: dict[str, Any]) -> Request:
    return Request("POST", "/api/v5/telephony/call/event", {"event": event})
