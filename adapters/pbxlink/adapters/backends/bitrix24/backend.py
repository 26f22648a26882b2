"""`CrmBackend` on Bitrix24 REST, with the remote-backend contract (remote.py, ledger.py).

Telephony (docs/crm-bitrix24.md):
- a ringing event registers the call (`telephony.externalCall.register`, SHOW=1 so the agent's
  card pops, EXTERNAL_CALL_ID = pbxlink's call id, LINE_NUMBER = the DID); the outcome finishes
  it (`.finish`: STATUS_CODE, DURATION, the owner's USER_ID/USER_PHONE_INNER) and attaches the
  recording's bytes when the file is readable (`.attachRecord`). A call whose ringing was never
  registered (stale, lost, or the adapter was off) is registered at its outcome (SHOW=0) and
  finished in the same request.
- Registrations and finishes are not sent one by one: they are queued per batch of messages and
  sent at the batch's end as `batch` requests of up to 50 commands, a finish naming its
  register's answer (`$result[r1][CALL_ID]`). A burst of outcomes is a few requests.
- Exactly once: a register is deduplicated by Bitrix24 itself (same EXTERNAL_CALL_ID within 30
  minutes → same CALL_ID); a finish that Bitrix24 answers "Call is not found" is looked up in
  the statistics (`voximplant.statistic.get`): there, it was finished by an earlier attempt.
  The CALL_ID of each call is kept (`crm_links`, kind `bitrix24.call`).

Rules (seeds 001, 003): contacts are found with `crm.duplicate.findbycomm` in every written form
of the number; their open deals (CLOSED=N) are the "open orders" a missed-call task links to
(`UF_CRM_TASK = D_<deal>`) and the open deals of the repeat-call rule. Contacts, deals and tasks
are created through the ledger with ORIGIN_ID (contacts, deals) or a marker in the task's
description, so an interrupted message finds what it made instead of making it again. The
look-ups of a whole batch are made up front in two `batch` requests (`prepare_batch`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from pbxlink.adapters.backends.bitrix24 import payloads
from pbxlink.adapters.backends.bitrix24.api import Bitrix24Api, Command
from pbxlink.adapters.backends.bitrix24.settings import Bitrix24Settings
from pbxlink.adapters.backends.ledger import EffectLedger
from pbxlink.adapters.backends.remote import RemoteRejected
from pbxlink.adapters.backends.retailcrm.payloads import written_forms
from pbxlink.adapters.inbox import Inbox
from pbxlink.adapters.store import Store
from pbxlink.rules.actions import (
    CreateClient,
    CreateDeal,
    CreateInquiry,
    CreateOrder,
    CreateTask,
    CreateTicket,
    LogRequest,
    Notify,
    RecordCall,
)
from pbxlink.rules.calls import CallOutcome, Direction, Envelope, EventType, LiveEvent
from pbxlink.rules.facts import ClientFact, EmployeeFact, OpenItem, Stage
from pbxlink.rules.settings import ClientCreation, CrmSettings

log = structlog.get_logger()

CALL_LINK = "bitrix24.call"  # crm_links kind: pbxlink call id → Bitrix24 CALL_ID
SHOWN_LINK = "bitrix24.shown"  # crm_links kind: pbxlink call id → users its card was shown to
NOT_FOUND = "Call is not found"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _date(text: Any) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(text))
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class Unsupported(RemoteRejected):
    """An action Bitrix24 has no entity for (in pbxlink's mapping)."""

    def __init__(self, what: str, rule: str) -> None:
        super().__init__(
            0, f'pbxlink maps no Bitrix24 entity to {what}: with backend = "bitrix24" switch off {rule}'
        )


@dataclass(slots=True)
class _Unit:
    """Commands that must go in one batch request (a finish names its register's answer)."""

    commands: list[Command] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # command key → message id
    registers: dict[str, str] = field(default_factory=dict)  # command key → pbxlink call id
    finishes: dict[str, str | None] = field(default_factory=dict)  # key → known CALL_ID or None


@dataclass(slots=True)
class _Attach:
    message_id: str
    call_id: str
    path: Path


class Bitrix24:
    """The Bitrix24 backend (see module doc). One per adapter; `api` is owned by the caller."""

    def __init__(
        self,
        store: Store,
        crm: CrmSettings,
        settings: Bitrix24Settings,
        api: Bitrix24Api,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.crm = crm
        self.s = settings
        self.api = api
        self.clock = clock
        self.ledger = EffectLedger(store)
        self.inbox = Inbox(store)
        self._message_id = ""
        self._envelope: Envelope | None = None
        self._units: list[_Unit] = []
        self._queued: dict[str, tuple[_Unit, str]] = {}  # call id → (unit, register key)
        self._attaches: list[_Attach] = []
        self._refused: set[str] = set()
        self._created_entity: dict[str, tuple[str, str]] = {}  # message id → (type, id)
        self._clients: dict[str, tuple[ClientFact, ...]] = {}
        self._employees: tuple[EmployeeFact, ...] | None = None
        self._employees_at = 0.0
        self._keys = 0
        self.finished = 0
        self.duplicates = 0
        self.refused = 0

    def forget_cached(self) -> None:
        """Look-ups are per batch (`prepare_batch` fills them)."""

    def use_rules(self, crm: CrmSettings) -> None:
        """New rules after a SIGHUP reload ([crm.bitrix24] itself needs a restart)."""
        self.crm = crm

    def _key(self, prefix: str) -> str:
        self._keys += 1
        return f"{prefix}{self._keys}"

    # ---------------------------------------------------------------- start-up

    async def register_lines(self) -> None:
        """telephony.externalLine.add for each configured line the portal does not have yet
        (adding an existing one is refused: "Line already exists")."""
        existing = await self.api.call("telephony.externalLine.get")
        have = {str(line.get("NUMBER")) for line in existing or [] if isinstance(line, dict)}
        commands = [
            Command(
                self._key("l"),
                "telephony.externalLine.add",
                {"NUMBER": line, "NAME": name, "CRM_AUTO_CREATE": "Y" if self.s.crm_create else "N"},
            )
            for line, name in self.s.lines.items()
            if line not in have
        ]
        for start in range(0, len(commands), self.s.batch_size):
            answer = await self.api.batch(commands[start : start + self.s.batch_size])
            for key, (code, text) in answer.errors.items():
                log.error("crm.bitrix24.line_refused", key=key, error=code, description=text)
        log.info("crm.bitrix24.lines_registered", added=len(commands), present=len(have))

    # ---------------------------------------------------------------- batch hooks

    async def begin_batch(self, message_ids: Sequence[str]) -> None:
        self.forget_batch()
        self._clients.clear()
        await self.ledger.begin(message_ids)

    async def prepare_batch(self, envelopes: Sequence[Envelope]) -> None:
        """Look up every caller of the batch in two requests, before any message is planned."""
        if not self._rules_need_clients():
            return
        numbers: list[str] = []
        for envelope in envelopes:
            body = envelope.body
            if isinstance(body, CallOutcome | LiveEvent) and body.direction is not Direction.INTERNAL:
                e164 = body.external.e164 if body.external is not None else None
                if e164 is not None and e164 not in numbers:
                    numbers.append(e164)
        if numbers:
            await self._look_up(numbers)

    def begin_message(self, message_id: str, envelope: Envelope) -> None:
        self._message_id = message_id
        self._envelope = envelope

    async def message_applied(self, message_id: str, envelope: Envelope) -> None:
        body = envelope.body
        if isinstance(body, LiveEvent):
            await self._event(message_id, body)
        elif isinstance(body, CallOutcome):
            await self._outcome(message_id, body)
        await self.ledger.finish(message_id)

    async def _known_call(self, call_id: str) -> str | None:
        known = await self.ledger.links(CALL_LINK, call_id)
        return known[-1] if known else None

    async def _event(self, message_id: str, event: LiveEvent) -> None:
        if event.type not in (EventType.RINGING, EventType.ANSWERED) or not self.s.register_on_ringing:
            return
        age = (self.clock() - event.time).total_seconds()
        if age > self.s.stale_event_seconds:
            log.info("crm.bitrix24.event_stale", id=message_id, call_id=event.call_id, age=round(age))
            return
        if event.type is EventType.ANSWERED:
            await self._hide_others(message_id, event)
            return
        if event.call_id in self._queued or await self._known_call(event.call_id) is not None:
            await self._show(message_id, event)  # another agent of a group or queue rings
            return
        params = payloads.register_params(event, event.agent, self.s, self.crm, show=True)
        if params is None:
            return
        unit = _Unit()
        key = self._key("r")
        unit.commands.append(Command(key, "telephony.externalCall.register", params))
        unit.owners[key] = message_id
        unit.registers[key] = event.call_id
        self._units.append(unit)
        self._queued[event.call_id] = (unit, key)
        user = await self._user_of(event.agent)
        if user is not None and self.s.show_card:
            await self.ledger.link(SHOWN_LINK, event.call_id, str(user))

    async def _card_unit(self, call_id: str) -> tuple[_Unit, str] | None:
        """The unit a command about this call goes in, and how it names the CALL_ID."""
        known = await self._known_call(call_id)
        if known is not None:
            unit = _Unit()
            self._units.append(unit)
            return unit, known
        if call_id in self._queued:
            unit, register_key = self._queued[call_id]
            return unit, f"$result[{register_key}][CALL_ID]"
        return None

    async def _show(self, message_id: str, event: LiveEvent) -> None:
        """telephony.externalCall.show: the card pops for each further agent the call rings."""
        user = await self._user_of(event.agent)
        if user is None or not self.s.show_card:
            return
        if str(user) in await self.ledger.links(SHOWN_LINK, event.call_id):
            return
        target = await self._card_unit(event.call_id)
        if target is None:
            return
        unit, call_ref = target
        key = self._key("s")
        unit.commands.append(
            Command(key, "telephony.externalCall.show", {"CALL_ID": call_ref, "USER_ID": user})
        )
        unit.owners[key] = message_id
        await self.ledger.link(SHOWN_LINK, event.call_id, str(user))

    async def _hide_others(self, message_id: str, event: LiveEvent) -> None:
        """telephony.externalCall.hide: once an agent answers, the others' cards close."""
        answering = await self._user_of(event.agent)
        others = [int(u) for u in await self.ledger.links(SHOWN_LINK, event.call_id) if u != str(answering)]
        if not others:
            return
        target = await self._card_unit(event.call_id)
        if target is None:
            return
        unit, call_ref = target
        key = self._key("h")
        unit.commands.append(
            Command(key, "telephony.externalCall.hide", {"CALL_ID": call_ref, "USER_ID": others})
        )
        unit.owners[key] = message_id

    async def _outcome(self, message_id: str, outcome: CallOutcome) -> None:
        if outcome.direction is Direction.INTERNAL or payloads.phone_number(outcome) is None:
            return
        known = await self._known_call(outcome.id)
        if known is not None:
            unit, call_ref = _Unit(), known
            self._units.append(unit)
        elif outcome.id in self._queued:
            unit, register_key = self._queued[outcome.id]
            call_ref = f"$result[{register_key}][CALL_ID]"
        else:
            entity = self._created_entity.get(message_id)
            params = payloads.register_params(
                outcome, payloads.owner(outcome, self.s), self.s, self.crm, show=False, entity=entity
            )
            if params is None:
                return
            unit = _Unit()
            register_key = self._key("r")
            unit.commands.append(Command(register_key, "telephony.externalCall.register", params))
            unit.owners[register_key] = message_id
            unit.registers[register_key] = outcome.id
            self._units.append(unit)
            self._queued[outcome.id] = (unit, register_key)
            call_ref = f"$result[{register_key}][CALL_ID]"
        key = self._key("f")
        unit.commands.append(
            Command(key, "telephony.externalCall.finish", payloads.finish_params(outcome, call_ref, self.s))
        )
        unit.owners[key] = message_id
        unit.finishes[key] = known
        for path in self._recordings(outcome):
            self._attaches.append(_Attach(message_id, outcome.id, path))

    def _recordings(self, outcome: CallOutcome) -> list[Path]:
        if not self.s.attach_records:
            return []
        found = []
        for name in getattr(outcome, "recordings", ()) or ():
            path = Path(name)
            if not path.is_absolute() and self.s.recordings_dir is not None:
                path = self.s.recordings_dir / path
            if path.suffix.lower() not in (".wav", ".mp3"):
                log.info(
                    "crm.bitrix24.record_skipped", call_id=outcome.id, path=str(path), reason="not wav/mp3"
                )
            elif not path.is_file():
                log.warning("crm.bitrix24.record_unreadable", call_id=outcome.id, path=str(path))
            else:
                found.append(path)
        return found[-1:]  # Bitrix24 keeps one record per call: the last one wins

    async def end_batch(self) -> None:
        """Send the queued registrations and finishes (inside the batch's transaction)."""
        chunks: list[list[_Unit]] = []
        size = 0
        for unit in self._units:
            if not unit.commands:
                continue
            if not chunks or size + len(unit.commands) > self.s.batch_size:
                chunks.append([])
                size = 0
            chunks[-1].append(unit)
            size += len(unit.commands)
        for chunk in chunks:
            await self._send(chunk)
        attaches, self._attaches = self._attaches, []
        for attach in attaches:
            await self._attach(attach)
        self.forget_batch()

    async def _send(self, chunk: list[_Unit]) -> None:
        commands = [c for unit in chunk for c in unit.commands]
        answer = await self.api.batch(commands)
        unclear: dict[str, tuple[str, str]] = {}  # finish key → (message id, CALL_ID to check)
        for unit in chunk:
            for key, call_id in unit.registers.items():
                result = answer.results.get(key)
                if isinstance(result, dict) and result.get("CALL_ID"):
                    await self.ledger.link(CALL_LINK, call_id, str(result["CALL_ID"]))
            for key in unit.registers:
                if key in answer.errors:
                    code, text = answer.errors[key]
                    await self._refuse(
                        unit.owners[key], f"telephony.externalCall.register: {code} {text}".strip()
                    )
            for key, known in unit.finishes.items():
                if key in answer.results:
                    self.finished += 1
                    continue
                code, text = answer.errors.get(key, ("", "no answer"))
                register_key = next(iter(unit.registers), None)
                register = answer.results.get(register_key) if register_key else None
                call = known or (
                    str(register["CALL_ID"])
                    if isinstance(register, dict) and register.get("CALL_ID")
                    else None
                )
                if NOT_FOUND in text and call is not None:
                    unclear[key] = (unit.owners[key], call)
                else:
                    await self._refuse(
                        unit.owners[key], f"telephony.externalCall.finish: {code} {text}".strip()
                    )
            for key, (code, text) in answer.errors.items():
                if key[0] in "sh" and key in unit.owners:  # a card not shown/hidden: the call goes on
                    log.warning("crm.bitrix24.card_refused", key=key, error=code, description=text)
        if unclear:
            await self._check_finished(unclear)

    async def _check_finished(self, unclear: dict[str, tuple[str, str]]) -> None:
        """A finish Bitrix24 did not find the call for: finished before (statistics) or refused."""
        items = list(unclear.items())
        for start in range(0, len(items), self.s.batch_size):
            part = items[start : start + self.s.batch_size]
            answer = await self.api.batch(
                [
                    Command(key, "voximplant.statistic.get", {"FILTER": {"CALL_ID": call}})
                    for key, (_, call) in part
                ]
            )
            for key, (message_id, call) in part:
                if answer.results.get(key):
                    self.duplicates += 1
                    log.info("crm.bitrix24.finished_before", id=message_id, call=call)
                else:
                    await self._refuse(message_id, f"telephony.externalCall.finish: {NOT_FOUND} ({call})")

    async def _attach(self, attach: _Attach) -> None:
        call = await self._known_call(attach.call_id)
        if call is None:
            return
        try:
            content = attach.path.read_bytes()
        except OSError as exc:
            log.warning("crm.bitrix24.record_unreadable", call_id=attach.call_id, error=str(exc))
            return
        if len(content) > self.s.max_record_bytes:
            log.warning("crm.bitrix24.record_too_big", call_id=attach.call_id, size=len(content))
            return
        try:
            await self.api.call(
                "telephony.externalCall.attachRecord",
                {
                    "CALL_ID": call,
                    "FILENAME": attach.path.name,
                    "FILE_CONTENT": base64.b64encode(content).decode(),
                },
            )
        except RemoteRejected as exc:  # the call is in Bitrix24 already; losing the record is logged
            log.error("crm.bitrix24.record_refused", call_id=attach.call_id, error=exc.reason)

    async def _refuse(self, message_id: str, reason: str) -> None:
        """A command Bitrix24 refused for good: the message becomes a dead letter with the reason
        (the first refusal names it: a finish fails after its register was refused)."""
        if message_id in self._refused:
            return
        self._refused.add(message_id)
        self.refused += 1
        log.error("crm.bitrix24.refused", id=message_id, error=reason)
        await self.inbox.mark_failed(message_id, reason[:1000], self.clock(), 1)

    def forget_batch(self) -> None:
        self._refused.clear()
        self._units.clear()
        self._queued.clear()
        self._attaches.clear()
        self._created_entity.clear()

    # ---------------------------------------------------------------- look-ups

    def _rules_need_clients(self) -> bool:
        c = self.crm
        creates = any(
            t.create is not ClientCreation.NOTHING
            for t in (c.clients.answered, c.clients.missed, c.clients.outgoing)
        )
        return c.tasks.enabled or creates

    async def employees(self) -> tuple[EmployeeFact, ...]:
        now = self.clock().timestamp()
        if self._employees is not None and now - self._employees_at < self.s.users_cache_seconds:
            return self._employees
        users: list[dict[str, Any]] = []
        start = 0
        while True:
            answer = await self.api.call("user.get", {"start": start})
            page = answer if isinstance(answer, list) else []
            users.extend(page)
            if len(page) < 50:
                break
            start += 50
        by_user = {v: k for k, v in self.s.users.items()}
        self._employees = tuple(
            EmployeeFact(
                id=str(u["ID"]),
                name=" ".join(filter(None, (u.get("NAME"), u.get("LAST_NAME")))) or f"#{u['ID']}",
                extension=by_user.get(int(u["ID"])) or (str(u.get("UF_PHONE_INNER") or "") or None),
                blocked=u.get("ACTIVE") in (False, "N", "0"),
            )
            for u in users
        )
        self._employees_at = now
        return self._employees

    async def _user_of(self, employee: str | None) -> int | None:
        """The Bitrix24 user of an extension or user id (None if the portal has no such user)."""
        if employee is None:
            return None
        mapped = self.s.user_id(employee)
        if mapped is not None:
            return mapped
        for e in await self.employees():
            if employee in (e.extension, e.id):
                return int(e.id)
        return None

    async def _extension_of(self, user_id: Any) -> str | None:
        for e in await self.employees():
            if e.id == str(user_id):
                return e.extension or e.id
        return None

    async def _look_up(self, numbers: Sequence[str]) -> None:
        """findbycomm for each number, then each contact and its open deals: 2 requests per 50."""
        found: dict[str, list[int]] = {n: [] for n in numbers}
        finds = [
            Command(
                f"n{i}",
                "crm.duplicate.findbycomm",
                {"type": "PHONE", "values": list(written_forms(n))[:20], "entity_type": "CONTACT"},
            )
            for i, n in enumerate(numbers)
        ]
        for start in range(0, len(finds), self.s.batch_size):
            answer = await self.api.batch(finds[start : start + self.s.batch_size])
            self._raise_errors(answer.errors, "crm.duplicate.findbycomm")
            for i, number in enumerate(numbers[start : start + self.s.batch_size], start):
                result = answer.results.get(f"n{i}")
                if isinstance(result, dict):
                    found[number] = [int(x) for x in result.get("CONTACT") or []]
        contact_ids = sorted({c for ids in found.values() for c in ids})
        details: list[Command] = []
        for contact in contact_ids:
            details.append(Command(f"c{contact}", "crm.contact.get", {"id": contact}))
            details.append(
                Command(
                    f"d{contact}",
                    "crm.deal.list",
                    {
                        "filter": {"CONTACT_ID": contact, "CLOSED": "N"},
                        "select": ["ID", "TITLE", "DATE_CREATE"],
                        "order": {"ID": "ASC"},
                    },
                )
            )
        contacts: dict[int, dict[str, Any]] = {}
        deals: dict[int, list[dict[str, Any]]] = {}
        step = self.s.batch_size - self.s.batch_size % 2 or 2
        for start in range(0, len(details), step):
            answer = await self.api.batch(details[start : start + step])
            self._raise_errors(answer.errors, "crm.contact.get / crm.deal.list")
            for key, result in answer.results.items():
                if key.startswith("c") and isinstance(result, dict):
                    contacts[int(key[1:])] = result
                elif key.startswith("d") and isinstance(result, list):
                    deals[int(key[1:])] = result
        for number, ids in found.items():
            clients = []
            for contact_id in ids:
                c = contacts.get(contact_id)
                if c is None:
                    continue
                responsible = await self._extension_of(c.get("ASSIGNED_BY_ID"))
                open_deals = tuple(
                    sorted(
                        (
                            OpenItem(str(d["ID"]), _date(d.get("DATE_CREATE")), str(d.get("TITLE") or ""))
                            for d in deals.get(contact_id, [])
                        ),
                        key=lambda item: (item.created_at, int(item.id)),
                    )
                )
                clients.append(
                    ClientFact(
                        id=str(contact_id),
                        name=" ".join(filter(None, (c.get("NAME"), c.get("LAST_NAME")))) or f"#{contact_id}",
                        created_at=_date(c.get("DATE_CREATE")),
                        responsibles=(responsible,) if responsible else (),
                        origin_call=payloads.call_of_origin(c.get("ORIGIN_ID")),
                        open_orders=open_deals,
                        open_deals=open_deals,
                    )
                )
            self._clients[number] = tuple(sorted(clients, key=lambda c: (c.created_at, int(c.id))))

    @staticmethod
    def _raise_errors(errors: dict[str, tuple[str, str]], what: str) -> None:
        if errors:
            key, (code, text) = next(iter(errors.items()))
            raise RemoteRejected(400, f"Bitrix24 {what} ({key}): {code} {text}".strip())

    async def clients_by_phone(self, e164: str) -> tuple[ClientFact, ...]:
        if not self._rules_need_clients():
            return ()
        if e164 not in self._clients:
            await self._look_up([e164])
        return self._clients.get(e164, ())

    async def inquiry_numbering(self) -> tuple[int, str | None]:
        return 1, None

    async def stages_applied(self, call_id: str) -> frozenset[Stage]:
        rows = await self.store.db.execute_fetchall(
            "SELECT stage FROM call_stages WHERE call_id = ?", (call_id,)
        )
        return frozenset(Stage(r[0]) for r in rows)

    async def mark_stage(self, call_id: str, stage: Stage) -> None:
        await self.store.db.execute(
            "INSERT OR IGNORE INTO call_stages (call_id, stage) VALUES (?, ?)", (call_id, stage.value)
        )

    # ---------------------------------------------------------------- writes

    def _line(self) -> str | None:
        body = self._envelope.body if self._envelope is not None else None
        return body.line if isinstance(body, CallOutcome | LiveEvent) else None

    async def _find_origin(self, entity: str, origin: str) -> str | None:
        rows = await self.api.call(
            f"crm.{entity}.list",
            {
                "filter": {
                    "ORIGINATOR_ID": payloads.ORIGINATOR,
                    "ORIGIN_ID": origin,
                },
                "select": ["ID"],
            },
        )
        return str(rows[0]["ID"]) if isinstance(rows, list) and rows else None

    async def create_client(self, action: CreateClient) -> str:
        fields = payloads.contact_fields(
            action, self._message_id, await self._user_of(action.responsible), self._line()
        )

        async def create() -> str:
            return str(await self.api.call("crm.contact.add", {"fields": fields}, idempotent=False))

        origin = str(fields["ORIGIN_ID"])
        contact = await self.ledger.once(
            self._message_id, "client", create, lambda: self._find_origin("contact", origin)
        )
        self._created_entity[self._message_id] = ("CONTACT", contact)
        if action.phone_e164 is not None:
            self._clients.pop(action.phone_e164, None)
        return contact

    async def create_deal(self, action: CreateDeal, client_id: str) -> str:
        fields = payloads.deal_fields(
            action, client_id, self._message_id, await self._user_of(action.responsible), self.s
        )

        async def create() -> str:
            return str(await self.api.call("crm.deal.add", {"fields": fields}, idempotent=False))

        origin = str(fields["ORIGIN_ID"])
        deal = await self.ledger.once(
            self._message_id, "deal", create, lambda: self._find_origin("deal", origin)
        )
        self._clients.clear()  # the contact has one more open deal now
        return deal

    async def create_task(
        self,
        action: CreateTask,
        *,
        client_id: str | None,
        order_id: str | None,
        inquiry_id: str | None,
        call_id: str,
    ) -> str:
        if inquiry_id is not None:
            raise Unsupported("inquiries to link a task to", "crm.tasks.link_to_open_inquiry")
        users = [await self._user_of(a) for a in action.assignees]
        if users[0] is None:
            raise RemoteRejected(
                0,
                f"task assignee {action.assignees[0]!r} is no Bitrix24 user "
                "(UF_PHONE_INNER or [crm.bitrix24.users])",
            )
        fields = payloads.task_fields(
            action,
            responsible=users[0],
            accomplices=tuple(u for u in users[1:] if u is not None),
            author=await self._user_of(action.author),
            deal_id=order_id,
            contact_id=client_id,
            call_id=call_id,
        )

        async def create() -> str:  # a task has no external id: never re-sent blindly
            answer = await self.api.call("tasks.task.add", {"fields": fields}, idempotent=False)
            return str(answer["task"]["id"])

        async def find() -> str | None:
            answer = await self.api.call(
                "tasks.task.list",
                {
                    "filter": {"RESPONSIBLE_ID": users[0], "TITLE": action.title},
                    "select": ["ID", "DESCRIPTION"],
                },
            )
            marker = payloads.task_marker(call_id)
            tasks = answer.get("tasks") if isinstance(answer, dict) else None
            return next((str(t["id"]) for t in tasks or [] if marker in (t.get("description") or "")), None)

        return await self.ledger.once(self._message_id, f"task:{','.join(action.assignees)}", create, find)

    async def set_responsible(self, client_id: str, employee: str) -> None:
        user = await self._user_of(employee)
        if user is not None:
            await self.api.call(
                "crm.contact.update", {"id": int(client_id), "fields": {"ASSIGNED_BY_ID": user}}
            )

    async def record_call(self, action: RecordCall, client_id: str) -> None:
        """The call's CRM activity is made by telephony.externalCall.finish."""

    async def notify(self, action: Notify, subject_id: str | None, call_id: str) -> str:
        """Bitrix24 pops the agent's call card itself (register with SHOW=1)."""
        return "bitrix24-card"

    async def create_order(self, action: CreateOrder, client_id: str, call_id: str) -> str:
        raise Unsupported("orders", "[crm.orders] (use deals in [crm.clients])")

    async def create_inquiry(self, action: CreateInquiry, client_id: str | None, call_id: str) -> str:
        raise Unsupported("inquiries", "[crm.inquiries]")

    async def clients_by_email(self, email: str) -> tuple[ClientFact, ...]:
        return ()

    # A7 conversations (replies in a thread or chat): requests are not mapped to this backend.
    async def clients_of_requests(self, request_ids: tuple[str, ...]) -> tuple[ClientFact, ...]:
        return ()

    async def open_deal_of_requests(self, request_ids: tuple[str, ...]) -> str | None:
        return None

    async def link_request(self, request_id: str, deal_id: str) -> None:
        """Nothing to link: see open_deal_of_requests."""

    async def deal_is_open(self, deal_id: str) -> bool:
        return False

    async def queue_positions(self) -> tuple[tuple[str, int], ...]:
        return ()

    async def create_ticket(self, action: CreateTicket, client_id: str) -> str:
        raise Unsupported("support tickets", "[crm.requests]")

    async def log_request(
        self, action: LogRequest, *, client_id: str | None, deal_id: str | None, ticket_id: str | None
    ) -> None:
        raise Unsupported("request log", "[crm.requests]")

    async def advance_queue(self, queue_rule: str, next_index: int) -> None:
        raise Unsupported("request queues", "[crm.requests]")
