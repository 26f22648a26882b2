"""SIGHUP: a real `pbxlink adapter` process re-reads its rules on a real mosquitto, while
outcomes keep coming, without dropping or re-applying a message; a bad file is refused and the
running rules stay."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from pbxlab.mosquitto import BrokerHandle

from pbxlink.adapters.backends.sqlite_crm import SqliteCrm
from pbxlink.adapters.store import open_store
from pbxlink.rules.samples import EMPLOYEES, missed, outcome_message

RULES = """
[crm.inquiries]
number_template = "{C}"
[crm.inquiries.on_missed]
enabled = true
type = "{type}"
even_if_open_inquiry = true
"""


async def seed_employees(database: Path) -> None:
    store = await open_store(database)
    crm = SqliteCrm(store)
    async with store.transaction():
        for e in EMPLOYEES:
            await crm.add_employee(e.id, e.name, extension=e.extension, deleted=e.deleted)
    await store.close()


def query(database: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database, timeout=10) as db:
        return [tuple(r) for r in db.execute(sql).fetchall()]


async def wait_for(check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.05)


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def _start_adapter(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "pbxlink.cli", "adapter", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _config(port: int, database: Path, inquiry_type: str) -> str:
    return f'[mqtt]\nport = {port}\n[adapter]\ndatabase = "{database}"\n' + RULES.replace(
        "{type}", inquiry_type
    )


def _events(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


def _count(log: Path, event: str) -> int:
    return sum(1 for line in _events(log) if line.get("event") == event)


def _outcomes(first: int, count: int) -> list[tuple[str, bytes]]:
    return [
        outcome_message(missed(id=f"pbx1:{n}", external={"raw": f"0982{n:06d}", "e164": None}))
        for n in range(first, first + count)
    ]


def _done(database: Path) -> int:
    return int(query(database, "SELECT count(*) FROM inbox WHERE state = 'done'")[0][0])


async def test_sighup_reloads_the_rules_mid_stream_and_refuses_a_bad_file(
    tmp_path: Path, mosquitto_broker: BrokerHandle
) -> None:
    database = tmp_path / "crm.sqlite3"
    await seed_employees(database)
    config = tmp_path / "adapter.toml"
    config.write_text(_config(mosquitto_broker.port, database, "Первый"))
    log = tmp_path / "adapter.log"
    adapter = _start_adapter(config, log)
    try:
        await wait_for(lambda: b"crm_adapter_connected" in log.read_bytes(), 15)
        await publish(mosquitto_broker.port, _outcomes(0, 100))
        await wait_for(lambda: _done(database) == 100, 30)

        # New rules while 400 outcomes are on their way.
        publisher = asyncio.create_task(publish(mosquitto_broker.port, _outcomes(100, 400)))
        await wait_for(lambda: _done(database) > 100, 30)
        config.write_text(_config(mosquitto_broker.port, database, "Второй"))
        adapter.send_signal(signal.SIGHUP)
        await wait_for(lambda: _count(log, "crm_adapter_reloaded") == 1, 15)
        await publisher
        await wait_for(lambda: _done(database) == 500, 30)

        # A bad file: refused with every problem listed; the running rules stay.
        config.write_text(
            _config(mosquitto_broker.port, database, "Третий")
            + '[crm.tasks]\nassignee = "anna"\n'
            + '[[crm.orders.rules]]\nname = "g"\nstatus = "s"\nmissed_at = "group"\n'
        )
        adapter.send_signal(signal.SIGHUP)
        await wait_for(lambda: _count(log, "crm_adapter_reload_refused") == 1, 15)
        await publish(mosquitto_broker.port, _outcomes(500, 50))
        await wait_for(lambda: _done(database) == 550, 30)
        assert adapter.poll() is None  # the same process all along
    finally:
        adapter.send_signal(signal.SIGTERM)
        adapter.wait(15)
    assert adapter.returncode == 0

    [refused] = [e for e in _events(log) if e.get("event") == "crm_adapter_reload_refused"]
    assert any("crm.tasks.assignee: unknown key" in p for p in refused["problems"])
    assert any("missed_at" in p and "'group'" in p for p in refused["problems"])
    [reloaded] = [e for e in _events(log) if e.get("event") == "crm_adapter_reloaded"]
    assert "crm.inquiries" in reloaded["changed"]

    # Every outcome applied exactly once, in the order received: the rules switch once.
    rows = query(database, "SELECT call_id, type, number FROM inquiries ORDER BY id")
    assert len(rows) == 550
    assert len({call_id for call_id, _, _ in rows}) == 550
    assert [int(number) for _, _, number in rows] == list(range(1, 551))
    types = [t for _, t, _ in rows]
    switch = types.index("Второй")
    assert types[:switch] == ["Первый"] * switch
    assert types[switch:] == ["Второй"] * (550 - switch)
    assert 100 <= switch <= 500
    assert query(database, "SELECT count(*) FROM inbox WHERE state != 'done'") == [(0,)]
