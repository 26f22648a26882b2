"""The fake RetailCRM as its own process (for the lab tests and the demo), driven over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

LAB = Path(__file__).resolve().parents[2]  # tests/lab


class FakeRetailCrmProcess:
    """`python -m pbxlab.fakes.retailcrm` on a free 127.0.0.1 port; stopped by its PID."""

    def __init__(
        self,
        log: Path,
        *,
        api_key: str,
        users: dict[int, str],
        sites: tuple[str, ...] = ("main",),
        statuses: tuple[str, ...] = (),
        rate_limit: int = 10,
    ) -> None:
        args = [
            sys.executable,
            "-m",
            "pbxlab.fakes.retailcrm",
            "--api-key",
            api_key,
            "--rate-limit",
            str(rate_limit),
        ]
        args += [a for uid, name in users.items() for a in ("--user", f"{uid}:{name}")]
        args += [a for site in sites for a in ("--site", site)]
        args += [a for status in statuses for a in ("--status", status)]
        self.api_key = api_key
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LAB), os.environ.get("PYTHONPATH", "")])}
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, env=env
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake RetailCRM did not start (see {log})")
        self.url: str = json.loads(line)["url"]

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_fake/state", timeout=10) as answer:
            document: dict[str, Any] = json.loads(answer.read())
        return document

    def faults(self, **faults: Any) -> None:
        request = urllib.request.Request(
            f"{self.url}/_fake/faults",
            data=json.dumps(faults).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def create_customer(self, name: str, phones: list[str], manager: int | None = None) -> int:
        """A customer created through the API with the account's key, as a person would."""
        customer: dict[str, Any] = {"firstName": name, "phones": [{"number": p} for p in phones]}
        if manager is not None:
            customer["managerId"] = manager
        body = urllib.parse.urlencode({"customer": json.dumps(customer, ensure_ascii=False)}).encode()
        request = urllib.request.Request(
            f"{self.url}/api/v5/customers/create",
            data=body,
            headers={"X-API-KEY": self.api_key, "Content-Type": "application/x-www-form-urlencoded"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(json.loads(answer.read())["id"])

    def click(self, code: str, phone: str, **override: str) -> dict[str, Any]:
        """A manager clicks a number in RetailCRM: the answer of pbxlink's makeCallUrl."""
        request = urllib.request.Request(
            f"{self.url}/_fake/click",
            data=json.dumps({"code": code, "phone": phone, "override": override}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            document: dict[str, Any] = json.loads(answer.read())
        return document

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


class _FakeProcess:
    """A fake service as its own process on a free 127.0.0.1 port (it prints one JSON line)."""

    def __init__(self, module: str, args: list[str], log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LAB), os.environ.get("PYTHONPATH", "")])}
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{module} did not start (see {log})")
        self.started: dict[str, Any] = json.loads(line)
        self.url: str = self.started["url"]

    def _post(self, path: str, document: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url.removesuffix('/hook')}{path}",
            data=json.dumps(document).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            result: dict[str, Any] = json.loads(answer.read())
        return result

    def _get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url.removesuffix('/hook')}{path}", timeout=10) as answer:
            result: dict[str, Any] = json.loads(answer.read())
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


class FakeBitrix24Process(_FakeProcess):
    """`python -m pbxlab.fakes.bitrix24`: one portal with an inbound webhook and users."""

    def __init__(
        self, log: Path, *, token: str, users: dict[int, tuple[str, str]], rate: float = 2.0, burst: int = 50
    ) -> None:
        args = ["--webhook", f"1:{token}", "--rate", str(rate), "--burst", str(burst)]
        args += [a for uid, (name, inner) in users.items() for a in ("--user", f"{uid}:{name}:{inner}")]
        super().__init__("pbxlab.fakes.bitrix24", args, log)
        self.webhook: str = self.started["webhook"]

    def state(self) -> dict[str, Any]:
        return self._get("/_fake/state")

    def faults(self, **faults: Any) -> dict[str, Any]:
        return self._post("/_fake/faults", faults)


class WebhookReceiverProcess(_FakeProcess):
    """`python -m pbxlab.fakes.webhook_receiver`: verifies signatures, counts deliveries."""

    def __init__(self, log: Path, *, secrets: list[str]) -> None:
        super().__init__("pbxlab.fakes.webhook_receiver", [a for s in secrets for a in ("--secret", s)], log)

    def state(self) -> dict[str, Any]:
        return self._get("/_state")

    def faults(self, **faults: Any) -> dict[str, Any]:
        return self._post("/_faults", faults)
