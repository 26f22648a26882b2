"""A7, pure: e-mail, messenger and web requests → CRM work (1C:CRM processing rules).

- The first rule whose `sources` include the request's source and whose keywords match wins.
  The keywords are `;`-separated, and one word in the subject or body is enough.
- `reject`: the request is rejected with the rule's reason.
- A request linked to an interest that is still open creates no new interest or ticket.
- Responsible: the known client's responsible when `known_client_to_owner` is on. Otherwise the
  rule's `user`, every active member of its `role` (addressed to all at once), or the next
  employee of its round-robin `queue`.
- A sender who is not a known client becomes a new potential client.
"""

from __future__ import annotations

from pbxlink.rules.actions import (
    NEW,
    Action,
    AdvanceQueue,
    CreateClient,
    CreateDeal,
    CreateTicket,
    LogRequest,
    NoAction,
    Notify,
    Ref,
    Rule,
)
from pbxlink.rules.calls import Channel, InboundRequest
from pbxlink.rules.facts import CrmFacts
from pbxlink.rules.identity import PhoneIdentity, PhoneKind, identify
from pbxlink.rules.settings import Addressing, ClientPick, CrmSettings, RequestAction, RequestRule


def sender_identity(request: InboundRequest, settings: CrmSettings) -> PhoneIdentity | None:
    if request.sender_phone is None:
        return None
    number = identify(request.sender_phone, settings.phone.default_region)
    return number if number.kind is PhoneKind.E164 else None


def _rule_for(request: InboundRequest, settings: CrmSettings) -> RequestRule | None:
    text = f"{request.subject}\n{request.body}"
    return next((r for r in settings.requests.rules if r.matches(request.source, text)), None)


def _active(ids: tuple[str, ...], facts: CrmFacts) -> tuple[str, ...]:
    return tuple(e.id for i in ids if (e := facts.employee(i)) is not None and e.active)


def _assignees(rule: RequestRule, facts: CrmFacts) -> tuple[tuple[str, ...], str, AdvanceQueue | None]:
    if rule.address is Addressing.USER:
        return _active((rule.user,) if rule.user else (), facts), f"user {rule.user}", None
    if rule.address is Addressing.ROLE:
        members = tuple(e.id for e in facts.employees if e.active and rule.role in e.roles)
        return members, f"role {rule.role!r}: all {len(members)} members at once", None
    queue = _active(rule.queue, facts)
    if not queue:
        return (), "queue has no active employee", None
    index = facts.queue_position(rule.name) % len(queue)
    advance = AdvanceQueue(Rule.REQUESTS, "round robin", rule.name, index + 1)
    return (queue[index],), f"queue position {index + 1} of {len(queue)}", advance


_CHANNEL = {
    Channel.EMAIL: "an e-mail",
    Channel.MESSENGER: "a messenger message",
    Channel.WEB: "a web request",
}


def plan_request(request: InboundRequest, facts: CrmFacts, settings: CrmSettings) -> tuple[Action, ...]:
    """All CRM actions for one request, in order."""
    at = request.received_at
    rule = _rule_for(request, settings)
    client = facts.pick(settings.pick is ClientPick.NEWEST)
    client_ref = None if client is None else Ref(client.id)

    def log(outcome: str, reason: str, ref: Ref | None) -> LogRequest:
        return LogRequest(
            Rule.REQUESTS,
            reason,
            request.id,
            request.source,
            request.channel.value,
            rule.name if rule else None,
            outcome,
            ref,
            at,
        )

    if rule is None:
        why = f"no rule matches source {request.source!r} and its words"
        return (NoAction(Rule.REQUESTS, why), log("unmatched", why, client_ref))
    if rule.action is RequestAction.REJECT:
        why = f"rule {rule.name!r}: rejected ({rule.reject_reason})"
        return (log("rejected", why, client_ref),)
    if request.deal_id is not None and facts.linked_deal_open:
        why = f"linked to the active interest {request.deal_id}: no new interest or ticket"
        return (log("attached", why, client_ref),)

    actions: list[Action] = []
    assignees: tuple[str, ...]
    advance: AdvanceQueue | None
    owner = client.responsibles[0] if client is not None and client.responsibles else None
    if rule.known_client_to_owner and owner is not None and _active((owner,), facts):
        assignees, who, advance = (owner,), f"the known client's responsible {owner}", None
    else:
        assignees, who, advance = _assignees(rule, facts)
    if advance is not None:
        actions.append(advance)
    if client is None:
        number = sender_identity(request, settings)
        contact = request.sender_email or (number.e164 if number else None) or request.sender_phone
        name = request.sender_name or settings.requests.potential_client_name.format(
            contact=contact or request.source
        )
        actions.append(
            CreateClient(
                Rule.REQUESTS,
                "unknown sender: a new potential client",
                name,
                number.e164 if number else None,
                request.sender_phone or "",
                assignees[0] if len(assignees) == 1 else None,
                None,
                None,
                at,
                None,
                email=request.sender_email,
                potential=True,
            )
        )
        client_ref = NEW
    assert client_ref is not None
    why = f"rule {rule.name!r}; responsible: {who}"
    if rule.action is RequestAction.INTEREST:
        actions.append(
            CreateDeal(
                Rule.REQUESTS,
                why,
                client_ref,
                rule.deal_type,
                rule.deal_stage,
                assignees[0] if len(assignees) == 1 else None,
                at,
            )
        )
        subject = "deal"
    else:
        actions.append(
            CreateTicket(
                Rule.REQUESTS, why, client_ref, request.subject, request.body, assignees, request.id, at
            )
        )
        subject = "ticket"
    actions.extend(
        Notify(
            Rule.REQUESTS,
            f"new {rule.action.value} from {_CHANNEL[request.channel]}",
            employee,
            subject,
            request.subject or request.body[:80],
            NEW,
        )
        for employee in assignees
    )
    if not assignees:
        actions.append(NoAction(Rule.REQUESTS, f"rule {rule.name!r}: {who}; nobody addressed"))
    actions.append(log(rule.action.value, why, client_ref))
    return tuple(actions)
