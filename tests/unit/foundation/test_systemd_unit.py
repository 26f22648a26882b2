"""The shipped systemd unit is what production admins install: it must verify clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
UNIT = REPO / "systemd" / "pbxlink.service"
UNITS = sorted((REPO / "systemd").glob("*.service"))


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_has_notify_watchdog_restart_policy_and_hardening() -> None:
    d = _directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert d["WatchdogSec"]
    assert d["Restart"] == ["on-failure"]
    assert d["RestartPreventExitStatus"] == ["78"]
    assert d["StateDirectory"] == ["pbxlink"]
    assert d["ConfigurationDirectory"] == ["pbxlink"]
    assert any(v.startswith("ami-secret:") for v in d["LoadCredential"])
    assert d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["yes"]


def test_the_adapter_unit_restarts_on_failure_but_not_on_a_config_error() -> None:
    d = _directives((REPO / "systemd" / "pbxlink-adapter.service").read_text())
    assert d["Restart"] == ["on-failure"]
    assert d["RestartPreventExitStatus"] == ["78"]
    assert d["ProtectSystem"] == ["strict"]
    assert any("pbxlink adapter" in v for v in d["ExecStart"])


@pytest.mark.parametrize("unit_file", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify_prints_nothing(tmp_path: Path, unit_file: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: `make test` installs it")
    # The unit names the installed path of the console script; point it at this environment's.
    pbxlink = Path(sys.executable).with_name("pbxlink")
    assert pbxlink.exists(), f"{pbxlink} missing: install the package (make venv)"
    unit = tmp_path / unit_file.name
    unit.write_text(unit_file.read_text().replace("/usr/local/bin/pbxlink", str(pbxlink)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.stdout + result.stderr == ""
    assert result.returncode == 0
