"""Shared fixtures of the call-tracker tests: the recorded lab transcripts and how to replay them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs published
import pytest

from pbxlink.calls.parties import PartyRules
from pbxlink.calls.tracker import CallTrackerSettings
from pbxlink.daemon.replay import read_chunks, replay_outcomes

ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = ROOT / "tests" / "data" / "ami"
SCHEMA_PATH = ROOT / "docs" / "outcome.schema.json"

# The lab's parties (docs/lab.md): agents 101-103, the trunk endpoint "trunk", Ukrainian callers.
LAB_SETTINGS = CallTrackerSettings(
    node="pbx1",
    parties=PartyRules(agent_endpoints=r"^1\d\d$", trunk_endpoints=frozenset({"trunk"})),
    settle_seconds=2.0,
    default_region="UA",
)


Replay = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def replay() -> Replay:
    """Replay a transcript file; returns outcome dicts (and live events with events=True)."""

    def run(path: Path, *, events: bool = False, chunk_size: int = 1 << 16) -> list[dict[str, Any]]:
        problems: list[str] = []
        result = list(
            replay_outcomes(
                read_chunks(path, chunk_size),
                LAB_SETTINGS,
                events=events,
                diagnostic=problems.append,
            )
        )
        assert not [p for p in problems if not p.startswith("still up")], problems
        return result

    return run


@pytest.fixture(scope="session")
def outcome_schema() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)
