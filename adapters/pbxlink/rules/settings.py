"""Typed, frozen settings of the `[adapter]` and `[crm.*]` TOML sections.

`parse_settings(document)` reads a parsed TOML document (other top-level sections are left to
their owners), rejects unknown keys naming their dotted path and reports every problem at once
in one `SettingsError`. A small strict parser of our own: `pbxlink.daemon.config` did not exist
when this was written; the lead may swap in the generic helper.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from pbxlink.rules.calls import MissedAt
from pbxlink.rules.identity import PhoneFormat, line_key
from pbxlink.rules.numbering import NumberTemplateError, parse_template

E = TypeVar("E", bound=enum.Enum)
D = TypeVar("D")


class SettingsError(ValueError):
    """Every problem of a settings document, each with its dotted key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


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
    next_number: int = 1
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
    assignees: tuple[str, ...] = ()
    mode: TaskMode = TaskMode.ONE_FOR_ALL
    deadline_days: int = 0
    deadline_hours: int = 0
    deadline_minutes: int = 0
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

    name: str
    status: str
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
    default_region: str = "UA"
    line_regions: tuple[tuple[str, str], ...] = ()
    display: PhoneFormat = PhoneFormat.E164

    def region_for(self, line: str | None) -> str:
        """The default region for numbers that came in on `line` (DID or trunk)."""
        key = line_key(line, self.default_region)
        for known, region in self.line_regions:
            if line_key(known, self.default_region) == key:
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

    name: str
    action: RequestAction
    sources: tuple[str, ...] = ()  # empty: every source
    keywords: tuple[str, ...] = ()  # empty: always; else any word in the subject or body
    reject_reason: str = ""
    known_client_to_owner: bool = True
    address: Addressing = Addressing.USER
    user: str | None = None
    role: str | None = None
    queue: tuple[str, ...] = ()
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


@dataclass(frozen=True, slots=True)
class AdapterSettings:
    name: str = "crm"
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    username: str | None = None
    password_file: str | None = None
    client_id: str | None = None
    topic_prefix: str = "pbxlink/v1"
    nodes: str = "+"
    # $share/<name>/… lets several adapters split the load, but mosquitto does not restore a
    # shared subscription after a broker restart (messages published before the adapter
    # re-subscribes are lost). One adapter per CRM database: keep it off (docs/crm.md).
    shared_subscription: bool = False
    database: str = "/var/lib/pbxlink/crm.sqlite3"
    dead_letter_topic: str = "pbxlink/v1/crm/deadletter"
    session_expiry_seconds: int = 86400
    max_attempts: int = 5
    publish_directory: bool = True
    inbox_retention_days: int = 30

    @property
    def identifier(self) -> str:
        return self.client_id or f"pbxlink-adapter-{self.name}"


@dataclass(frozen=True, slots=True)
class Settings:
    adapter: AdapterSettings = AdapterSettings()
    crm: CrmSettings = field(default_factory=CrmSettings)


# ---------------------------------------------------------------- strict reader


class _Table:
    """One TOML table being read: remembers consumed keys, collects problems."""

    def __init__(self, raw: object, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            problems.append(f"{path}: must be a table")
            raw = {}
        self.raw: Mapping[str, Any] = raw
        self.seen: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}"

    def _get(self, key: str) -> Any:
        self.seen.add(key)
        return self.raw.get(key)

    def table(self, key: str) -> _Table:
        return _Table(self._get(key), self._key(key), self.problems)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problems.append(f"{self._key(key)}: must be true or false, got {value!r}")
            return default
        return value

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.problems.append(f"{self._key(key)}: must be an integer >= {minimum}, got {value!r}")
            return default
        return value

    def text(self, key: str, default: str) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.problems.append(f"{self._key(key)}: must be a string, got {value!r}")
            return default
        return value

    def optional_text(self, key: str) -> str | None:
        value = self._get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self.problems.append(f"{self._key(key)}: must be a string, got {value!r}")
            return None
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problems.append(f"{self._key(key)}: must be a list of non-empty strings")
            return ()
        return tuple(value)

    def choice(self, key: str, enum_type: type[E], default: D) -> E | D:
        value = self._get(key)
        if value is None:
            return default
        try:
            return enum_type(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in enum_type)
            self.problems.append(f"{self._key(key)}: must be one of {allowed}, got {value!r}")
            return default

    def tables(self, key: str) -> list[_Table]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problems.append(f"{self._key(key)}: must be an array of tables")
            return []
        return [_Table(item, f"{self._key(key)}[{i}]", self.problems) for i, item in enumerate(value)]

    def close(self) -> None:
        for key in sorted(set(self.raw) - self.seen):
            self.problems.append(f"{self._key(key)}: unknown key")


