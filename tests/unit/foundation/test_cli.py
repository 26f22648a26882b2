"""The `pbxlink` command itself."""

from __future__ import annotations

import subprocess
import sys

from pbxlink.daemon import __version__


def test_version_subcommand_and_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pbxlink.cli", "version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout == f"pbxlink {__version__}\n"


def test_help_lists_every_subcommand() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pbxlink.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0
    for name in ("run", "check-config", "replay", "record", "version", "adapter", "crm", "explain"):
        assert name in result.stdout


def test_no_subcommand_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pbxlink.cli"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 2
    assert "COMMAND" in result.stderr
