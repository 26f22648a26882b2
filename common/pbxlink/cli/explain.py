"""`pbxlink explain TRANSCRIPT` (B4): replay a recorded AMI session through the call tracker and
the CRM rules, and print every outcome with the CRM actions the rules would take, and why.

Nothing is written: the rules run on a scratch copy of the CRM (a copy of `--database`, or an
empty CRM whose employees are the agents seen in the recording), through the same inbox and
processor the adapter uses, so later calls see what earlier ones would have created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sqlite3
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from pbxlink.adapters.backends.sqlite_crm import SqliteCrm
from pbxlink.adapters.config import Settings
from pbxlink.adapters.inbox import Inbox
from pbxlink.adapters.processing import Processor
from pbxlink.adapters.service import add_config_argument, load
from pbxlink.adapters.store import open_store
from pbxlink.foundation.errors import EX_CONFIG
from pbxlink.rules.actions import Action
from pbxlink.rules.calls import envelope_for
from pbxlink.rules.describe import action_record, render


@dataclass(frozen=True, slots=True)
class Explained:
    """One replayed message (an outcome or a live event) and the actions its rules chose."""

    kind: str  # "outcome" | "event"
    call_id: str
    data: dict[str, Any]
    actions: tuple[Action, ...]
    created: dict[str, list[str]]
    error: str | None = None


def _agents(item: dict[str, Any]) -> Iterator[str]:
    for key in ("agent", "initiator", "first_answered_by", "last_handled_by"):
        if isinstance(item.get(key), str):
            yield item[key]
    yield from (a for a in item.get("rang") or () if isinstance(a, str))


async def explain_items(
    items: Iterable[dict[str, Any]],
    settings: Settings,
    *,
    database: Path | None = None,
    scratch_dir: Path,
) -> list[Explained]:
    """Run outcome/event dicts through the adapter's own processing on a scratch CRM copy."""
    scratch = scratch_dir / "explain.sqlite3"
    if database is not None:
        with (
            sqlite3.connect(f"file:{database}?mode=ro", uri=True) as source,
            sqlite3.connect(scratch) as target,
        ):
            source.backup(target)
    store = await open_store(scratch)
    crm = SqliteCrm(store)
    inbox = Inbox(store)
    processor = Processor(inbox, crm, settings.crm, max_attempts=1)
    known = {e.extension for e in await crm.employees()} | {e.id for e in await crm.employees()}
    results: list[Explained] = []
    try:
        async with store.transaction():
            await crm.sync_numbering(settings.crm.inquiries.next_number)
        for item in items:
            if database is None:
                for agent in _agents(item):
                    if agent not in known:
                        async with store.transaction():
                            await crm.add_employee(agent, agent, extension=agent)
                        known.add(agent)
            topic, payload = envelope_for(item)
            await inbox.receive(topic, payload, datetime.now(UTC))
            processed = await processor.run_pending()
            kind = "event" if "type" in item else "outcome"
            call_id = str(item.get("call_id") or item.get("id"))
            if processed:
                results.append(Explained(kind, call_id, item, processed[0].actions, processed[0].created))
            else:
                letters = await inbox.dead_letters()
                reason = letters[-1].reason if letters else "not applied"
                results.append(Explained(kind, call_id, item, (), {}, reason))
    finally:
        await store.close()
    return results


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("transcript", type=Path, help="recorded AMI session (raw bytes, .gz ok)")
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per outcome/event")
    parser.add_argument(
        "--quiet-events", action="store_true", help="leave out live events whose rules did nothing"
    )
    parser.add_argument("--node", default="pbx1", help="node name in call ids (default pbx1)")
    parser.add_argument(
        "--default-region",
        default=None,
        metavar="XX",
        help="region for national numbers (default: crm.phone.default_region)",
    )
    parser.add_argument(
        "--agents", default=None, metavar="REGEX", help="PJSIP endpoints that are agents' phones"
    )
    parser.add_argument(
        "--trunk",
        action="append",
        metavar="ENDPOINT",
        help="an endpoint that leads outside (repeatable; default: trunk)",
    )