def _inquiry_trigger(t: _Table) -> InquiryTrigger:
    d = InquiryTrigger()
    result = InquiryTrigger(
        enabled=t.boolean("enabled", d.enabled),
        type=t.optional_text("type"),
        manager=t.optional_text("manager"),
        even_if_open_order=t.boolean("even_if_open_order", d.even_if_open_order),
        even_if_open_inquiry=t.boolean("even_if_open_inquiry", d.even_if_open_inquiry),
        notify=t.boolean("notify", d.notify),
    )
    t.close()
    return result


def _inquiries(t: _Table) -> InquirySettings:
    d = InquirySettings()
    template = t.text("number_template", d.number_template)
    try:
        parse_template(template)
    except NumberTemplateError as exc:
        t.problems.append(f"{t.path}.number_template: {exc}")
        template = d.number_template
    result = InquirySettings(
        number_template=template,
        next_number=t.integer("next_number", d.next_number, minimum=1),
        default_type_mode=t.choice("default_type_mode", DefaultInquiryType, d.default_type_mode),
        default_type=t.optional_text("default_type"),
        unknown_client_name=t.text("unknown_client_name", d.unknown_client_name),
        missed_description=t.text("missed_description", d.missed_description),
        answered_description=t.text("answered_description", d.answered_description),
        on_answered=_inquiry_trigger(t.table("on_answered")),
        on_missed=_inquiry_trigger(t.table("on_missed")),
    )
    if result.default_type_mode is DefaultInquiryType.FIXED and result.default_type is None:
        t.problems.append(f"{t.path}.default_type: required when default_type_mode = 'fixed'")
    t.close()
    return result


def _tasks(t: _Table) -> TaskSettings:
    d = TaskSettings()
    result = TaskSettings(
        enabled=t.boolean("enabled", d.enabled),
        assignees=t.texts("assignees"),
        mode=t.choice("mode", TaskMode, d.mode),
        deadline_days=t.integer("deadline_days", 0),
        deadline_hours=t.integer("deadline_hours", 0),
        deadline_minutes=t.integer("deadline_minutes", 0),
        title=t.text("title", d.title),
        link_to_open_order=t.boolean("link_to_open_order", d.link_to_open_order),
        link_to_open_inquiry=t.boolean("link_to_open_inquiry", d.link_to_open_inquiry),
        unlinked=t.choice("unlinked", UnlinkedTask, d.unlinked),
        link_to_this_call=t.boolean("link_to_this_call", d.link_to_this_call),
        deadline_from=t.choice("deadline_from", DeadlineFrom, d.deadline_from),
    )
    if result.enabled and not result.assignees:
        t.problems.append(f"{t.path}.assignees: at least one assignee when enabled")
    t.close()
    return result


def _client_trigger(t: _Table) -> ClientTrigger:
    d = ClientTrigger()
    result = ClientTrigger(
        create=t.choice("create", ClientCreation, d.create),
        deal_type=t.text("deal_type", d.deal_type),
        deal_stage=t.text("deal_stage", d.deal_stage),
    )
    t.close()
    return result


