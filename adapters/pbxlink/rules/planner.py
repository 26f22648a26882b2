"""The pure planner: (call outcome or live event, CRM facts, settings) → CRM actions with reasons.

No I/O, no clock: every time comes from the call. The rules, in the order they run:
clients and deals (Megaplan), orders into statuses (Ringostat + RetailCRM), inquiries
(RemOnline / RO App), missed-call tasks (RO App). Internal calls create nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pbxlink.rules.actions import (
    NEW,
    Action,
    CreateClient,
    CreateDeal,
    CreateInquiry,
    CreateOrder,
    CreateTask,
    NoAction,
    Notify,
    RecordCall,
    Ref,
    Rule,
    SetResponsible,
    TaskLink,
)
from pbxlink.rules.calls import (
    CallOutcome,
    Direction,
    EventType,
    ExternalParty,
    LiveEvent,
    MissedAt,
    parse_event,
    parse_outcome,
)
from pbxlink.rules.facts import ClientFact, CrmFacts, Stage
from pbxlink.rules.identity import PhoneIdentity, PhoneKind, display, identify, line_key
from pbxlink.rules.numbering import render_number
from pbxlink.rules.settings import (
    CallKind,
    ClientCreation,
    ClientPick,
    ClientTrigger,
    CrmSettings,
    DeadlineFrom,
    DefaultInquiryType,
    ExistingClientOrders,
    RepeatCalls,
    TaskMode,
    UnlinkedTask,
)


def caller_identity(external: ExternalParty | None, line: str | None, settings: CrmSettings) -> PhoneIdentity:
    """The caller's identity: our own normalization of the raw form with the line's region,
    else the daemon's E.164, else the raw value as a non-number."""
    if external is None:
        return PhoneIdentity(raw="", e164=None, kind=PhoneKind.INTERNAL)
    return _identity(external.raw, external.e164, settings.phone.region_for(line))


@functools.lru_cache(maxsize=4096)
def _identity(raw: str, e164: str | None, region: str) -> PhoneIdentity:
    """Cached: the adapter asks twice per message (facts look-up, then the plan)."""
    ours = identify(raw, region)
    if ours.kind is PhoneKind.E164 or e164 is None:
        return ours
    theirs = identify(e164, region)
    return theirs if theirs.kind is PhoneKind.E164 else ours


def call_kind(call: CallOutcome) -> CallKind | None:
    if call.direction is Direction.INTERNAL:
        return None
    if call.direction is Direction.OUTBOUND:
        return CallKind.OUTGOING
    return CallKind.ANSWERED if call.answered else CallKind.MISSED


@dataclass(frozen=True, slots=True)
class _Plan:
    """Accumulates actions; knows whether this plan already creates a client or an order."""

    actions: list[Action]

    def has(self, kind: type[Any]) -> bool:
        return any(isinstance(a, kind) for a in self.actions)


def _local(moment: datetime, settings: CrmSettings) -> datetime:
    return moment.astimezone(settings.zone)


def _client_name(
    moment: datetime, outgoing: bool, identity: PhoneIdentity, line: str | None, s: CrmSettings
) -> str:
    local = _local(moment, s)
    c = s.clients
    return c.name_template.format(
        time=local.strftime("%H:%M"),
        date=local.strftime("%d.%m.%Y"),
        kind=c.outgoing_label if outgoing else c.incoming_label,
        line=line or "",
        number=identity.e164 or identity.raw,
    )


def _active_employee(key: str | None, facts: CrmFacts) -> str | None:
    employee = facts.employee(key)
    return employee.id if employee is not None and employee.active else None


def _why_not(key: str | None, facts: CrmFacts) -> str:
    """Why `key` cannot be made responsible ("" when it can): said in the action's reason."""
    if key is None:
        return "nobody to make responsible"
    employee = facts.employee(key)
    if employee is None:
        return f"{key} is not an employee of the CRM"
    if employee.blocked:
        return f"{key} is blocked"
    if employee.deleted:
        return f"{key} is deleted"
    return ""


def _pick(facts: CrmFacts, s: CrmSettings, *, excluding: str | None = None) -> ClientFact | None:
    """The one client every action of a call uses when several share the number (`crm.pick`)."""
    return facts.pick(s.pick is ClientPick.NEWEST, excluding=excluding)


def _picked(s: CrmSettings) -> str:
    return "newest client" if s.pick is ClientPick.NEWEST else "first client found"