def _headline(item: Explained) -> str:
    d = item.data
    external = (d.get("external") or {}).get("raw") or "-"
    if item.kind == "event":
        return f"event {item.call_id} #{d.get('seq')} {d.get('type')} agent {d.get('agent') or '-'}"
    state = "answered" if d.get("answered") else f"missed ({d.get('missed_at') or '-'})"
    return (
        f"outcome {item.call_id} {d.get('direction')} {state} {external} line "
        f"{d.get('line') or '-'} first {d.get('first_answered_by') or '-'} last "
        f"{d.get('last_handled_by') or '-'} rang {','.join(d.get('rang') or []) or '-'}"
    )


def main(args: argparse.Namespace) -> int:
    settings = load(args, "explain")
    if settings is None:
        return EX_CONFIG
    previous = structlog.get_config()
    structlog.configure(  # the report goes to stdout; only problems are logged, to stderr
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    try:
        return _explain(args, settings)
    finally:
        structlog.configure(**previous)


def _explain(args: argparse.Namespace, settings: Settings) -> int:
    from pbxlink.calls.parties import PartyRules  # noqa: PLC0415 - loaded only for a replay
    from pbxlink.calls.tracker import CallTrackerSettings  # noqa: PLC0415
    from pbxlink.daemon.replay import read_chunks, replay_outcomes  # noqa: PLC0415

    path: Path = args.transcript
    if not path.is_file():
        print(f"pbxlink explain: no such file: {path}", file=sys.stderr)
        return 2
    database: Path | None = args.database
    if database is None and Path(settings.adapter.database).is_file() and args.config.exists():
        database = Path(settings.adapter.database)
    try:
        parties = PartyRules(
            **({"agent_endpoints": args.agents} if args.agents else {}),
            trunk_endpoints=frozenset(args.trunk or ("trunk",)),
        )
    except re.error as exc:
        print(f"pbxlink explain: --agents is not a regular expression: {exc}", file=sys.stderr)
        return 2
    tracker = CallTrackerSettings(
        node=args.node,
        parties=parties,
        default_region=(args.default_region or settings.crm.phone.default_region).upper(),
    )

    def to_stderr(line: str) -> None:
        print(f"pbxlink explain: {line}", file=sys.stderr)

    items = replay_outcomes(read_chunks(path), tracker, events=True, diagnostic=to_stderr)
    with tempfile.TemporaryDirectory(prefix="pbxlink-explain-") as scratch:
        results = asyncio.run(
            explain_items(list(items), settings, database=database, scratch_dir=Path(scratch))
        )
    zone = settings.crm.zone
    out = sys.stdout
    for result in results:
        if args.quiet_events and result.kind == "event" and not result.actions:
            continue
        document = explained_document(result, zone)
        if args.json:
            out.write(json.dumps(document, ensure_ascii=False, default=str) + "\n")
        else:
            out.write(render_document(document))
    out.flush()
    return 0


def explained_document(result: Explained, zone: ZoneInfo) -> dict[str, Any]:
    """One replayed message as data (docs/explain.schema.json): both views are made from it."""
    return {
        "schema": 1,
        "kind": result.kind,
        "call_id": result.call_id,
        "headline": _headline(result),
        "error": result.error,
        "data": result.data,
        "created": result.created,
        "actions": [action_record(a, zone) for a in result.actions],
    }


def render_document(document: dict[str, Any]) -> str:
    """The text view of one `explained_document`."""
    lines = [document["headline"]]
    if document["error"]:
        lines.append(f"  ! not applied: {document['error']}")
    lines.extend(f"  {render(action)}" for action in document["actions"])
    if not document["actions"] and not document["error"]:
        lines.append("  (no CRM action)")
    return "\n".join(lines) + "\n"