def _clients(t: _Table) -> ClientSettings:
    d = ClientSettings()
    template = t.text("name_template", d.name_template)
    try:
        template.format(time="", date="", kind="", line="", number="")
    except (KeyError, IndexError, ValueError) as exc:
        t.problems.append(
            f"{t.path}.name_template: only {{time}} {{date}} {{kind}} {{line}} {{number}} "
            f"may be used ({exc!r})"
        )
        template = d.name_template
    result = ClientSettings(
        answered=_client_trigger(t.table("answered")),
        missed=_client_trigger(t.table("missed")),
        outgoing=_client_trigger(t.table("outgoing")),
        name_template=template,
        incoming_label=t.text("incoming_label", d.incoming_label),
        outgoing_label=t.text("outgoing_label", d.outgoing_label),
        update_responsible_on_transfer=t.boolean(
            "update_responsible_on_transfer", d.update_responsible_on_transfer
        ),
        ivr_missed_responsible=t.optional_text("ivr_missed_responsible"),
        group_missed_responsible=t.optional_text("group_missed_responsible"),
        store_source_line=t.boolean("store_source_line", d.store_source_line),
        repeat_calls=t.choice("repeat_calls", RepeatCalls, d.repeat_calls),
        notify_responsible=t.boolean("notify_responsible", d.notify_responsible),
    )
    t.close()
    return result


def _orders(t: _Table) -> OrderSettings:
    d = OrderSettings()
    kinds: list[CallKind] = []
    for value in t.texts("on") if "on" in t.raw else tuple(k.value for k in d.on):
        try:
            kinds.append(CallKind(value))
        except ValueError:
            t.problems.append(f"{t.path}.on: unknown call kind {value!r}")
    rules: list[OrderRule] = []
    for rt in t.tables("rules"):
        kind = rt.choice("kind", CallKind, None)
        name = rt.text("name", "")
        status = rt.text("status", "")
        if not name or not status:
            rt.problems.append(f"{rt.path}: name and status are required")
        rules.append(
            OrderRule(
                name=name,
                status=status,
                line=rt.optional_text("line"),
                kind=kind,
                missed_at=rt.choice("missed_at", MissedAt, None),
            )
        )
        rt.close()
    result = OrderSettings(
        enabled=t.boolean("enabled", d.enabled),
        on=tuple(kinds),
        default_status=t.text("default_status", d.default_status),
        existing_clients=t.choice("existing_clients", ExistingClientOrders, d.existing_clients),
        rules=tuple(rules),
        notify_responsible=t.boolean("notify_responsible", d.notify_responsible),
    )
    t.close()
    return result


def _requests(t: _Table) -> RequestSettings:
    d = RequestSettings()
    rules: list[RequestRule] = []
    for rt in t.tables("rules"):
        name = rt.text("name", "")
        if not name:
            rt.problems.append(f"{rt.path}.name: required")
        keywords_text = rt.text("keywords", "")
        keywords = tuple(w.strip().casefold() for w in keywords_text.split(";") if w.strip())
        action = rt.choice("action", RequestAction, RequestAction.INTEREST)
        rule = RequestRule(
            name=name,
            action=action,
            sources=rt.texts("sources"),
            keywords=keywords,
            reject_reason=rt.text("reject_reason", ""),
            known_client_to_owner=rt.boolean("known_client_to_owner", True),
            address=rt.choice("address", Addressing, Addressing.USER),
            user=rt.optional_text("user"),
            role=rt.optional_text("role"),
            queue=rt.texts("queue"),
            deal_type=rt.text("deal_type", "Интерес"),
            deal_stage=rt.text("deal_stage", "Новый"),
        )
        if action is RequestAction.REJECT and not rule.reject_reason:
            rt.problems.append(f"{rt.path}.reject_reason: required when action = 'reject'")
        if action is not RequestAction.REJECT:
            needed = {
                Addressing.USER: ("user", rule.user),
                Addressing.ROLE: ("role", rule.role),
                Addressing.QUEUE: ("queue", rule.queue),
            }[rule.address]
            if not needed[1]:
                rt.problems.append(f"{rt.path}.{needed[0]}: required when address = '{rule.address.value}'")
        rules.append(rule)
        rt.close()
    template = t.text("potential_client_name", d.potential_client_name)
    try:
        template.format(contact="")
    except (KeyError, IndexError, ValueError):
        t.problems.append(f"{t.path}.potential_client_name: only {{contact}} may be used")
        template = d.potential_client_name
    result = RequestSettings(rules=tuple(rules), potential_client_name=template)
    t.close()
    return result