def _trigger(kind: CallKind, s: CrmSettings) -> ClientTrigger:
    c = s.clients
    return {CallKind.ANSWERED: c.answered, CallKind.MISSED: c.missed, CallKind.OUTGOING: c.outgoing}[kind]


@dataclass(frozen=True, slots=True)
class _Responsible:
    create: bool
    employee: str | None
    creator: str | None
    reason: str


def _made_responsible(key: str | None, why: str, facts: CrmFacts, creator: str | None = None) -> _Responsible:
    """`key` as responsible (and creator, unless given) if active; else none, saying why."""
    who = _active_employee(key, facts)
    if who is None:
        why = f"{why}, but {_why_not(key, facts)}: the client gets no responsible"
    return _Responsible(True, who, who if creator is None else creator, why)


def _new_client_responsible(call: CallOutcome, facts: CrmFacts, s: CrmSettings) -> _Responsible:
    """Megaplan's creator/responsible of a client created for a new number."""
    c = s.clients
    if call.direction is Direction.OUTBOUND:
        return _made_responsible(call.initiator, f"outgoing call by {call.initiator}", facts)
    if call.answered:
        first = _active_employee(call.first_answered_by, facts)
        if c.update_responsible_on_transfer and call.last_handled_by:
            return _made_responsible(
                call.last_handled_by,
                f"last handler {call.last_handled_by} (update on transfers)",
                facts,
                creator=first,
            )
        return _made_responsible(call.first_answered_by, f"first answered by {call.first_answered_by}", facts)
    first_rung = call.rang[0] if call.rang else None
    if call.missed_at is MissedAt.IVR or (call.missed_at is None and not call.rang):
        if c.ivr_missed_responsible is None:
            return _Responsible(False, None, None, "missed in the IVR and no IVR responsible set")
        return _made_responsible(
            c.ivr_missed_responsible,
            f"missed in the IVR: configured IVR responsible {c.ivr_missed_responsible}",
            facts,
        )
    if call.missed_at is MissedAt.QUEUE or call.queue is not None:
        # Megaplan: «распределенном в любую группу ВАТС и пропущенном», wherever it ended
        # (the shipped dialplan sends every unanswered group call on to voicemail).
        where = "in a group" if call.queue is None else f"in group {call.queue}"
        if call.missed_at is not None and call.missed_at is not MissedAt.QUEUE:
            where += f" (ended in {call.missed_at.value})"
        if c.group_missed_responsible is not None:
            return _made_responsible(
                c.group_missed_responsible,
                f"missed {where}: configured group responsible {c.group_missed_responsible}",
                facts,
            )
        return _made_responsible(first_rung, f"missed {where}: first employee rung {first_rung}", facts)
    return _made_responsible(first_rung, f"missed by the employee it rang, {first_rung}", facts)


def _repeat_call(
    client: ClientFact,
    *,
    trigger: ClientTrigger,
    responsible: str | None,
    at: datetime,
    s: CrmSettings,
) -> list[Action]:
    rule = s.clients.repeat_calls
    who = responsible or (client.responsibles[0] if client.responsibles else None)
    if rule is RepeatCalls.NEVER:
        return []  # the call is only recorded on the client's card
    if rule is RepeatCalls.IF_NO_OPEN_DEAL and client.open_deals:
        return [
            NoAction(
                Rule.CLIENTS,
                f"repeat call from {client.name!r}: has an open deal {client.open_deals[0].id}",
            )
        ]
    why = "always" if rule is RepeatCalls.ALWAYS else "no open deal"
    return [
        CreateDeal(
            Rule.CLIENTS,
            f"repeat call from {client.name!r}: repeat_calls = {rule.value} ({why})",
            Ref(client.id),
            trigger.deal_type,
            trigger.deal_stage,
            who,
            at,
        )
    ]


