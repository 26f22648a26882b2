"""CRM actions as data (`pbxlink explain --json`, docs/explain.schema.json) and as one readable
line each (`pbxlink explain`, the logs). The line is rendered from the data, never from the
action itself, so the two views cannot disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
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

KINDS: dict[type[Any], str] = {
    CreateClient: "create_client",
    CreateDeal: "create_deal",
    CreateOrder: "create_order",
    CreateInquiry: "create_inquiry",
    CreateTask: "create_task",
    SetResponsible: "set_responsible",
    RecordCall: "record_call",
    Notify: "notify",
    CreateTicket: "create_ticket",
    LogRequest: "log_request",
    AdvanceQueue: "advance_queue",
    NoAction: "no_action",
}

Record = dict[str, Any]


def _link(to: str, ref: Ref | None) -> list[Record]:
    if ref is None:
        return []
    return [{"to": to, "id": ref.id, "new": ref.id is None}]


def _time(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).isoformat()


def action_record(action: Action, zone: ZoneInfo) -> Record:
    """One action as JSON-ready fields: kind, rule, reason, links, and its record's fields.

    Times are ISO 8601 in `zone` (the CRM's time zone). Keys that do not apply to a kind are
    left out (docs/explain.md lists which kind has which).
    """
    record: Record = {
        "kind": KINDS[type(action)],
        "rule": action.rule.value,
        "reason": action.reason,
        "writes": not isinstance(action, NoAction),
    }
    links: list[Record] = []
    match action:
        case CreateClient():
            record |= {
                "name": action.name,
                "phones": [action.phone_e164] if action.phone_e164 else [],
                "raw_phone": action.phone_raw or None,
                "email": action.email,
                "potential": action.potential,
                "responsible": action.responsible,
                "creator": action.creator,
                "source_line": action.source_line,
                "call_id": action.origin_call,
                "created_at": _time(action.created_at, zone),
            }
        case CreateDeal():
            record |= {
                "type": action.deal_type,
                "stage": action.stage,
                "responsible": action.responsible,
                "created_at": _time(action.created_at, zone),
            }
            links = _link("client", action.client)
        case CreateOrder():
            record |= {
                "status": action.status,
                "matched_rule": action.matched_rule,
                "responsible": action.responsible,
                "created_at": _time(action.created_at, zone),
            }
            links = _link("client", action.client)
        case CreateInquiry():
            record |= {
                "number": action.number,
                "counter": action.counter,
                "type": action.inquiry_type,
                "responsible": action.manager,
                "name": action.client_name,
                "phones": [action.phone] if action.phone else [],
                "description": action.description,
                "created_at": _time(action.created_at, zone),
            }
            links = _link("client", action.client)
        case CreateTask():
            record |= {
                "name": action.title,
                "assignees": list(action.assignees),
                "mode": action.mode.value,
                "author": action.author,
                "deadline": _time(action.deadline, zone),
                "created_at": _time(action.created_at, zone),
            }
            links = _link("client", action.client)
            if action.link is not None:
                links += _link(action.link.kind, action.link.target)
        case SetResponsible():
            record["responsible"] = action.employee
            links = _link("client", action.client)
        case RecordCall():
            record |= {"call_id": action.call_id, "summary": action.summary, "at": _time(action.at, zone)}
            links = _link("client", action.client)
        case Notify():
            record |= {"assignees": [action.employee], "about": action.about, "message": action.text}
            links = _link(action.about, action.subject)
        case CreateTicket():
            record |= {
                "name": action.subject,
                "body": action.body,
                "assignees": list(action.assignees),
                "request_id": action.request_id,
                "created_at": _time(action.created_at, zone),
            }
            links = _link("client", action.client)
        case LogRequest():
            record |= {
                "request_id": action.request_id,
                "source": action.source,
                "channel": action.channel,
                "matched_rule": action.matched_rule,
                "status": action.outcome,
                "created_at": _time(action.created_at, zone),
            }
            links = _link("client", action.client)
        case AdvanceQueue():
            record |= {"matched_rule": action.queue_rule, "next_index": action.next_index}
        case NoAction():
            pass
    record["links"] = links
    return record


def _ref(record: Record, to: str) -> str:
    for link in record["links"]:
        if link["to"] == to:
            return f"the new {to}" if link["new"] else f"{to} #{link['id']}"
    return "none"


def _or(value: object, fallback: str) -> str:
    return fallback if value is None or value == "" else str(value)


def render(record: Record) -> str:
    """`+ what  [rule: why]` for writes, `- rule: why` for rules that decided to do nothing."""
    r = record
    kind = r["kind"]
    if kind == "no_action":
        return f"- {r['rule']}: {r['reason']}"
    if kind == "create_client":
        if r["phones"]:
            contact = f"{r['phones'][0]} (raw {r['raw_phone']!r})"
        else:
            contact = r["email"] or r["raw_phone"] or "no contact"
        what = (
            f"create {'potential ' if r['potential'] else ''}client «{r['name']}» {contact}, "
            f"responsible {_or(r['responsible'], 'none')}, source line {_or(r['source_line'], 'not stored')}"
        )
    elif kind == "create_deal":
        what = (
            f"create deal «{r['type']}» at stage «{r['stage']}» for {_ref(r, 'client')}, "
            f"responsible {_or(r['responsible'], 'none')}"
        )
    elif kind == "create_order":
        what = f"create order in status «{r['status']}» for {_ref(r, 'client')}"
    elif kind == "create_inquiry":
        phone = r["phones"][0] if r["phones"] else ""
        what = (
            f"create inquiry {r['number']} type {_or(r['type'], 'unset')}, "
            f"manager {_or(r['responsible'], 'none')}, «{r['name']}» {phone}"
            + (f", description «{r['description']}»" if r["description"] else "")
        )
    elif kind == "create_task":
        target = next((link for link in r["links"] if link["to"] != "client"), None)
        link = "unlinked" if target is None else f"linked to {_ref(r, target['to'])}"
        deadline = datetime.fromisoformat(r["deadline"]).strftime("%d.%m.%Y %H:%M")
        what = (
            f"create task «{r['name']}» for {', '.join(r['assignees'])} ({r['mode']}), "
            f"author {r['author']}, deadline {deadline}, {link}"
        )
    elif kind == "set_responsible":
        what = f"make {r['responsible']} responsible for {_ref(r, 'client')}"
    elif kind == "record_call":
        what = f"record the call on {_ref(r, 'client')}"
    elif kind == "notify":
        what = f"notify {r['assignees'][0]}: {r['about']} «{r['message']}»"
    elif kind == "create_ticket":
        what = (
            f"create support ticket «{r['name']}» for {_ref(r, 'client')}, "
            f"assignees {', '.join(r['assignees']) or 'none'}"
        )
    elif kind == "log_request":
        what = f"log request {r['request_id']} as {r['status']}"
    else:  # advance_queue
        what = f"queue {r['matched_rule']!r}: next request goes to position {r['next_index'] + 1}"
    return f"+ {what}  [{r['rule']}: {r['reason']}]"


def describe(action: Action, zone: ZoneInfo) -> str:
    """One readable line for an action, rendered from `action_record`."""
    return render(action_record(action, zone))
