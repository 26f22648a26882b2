"""`make demo`: pbxlink end to end on a real Asterisk, shown to a newcomer.

It starts the lab Asterisk and a mosquitto on 127.0.0.1, runs `pbxlink run` (the daemon) and
`pbxlink adapter` (the CRM side, with the embedded SQLite CRM) on their defaults plus the lab's
ports, puts two employees and a known client into the CRM (whose ownership reaches the daemon's
routing directory over MQTT), places scripted SIPp calls, and prints what came out: every call
outcome received over MQTT with its routing decision, then the CRM records the rules created.
Then `pbxlink gateway` takes one e-mail (a real dovecot IMAP server on 127.0.0.1), one Telegram
message (a loopback fake of the Bot API) and one web form, and the demo prints what the request
rules ([crm.requests], 1C:CRM) made of them.
Everything it started is stopped again by PID. Its files are in `.demo/` (logs, databases).

Run it as root from the repository: `make demo` (or
`PYTHONPATH=tests/lab .venv/bin/python -m pbxlab.demo`). Needs the virtualenv's packages.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
import urllib.request
from contextlib import ExitStack, suppress
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from pbxlab.dovecot import TEST_MAILBOX, TEST_PASSWORD, Dovecot, dovecot_available, start_dovecot
from pbxlab.driver import LabDriver
from pbxlab.instance import LabInstance, running_instance, setup_asterisk, start_asterisk, stop_asterisk
from pbxlab.mosquitto import Broker, start_mosquitto, stop_mosquitto
from pbxlab.ports import free_port
from pbxlab.telegram_fake import FakeBotApi, FakeBotApiThread, TelegramUser

REPO = Path(__file__).resolve().parents[3]
WORK = REPO / ".demo"
PBXLINK = Path(sys.executable).with_name("pbxlink")

# The calls placed, in order: (scenario, what a person should see).
CALLS = [
    ("inbound_answered", "a known client calls: their responsible manager 101 rings first and answers"),
    (
        "inbound_agent_rings_caller_hangs_up",
        "another known client: manager 101 rings, nobody picks up, the caller hangs up (missed at agent)",
    ),
    ("ringall_one_answers", "a new number calls: no owner, the support group rings, 103 answers"),
    ("ivr_hangup", "a caller hangs up in the IVR menu (missed in the IVR)"),
    ("blind_transfer_refer", "a known client reaches 101, who blind-transfers the call to 102"),
    ("outbound_answered", "agent 101 calls a customer, who answers"),
]
# Clients the CRM knows before the calls, with their responsible manager (the scenario callers).
KNOWN_CLIENTS = [
    ("ТОВ «Ромашка»", "+380501110001", "101"),
    ("ФОП Петренко", "0501110002", "101"),
    ("Сервіс-Центр", "+380501110009", "101"),
]
EMPLOYEES = [
    ("101", "Олена Коваль", "sales"),
    ("102", "Андрій Шевчук", "sales"),
    ("103", "Ірина Бондар", "service"),
]


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n== {text}")


def gateway_text(imap: Dovecot, bot: FakeBotApi) -> str:
    """The gateway's sources and the request rules (1C:CRM: one rule per condition, first match)."""
    return textwrap.dedent(f"""
        [gateway]
        name = "demo-gateway"
        database = "{WORK / "gateway.sqlite3"}"
        port = {free_port()}
        metrics_port = {free_port()}
        [gateway.email.service]            # an e-mail account (IMAPS)
        host = "127.0.0.1"
        port = {imap.port}
        ca_file = "{imap.ca_file}"
        username = "{TEST_MAILBOX}"
        password_file = "{WORK / "imap.password"}"
        poll_seconds = 2
        [gateway.telegram.demo_bot]        # a Telegram bot (the loopback fake of the Bot API)
        token_file = "{WORK / "bot.token"}"
        api_url = "{bot.url}"
        poll_timeout_seconds = 2
        [gateway.web.site]                 # the site's contact form
        token_file = "{WORK / "form.token"}"
        origins = ["https://shop.example"]

        [[crm.requests.rules]]             # repairs: a support ticket for the service role
        name = "ремонт"
        sources = ["email:{TEST_MAILBOX}", "telegram:demo_bot"]
        keywords = "ремонт;зламал;не працює;сломал;не работает"
        action = "support"
        address = "role"
        role = "service"
        known_client_to_owner = false
        [[crm.requests.rules]]             # everything else: an interest, sellers in turn
        name = "продажі"
        action = "interest"
        address = "queue"
        queue = ["101", "102"]
        """)