def _new_client_actions(
    *,
    call_id: str,
    identity: PhoneIdentity,
    trigger: ClientTrigger,
    who: _Responsible,
    name_time: datetime,
    created_at: datetime,
    outgoing: bool,
    line: str | None,
    s: CrmSettings,
    why: str,
) -> list[Action]:
    assert identity.e164 is not None
    name = _client_name(name_time, outgoing, identity, line, s)
    actions: list[Action] = [
        CreateClient(
            Rule.CLIENTS,
            f"{why}: new number {identity.e164}, create = {trigger.create.value}; responsible: {who.reason}",
            name,
            identity.e164,
            identity.raw,
            who.employee,
            who.creator,
            line if (s.clients.store_source_line and not outgoing) else None,
            created_at,
            call_id,
        )
    ]
    if trigger.create is ClientCreation.CLIENT_AND_DEAL:
        actions.append(
            CreateDeal(
                Rule.CLIENTS,
                f"{why}: create = client_and_deal",
                NEW,
                trigger.deal_type,
                trigger.deal_stage,
                who.employee,
                created_at,
            )
        )
    if s.clients.notify_responsible and who.employee is not None:
        actions.append(
            Notify(
                Rule.CLIENTS, "new client: screen pop for the responsible", who.employee, "client", name, NEW
            )
        )
    return actions


@dataclass(frozen=True, slots=True)
class _Ctx:
    call: CallOutcome
    kind: CallKind
    identity: PhoneIdentity
    facts: CrmFacts
    s: CrmSettings


def _clients_at_end(ctx: _Ctx) -> list[Action]:
    call, kind, identity, facts, s = ctx.call, ctx.kind, ctx.identity, ctx.facts, ctx.s
    trigger = _trigger(kind, s)
    if identity.kind is not PhoneKind.E164:
        if trigger.create is ClientCreation.NOTHING:
            return []
        return [
            NoAction(
                Rule.CLIENTS,
                f"caller {identity.raw!r} has no number "
                f"({identity.kind.value}): never creates or merges a client",
            )
        ]
    answered_in = kind is CallKind.ANSWERED
    summary = f"{kind.value} call {call.id}"
    own = facts.client_created_by(call.id)
    if own is not None:
        actions: list[Action] = [
            RecordCall(
                Rule.CALLS, "client created by this call", Ref(own.id), call.id, summary, call.ended_at
            )
        ]
        if answered_in and s.clients.update_responsible_on_transfer and call.last_handled_by:
            last = _active_employee(call.last_handled_by, facts)
            if last is not None and (not own.responsibles or own.responsibles[0] != last):
                actions.append(
                    SetResponsible(
                        Rule.CLIENTS,
                        f"update responsible on transfers: last handled by {call.last_handled_by}",
                        Ref(own.id),
                        last,
                    )
                )
        return actions
    client = _pick(facts, s)
    if client is not None:
        actions = [
            RecordCall(
                Rule.CALLS,
                f"known number: {_picked(s)} {client.name!r}",
                Ref(client.id),
                call.id,
                summary,
                call.ended_at,
            )
        ]
        if kind is CallKind.OUTGOING:
            return actions
        if answered_in and Stage.ANSWER in facts.stages_applied:
            return actions  # the repeat-call decision was taken at answer time
        responsible = _active_employee(
            call.first_answered_by if answered_in else (call.rang[0] if call.rang else None), facts
        )
        return [
            *actions,
            *_repeat_call(client, trigger=trigger, responsible=responsible, at=call.ended_at, s=s),
        ]
    if trigger.create is ClientCreation.NOTHING:
        return []
    if answered_in and Stage.ANSWER in facts.stages_applied:
        return [NoAction(Rule.CLIENTS, "answer-time stage already applied and made no client")]
    who = _new_client_responsible(call, facts, s)
    if not who.create:
        return [NoAction(Rule.CLIENTS, who.reason)]
    if answered_in:
        name_time = call.answered_at or call.started_at
        created_at = name_time
        why = "answered incoming call (answer event not seen: created at the end)"
    elif kind is CallKind.MISSED:
        name_time, created_at, why = call.started_at, call.ended_at, "missed incoming call"
    else:
        name_time, created_at, why = call.started_at, call.ended_at, "outgoing call"
    return [
        *_new_client_actions(
            call_id=call.id,
            identity=identity,
            trigger=trigger,
            who=who,
            name_time=name_time,
            created_at=created_at,
            outgoing=kind is CallKind.OUTGOING,
            line=call.line,
            s=s,
            why=why,
        ),
        RecordCall(Rule.CALLS, "client created by this call", NEW, call.id, summary, call.ended_at),
    ]


def _order_status(call: CallOutcome, kind: CallKind, s: CrmSettings) -> tuple[str, str | None]:
    region = s.phone.default_region
    line = line_key(call.line, region)
    for rule in s.orders.rules:
        if rule.line is not None and line_key(rule.line, region) != line:
            continue
        if rule.kind is not None and rule.kind is not kind:
            continue
        if rule.missed_at is not None and call.missed_at is not rule.missed_at:
            continue
        return rule.status, rule.name
    return s.orders.default_status, None