def _region(t: _Table, key: str, value: str) -> str:
    region = value.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        t.problems.append(f"{t.path}.{key}: unknown region {value!r} (ISO 3166 code like 'UA')")
    return region


def _phone(t: _Table) -> PhoneSettings:
    d = PhoneSettings()
    default_region = _region(t, "default_region", t.text("default_region", d.default_region))
    lines = t.table("line_regions")
    pairs: list[tuple[str, str]] = []
    for line, region in lines.raw.items():
        lines.seen.add(line)
        if not isinstance(region, str):
            t.problems.append(f"{lines.path}.{line}: must be a region code string")
            continue
        pairs.append((str(line), _region(lines, line, region)))
    result = PhoneSettings(
        default_region=default_region,
        line_regions=tuple(pairs),
        display=t.choice("display", PhoneFormat, d.display),
    )
    t.close()
    return result


def _crm(t: _Table) -> CrmSettings:
    d = CrmSettings()
    timezone = t.text("timezone", d.timezone)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        t.problems.append(f"{t.path}.timezone: unknown IANA zone {timezone!r}")
        timezone = d.timezone
    screen = t.table("screen_pop")
    screen_pop = ScreenPopSettings(on_ringing=screen.boolean("on_ringing", True))
    screen.close()
    result = CrmSettings(
        timezone=timezone,
        pick=t.choice("pick", ClientPick, d.pick),
        phone=_phone(t.table("phone")),
        inquiries=_inquiries(t.table("inquiries")),
        tasks=_tasks(t.table("tasks")),
        clients=_clients(t.table("clients")),
        orders=_orders(t.table("orders")),
        screen_pop=screen_pop,
        requests=_requests(t.table("requests")),
    )
    t.close()
    return result


def _adapter(t: _Table) -> AdapterSettings:
    d = AdapterSettings()
    name = t.text("name", d.name)
    if not name or any(c in name for c in "/+#$ "):
        t.problems.append(f"{t.path}.name: must be non-empty without / + # $ or spaces")
    result = AdapterSettings(
        name=name,
        broker_host=t.text("broker_host", d.broker_host),
        broker_port=t.integer("broker_port", d.broker_port, minimum=1),
        username=t.optional_text("username"),
        password_file=t.optional_text("password_file"),
        client_id=t.optional_text("client_id"),
        topic_prefix=t.text("topic_prefix", d.topic_prefix),
        nodes=t.text("nodes", d.nodes),
        shared_subscription=t.boolean("shared_subscription", d.shared_subscription),
        database=t.text("database", d.database),
        dead_letter_topic=t.text("dead_letter_topic", d.dead_letter_topic),
        session_expiry_seconds=t.integer("session_expiry_seconds", d.session_expiry_seconds),
        max_attempts=t.integer("max_attempts", d.max_attempts, minimum=1),
        publish_directory=t.boolean("publish_directory", d.publish_directory),
        inbox_retention_days=t.integer("inbox_retention_days", d.inbox_retention_days, minimum=1),
    )
    t.close()
    return result


def parse_settings(document: Mapping[str, Any]) -> Settings:
    """Read `[adapter]` and `[crm]` of a parsed TOML document; raise `SettingsError` listing all problems."""
    problems: list[str] = []
    adapter = _adapter(_Table(document.get("adapter"), "adapter", problems))
    crm = _crm(_Table(document.get("crm"), "crm", problems))
    if problems:
        raise SettingsError(problems)
    return Settings(adapter=adapter, crm=crm)


def settings_from_toml(text: str) -> Settings:
    """Parse TOML text (a config file's contents) into settings."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"TOML: {exc}"]) from exc
    return parse_settings(document)


def load_settings(path: Path) -> Settings:
    """Read a TOML file; syntax errors become a `SettingsError` too."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise SettingsError([f"{path}: cannot read ({exc.strerror})"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"{path}: {exc}"]) from exc
    return parse_settings(document)
