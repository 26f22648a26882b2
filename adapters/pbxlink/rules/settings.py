"""Typed, frozen settings of the `[crm]` TOML section: the CRM rules.

Read by the one strict loader (:func:`pbxlink.foundation.config.parse_section`): each field's type
(bool, int with bounds, enums, tables) drives the parsing and its error text; :func:`crm_problems`
adds the checks types alone cannot express. Every problem is reported at once with its dotted path.
The adapter process declares `[crm]` beside `[adapter]`, `[mqtt]` and `[log]` in
:mod:`pbxlink.adapters.config`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from pbxlink.foundation.config import AtLeast, Convert, NonEmpty
from pbxlink.foundation.errors import ConfigProblem
from pbxlink.rules.calls import MissedAt
from pbxlink.rules.identity import PhoneFormat, line_key
from pbxlink.rules.numbering import NumberTemplateError, parse_template

Count = Annotated[int, AtLeast(0)]  # 0 or more
Positive = Annotated[int, AtLeast(1)]  # 1 or more
Name = Annotated[str, NonEmpty()]
Names = tuple[Name, ...]


def _region_code(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a region code string, got {value!r}")
    return value.upper()


def _line_regions(value: Any) -> Mapping[str, str]:
    """``[crm.phone.line_regions]`` "DID" = "RU": a table of region codes, upper-cased."""
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a table of line = region code, got {value!r}")
    bad = [str(line) for line, region in value.items() if not isinstance(region, str)]
    if bad:
        raise ValueError(f"{', '.join(bad)}: must be a region code string")
    return MappingProxyType({str(line): region.upper() for line, region in value.items()})


def _keywords(value: Any) -> tuple[str, ...]:
    """ "цена; купить" (or an array of words) → casefolded words; empty means always."""
    if isinstance(value, str):
        words = value.split(";")
    elif isinstance(value, list) and all(isinstance(w, str) for w in value):
        words = value
    else:
        raise ValueError(f"must be a string of words separated by ';', got {value!r}")
    return tuple(w.strip().casefold() for w in words if w.strip())


class DefaultInquiryType(enum.Enum):
    """RemOnline «Тип обращения по умолчанию»."""

    FIXED = "fixed"
    REMEMBER_LAST = "remember_last"
    UNSET = "unset"


class TaskMode(enum.Enum):
    """RO App: «Одна задача на всех» / «По заданию на каждого»."""

    ONE_FOR_ALL = "one_for_all"
    ONE_EACH = "one_each"


class UnlinkedTask(enum.Enum):
    """RO App creates unlinked tasks; RetailCRM creates none without an order."""

    CREATE = "create"
    SKIP = "skip"


class ClientCreation(enum.Enum):
    """Megaplan «Ничего не делать» / «Клиента» / «Клиента и процесс»."""

    NOTHING = "nothing"
    CLIENT = "client"
    CLIENT_AND_DEAL = "client_and_deal"


class RepeatCalls(enum.Enum):
    """Megaplan «Действия при повторных звонках от клиентов»."""

    NEVER = "never"
    ALWAYS = "always"
    IF_NO_OPEN_DEAL = "if_no_open_deal"


class ExistingClientOrders(enum.Enum):
    """Whether a call from a known client also creates an order (RetailCRM side)."""

    NEVER = "never"
    ALWAYS = "always"
    IF_NO_OPEN_ORDER = "if_no_open_order"


class ClientPick(enum.Enum):
    """Which client when several share the caller's number, for every action of one call:
    RO App «тот, который был создан позже всех» (newest), Megaplan «первый найденный» (first)."""

    NEWEST = "newest"
    FIRST = "first"


class DeadlineFrom(enum.Enum):
    """RO App's example counts a task's deadline from when the call was missed (its start)."""

    CALL_START = "call_start"
    CALL_END = "call_end"


class CallKind(enum.Enum):
    """The call classes that rules are switched on for."""

    ANSWERED = "answered"
    MISSED = "missed"
    OUTGOING = "outgoing"


@dataclass(frozen=True, slots=True)
class InquiryTrigger:
    enabled: bool = False
    type: str | None = None
    manager: str | None = None
    even_if_open_order: bool = False
    even_if_open_inquiry: bool = False
    notify: bool = True


@dataclass(frozen=True, slots=True)
class InquirySettings:
    number_template: str = "{C}"
    next_number: Positive = 1
    default_type_mode: DefaultInquiryType = DefaultInquiryType.UNSET
    default_type: str | None = None
    unknown_client_name: str = "Неизвестный клиент"
    missed_description: str = "Пропущенный"
    answered_description: str = "Пропущенный"  # seed 000: both kinds of call get «Пропущенный»
    on_answered: InquiryTrigger = InquiryTrigger()
    on_missed: InquiryTrigger = InquiryTrigger()


@dataclass(frozen=True, slots=True)
class TaskSettings:
    enabled: bool = False
    assignees: Names = ()
    mode: TaskMode = TaskMode.ONE_FOR_ALL
    deadline_days: Count = 0
    deadline_hours: Count = 0
    deadline_minutes: Count = 0
    title: str = "Пропущенный звонок"
    link_to_open_order: bool = True
    link_to_open_inquiry: bool = True
    unlinked: UnlinkedTask = UnlinkedTask.CREATE
    link_to_this_call: bool = False  # also link to the order/inquiry this same call creates
    deadline_from: DeadlineFrom = DeadlineFrom.CALL_START


@dataclass(frozen=True, slots=True)
class ClientTrigger:
    create: ClientCreation = ClientCreation.NOTHING
    deal_type: str = "Сделка"
    deal_stage: str = "Новая"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    answered: ClientTrigger = ClientTrigger()
    missed: ClientTrigger = ClientTrigger()
    outgoing: ClientTrigger = ClientTrigger()
    name_template: str = "Новый ({time} {date}, {kind})"
    incoming_label: str = "входящий вызов"
    outgoing_label: str = "исходящий вызов"
    update_responsible_on_transfer: bool = False
    ivr_missed_responsible: str | None = None
    group_missed_responsible: str | None = None
    store_source_line: bool = True
    repeat_calls: RepeatCalls = RepeatCalls.NEVER
    notify_responsible: bool = True


@dataclass(frozen=True, slots=True)
class OrderRule:
    """One prioritized rule: the first matching rule in the list wins."""

    name: Name
    status: Name
    line: str | None = None
    kind: CallKind | None = None
    missed_at: MissedAt | None = None


@dataclass(frozen=True, slots=True)
class OrderSettings:
    enabled: bool = False
    on: tuple[CallKind, ...] = (CallKind.ANSWERED, CallKind.MISSED)
    default_status: str = "new"
    existing_clients: ExistingClientOrders = ExistingClientOrders.IF_NO_OPEN_ORDER
    rules: tuple[OrderRule, ...] = ()
    notify_responsible: bool = True


@dataclass(frozen=True, slots=True)
class PhoneSettings:
    default_region: Annotated[str, Convert(_region_code)] = "UA"
    # DID or trunk → region of the numbers that come in on it
    line_regions: Annotated[Mapping[str, str], Convert(_line_regions)] = field(default_factory=dict)
    display: PhoneFormat = PhoneFormat.E164

    def region_for(self, line: str | None) -> str:
        """The default region for numbers that came in on `line` (DID or trunk)."""
        key = line_key(line, self.default_region)
        if key is None:
            return self.default_region
        for known, region in self.line_regions.items():
            if line_key(known, self.default_region) == key:  # lines compare like numbers
                return region
        return self.default_region


class RequestAction(enum.Enum):
    """1C:CRM «Действие»: create an interest (deal) or a support ticket, or reject."""

    INTEREST = "interest"
    SUPPORT = "support"
    REJECT = "reject"


class Addressing(enum.Enum):
    """1C:CRM «Адресовать обращение»: one user, a role (several at once), or a round-robin queue."""

    USER = "user"
    ROLE = "role"
    QUEUE = "queue"


@dataclass(frozen=True, slots=True)
class RequestRule:
    """One processing rule; the first rule whose source and keywords match wins."""

    name: Name
    action: RequestAction = RequestAction.INTEREST
    sources: Names = ()  # empty: every source
    # "word; other word" in the TOML; empty: always; else any word in the subject or body
    keywords: Annotated[tuple[str, ...], Convert(_keywords)] = ()
    reject_reason: str = ""
    known_client_to_owner: bool = True
    address: Addressing = Addressing.USER
    user: str | None = None
    role: str | None = None
    queue: Names = ()
    deal_type: str = "Интерес"
    deal_stage: str = "Новый"

    def matches(self, source: str, text: str) -> bool:
        if self.sources and source not in self.sources:
            return False
        folded = text.casefold()
        return not self.keywords or any(word in folded for word in self.keywords)


@dataclass(frozen=True, slots=True)
class RequestSettings:
    rules: tuple[RequestRule, ...] = ()
    potential_client_name: str = "Потенциальный клиент ({contact})"


@dataclass(frozen=True, slots=True)
class ScreenPopSettings:
    on_ringing: bool = True


@dataclass(frozen=True, slots=True)
class CrmSettings:
    timezone: str = "Europe/Kyiv"
    pick: ClientPick = ClientPick.NEWEST
    phone: PhoneSettings = PhoneSettings()
    inquiries: InquirySettings = InquirySettings()
    tasks: TaskSettings = TaskSettings()
    clients: ClientSettings = ClientSettings()
    orders: OrderSettings = OrderSettings()
    screen_pop: ScreenPopSettings = ScreenPopSettings()
    requests: RequestSettings = RequestSettings()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# ---------------------------------------------------------------- checks types cannot express


def crm_problems(crm: CrmSettings, path: str = "crm") -> list[ConfigProblem]:
    """Every problem of a parsed `[crm]` that its types alone cannot express."""
    problems: list[ConfigProblem] = []

    def problem(where: str, reason: str) -> None:
        problems.append(ConfigProblem(f"{path}.{where}", reason))

    try:
        ZoneInfo(crm.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problem("timezone", f"unknown IANA zone {crm.timezone!r}")
    phone = crm.phone
    regions = {"phone.default_region": phone.default_region}
    regions.update({f"phone.line_regions.{line}": region for line, region in phone.line_regions.items()})
    for where, region in regions.items():
        if region not in phonenumbers.SUPPORTED_REGIONS:
            problem(where, f"unknown region {region!r} (ISO 3166 code like 'UA')")
    inquiries = crm.inquiries
    try:
        parse_template(inquiries.number_template)
    except NumberTemplateError as exc:
        problem("inquiries.number_template", str(exc))
    if inquiries.default_type_mode is DefaultInquiryType.FIXED and inquiries.default_type is None:
        problem("inquiries.default_type", "required when default_type_mode = 'fixed'")
    if crm.tasks.enabled and not crm.tasks.assignees:
        problem("tasks.assignees", "at least one assignee when enabled")
    try:
        crm.clients.name_template.format(time="", date="", kind="", line="", number="")
    except (KeyError, IndexError, ValueError) as exc:
        problem(
            "clients.name_template",
            f"only {{time}} {{date}} {{kind}} {{line}} {{number}} may be used ({exc!r})",
        )
    for i, rule in enumerate(crm.requests.rules):
        where = f"requests.rules[{i}]"
        if rule.action is RequestAction.REJECT and not rule.reject_reason:
            problem(f"{where}.reject_reason", "required when action = 'reject'")
        if rule.action is not RequestAction.REJECT:
            needed: dict[Addressing, tuple[str, object]] = {
                Addressing.USER: ("user", rule.user),
                Addressing.ROLE: ("role", rule.role),
                Addressing.QUEUE: ("queue", rule.queue),
            }
            key, value = needed[rule.address]
            if not value:
                problem(f"{where}.{key}", f"required when address = '{rule.address.value}'")
    try:
        crm.requests.potential_client_name.format(contact="")
    except (KeyError, IndexError, ValueError):
        problem("requests.potential_client_name", "only {contact} may be used")
    return problems