def _orders(ctx: _Ctx, plan: _Plan) -> list[Action]:
    call, kind, identity, facts, s = ctx.call, ctx.kind, ctx.identity, ctx.facts, ctx.s
    o = s.orders
    if not o.enabled:
        return []
    if kind not in o.on:
        return [NoAction(Rule.ORDERS, f"orders are not created on {kind.value} calls")]
    if identity.kind is not PhoneKind.E164:
        return [NoAction(Rule.ORDERS, f"caller {identity.raw!r} has no number: no order")]
    status, matched = _order_status(call, kind, s)
    why_status = f"rule {matched!r} → status {status!r}" if matched else f"default status {status!r}"
    own = facts.client_created_by(call.id)
    client = _pick(facts, s, excluding=call.id)
    actions: list[Action] = []
    if own is not None and client is None:
        # Created by this very call (at answer time): the number was new, not a known client.
        ref = Ref(own.id)
        responsible = own.responsibles[0] if own.responsibles else None
        why_status += f"; client {own.name!r} was created by this call"
    elif client is not None and not plan.has(CreateClient):
        if o.existing_clients is ExistingClientOrders.NEVER:
            return [NoAction(Rule.ORDERS, f"known client {client.name!r}: existing_clients = never")]
        if o.existing_clients is ExistingClientOrders.IF_NO_OPEN_ORDER and client.open_orders:
            return [
                NoAction(
                    Rule.ORDERS, f"known client {client.name!r} has an open order {client.open_orders[0].id}"
                )
            ]
        ref = Ref(client.id)
        responsible = client.responsibles[0] if client.responsibles else None
    else:
        who = _new_client_responsible(call, facts, s)
        responsible = who.employee
        if not plan.has(CreateClient):
            actions.extend(
                _new_client_actions(
                    call_id=call.id,
                    identity=identity,
                    trigger=ClientTrigger(ClientCreation.CLIENT),
                    who=who,
                    name_time=call.answered_at or call.started_at,
                    created_at=call.ended_at,
                    outgoing=kind is CallKind.OUTGOING,
                    line=call.line,
                    s=s,
                    why="order for a new number",
                )
            )
        ref = NEW
    actions.append(
        CreateOrder(
            Rule.ORDERS, f"{kind.value} call: {why_status}", ref, status, matched, responsible, call.ended_at
        )
    )
    if o.notify_responsible and responsible is not None:
        actions.append(
            Notify(
                Rule.ORDERS,
                "new order: pop-up for the responsible manager",
                responsible,
                "order",
                f"order ({status})",
                NEW,
            )
        )
    return actions


def _inquiries(ctx: _Ctx, plan: _Plan) -> list[Action]:
    call, kind, identity, facts, s = ctx.call, ctx.kind, ctx.identity, ctx.facts, ctx.s
    q = s.inquiries
    if kind is CallKind.OUTGOING:
        return []
    trigger = q.on_answered if kind is CallKind.ANSWERED else q.on_missed
    if not trigger.enabled:
        return []
    client = _pick(facts, s) if identity.kind is PhoneKind.E164 else None
    if client is not None:
        if client.open_orders and not trigger.even_if_open_order:
            return [
                NoAction(
                    Rule.INQUIRIES,
                    f"client {client.name!r} has an open order "
                    f"{client.open_orders[0].id} and even_if_open_order is off",
                )
            ]
        if client.open_inquiries and not trigger.even_if_open_inquiry:
            return [
                NoAction(
                    Rule.INQUIRIES,
                    f"client {client.name!r} has an open inquiry "
                    f"{client.open_inquiries[0].id} and even_if_open_inquiry is off",
                )
            ]
    new_client = next((a for a in plan.actions if isinstance(a, CreateClient)), None)
    if client is not None:
        ref: Ref | None = Ref(client.id)
        name = client.name
    elif new_client is not None:
        ref, name = NEW, new_client.name
    else:
        ref, name = None, q.unknown_client_name
    inquiry_type = trigger.type
    type_why = "type from the rule"
    if inquiry_type is None:
        if q.default_type_mode is DefaultInquiryType.FIXED:
            inquiry_type, type_why = q.default_type, "default type"
        elif q.default_type_mode is DefaultInquiryType.REMEMBER_LAST:
            inquiry_type, type_why = facts.last_inquiry_type, "remembered last type"
        else:
            type_why = "type not set"
    manager = _active_employee(trigger.manager, facts)
    created = call.ended_at
    number = render_number(q.number_template, facts.next_inquiry_counter, _local(created, s).date())
    phone = display(identity.e164, s.phone.display) if identity.e164 else identity.raw
    description = q.missed_description if kind is CallKind.MISSED else q.answered_description
    who = f"client {name!r}" if client or new_client else f"unknown caller {phone}"
    actions: list[Action] = [
        CreateInquiry(
            Rule.INQUIRIES,
            f"{kind.value} incoming call from {who}; {type_why}",
            number,
            facts.next_inquiry_counter,
            inquiry_type,
            manager,
            ref,
            name,
            phone,
            description,
            created,
        )
    ]
    if trigger.manager is not None and manager is None:
        actions.append(
            NoAction(
                Rule.INQUIRIES,
                f"manager {trigger.manager!r} is not an active employee: inquiry left without a manager",
            )
        )
    if trigger.notify and manager is not None:
        actions.append(
            Notify(
                Rule.INQUIRIES,
                "new inquiry: notify the manager",
                manager,
                "inquiry",
                f"{number} {name} {phone}",
                NEW,
            )
        )
    return actions


