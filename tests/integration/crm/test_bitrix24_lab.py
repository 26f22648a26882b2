"""End to end on the lab with Bitrix24 and with the signed webhook: SIPp → Asterisk 22 →
`pbxlink run` → mosquitto → `pbxlink adapter` (backend = "bitrix24" / "webhook") → the fake
Bitrix24 portal / a signature-checking receiver. Every part in its own process.

Ground truth is what the SIP side did (the scenarios' callers and who answered), never the
tracker's output: +380501110001 calls and 101 answers; 0501110002 calls, 101 rings, the caller
hangs up; 101 calls 102 (internal).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pbxlab.fakes.process import FakeBitrix24Process, WebhookReceiverProcess
from pbxlab.mosquitto import BrokerHandle
from pbxlab.ports import free_port
from pbxlab.session import LabSession

pytestmark = pytest.mark.lab

PBXLINK = Path(sys.executable).with_name("pbxlink")
BITRIX24 = """
[crm]
backend = "bitrix24"
[crm.bitrix24]
webhook_url_file = "{secret}"
default_user = "100"
[crm.bitrix24.lines]
"4930100200" = "lab line"
[crm.clients]
repeat_calls = "if_no_open_deal"
[crm.clients.answered]
create = "client_and_deal"
[crm.clients.missed]
create = "client"
[crm.tasks]
enabled = true
assignees = ["101"]
"""
WEBHOOK = """
[crm]
backend = "webhook"
[crm.webhook.subscribers.erp]
url = "{url}"
secret_file = "{secret}"
messages = ["call.outcome"]
directions = ["inbound", "outbound"]
[crm.webhook.subscribers.wallboard]
url = "{url}"
secret_file = "{secret}"
messages = ["call.event"]
events = ["ringing"]
"""


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
    logs: list[Path]


@pytest.fixture
def start(
    asterisk_lab: LabSession, mosquitto_broker: BrokerHandle, tmp_path: Path
) -> Iterator[Callable[[str], Rig]]:
    """Start the daemon and an adapter whose [crm] is the given TOML text."""
    processes: list[subprocess.Popen[bytes]] = []

    def run(crm: str) -> Rig:
        (tmp_path / "state").mkdir()
        secret = tmp_path / "ami.secret"
        secret.write_text(asterisk_lab.ami_secret)
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
        )
        adapter_config = tmp_path / "adapter.toml"
        adapter_config.write_text(
            f"[mqtt]\nport = {mosquitto_broker.port}\n"
            f'[adapter]\ndatabase = "{tmp_path / "crm.sqlite3"}"\nhttp_port = 0\n' + crm
        )
        daemon_log, adapter_log = tmp_path / "daemon.log", tmp_path / "adapter.log"
        logs = [daemon_log, adapter_log, tmp_path / "fake.log"]
        processes.append(_spawn(["adapter", "--config", str(adapter_config)], adapter_log))
        processes.append(_spawn(["run", "-c", str(daemon_config)], daemon_log))

        def daemon_ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2) as r:
                    status: int = r.status
                    return status == 200
            except OSError:
                return False

        wait_until(daemon_ready, 30, "daemon ready", logs)
        wait_until(
            lambda: b"crm_adapter_connected" in adapter_log.read_bytes(), 30, "adapter connected", logs
        )
        return Rig(asterisk_lab, logs)

    yield run
    for process in reversed(processes):
        _stop(process)


def _calls(rig: Rig) -> None:
    rig.lab.run("inbound_answered")  # +380501110001 → 101 answers
    rig.lab.run("inbound_agent_rings_caller_hangs_up")  # 0501110002 rings 101, missed
    rig.lab.run("internal_answered")  # 101 calls 102: never sent


def test_real_calls_reach_bitrix24_registered_finished_with_contacts_deals_and_tasks(
    start: Callable[[str], Rig], tmp_path: Path
) -> None:
    fake = FakeBitrix24Process(
        tmp_path / "fake.log",
        token="lab-token",
        users={7: ("Anna", "101"), 8: ("Boris", "102"), 9: ("Desk", "100")},
    )
    try:
        secret = tmp_path / "bitrix24-webhook"
        secret.write_text(fake.webhook + "\n")
        rig = start(BITRIX24.replace("{secret}", str(secret)))
        _calls(rig)
        wait_until(lambda: len(fake.state()["statistic"]) >= 2, 60, "two calls finished", rig.logs)
        wait_until(lambda: len(fake.state()["tasks"]) >= 1, 30, "the missed-call task", rig.logs)
        time.sleep(2.0)  # anything more (a wrongly sent internal call) would arrive by now
        state = fake.state()
    finally:
        fake.stop()
    calls = {c["PHONE_NUMBER"]: c for c in state["statistic"]}
    assert sorted(calls) == ["+380501110001", "+380501110002"]  # the internal call is absent
    answered, lost = calls["+380501110001"], calls["+380501110002"]
    assert (answered["CALL_FAILED_CODE"], answered["PORTAL_USER_ID"], answered["INCOMING"]) == ("200", 7, "2")
    assert answered["CALL_DURATION"] > 0
    assert (lost["CALL_FAILED_CODE"], lost["CALL_DURATION"], lost["PORTAL_USER_ID"]) == ("304", 0, 7)
    assert answered["SHOW"] == "1"  # registered while 101's phone rang: the card popped
    assert answered["EXTERNAL_CALL_ID"] != lost["EXTERNAL_CALL_ID"]
    assert state["registered"] == []
    contacts = {c["PHONE"][0]["VALUE"]: c for c in state["contacts"]}
    assert sorted(contacts) == ["+380501110001", "+380501110002"]
    [deal] = state["deals"]  # answered new number: contact and deal; missed: contact only
    assert deal["CONTACT_ID"] == contacts["+380501110001"]["ID"]
    [task] = state["tasks"]
    assert (task["title"], task["responsibleId"]) == ("Пропущенный звонок", "7")
    assert [line["NUMBER"] for line in state["lines"]] == ["4930100200"]
    assert state["rejected_for_limit"] == 0


def test_real_calls_reach_a_signed_webhook_receiver_filtered_per_subscriber(
    start: Callable[[str], Rig], tmp_path: Path
) -> None:
    receiver = WebhookReceiverProcess(tmp_path / "fake.log", secrets=["lab-hook-secret"])
    try:
        secret = tmp_path / "hook.secret"
        secret.write_text("lab-hook-secret\n")
        rig = start(WEBHOOK.replace("{url}", receiver.url).replace("{secret}", str(secret)))
        _calls(rig)

        def outcomes() -> int:
            return sum(1 for key in receiver.state()["processed"] if key.count(":") == 1)

        wait_until(lambda: outcomes() >= 2, 60, "two outcomes delivered", rig.logs)
        time.sleep(2.0)
        state = receiver.state()
    finally:
        receiver.stop()
    keys = state["processed"]
    outcome_keys = [k for k in keys if k.count(":") == 1]  # outcome ids; events are <call id>:<seq>
    event_keys = [k for k in keys if k.count(":") == 2]
    assert len(outcome_keys) == 2  # the two external calls; the internal one is filtered out
    assert len(event_keys) >= 2  # the ringing events of the external calls (the internal one too)
    assert state["refused_signature"] == 0
    assert state["repeats"] == 0
