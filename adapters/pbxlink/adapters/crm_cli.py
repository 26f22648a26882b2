"""`pbxlink crm …`: the embedded CRM's records as readable tables (or `--json`), and the few
manual edits an admin needs (employees, clients typed in by hand, closing work, finishing tasks).

    pbxlink crm clients [--phone N]     pbxlink crm add-employee ID NAME [--extension 101]
    pbxlink crm inquiries               pbxlink crm add-client NAME PHONE... [--responsible ID]
    pbxlink crm tasks [--employee ID]   pbxlink crm task-done TASK --by ID
    pbxlink crm deals | orders          pbxlink crm close orders|inquiries|deals ID
    pbxlink crm employees | notifications | inbox | tickets | requests
    pbxlink crm republish-directory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pbxlink.adapters.backends.sqlite_crm import CrmDataError, SqliteCrm
from pbxlink.adapters.config import Settings
from pbxlink.adapters.directory import mark_all_dirty
from pbxlink.adapters.service import add_config_argument, load
from pbxlink.adapters.store import Store, StoreError, open_store
from pbxlink.foundation.errors import EX_CONFIG
from pbxlink.rules.identity import PhoneKind, display, identify

# Each view: (title, SQL, column names). Times are stored in UTC and shown in the CRM time zone.
VIEWS: dict[str, tuple[str, list[str]]] = {
    "clients": (
        "SELECT c.id, c.name, (SELECT group_concat(e164 || ' (' || raw || ')', ', ') FROM "
        "client_phones p WHERE p.client_id = c.id), (SELECT group_concat(employee, ', ') FROM "
        "client_responsibles r WHERE r.client_id = c.id), c.source_line, c.created_at "
        "FROM clients c {where} ORDER BY c.id DESC LIMIT ?",
        ["id", "name", "phones", "responsible", "source line", "created"],
    ),
    "inquiries": (
        "SELECT id, number, coalesce(type, ''), coalesce(manager, ''), client_name, phone, "
        "description, CASE closed WHEN 1 THEN 'closed' ELSE 'open' END, created_at "
        "FROM inquiries ORDER BY id DESC LIMIT ?",
        ["id", "number", "type", "manager", "client", "phone", "description", "state", "created"],
    ),
    "tasks": (
        "SELECT t.id, t.title, (SELECT group_concat(employee, ', ') FROM task_assignees a "
        "WHERE a.task_id = t.id), t.mode, t.author, t.deadline, "
        "coalesce('order #' || t.order_id, 'inquiry #' || t.inquiry_id, ''), "
        "coalesce(t.done_by, '') FROM tasks t {where} ORDER BY t.id DESC LIMIT ?",
        ["id", "title", "assignees", "mode", "author", "deadline", "linked to", "done by"],
    ),
    "deals": (
        "SELECT d.id, c.name, d.type, d.stage, CASE d.closed WHEN 1 THEN 'closed' ELSE 'open' "
        "END, coalesce(d.responsible, ''), d.created_at FROM deals d JOIN clients c ON "
        "c.id = d.client_id ORDER BY d.id DESC LIMIT ?",
        ["id", "client", "type", "stage", "state", "responsible", "created"],
    ),
    "orders": (
        "SELECT o.id, c.name, o.status, CASE o.closed WHEN 1 THEN 'closed' ELSE 'open' END, "
        "coalesce(o.rule, ''), coalesce(o.responsible, ''), o.created_at FROM orders o "
        "JOIN clients c ON c.id = o.client_id ORDER BY o.id DESC LIMIT ?",
        ["id", "client", "status", "state", "rule", "responsible", "created"],
    ),
    "employees": (
        "SELECT id, name, coalesce(extension, ''), roles, coalesce(phone_e164, ''), "
        "CASE WHEN deleted THEN 'deleted' WHEN blocked THEN 'blocked' ELSE 'active' END "
        "FROM employees ORDER BY id LIMIT ?",
        ["id", "name", "extension", "roles", "phone", "state"],
    ),
    "notifications": (
        "SELECT id, employee, about, text, coalesce(published_at, 'pending'), created_at "
        "FROM notifications ORDER BY id DESC LIMIT ?",
        ["id", "employee", "about", "text", "published", "created"],
    ),
    "tickets": (
        "SELECT t.id, coalesce(c.name, ''), t.subject, t.assignees, CASE t.closed WHEN 1 THEN "
        "'closed' ELSE 'open' END, t.created_at FROM tickets t LEFT JOIN clients c ON "
        "c.id = t.client_id ORDER BY t.id DESC LIMIT ?",
        ["id", "client", "subject", "assignees", "state", "created"],
    ),
    "requests": (
        "SELECT id, channel, source, coalesce(rule, ''), outcome, reason, created_at FROM requests "
        "ORDER BY created_at DESC, id DESC LIMIT ?",
        ["id", "channel", "source", "rule", "outcome", "reason", "created"],
    ),
    "inbox": (
        "SELECT id, topic, state, attempts, coalesce(error, ''), received_at FROM inbox "
        "ORDER BY rowid DESC LIMIT ?",
        ["id", "topic", "state", "attempts", "error", "received"],
    ),
}
_TIME_COLUMNS = {"created", "deadline", "received", "published"}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    sub = parser.add_subparsers(dest="crm_command", metavar="WHAT", required=True)
    for name in VIEWS:
        view = sub.add_parser(name, help=f"list {name}")
        view.add_argument("--json", action="store_true", help="JSON lines instead of a table")
        view.add_argument("--limit", type=int, default=50, help="rows, newest first (default 50)")
        if name == "clients":
            view.add_argument("--phone", help="only clients with this number (any written form)")
        if name == "tasks":
            view.add_argument("--employee", help="the task list of one employee")
    add = sub.add_parser("add-employee", help="add or update an employee")
    add.add_argument("id")
    add.add_argument("name")
    add.add_argument("--extension", help="PJSIP endpoint / agent id, e.g. 101")
    add.add_argument("--role", action="append", default=[])
    add.add_argument("--phone", help="the employee's own number (never routed as a client)")
    add.add_argument("--blocked", action="store_true")
    add.add_argument("--deleted", action="store_true")
    client = sub.add_parser("add-client", help="add a client typed in by hand")
    client.add_argument("name")
    client.add_argument("phones", nargs="+")
    client.add_argument("--responsible", action="append", default=[])
    client.add_argument("--region", help="default region of the numbers (crm.phone.default_region)")
    done = sub.add_parser("task-done", help="mark a task done by one of its assignees")
    done.add_argument("task")
    done.add_argument("--by", required=True)
    close = sub.add_parser("close", help="close an order, inquiry or deal")
    close.add_argument("table", choices=["orders", "inquiries", "deals"])
    close.add_argument("id")
    sub.add_parser("republish-directory", help="mark every number for re-publishing")


def _local(value: Any, settings: Settings) -> Any:
    if not isinstance(value, str) or not value.endswith("Z"):
        return value
    moment = datetime.fromisoformat(value).astimezone(settings.crm.zone)
    return moment.strftime("%d.%m.%Y %H:%M")


def render_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def _view(store: Store, args: argparse.Namespace, settings: Settings) -> str:
    sql, columns = VIEWS[args.crm_command]
    where, params = "", []
    if args.crm_command == "clients" and args.phone:
        number = identify(args.phone, settings.crm.phone.default_region)
        where = "WHERE c.id IN (SELECT client_id FROM client_phones WHERE e164 = ?)"
        params.append(number.e164 or args.phone)
    if args.crm_command == "tasks" and args.employee:
        where = (
            "JOIN task_assignees me ON me.task_id = t.id AND me.employee = ? "
            "WHERE t.done_by IS NULL OR t.done_by = me.employee"
        )
        params.append(args.employee)
    async with store.db.execute(sql.format(where=where), (*params, args.limit)) as cursor:
        rows = [list(r) for r in await cursor.fetchall()]
    if args.json:
        return "\n".join(json.dumps(dict(zip(columns, r, strict=True)), ensure_ascii=False) for r in rows)
    shown = [
        [_local(v, settings) if c in _TIME_COLUMNS else v for c, v in zip(columns, r, strict=True)]
        for r in rows
    ]
    return render_table(columns, shown) if rows else f"no {args.crm_command}"


async def _edit(store: Store, args: argparse.Namespace, settings: Settings) -> str:
    crm = SqliteCrm(store)
    command = args.crm_command
    async with store.transaction():
        if command == "add-employee":
            phone = None
            if args.phone:
                number = identify(args.phone, settings.crm.phone.default_region)
                if number.kind is not PhoneKind.E164:
                    raise CrmDataError(f"{args.phone!r} is not a phone number")
                phone = number.e164
            await crm.add_employee(
                args.id,
                args.name,
                extension=args.extension,
                roles=tuple(args.role),
                phone_e164=phone,
                blocked=args.blocked,
                deleted=args.deleted,
            )
            return f"employee {args.id} saved"
        if command == "add-client":
            region = (args.region or settings.crm.phone.default_region).upper()
            client_id = await crm.add_client(
                args.name,
                tuple(args.phones),
                region=region,
                responsibles=tuple(args.responsible),
                created_at=datetime.now(UTC),
            )
            shown = ", ".join(
                display(identify(p, region).e164 or p, settings.crm.phone.display) for p in args.phones
            )
            return f"client {client_id} saved with {shown}"
        if command == "task-done":
            await crm.complete_task(args.task, args.by, datetime.now(UTC))
            return f"task {args.task} done by {args.by}"
        if command == "close":
            await crm.close(args.table, args.id)
            return f"{args.table} {args.id} closed"
    await mark_all_dirty(store)
    return "every number will be re-published by the running adapter"


def main(args: argparse.Namespace) -> int:
    settings = load(args, "crm")
    if settings is None:
        return EX_CONFIG
    database = Path(settings.adapter.database)

    async def run() -> str:
        store = await open_store(database)
        try:
            if args.crm_command in VIEWS:
                return await _view(store, args, settings)
            return await _edit(store, args, settings)
        finally:
            await store.close()

    try:
        print(asyncio.run(run()))
    except (StoreError, CrmDataError, OSError) as exc:
        print(f"pbxlink crm: {exc}", file=sys.stderr)
        return 1
    return 0