def _tasks(ctx: _Ctx, plan: _Plan) -> list[Action]:
    call, kind, identity, facts, s = ctx.call, ctx.kind, ctx.identity, ctx.facts, ctx.s
    t = s.tasks
    if not t.enabled or kind is not CallKind.MISSED:
        return []
    assignees = tuple(a for a in (_active_employee(x, facts) for x in t.assignees) if a)
    if not assignees:
        return [NoAction(Rule.TASKS, "no active employee among the configured assignees")]
    # RO App: «Автором такой задачи будет Исполнитель, которого вы указали первым в списке».
    listed_first = facts.employee(t.assignees[0])
    author = listed_first.id if listed_first is not None else t.assignees[0]
    author_note = (
        "" if listed_first is not None and listed_first.active else f" ({_why_not(t.assignees[0], facts)})"
    )
    client = _pick(facts, s) if identity.kind is PhoneKind.E164 else None
    link: TaskLink | None = None
    why = "no client with this number"
    if client is not None:
        why = f"client {client.name!r} has no open order or inquiry"
    this_call = t.link_to_this_call
    if t.link_to_open_order and client is not None and client.open_orders:
        newest = max(client.open_orders, key=lambda i: (i.created_at, i.id))
        link, why = TaskLink("order", Ref(newest.id)), f"newest open order {newest.id}"
    elif t.link_to_open_order and this_call and plan.has(CreateOrder):
        link, why = TaskLink("order", NEW), "the order created for this call (link_to_this_call)"
    elif t.link_to_open_inquiry and client is not None and client.open_inquiries:
        newest = max(client.open_inquiries, key=lambda i: (i.created_at, i.id))
        link, why = TaskLink("inquiry", Ref(newest.id)), f"newest open inquiry {newest.id}"
    elif t.link_to_open_inquiry and this_call and plan.has(CreateInquiry):
        link, why = TaskLink("inquiry", NEW), "the inquiry created for this call (link_to_this_call)"
    if link is None and t.unlinked is UnlinkedTask.SKIP:
        return [NoAction(Rule.TASKS, f"{why}: unlinked = skip, no task")]
    created = call.ended_at
    base = call.started_at if t.deadline_from is DeadlineFrom.CALL_START else call.ended_at
    deadline = base + timedelta(days=t.deadline_days, hours=t.deadline_hours, minutes=t.deadline_minutes)
    client_ref: Ref | None = Ref(client.id) if client is not None else None
    linked = f"linked to {why}" if link else f"unlinked ({why})"
    linked += f"; author: first listed {author}{author_note}"
    if t.mode is TaskMode.ONE_FOR_ALL or len(assignees) == 1:
        return [
            CreateTask(
                Rule.TASKS,
                f"missed incoming call: one task for all, {linked}",
                t.title,
                assignees,
                TaskMode.ONE_FOR_ALL,
                author,
                deadline,
                created,
                link,
                client_ref,
            )
        ]
    return [
        CreateTask(
            Rule.TASKS,
            f"missed incoming call: one task each ({who}), {linked}",
            t.title,
            (who,),
            TaskMode.ONE_EACH,
            author,
            deadline,
            created,
            link,
            client_ref,
        )
        for who in assignees
    ]


