"""Fixtures of the delivery integration tests (helpers live in mqtt_support.py beside this)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # mqtt_support, lab_support beside this file

from lab_support import LAB_OFFSET
from mqtt_support import Mosquitto
from pbxlab import LabError, LabInstance, start_asterisk, stop_asterisk


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def lab_asterisk() -> Iterator[LabInstance]:
    """A real Asterisk 22 for the fault tests; fails (not skips) when it cannot start."""
    try:
        instance = start_asterisk(LAB_OFFSET)
    except LabError as exc:
        pytest.fail(f"the lab Asterisk did not start: {exc}")
    yield instance
    with contextlib.suppress(LabError):
        stop_asterisk(LAB_OFFSET)
