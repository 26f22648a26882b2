"""End to end on the lab with RetailCRM: SIPp → Asterisk 22 → `pbxlink run` → mosquitto →
`pbxlink adapter` (backend = "retailcrm") → the fake RetailCRM. Every part in its own process.

Ground truth is what the SIP side did (the scenarios' callers and who answered), never the
tracker's output: +380501110001 calls and 101 answers; 0501110002 calls, 101 rings, the caller
hangs up; 101 calls 102 (internal).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pbxlab.context import ScenarioContext, Truth
from pbxlab.fakes.process import FakeRetailCrmProcess
from pbxlab.mosquitto import BrokerHandle
from pbxlab.scenarios import EXTERNAL_2, Scenario, call_truth
from pbxlab.session import LabSession
from pbxlab.sipp import Phone

pytestmark = pytest.mark.lab

PBXLINK = Path(sys.executable).with_name("pbxlink")
KEY = "lab-retailcrm-key"
RULES = """
[crm]
backend = "retailcrm"
[crm.retailcrm]
url = "{url}"
api_key_file = "{key}"
site = "main"
make_call_url = "{make_call_url}"
client_id_file = "{client_id}"
[crm.retailcrm.users]
"101" = 27
"102" = 28
"103" = 29
[crm.orders]
enabled = true
[[crm.orders.rules]]
name = "missed calls"
kind = "missed"
status = "callback"
[crm.tasks]
enabled = true
assignees = ["101"]
link_to_this_call = true
unlinked = "skip"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], seconds: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    pytest.fail(f"{what}: not reached within {seconds} s\n{tails}")


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [str(PBXLINK), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Rig:
    lab: LabSession
    fake: FakeRetailCrmProcess
    logs: list[Path]


@pytest.fixture
def rig(asterisk_lab: LabSession, mosquitto_broker: BrokerHandle, tmp_path: Path) -> Iterator[Rig]:
    (tmp_path / "state").mkdir()
    secret = tmp_path / "ami.secret"
    secret.write_text(asterisk_lab.ami_secret)
    fake = FakeRetailCrmProcess(
        tmp_path / "fake.log",
        api_key=KEY,
        users={27: "Anna", 28: "Boris", 29: "Vera"},
        statuses=("new", "callback", "complete", "cancel-other"),
    )
    key = tmp_path / "retailcrm.key"
    key.write_text(KEY)
    client_id = tmp_path / "retailcrm-client-id"  # the module's secret, shared by adapter and daemon
    client_id.write_text("lab-click-secret\n")
    click_port = free_port()
    http_port = free_port()
    daemon_config = tmp_path / "pbxlink.toml"
    daemon_config.write_text(
        '[node]\nname = "pbx1"\n'
        f'[ami]\nhost = "{asterisk_lab.host}"\nport = {asterisk_lab.ami_port}\n'
        f'username = "{asterisk_lab.ami_user}"\nsecret_file = "{secret}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto_broker.port}\n'
        f'[state]\ndirectory = "{tmp_path / "state"}"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
        '[agi]\nenabled = false\n[log]\nformat = "json"\n[tracker]\nsettle_seconds = 1.0\n'
        f'[click_to_call]\nenabled = true\nport = {click_port}\nsecret_file = "{client_id}"\n'
    )
    adapter_config = tmp_path / "adapter.toml"
    adapter_config.write_text(
        f"[mqtt]\nport = {mosquitto_broker.port}\n"
        f'[adapter]\ndatabase = "{tmp_path / "crm.sqlite3"}"\nhttp_port = 0\n'
        + RULES.replace("{url}", fake.url)
        .replace("{key}", str(key))
        .replace("{make_call_url}", f"http://127.0.0.1:{click_port}/retailcrm/make-call")
        .replace("{client_id}", str(client_id))
    )
    daemon_log, adapter_log = tmp_path / "daemon.log", tmp_path / "adapter.log"
    logs = [daemon_log, adapter_log, tmp_path / "fake.log"]
    adapter = _spawn(["adapter", "--config", str(adapter_config)], adapter_log)
    daemon = _spawn(["run", "-c", str(daemon_config)], daemon_log)

    def daemon_ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2) as r:
                status: int = r.status
                return status == 200
        except OSError:
            return False

    try:
        wait_until(daemon_ready, 30, "daemon ready", logs)
        wait_until(
            lambda: b"crm_adapter_connected" in adapter_log.read_bytes(), 30, "adapter connected", logs
        )
        yield Rig(asterisk_lab, fake, logs)
    finally:
        _stop(daemon)
        _stop(adapter)
        fake.stop()


def _by_phone(items: list[dict[str, Any]], phone: str) -> list[dict[str, Any]]:
    return [i for i in items if i.get("phone") == phone]