def post_form(port: int, token: str, fields: dict[str, str]) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/requests/site",
        data=json.dumps(fields).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_requests(config: Path, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = pbxlink("crm", "-c", str(config), "requests", "--json").splitlines()
        if sum(1 for line in lines if line.strip()) >= count:
            return
        time.sleep(0.5)
    say(f"   (fewer than {count} requests after {timeout:.0f} s: see {WORK / 'gateway.log'})")


def config_text(instance: LabInstance, broker: Broker, http_port: int, adapter_http_port: int) -> str:
    """The demo's config: embedded defaults, pointed at the lab's ports and the demo's files."""
    return textwrap.dedent(f"""\
        # Written by `make demo`: the defaults, plus the lab's ports and the demo's files.
        [node]
        name = "demo"
        timezone = "Europe/Kyiv"

        [ami]
        port = {instance.ami_port}
        username = "{instance.ami_user}"
        secret_file = "{WORK / "ami.secret"}"

        [mqtt]
        port = {broker.port}

        [state]
        directory = "{WORK / "state"}"

        [agi]
        port = {instance.agi_port}

        [http]
        port = {http_port}

        [log]
        format = "json"

        [adapter]
        name = "demo-crm"
        http_port = {adapter_http_port}
        database = "{WORK / "crm.sqlite3"}"

        [crm]
        timezone = "Europe/Kyiv"

        [crm.phone]
        default_region = "UA"

        [crm.inquiries.on_missed]          # RemOnline: an inquiry for every missed incoming call
        enabled = true
        type = "Дзвінок"
        manager = "101"

        [crm.tasks]                        # RO App: a "missed call" task, due in 2 hours
        enabled = true
        assignees = ["101", "102"]
        mode = "one_for_all"
        deadline_hours = 2

        [crm.clients.answered]             # Megaplan: a new number that is answered → client + deal
        create = "client_and_deal"
        [crm.clients.missed]
        create = "client"
        [crm.clients.outgoing]
        create = "client"
        """)


class Processes:
    """The long-running processes the demo starts; stopped by PID, newest first."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        self._procs.append((name, proc))
        return proc

    def restart(self, name: str) -> None:
        """Stop the process started as ``name`` and start it again with the same arguments."""
        for i, (known, proc) in enumerate(self._procs):
            if known == name:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)
                args = [str(a) for a in proc.args]  # type: ignore[union-attr]
                log = WORK / f"{name.rsplit(maxsplit=1)[-1]}.log"
                with log.open("ab") as out:
                    self._procs[i] = (
                        name,
                        subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO),
                    )
                return
        raise KeyError(name)

    def stop_all(self) -> None:
        for name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            say(f"   stopped {name} (pid {proc.pid}, exit {proc.returncode})")
        self._procs.clear()


def pbxlink(*args: str) -> str:
    result = subprocess.run(
        [str(PBXLINK), *args], capture_output=True, text=True, check=False, timeout=60, cwd=REPO
    )
    if result.returncode != 0:
        raise RuntimeError(f"pbxlink {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def wait_ready(http_port: int, daemon: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{http_port}/readyz"
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited with {daemon.returncode}: see {WORK / 'daemon.log'}")
        with suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the daemon was not ready within {timeout:.0f} s: see {WORK / 'daemon.log'}")


class OutcomeWatcher:
    """Subscribes to the daemon's outcomes on the broker (MQTT 5) and queues them."""

    def __init__(self, broker: Broker) -> None:
        import paho.mqtt.client as mqtt  # noqa: PLC0415 - the venv has it (aiomqtt's dependency)
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415 - same

        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="pbxlink-demo-watcher", protocol=mqtt.MQTTv5
        )
        self._client.on_message = self._on_message
        self._client.on_connect = lambda client, *_: client.subscribe("pbxlink/v1/+/call/outcome", qos=1)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        with suppress(ValueError):
            self.received.put(json.loads(message.payload))

    def take(self, count: int, timeout: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            with suppress(queue.Empty):
                out.append(self.received.get(timeout=max(0.1, deadline - time.monotonic())))
        return out

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def describe(outcome: dict[str, Any]) -> str:
    data = outcome.get("data", outcome)
    external = (data.get("external") or {}).get("e164") or (data.get("external") or {}).get("raw")
    who = f"{data.get('initiator')} → {external}" if data.get("direction") == "outbound" else external
    status = "answered" if data.get("answered") else f"missed at {data.get('missed_at')}"
    handled = ""
    if data.get("first_answered_by"):
        handled = f", first {data['first_answered_by']}, last {data['last_handled_by']}"
    routing = data.get("routing") or {}
    route = f", routing: {routing.get('reason')} → {routing.get('target') or 'group'}" if routing else ""
    transfers = "".join(f", {t['kind']} transfer {t['from']}→{t['to']}" for t in data.get("transfers", []))
    talk = f", talk {data.get('talk_seconds', 0):.1f} s" if data.get("answered") else ""
    return f"{data.get('direction'):8} {who or '?':>20}  {status}{handled}{transfers}{route}{talk}"


def main() -> int:
    if os.geteuid() != 0:
        say("make demo needs root: the lab runs Asterisk in a chroot (sudo make demo)")
        return 1
    offset = int(os.environ.get("PBXLAB_OFFSET", "0"))
    if WORK.exists():
        shutil.rmtree(WORK)
    (WORK / "state").mkdir(parents=True)
    procs = Processes()
    with ExitStack() as cleanup:
        step("Setting up the lab (Asterisk 22 in a cached Debian sid root, mosquitto, SIPp)")
        took = setup_asterisk()
        say(f"   Asterisk root ready ({took:.1f} s)")
        started_asterisk = running_instance(offset) is None
        instance = start_asterisk(offset) if started_asterisk else running_instance(offset)
        assert instance is not None
        if started_asterisk:

            def stop_our_asterisk() -> None:
                stop_asterisk(offset)
                say(f"   stopped Asterisk (pid {instance.pid})")

            cleanup.callback(stop_our_asterisk)
        say(
            f"   Asterisk pid {instance.pid}: AMI 127.0.0.1:{instance.ami_port}, "
            f"SIP 127.0.0.1:{instance.sip_port}"
        )
        broker = start_mosquitto(port=instance.mqtt_port, name=f"demo-{offset}", state_dir=WORK / "mosquitto")

        def stop_our_mosquitto() -> None:
            stop_mosquitto(broker)
            say(f"   stopped mosquitto (pid {broker.pid})")

        cleanup.callback(stop_our_mosquitto)
        say(f"   mosquitto pid {broker.pid}: 127.0.0.1:{broker.port}")
        cleanup.callback(procs.stop_all)

        step("Starting pbxlink (daemon + CRM adapter with the embedded SQLite CRM)")
        (WORK / "ami.secret").write_text(instance.ami_secret + "\n")
        (WORK / "ami.secret").chmod(0o600)
        http_port = free_port()
        config = WORK / "pbxlink.toml"
        config.write_text(config_text(instance, broker, http_port, free_port()))
        pbxlink("check-config", "--quiet", "-c", str(config))
        daemon = procs.start("pbxlink run", [str(PBXLINK), "run", "-c", str(config)], WORK / "daemon.log")
        wait_ready(http_port, daemon)
        say(
            f"   daemon pid {daemon.pid} ready: AMI logged in, outbox open, FastAGI on "
            f"127.0.0.1:{instance.agi_port}, metrics on http://127.0.0.1:{http_port}/metrics"
        )
        adapter = procs.start(
            "pbxlink adapter", [str(PBXLINK), "adapter", "-c", str(config)], WORK / "adapter.log"
        )
        say(
            f"   adapter pid {adapter.pid}: consumes pbxlink/v1/+/call/outcome and …/call/event, "
            f"CRM in {(WORK / 'crm.sqlite3').relative_to(REPO)}"
        )
        watcher = OutcomeWatcher(broker)
        cleanup.callback(watcher.close)

        step("Filling the CRM: employees and clients with their responsible manager")
        for ext, name, role in EMPLOYEES:
            pbxlink("crm", "-c", str(config), "add-employee", ext, name, "--extension", ext, "--role", role)
        for name, phone, owner in KNOWN_CLIENTS:
            pbxlink("crm", "-c", str(config), "add-client", name, phone, "--responsible", owner)
            say(f"   {name:16} {phone:>14}  responsible {owner}")
        time.sleep(3.0)  # the adapter publishes ownership; the daemon's directory takes it in

        step("Placing calls through Asterisk with SIPp")
        driver = LabDriver(instance, WORK / "sipp")
        cleanup.callback(driver.close)
        outcomes: list[dict[str, Any]] = []
        for name, what in CALLS:
            say(f"   {name}: {what}")
            result = driver.run(name, route_stub=False)
            calls = len(result.truth["calls"])
            for outcome in watcher.take(calls, timeout=15.0):
                outcomes.append(outcome)
                say(f"     → outcome {describe(outcome)}")

        step("Call outcomes received over MQTT (pbxlink/v1/demo/call/outcome), one per call")
        say(json.dumps(outcomes[0] if outcomes else {}, ensure_ascii=False, indent=2))
        say(f"   ({len(outcomes)} outcomes in all; the first is shown whole)")

        time.sleep(2.0)  # let the adapter apply the last outcome
        step("What the CRM rules made of them (pbxlink crm …)")
        for view in ("clients", "deals", "inquiries", "tasks"):
            say(f"\n-- {view}")
            say(pbxlink("crm", "-c", str(config), view).rstrip())

        requests_demo(cleanup, procs, config)

        step("Stopping what the demo started")
    say(f"\nDone. Logs and databases are in {WORK.relative_to(REPO)}/.")
    return 0


def requests_demo(cleanup: ExitStack, procs: Processes, config: Path) -> None:
    """A7: an e-mail, a Telegram message and a web form through `pbxlink gateway` to the rules."""
    step("Requests: e-mail (dovecot IMAP), Telegram (fake Bot API) and a web form → pbxlink gateway")
    if not dovecot_available():
        say("   dovecot is not installed (tests/lab/host-packages.sh mail): skipping the requests part")
        return
    imap = start_dovecot({TEST_MAILBOX: TEST_PASSWORD})

    def stop_our_dovecot() -> None:
        imap.stop()
        shutil.rmtree(imap.directory, ignore_errors=True)
        say("   stopped dovecot")

    cleanup.callback(stop_our_dovecot)
    say(f"   dovecot: IMAPS 127.0.0.1:{imap.port}, mailbox {TEST_MAILBOX}")
    bot_thread = FakeBotApiThread()
    bot = bot_thread.start()
    cleanup.callback(bot_thread.stop)
    say(f"   fake Telegram Bot API on {bot.url}")
    form_token = "demo-form-token"
    for name, secret in (
        ("imap.password", TEST_PASSWORD),
        ("bot.token", bot.token),
        ("form.token", form_token),
    ):
        (WORK / name).write_text(secret + "\n")
        (WORK / name).chmod(0o600)
    with config.open("a") as out:
        out.write(gateway_text(imap, bot))
    pbxlink("check-config", "--quiet", "-c", str(config))
    # the adapter reads the new request rules on restart
    procs.restart("pbxlink adapter")
    gateway = procs.start(
        "pbxlink gateway", [str(PBXLINK), "gateway", "-c", str(config)], WORK / "gateway.log"
    )
    say(f"   gateway pid {gateway.pid}: email:{TEST_MAILBOX}, telegram:demo_bot, POST /v1/requests/site")

    mail = EmailMessage()
    mail["From"] = "Марія Лисенко <maria@client.example>"
    mail["To"] = TEST_MAILBOX
    mail["Subject"] = "Не працює пральна машина"
    mail["Message-ID"] = "<demo-1@client.example>"
    mail.set_content("Добрий день! Пральна машина не працює після ремонту, прошу допомогти.")
    imap.deliver(TEST_MAILBOX, mail.as_bytes())
    say("   e-mail   from maria@client.example: «Не працює пральна машина»")
    bot_thread.call(
        bot.send_text(TelegramUser(5550001, "Ольга", "Іваненко", "olga_i"), "Хочу замовити диван")
    )
    say("   Telegram from Ольга Іваненко (@olga_i): «Хочу замовити диван»")
    gateway_port = int(tomllib.loads(config.read_text())["gateway"]["port"])
    status = post_form(
        gateway_port,
        form_token,
        {"name": "ТОВ «Ромашка»", "phone": "+380501110001", "message": "Потрібен рахунок"},
    )
    say(f"   web form from +380501110001 (a known client): «Потрібен рахунок» → HTTP {status}")
    wait_requests(config, 3)

    step("What the request rules made of them (pbxlink crm requests | tickets | deals | clients)")
    for view in ("requests", "tickets", "deals", "clients"):
        say(f"\n-- {view}")
        say(pbxlink("crm", "-c", str(config), view).rstrip())


if __name__ == "__main__":
    raise SystemExit(main())
