"""The embedded CRM on SQLite: employees, clients (E.164 identity + raw forms), orders,
inquiries, tasks, deals, call records and notifications. Implements `CrmBackend`.

All writes run inside the caller's transaction (`Store.transaction()`), so the inbox row and
the CRM effect commit together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
from pbxlink.rules.facts import ClientFact, EmployeeFact, OpenItem, Stage
from pbxlink.rules.identity import PhoneKind, identify

_CLIENTS_BY_PHONE = """
SELECT c.id, c.name, c.created_at, c.origin_call,
    (SELECT json_group_array(employee) FROM
        (SELECT employee FROM client_responsibles WHERE client_id = c.id ORDER BY position)),
    (SELECT json_group_array(json_array(id, created_at, status)) FROM orders
        WHERE client_id = c.id AND closed = 0),
    (SELECT json_group_array(json_array(id, created_at, number)) FROM inquiries
        WHERE client_id = c.id AND closed = 0),
    (SELECT json_group_array(json_array(id, created_at, stage)) FROM deals
        WHERE client_id = c.id AND closed = 0)
FROM client_phones p JOIN clients c ON c.id = p.client_id
WHERE p.e164 = ?
ORDER BY c.created_at, c.id
"""
_CLIENTS_BY_PHONES = _CLIENTS_BY_PHONE.replace("SELECT c.id,", "SELECT p.e164, c.id,").replace(
    "WHERE p.e164 = ?", "WHERE p.e164 IN (SELECT value FROM json_each(?))"
)
_CLIENTS_BY_EMAIL = _CLIENTS_BY_PHONE.replace(
    "FROM client_phones p JOIN clients c ON c.id = p.client_id\nWHERE p.e164 = ?",
    "FROM client_emails m JOIN clients c ON c.id = m.client_id\nWHERE m.email = ?",
)

# A7: the client of a conversation (an e-mail thread, a messenger chat): the newest of the given
# earlier requests (a JSON array of ids) that has a client.
_CLIENTS_OF_REQUESTS = _CLIENTS_BY_PHONE.replace(
    "FROM client_phones p JOIN clients c ON c.id = p.client_id\nWHERE p.e164 = ?",
    "FROM clients c\nWHERE c.id = (SELECT client_id FROM requests WHERE client_id IS NOT NULL\n"
    "    AND id IN (SELECT value FROM json_each(?)) ORDER BY created_at DESC, rowid DESC LIMIT 1)",
)


def _open_items(text: str) -> tuple[OpenItem, ...]:
    items = [OpenItem(str(i), from_iso(created), str(label or "")) for i, created, label in json.loads(text)]
    return tuple(sorted(items, key=lambda item: (item.created_at, int(item.id))))


def _client_fact(row: Any) -> ClientFact:
    client_id, name, created_at, origin_call, responsibles, orders, inquiries, deals = row
    return ClientFact(
        id=str(client_id),
        name=name,
        created_at=from_iso(created_at),
        responsibles=tuple(json.loads(responsibles)),
        origin_call=origin_call,
        open_orders=_open_items(orders),
        open_inquiries=_open_items(inquiries),
        open_deals=_open_items(deals),
    )


def iso(moment: datetime) -> str:
    """Stored times: UTC, second precision, "Z" (sorts as text)."""
    u = moment.astimezone(UTC)
    return f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}Z"


def from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


class CrmDataError(ValueError):
    """A manual CRM edit with bad data (unknown employee, a number that is not a number…)."""


@dataclass(frozen=True, slots=True)
class ImportedClient:
    """One client of a bulk import; phones are (E.164, raw) pairs, already normalized."""

    name: str
    created_at: datetime
    phones: tuple[tuple[str, str], ...]
    responsibles: tuple[str, ...] = ()


_ROW_TRIGGERS = ("phone_added", "responsible_added")


@dataclass(frozen=True, slots=True)
class TaskView:
    id: str
    title: str
    mode: str
    author: str
    assignees: tuple[str, ...]
    deadline: datetime
    client_id: str | None
    order_id: str | None
    inquiry_id: str | None
    done_by: str | None


class SqliteCrm:
    """`CrmBackend` over the adapter's SQLite store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db
        self._employees: tuple[EmployeeFact, ...] | None = None

    def forget_cached(self) -> None:
        """Drop the employee cache; the processor calls it at the start of each transaction."""
        self._employees = None

    # ---------------------------------------------------------------- look-ups

    async def employees(self) -> tuple[EmployeeFact, ...]:
        if self._employees is None:
            rows = await self.db.execute_fetchall(
                "SELECT id, name, extension, blocked, deleted, roles FROM employees ORDER BY id"
            )
            self._employees = tuple(
                EmployeeFact(r[0], r[1], r[2], bool(r[3]), bool(r[4]), tuple(filter(None, r[5].split(","))))
                for r in rows
            )
        return self._employees

    async def clients_by_phone(self, e164: str) -> tuple[ClientFact, ...]:
        return await self._clients(_CLIENTS_BY_PHONE, e164)

    async def clients_by_phones(self, numbers: set[str]) -> dict[str, tuple[ClientFact, ...]]:
        """`clients_by_phone` for many numbers in one statement (a batch's look-up)."""
        found: dict[str, list[ClientFact]] = {n: [] for n in numbers}
        if numbers:
            rows = await self.db.execute_fetchall(_CLIENTS_BY_PHONES, (json.dumps(sorted(numbers)),))
            for e164, *row in rows:
                found[e164].append(_client_fact(row))
        return {n: tuple(clients) for n, clients in found.items()}

    async def stages_of(self, call_ids: set[str]) -> dict[str, frozenset[Stage]]:
        """`stages_applied` for many calls in one statement."""
        found: dict[str, set[Stage]] = {c: set() for c in call_ids}
        if call_ids:
            rows = await self.db.execute_fetchall(
                "SELECT call_id, stage FROM call_stages WHERE call_id IN (SELECT value FROM json_each(?))",
                (json.dumps(sorted(call_ids)),),
            )
            for call_id, stage in rows:
                found[call_id].add(Stage(stage))
        return {c: frozenset(stages) for c, stages in found.items()}

    async def clients_by_email(self, email: str) -> tuple[ClientFact, ...]:
        return await self._clients(_CLIENTS_BY_EMAIL, email.strip().lower())

    async def clients_of_requests(self, request_ids: tuple[str, ...]) -> tuple[ClientFact, ...]:
        """A7: the client the newest of these earlier requests (same thread or chat) belonged to."""
        if not request_ids:
            return ()
        return await self._clients(_CLIENTS_OF_REQUESTS, json.dumps(list(request_ids)))

    async def _clients(self, sql: str, key: str) -> tuple[ClientFact, ...]:
        rows = await self.db.execute_fetchall(sql, (key,))
        return tuple(_client_fact(row) for row in rows)

    async def responsibles(self, client_id: int | str) -> tuple[str, ...]:
        rows = await self.db.execute_fetchall(
            "SELECT employee FROM client_responsibles WHERE client_id = ? ORDER BY position",
            (int(client_id),),
        )
        return tuple(r[0] for r in rows)

    async def inquiry_numbering(self) -> tuple[int, str | None]:
        [row] = await self.db.execute_fetchall("SELECT next_counter, last_type FROM numbering")
        return int(row[0]), row[1]

    async def stages_applied(self, call_id: str) -> frozenset[Stage]:
        rows = await self.db.execute_fetchall("SELECT stage FROM call_stages WHERE call_id = ?", (call_id,))
        return frozenset(Stage(r[0]) for r in rows)

    # ---------------------------------------------------------------- writes of actions

    async def mark_stage(self, call_id: str, stage: Stage) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO call_stages (call_id, stage) VALUES (?, ?)",
            (call_id, stage.value),
        )

    async def _insert(self, sql: str, values: tuple[object, ...]) -> str:
        row = await self.db.execute_insert(sql, values)
        assert row is not None
        return str(row[0])

    async def create_client(self, action: CreateClient) -> str:
        client_id = await self._insert(
            "INSERT INTO clients (name, created_at, creator, source_line, origin_call, potential) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                action.name,
                iso(action.created_at),
                action.creator,
                action.source_line,
                action.origin_call,
                int(action.potential),
            ),
        )
        if action.phone_e164 is not None:
            await self.db.execute(
                "INSERT INTO client_phones (client_id, e164, raw) VALUES (?, ?, ?)",
                (int(client_id), action.phone_e164, action.phone_raw),
            )
        if action.email is not None:
            await self.db.execute(
                "INSERT INTO client_emails (client_id, email) VALUES (?, ?)",
                (int(client_id), action.email.strip().lower()),
            )
        if action.responsible is not None:  # a new client has no responsibles to replace yet
            await self.db.execute(
                "INSERT INTO client_responsibles (client_id, position, employee) VALUES (?, 0, ?)",
                (int(client_id), action.responsible),
            )
        return client_id

    async def create_deal(self, action: CreateDeal, client_id: str) -> str:
        return await self._insert(
            "INSERT INTO deals (client_id, type, stage, responsible, created_at) VALUES (?, ?, ?, ?, ?)",
            (int(client_id), action.deal_type, action.stage, action.responsible, iso(action.created_at)),
        )

    async def create_order(self, action: CreateOrder, client_id: str, call_id: str) -> str:
        return await self._insert(
            "INSERT INTO orders (client_id, status, responsible, rule, call_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                int(client_id),
                action.status,
                action.responsible,
                action.matched_rule,
                call_id,
                iso(action.created_at),
            ),
        )

    async def create_inquiry(self, action: CreateInquiry, client_id: str | None, call_id: str) -> str:
        inquiry_id = await self._insert(
            "INSERT INTO inquiries (number, type, manager, client_id, client_name, phone, "
            "description, call_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                action.number,
                action.inquiry_type,
                action.manager,
                None if client_id is None else int(client_id),
                action.client_name,
                action.phone,
                action.description,
                call_id,
                iso(action.created_at),
            ),
        )
        await self.db.execute(
            "UPDATE numbering SET next_counter = max(next_counter, ?), last_type = coalesce(?, last_type)",
            (action.counter + 1, action.inquiry_type),
        )
        return inquiry_id

    async def create_task(
        self,
        action: CreateTask,
        *,
        client_id: str | None,
        order_id: str | None,
        inquiry_id: str | None,
        call_id: str,
    ) -> str:
        task_id = await self._insert(
            "INSERT INTO tasks (title, mode, author, deadline, client_id, order_id, inquiry_id, "
            "call_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                action.title,
                action.mode.value,
                action.author,
                iso(action.deadline),
                None if client_id is None else int(client_id),
                None if order_id is None else int(order_id),
                None if inquiry_id is None else int(inquiry_id),
                call_id,
                iso(action.created_at),
            ),
        )
        await self.db.executemany(
            "INSERT INTO task_assignees (task_id, position, employee) VALUES (?, ?, ?)",
            [(int(task_id), i, who) for i, who in enumerate(action.assignees)],
        )
        return task_id

    async def set_responsible(self, client_id: str, employee: str) -> None:
        await self.db.execute("DELETE FROM client_responsibles WHERE client_id = ?", (int(client_id),))
        await self.db.execute(
            "INSERT INTO client_responsibles (client_id, position, employee) VALUES (?, 0, ?)",
            (int(client_id), employee),
        )

    async def record_call(self, action: RecordCall, client_id: str) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO call_records (client_id, call_id, summary, at) VALUES (?, ?, ?, ?)",
            (int(client_id), action.call_id, action.summary, iso(action.at)),
        )

    async def notify(self, action: Notify, subject_id: str | None, call_id: str) -> str:
        return await self._insert(
            "INSERT INTO notifications (employee, about, text, subject_id, call_id, reason, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
            (action.employee, action.about, action.text, subject_id, call_id, action.reason),
        )

    async def deal_is_open(self, deal_id: str) -> bool:
        if not deal_id.isdigit():
            return False
        rows = await self.db.execute_fetchall(
            "SELECT 1 FROM deals WHERE id = ? AND closed = 0", (int(deal_id),)
        )
        return bool(rows)

    async def open_deal_of_requests(self, request_ids: tuple[str, ...]) -> str | None:
        """A7: the open interest that one of these earlier requests (an e-mail thread, a messenger
        chat) created or was attached to, the newest first; None when there is none."""
        if not request_ids:
            return None
        marks = ",".join("?" * len(request_ids))
        rows = list(
            await self.db.execute_fetchall(
                f"SELECT r.deal_id FROM requests r JOIN deals d ON d.id = r.deal_id "  # noqa: S608 - only ? marks
                f"WHERE r.id IN ({marks}) AND d.closed = 0 ORDER BY r.created_at DESC, r.rowid DESC LIMIT 1",
                request_ids,
            )
        )
        return str(rows[0][0]) if rows else None

    async def link_request(self, request_id: str, deal_id: str) -> None:
        """Record the interest an attached request was linked to (a later reply finds it too) and,
        when the sender was not recognised (a messenger chat), the interest's client."""
        await self.db.execute(
            "UPDATE requests SET deal_id = ?, "
            "client_id = coalesce(client_id, (SELECT client_id FROM deals WHERE id = ?)) "
            "WHERE id = ? AND deal_id IS NULL",
            (int(deal_id), int(deal_id), request_id),
        )

    async def queue_positions(self) -> tuple[tuple[str, int], ...]:
        rows = await self.db.execute_fetchall("SELECT rule, next_index FROM request_queues")
        return tuple((str(r[0]), int(r[1])) for r in rows)

    async def create_ticket(self, action: CreateTicket, client_id: str) -> str:
        return await self._insert(
            "INSERT INTO tickets (client_id, subject, body, assignees, request_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                int(client_id),
                action.subject,
                action.body,
                ",".join(action.assignees),
                action.request_id,
                iso(action.created_at),
            ),
        )

    async def log_request(
        self, action: LogRequest, *, client_id: str | None, deal_id: str | None, ticket_id: str | None
    ) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO requests (id, source, channel, rule, outcome, reason, client_id, "
            "deal_id, ticket_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                action.request_id,
                action.source,
                action.channel,
                action.matched_rule,
                action.outcome,
                action.reason,
                None if client_id is None else int(client_id),
                None if deal_id is None else int(deal_id),
                None if ticket_id is None else int(ticket_id),
                iso(action.created_at),
            ),
        )

    async def advance_queue(self, queue_rule: str, next_index: int) -> None:
        await self.db.execute(
            "INSERT INTO request_queues (rule, next_index) VALUES (?, ?) "
            "ON CONFLICT (rule) DO UPDATE SET next_index = excluded.next_index",
            (queue_rule, next_index),
        )

    # ---------------------------------------------------------------- manual edits, views

    async def sync_numbering(self, next_number: int) -> None:
        """Apply the configured "next number" once each time the setting changes."""
        await self.db.execute(
            "UPDATE numbering SET next_counter = ?, configured_start = ? WHERE configured_start IS NOT ?",
            (next_number, next_number, next_number),
        )

    async def add_employee(
        self,
        employee_id: str,
        name: str,
        *,
        extension: str | None = None,
        roles: tuple[str, ...] = (),
        phone_e164: str | None = None,
        blocked: bool = False,
        deleted: bool = False,
    ) -> None:
        """Insert or update an employee (changes re-publish the directory entries they touch)."""
        self._employees = None
        await self.db.execute(
            "INSERT INTO employees (id, name, extension, roles, phone_e164, blocked, deleted) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
            "extension = excluded.extension, roles = excluded.roles, "
            "phone_e164 = excluded.phone_e164, blocked = excluded.blocked, "
            "deleted = excluded.deleted",
            (employee_id, name, extension, ",".join(roles), phone_e164, int(blocked), int(deleted)),
        )

    async def add_client(
        self,
        name: str,
        phones: tuple[str, ...],
        *,
        region: str,
        responsibles: tuple[str, ...] = (),
        created_at: datetime,
    ) -> str:
        """A client typed in by hand: every phone is stored with its E.164 identity (A6)."""
        normalized = []
        for raw in phones:
            number = identify(raw, region)
            if number.kind is not PhoneKind.E164 or number.e164 is None:
                raise CrmDataError(f"{raw!r} is not a phone number ({number.kind.value})")
            normalized.append((number.e164, raw))
        client_id = await self._insert(
            "INSERT INTO clients (name, created_at) VALUES (?, ?)", (name, iso(created_at))
        )
        await self.db.executemany(
            "INSERT OR IGNORE INTO client_phones (client_id, e164, raw) VALUES (?, ?, ?)",
            [(int(client_id), e164, raw) for e164, raw in normalized],
        )
        await self.db.executemany(
            "INSERT INTO client_responsibles (client_id, position, employee) VALUES (?, ?, ?)",
            [(int(client_id), i, who) for i, who in enumerate(responsibles)],
        )
        return client_id

    async def bulk_import(self, clients: list[ImportedClient]) -> int:
        """Many clients at once (a migration from another CRM), inside the caller's transaction.

        The per-row directory triggers are set aside for the import; each imported number is
        marked for the directory once at the end instead. Returns the first new client id.
        """
        [(first,)] = await self.db.execute_fetchall("SELECT coalesce(max(id), 0) + 1 FROM clients")
        first = int(first)
        saved = await self.db.execute_fetchall(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?)", _ROW_TRIGGERS
        )
        for name, _ in saved:
            await self.db.execute(f"DROP TRIGGER {name}")  # names from our own schema
        ids = range(first, first + len(clients))
        await self.db.executemany(
            "INSERT INTO clients (id, name, created_at) VALUES (?, ?, ?)",
            [(i, c.name, iso(c.created_at)) for i, c in zip(ids, clients, strict=True)],
        )
        await self.db.executemany(
            "INSERT OR IGNORE INTO client_phones (client_id, e164, raw) VALUES (?, ?, ?)",
            [(i, e164, raw) for i, c in zip(ids, clients, strict=True) for e164, raw in c.phones],
        )
        await self.db.executemany(
            "INSERT INTO client_responsibles (client_id, position, employee) VALUES (?, ?, ?)",
            [(i, n, who) for i, c in zip(ids, clients, strict=True) for n, who in enumerate(c.responsibles)],
        )
        for _, sql in saved:
            await self.db.execute(sql)
        await self.db.execute(
            "INSERT INTO directory_dirty SELECT DISTINCT e164, 1 FROM client_phones WHERE client_id >= ? "
            "ON CONFLICT (e164) DO UPDATE SET gen = gen + 1",
            (first,),
        )
        return first

    async def add_order(
        self, client_id: str, status: str, *, created_at: datetime, closed: bool = False
    ) -> str:
        return await self._insert(
            "INSERT INTO orders (client_id, status, closed, created_at) VALUES (?, ?, ?, ?)",
            (int(client_id), status, int(closed), iso(created_at)),
        )

    async def close(self, table: str, entity_id: str) -> None:
        if table not in {"orders", "inquiries", "deals"}:
            raise CrmDataError(f"cannot close {table}")
        await self.db.execute(
            f"UPDATE {table} SET closed = 1 WHERE id = ?",  # noqa: S608 - checked above
            (int(entity_id),),
        )

    async def complete_task(self, task_id: str, employee: str, at: datetime) -> None:
        """Done by one: a shared task disappears for the others and stays with whoever did it."""
        if not await self.db.execute_fetchall(
            "SELECT 1 FROM task_assignees WHERE task_id = ? AND employee = ?", (int(task_id), employee)
        ):
            raise CrmDataError(f"task {task_id} is not assigned to {employee}")
        await self.db.execute(
            "UPDATE tasks SET done_by = ?, done_at = ? WHERE id = ? AND done_by IS NULL",
            (employee, iso(at), int(task_id)),
        )

    async def tasks_for(self, employee: str) -> tuple[TaskView, ...]:
        """The employee's task list: open tasks, plus done ones only if they did them."""
        async with self.db.execute(
            "SELECT t.id FROM tasks t JOIN task_assignees a ON a.task_id = t.id "
            "WHERE a.employee = ? AND (t.done_by IS NULL OR t.done_by = ?) ORDER BY t.id",
            (employee, employee),
        ) as cursor:
            ids = [str(r[0]) for r in await cursor.fetchall()]
        return tuple([await self.task(i) for i in ids])

    async def task(self, task_id: str) -> TaskView:
        async with self.db.execute(
            "SELECT id, title, mode, author, deadline, client_id, order_id, inquiry_id, done_by "
            "FROM tasks WHERE id = ?",
            (int(task_id),),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise CrmDataError(f"no task {task_id}")
        async with self.db.execute(
            "SELECT employee FROM task_assignees WHERE task_id = ? ORDER BY position",
            (int(task_id),),
        ) as cursor:
            assignees = tuple(r[0] for r in await cursor.fetchall())

        def opt(value: object) -> str | None:
            return None if value is None else str(value)

        return TaskView(
            str(row[0]),
            row[1],
            row[2],
            row[3],
            assignees,
            from_iso(row[4]),
            opt(row[5]),
            opt(row[6]),
            opt(row[7]),
            row[8],
        )