def test_real_calls_reach_retailcrm_as_customers_orders_tasks_calls_and_popups(rig: Rig) -> None:
    rig.lab.run("inbound_answered")  # +380501110001 → 101 answers
    rig.lab.run("inbound_agent_rings_caller_hangs_up")  # 0501110002 rings 101, missed
    rig.lab.run("internal_answered")  # 101 calls 102: never sent
    wait_until(lambda: len(rig.fake.state()["calls"]) >= 2, 60, "two calls uploaded", rig.logs)
    wait_until(lambda: len(rig.fake.state()["tasks"]) >= 1, 30, "the missed-call task", rig.logs)
    time.sleep(2.0)  # anything more (a wrongly sent internal call) would arrive by now
    state = rig.fake.state()

    # The telephony integration module: extensions ↔ RetailCRM users.
    module = state["modules"]["pbxlink"]["integrations"]["telephony"]
    assert sorted((c["code"], c["userId"]) for c in module["additionalCodes"]) == [
        ("101", 27),
        ("102", 28),
        ("103", 29),
    ]
    # One call upload per external call, keyed by the outcome id; the internal call is absent.
    calls = state["calls"]
    assert sorted(c["phone"] for c in calls) == ["+380501110001", "+380501110002"]
    [answered] = _by_phone(calls, "+380501110001")
    [lost] = _by_phone(calls, "+380501110002")
    assert (answered["type"], answered["result"], answered["code"], answered["userId"]) == (
        "in",
        "answered",
        "101",
        27,
    )
    assert answered["duration"] > 0
    assert (lost["result"], lost["code"]) == ("no answer", "101")
    assert len({c["externalId"] for c in calls}) == 2
    # One customer per number, each with an order in the status its line rule chose.
    customers = {c["phones"][0]["number"]: c for c in state["customers"]}
    assert sorted(customers) == ["+380501110001", "+380501110002"]
    orders = {o["customer"]["id"]: o for o in state["orders"]}
    assert orders[customers["+380501110001"]["id"]]["status"] == "new"
    missed_order = orders[customers["+380501110002"]["id"]]
    assert missed_order["status"] == "callback"
    # The missed call's task, linked to its order, for 101's RetailCRM user.
    [task] = state["tasks"]
    assert (task["order"]["id"], task["performer"]) == (missed_order["id"], 27)
    # Live popups while the phone rang (in, codes = the ringing extension) and hangups.
    kinds = {(e["type"], e["phone"], tuple(e["codes"])) for e in state["events"]}
    assert ("in", "+380501110001", ("101",)) in kinds
    assert ("in", "+380501110002", ("101",)) in kinds
    hangups = {e["phone"]: e["hangupStatus"] for e in state["events"] if e["type"] == "hangup"}
    assert hangups == {"+380501110001": "answered", "+380501110002": "no answered"}
    assert all(e["phone"] for e in state["events"])  # the internal call opened no popup


def _click_flow(
    fake: FakeRetailCrmProcess, answers: list[dict[str, Any]]
) -> Callable[[ScenarioContext], list[Truth]]:
    """A manager clicks EXTERNAL_2 in RetailCRM; 101's phone rings first, then the carrier's."""

    def run(ctx: ScenarioContext) -> list[Truth]:
        ctx.phones(a101=Phone.answers(ring_ms=1000, talk_ms=4000), carrier=Phone.answers(ring_ms=1000))
        answers.append(fake.click("101", EXTERNAL_2, clientId="a guess"))  # not RetailCRM: refused
        answers.append(fake.click("101", EXTERNAL_2))
        ctx.wait_event(lambda f: f.get("Event") == "OriginateResponse", timeout=20)
        ctx.wait_bridged("101")
        ctx.wait_event(
            lambda f: f.get("Event") == "Hangup" and f.get("Channel", "").startswith("PJSIP/trunk-"),
            timeout=30,
        )
        return [
            call_truth(
                direction="outbound",
                answered=True,
                external=EXTERNAL_2,
                initiator="101",
                handlers=["101"],
                hangup_by="agent",
                originated_by="AMI Originate",
            )
        ]

    return run


def test_a_click_in_retailcrm_rings_the_agent_first_then_dials_the_customer(rig: Rig) -> None:
    wait_until(
        lambda: "makeCallUrl" in str(rig.fake.state()["modules"]), 30, "module with makeCallUrl", rig.logs
    )
    module = rig.fake.state()["modules"]["pbxlink"]
    assert module["clientId"] == "lab-click-secret"
    answers: list[dict[str, Any]] = []
    scenario = Scenario(
        "retailcrm_click_to_call", "click-to-call from RetailCRM", _click_flow(rig.fake, answers)
    )
    rig.lab.driver.run_scenario(scenario)
    assert [a["status"] for a in answers] == [403, 200]
    # The call that followed is an outgoing call of 101 to the number clicked, back in RetailCRM.
    wait_until(lambda: len(rig.fake.state()["calls"]) >= 1, 60, "the call uploaded", rig.logs)
    [call] = rig.fake.state()["calls"]
    assert (call["type"], call["phone"], call["code"], call["result"]) == (
        "out",
        "+380671234568",
        "101",
        "answered",
    )
