"""One readable line per CRM action (for `pbxlink explain` and the logs)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from pbxlink.rules.actions import (
    Action,
    AdvanceQueue,
    CreateClient,
    CreateDeal,
    CreateInquiry,
    CreateOrder,
    CreateTask,
    CreateTicket,
    LogRequest,
    NoAction,
    Notify,
    RecordCall,
    Ref,
    SetResponsible,
)


def _ref(ref: Ref | None, kind: str) -> str:
    if ref is None:
        return "none"
    return f"the new {kind}" if ref.id is None else f"{kind} #{ref.id}"


def describe(action: Action, zone: ZoneInfo) -> str:
    """`+ what` for writes, `- rule: why not` for rules that decided to do nothing."""
    match action:
        case CreateClient():
            contact = (
                f"{action.phone_e164} (raw {action.phone_raw!r})"
                if action.phone_e164
                else (action.email or action.phone_raw or "no contact")
            )
            what = (
                f"create {'potential ' if action.potential else ''}client «{action.name}» {contact}, "
                f"responsible {action.responsible or 'none'}, source line "
                f"{action.source_line or 'not stored'}"
            )
        case CreateDeal():
            what = (
                f"create deal «{action.deal_type}» at stage «{action.stage}» for "
                f"{_ref(action.client, 'client')}, responsible {action.responsible or 'none'}"
            )
        case CreateOrder():
            what = f"create order in status «{action.status}» for {_ref(action.client, 'client')}"
        case CreateInquiry():
            what = (
                f"create inquiry {action.number} type {action.inquiry_type or 'unset'}, "
                f"manager {action.manager or 'none'}, «{action.client_name}» {action.phone}"
                + (f", description «{action.description}»" if action.description else "")
            )
        case CreateTask():
            link = (
                "unlinked"
                if action.link is None
                else (f"linked to {_ref(action.link.target, action.link.kind)}")
            )
            deadline = action.deadline.astimezone(zone).strftime("%d.%m.%Y %H:%M")
            what = (
                f"create task «{action.title}» for {', '.join(action.assignees)} "
                f"({action.mode.value}), author {action.author}, deadline {deadline}, {link}"
            )
        case SetResponsible():
            what = f"make {action.employee} responsible for {_ref(action.client, 'client')}"
        case RecordCall():
            what = f"record the call on {_ref(action.client, 'client')}"
        case Notify():
            what = f"notify {action.employee}: {action.about} «{action.text}»"
        case CreateTicket():
            what = (
                f"create support ticket «{action.subject}» for {_ref(action.client, 'client')}, "
                f"assignees {', '.join(action.assignees) or 'none'}"
            )
        case LogRequest():
            what = f"log request {action.request_id} as {action.outcome}"
        case AdvanceQueue():
            what = f"queue {action.queue_rule!r}: next request goes to position {action.next_index + 1}"
        case NoAction():
            return f"- {action.rule.value}: {action.reason}"
    return f"+ {what}  [{action.rule.value}: {action.reason}]"
