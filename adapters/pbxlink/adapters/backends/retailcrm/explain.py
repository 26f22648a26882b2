"""The RetailCRM requests a planned call would cause (for `pbxlink explain`); pure, sends nothing.

Ids RetailCRM would assign are shown by what identifies them: a customer or order created for
the call by its `externalId` (pbxlink-<call id>), an existing one as "the customer found by phone".
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from pbxlink.adapters.backends.retailcrm import payloads
from pbxlink.adapters.backends.retailcrm.settings import RetailCrmSettings
from pbxlink.rules.actions import (
    Action,
    CreateClient,
    CreateDeal,
    CreateInquiry,
    CreateOrder,
    CreateTask,
    CreateTicket,
    Notify,
)
from pbxlink.rules.calls import CallInputError, CallOutcome, LiveEvent, parse_event, parse_outcome

FOUND = "0"  # stands for "the customer/order found by phone" in shown requests


def retailcrm_requests(
    kind: str, data: dict[str, Any], actions: tuple[Action, ...], s: RetailCrmSettings, zone: ZoneInfo
) -> list[str]:
    """One line per RetailCRM API call the message would cause, in order."""
    try:
        body: CallOutcome | LiveEvent = parse_outcome(data) if kind == "outcome" else parse_event(data)
    except CallInputError as exc:
        return [f"! not sent: {exc.reason}"]
    call_id = body.id if isinstance(body, CallOutcome) else body.call_id
    lines: list[str] = []
    new_order = False
    for action in actions:
        match action:
            case CreateClient():
                lines.append(payloads.customer_request(action, s, zone, call_id).describe())
            case CreateOrder():
                customer = payloads.external_id(call_id) if action.client.is_new else FOUND
                request = payloads.order_request(
                    action,
                    s,
                    zone,
                    customer_id=customer,
                    call_id=call_id,
                    phone=payloads.crm_phone(body.external),
                    line=body.line,
                )
                lines.append(request.describe())
                new_order = True
            case CreateTask():
                performer = s.user_id(action.assignees[0])
                if performer is None:
                    lines.append(
                        f"! task for {action.assignees[0]!r}: no RetailCRM user in [crm.retailcrm.users]"
                    )
                    continue
                linked_new = action.link is not None and action.link.target.is_new and new_order
                request = payloads.task_request(
                    action,
                    s,
                    zone,
                    performer=performer,
                    call_id=call_id,
                    order_id=None,
                    customer_id=None,
                    line=body.line,
                )
                target = "the order created above" if linked_new else "the open order found by phone"
                lines.append(request.describe() + (f"  (task.order = {target})" if action.link else ""))
            case CreateDeal() | CreateInquiry() | CreateTicket():
                lines.append(f"! not sent: RetailCRM has no {type(action).__name__[6:].lower()}s")
            case Notify():
                pass  # RetailCRM's own popup comes from telephony/call/event
            case _:
                pass
    if isinstance(body, LiveEvent):
        event = payloads.live_event(body, s)
        if event is not None and s.call_events:
            lines.append(payloads.event_request(event).describe())
    else:
        record = payloads.call_record(body, s, zone)
        if record is None:
            lines.append("(internal call: nothing is sent to RetailCRM)")
        else:
            hangup = payloads.hangup_event(body, s)
            if hangup is not None and s.call_events:
                lines.append(payloads.event_request(hangup).describe())
            lines.append(payloads.upload_request([record]).describe() + "  (batched with other calls)")
    return lines
