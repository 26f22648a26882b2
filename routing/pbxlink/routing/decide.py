"""The routing decision (PURE): caller + line + directory + presence + rules → RoutingDecision.

Order (R1 to R4):
1. routing switched off globally → ``routing_off``;
2. the first rule matching the line (and time of day) wins: ``off`` → ``routing_off`` with the
   rule's name, ``target`` → its dial string with reason ``rule:<name>``, ``owner`` → continue below
   (the rule may set the region used to read caller numbers on that line);
3. the caller is normalized to E.164 with the line's region; anonymous, internal and invalid
   callers are not routed;
4. unknown number → ``unknown_caller``; an employee's own number → ``employee_caller``;
5. among the clients of the number, the pick policy (newest|first) chooses one; its first
   eligible responsible (an employee, not blocked, not deleted) is the owner;
6. an owner who is on DND, paused, offline or busy is skipped (``owner_dnd`` …) and the call
   takes the normal route; otherwise the owner's endpoint is dialed (``owner``).

`decided_in_ms` is left at 0: measuring time is the caller's job (no clock in the pure core).
"""

from __future__ import annotations

from datetime import datetime

from pbxlink.routing.model import (
    Availability,
    DirectoryView,
    PresenceView,
    RouteReason,
    RouteRequest,
    RoutingDecision,
    RoutingPolicy,
    RuleAction,
)
from pbxlink.wire.phone import NumberKind, normalize

__all__ = ["decide"]

_SKIP_REASON = {
    Availability.DND: RouteReason.OWNER_DND,
    Availability.PAUSED: RouteReason.OWNER_PAUSED,
    Availability.OFFLINE: RouteReason.OWNER_OFFLINE,
    Availability.BUSY: RouteReason.OWNER_BUSY,
}
_CALLER_REASON = {
    NumberKind.ANONYMOUS: RouteReason.ANONYMOUS_CALLER,
    NumberKind.INTERNAL: RouteReason.INTERNAL_CALLER,
    NumberKind.SHORT: RouteReason.INVALID_CALLER,
    NumberKind.INVALID: RouteReason.INVALID_CALLER,
}


def decide(
    request: RouteRequest,
    directory: DirectoryView,
    presence: PresenceView,
    rules: RoutingPolicy,
    now: datetime,
) -> RoutingDecision:
    """Decide who rings first for `request`. Never raises on bad input."""
    line = request.line

    def no_route(
        reason: str, *, rule: str | None = None, e164: str | None = None, owner: str | None = None
    ) -> RoutingDecision:
        return RoutingDecision(
            target=None, agent=None, reason=str(reason), owner=owner, rule=rule, caller_e164=e164, line=line
        )

    if not rules.enabled:
        return no_route(RouteReason.ROUTING_OFF)
    rule = rules.first_rule(line, now)
    rule_name = rule.name if rule is not None else None
    if rule is not None and rule.action is RuleAction.OFF:
        return no_route(RouteReason.ROUTING_OFF, rule=rule.name)

    region = (rule.region if rule is not None and rule.region else None) or rules.default_region
    caller = normalize(request.caller, region, internal_max_digits=rules.internal_max_digits)

    if rule is not None and rule.action is RuleAction.TARGET:
        return RoutingDecision(
            target=rule.target or None,
            agent=None,
            reason=f"rule:{rule.name}",
            owner=None,
            rule=rule.name,
            caller_e164=caller.e164,
            line=line,
        )

    if caller.e164 is None:
        return no_route(_CALLER_REASON.get(caller.kind, RouteReason.INVALID_CALLER), rule=rule_name)
    entry = directory.lookup(caller.e164)
    if entry is None:
        return no_route(RouteReason.UNKNOWN_CALLER, rule=rule_name, e164=caller.e164)
    if entry.employee is not None:
        return no_route(RouteReason.EMPLOYEE_CALLER, rule=rule_name, e164=caller.e164)

    owner = next((r for r in entry.responsibles(rules.pick) if r.eligible), None)
    if owner is None:
        return no_route(RouteReason.NO_RESPONSIBLE, rule=rule_name, e164=caller.e164)
    if not owner.extension:
        return no_route(RouteReason.OWNER_NO_EXTENSION, rule=rule_name, e164=caller.e164)
    extension = owner.extension
    skip = _SKIP_REASON.get(presence.availability(extension))
    if skip is not None:
        return no_route(skip, rule=rule_name, e164=caller.e164, owner=extension)
    return RoutingDecision(
        target=rules.dial_template.format(extension=extension),
        agent=extension,
        reason=RouteReason.OWNER.value,
        owner=extension,
        rule=rule_name,
        caller_e164=caller.e164,
        line=line,
    )
