"""Fixtures of the delivery integration tests (helpers live in mqtt_support.py beside this)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # mqtt_support, lab_support beside this file