def plan_call(call: CallOutcome, facts: CrmFacts, settings: CrmSettings) -> tuple[Action, ...]:
    """All CRM actions for one finished call, in the order they must be applied."""
    kind = call_kind(call)
    if kind is None:
        return (NoAction(Rule.CALLS, "internal call between employees: creates nothing"),)
    identity = caller_identity(call.external, call.line, settings)
    plan = _Plan([])
    ctx = _Ctx(call, kind, identity, facts, settings)
    plan.actions.extend(_clients_at_end(ctx))
    plan.actions.extend(_orders(ctx, plan))
    plan.actions.extend(_inquiries(ctx, plan))
    plan.actions.extend(_tasks(ctx, plan))
    return tuple(plan.actions)


def plan_outcome(outcome: Mapping[str, Any], facts: CrmFacts, settings: CrmSettings) -> tuple[Action, ...]:
    """`plan_call` on an outcome dict as published (raises CallInputError when invalid)."""
    return plan_call(parse_outcome(outcome), facts, settings)


def _screen_pop(event: LiveEvent, identity: PhoneIdentity, facts: CrmFacts, s: CrmSettings) -> list[Action]:
    if not s.screen_pop.on_ringing or event.agent is None:
        return []
    employee = _active_employee(event.agent, facts)
    if employee is None:
        return []
    client = _pick(facts, s) if identity.kind is PhoneKind.E164 else None
    number = display(identity.e164, s.phone.display) if identity.e164 else identity.raw
    if client is not None:
        return [
            Notify(
                Rule.SCREEN_POP,
                "ringing: known client",
                employee,
                "caller",
                f"{client.name} {number}",
                Ref(client.id),
            )
        ]
    return [Notify(Rule.SCREEN_POP, "ringing: unknown caller", employee, "caller", number, None)]


def plan_event(event: LiveEvent, facts: CrmFacts, settings: CrmSettings) -> tuple[Action, ...]:
    """Answer-time CRM work (Megaplan creates the client right after the answer) and pops."""
    if event.direction is Direction.INTERNAL:
        return ()
    identity = caller_identity(event.external, event.line, settings)
    if event.type is EventType.RINGING and event.direction is Direction.INBOUND:
        return tuple(_screen_pop(event, identity, facts, settings))
    if event.type is EventType.TRANSFERRED:
        # Megaplan: «сотрудник, который последним обрабатывал входящий звонок» — known only at
        # the end of the call; a transfer target has not handled it yet (it may not answer).
        if settings.clients.update_responsible_on_transfer and facts.client_created_by(event.call_id):
            return (
                NoAction(
                    Rule.CLIENTS,
                    f"transfer to {event.to_agent}: the responsible is updated at the end of the "
                    "call, to whoever handled it last",
                ),
            )
        return ()
    if event.type is not EventType.ANSWERED or event.direction is not Direction.INBOUND:
        return ()
    trigger = settings.clients.answered
    if trigger.create is ClientCreation.NOTHING and settings.clients.repeat_calls is RepeatCalls.NEVER:
        return ()  # no answer-time client rule is on
    if facts.stages_applied:
        done = " and ".join(sorted(stage.value for stage in facts.stages_applied))
        return (NoAction(Rule.CLIENTS, f"this call's {done} stage was already applied"),)
    if identity.kind is not PhoneKind.E164:
        return ()
    client = _pick(facts, settings)
    if client is not None:
        return tuple(
            _repeat_call(
                client,
                trigger=trigger,
                responsible=_active_employee(event.agent, facts),
                at=event.time,
                s=settings,
            )
        )
    if trigger.create is ClientCreation.NOTHING:
        return ()
    responsible = _made_responsible(event.agent, f"first answered by {event.agent}", facts)
    return tuple(
        _new_client_actions(
            call_id=event.call_id,
            identity=identity,
            trigger=trigger,
            who=responsible,
            name_time=event.time,
            created_at=event.time,
            outgoing=False,
            line=event.line,
            s=settings,
            why="answered incoming call",
        )
    )


def plan_live_event(event: Mapping[str, Any], facts: CrmFacts, settings: CrmSettings) -> tuple[Action, ...]:
    """`plan_event` on a live-event dict as published (raises CallInputError when invalid)."""
    return plan_event(parse_event(event), facts, settings)
