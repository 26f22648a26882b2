"""The Bitrix24 requests a planned message would cause (for `pbxlink explain`); pure, sends nothing.

Built with the same payload builders as the backend. What only the portal knows is named instead
of shown: a Bitrix24 user as "<user of 101>" unless [crm.bitrix24.users] maps the extension, the
CALL_ID from register as "$result[register][CALL_ID]", a contact created above as "<new contact>".
"""

from __future__ import annotations

import json
from typing import Any

from pbxlink.adapters.backends.bitrix24 import payloads
from pbxlink.adapters.backends.bitrix24.settings import Bitrix24Settings
from pbxlink.rules.actions import (
    Action,
    CreateClient,
    CreateDeal,
    CreateInquiry,
    CreateOrder,
    CreateTask,
    CreateTicket,
)
from pbxlink.rules.calls import CallInputError, CallOutcome, EventType, LiveEvent, parse_event, parse_outcome
from pbxlink.rules.settings import CrmSettings

CALL_REF = "$result[register][CALL_ID]"


def _line(method: str, params: dict[str, Any], note: str = "") -> str:
    text = json.dumps(params, ensure_ascii=False, default=str, separators=(", ", ": "))
    return f"{method} {text}{f'  ({note})' if note else ''}"


def _user(agent: str | None, s: Bitrix24Settings) -> int | str | None:
    if agent is None:
        return None
    mapped = s.user_id(agent)
    return mapped if mapped is not None else f"<user of {agent}>"


def bitrix24_requests(
    kind: str, data: dict[str, Any], actions: tuple[Action, ...], s: Bitrix24Settings, crm: CrmSettings
) -> list[str]:
    """One line per Bitrix24 method the message would cause, in order."""
    try:
        body: CallOutcome | LiveEvent = parse_outcome(data) if kind == "outcome" else parse_event(data)
    except CallInputError as exc:
        return [f"! not sent: {exc.reason}"]
    call_id = body.id if isinstance(body, CallOutcome) else body.call_id
    lines: list[str] = []
    needs_clients = crm.tasks.enabled or payloads.creates_client(crm, body)
    number = body.external.e164 if body.external is not None else None
    if needs_clients and number is not None and body.direction.value != "internal":
        lines.append(
            _line(
                "crm.duplicate.findbycomm",
                {"type": "PHONE", "values": [number], "entity_type": "CONTACT"},
                "with the contacts' crm.contact.get and open crm.deal.list, batched per 50 numbers",
            )
        )
    new_contact = False
    for action in actions:
        match action:
            case CreateClient():
                fields = payloads.contact_fields(action, call_id, None, body.line)
                user = _user(action.responsible, s)
                if user is not None:
                    fields["ASSIGNED_BY_ID"] = user
                lines.append(_line("crm.contact.add", {"fields": fields}))
                new_contact = True
            case CreateDeal():
                contact = (
                    "<new contact>" if action.client.is_new and new_contact else action.client.id or "<found>"
                )
                fields = payloads.deal_fields(action, "0", call_id, None, s)
                fields["CONTACT_ID"] = contact
                user = _user(action.responsible, s)
                if user is not None:
                    fields["ASSIGNED_BY_ID"] = user
                lines.append(_line("crm.deal.add", {"fields": fields}))
            case CreateTask():
                link = None
                if action.link is not None:
                    link = (
                        "<new deal>" if action.link.target.is_new else action.link.target.id or "<open deal>"
                    )
                fields = {
                    "TITLE": action.title,
                    "RESPONSIBLE_ID": _user(action.assignees[0], s),
                    "DEADLINE": action.deadline.isoformat(timespec="seconds"),
                }
                if len(action.assignees) > 1:
                    fields["ACCOMPLICES"] = [_user(a, s) for a in action.assignees[1:]]
                if link is not None:
                    fields["UF_CRM_TASK"] = [f"D_{link}"]
                lines.append(_line("tasks.task.add", {"fields": fields}))
            case CreateOrder() | CreateInquiry() | CreateTicket():
                lines.append(f"! refused: Bitrix24 backend maps no {type(action).__name__[6:].lower()}s")
            case _:
                pass
    if isinstance(body, LiveEvent):
        if body.type is EventType.RINGING and s.register_on_ringing:
            params = payloads.register_params(body, body.agent, s, crm, show=True)
            if params is not None:
                lines.append(
                    _line("telephony.externalCall.register", params, "once per call; the agent's card pops")
                )
        return lines
    register = payloads.register_params(body, payloads.owner(body, s), s, crm, show=False)
    if register is None:
        lines.append("(internal call: nothing is sent to Bitrix24)")
        return lines
    lines.append(_line("telephony.externalCall.register", register, "only if its ringing was not registered"))
    lines.append(
        _line(
            "telephony.externalCall.finish",
            payloads.finish_params(body, CALL_REF, s),
            "batched: up to 50 commands per request",
        )
    )
    for name in getattr(body, "recordings", ()) or ():
        if name.lower().endswith((".wav", ".mp3")) and s.attach_records:
            lines.append(
                _line(
                    "telephony.externalCall.attachRecord",
                    {
                        "CALL_ID": CALL_REF,
                        "FILENAME": name.rsplit("/", 1)[-1],
                        "FILE_CONTENT": "<base64 of the file, if readable>",
                    },
                )
            )
    return lines
