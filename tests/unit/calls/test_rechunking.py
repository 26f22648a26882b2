"""Any cutting of a recorded byte stream into reads gives the same outcomes."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbxlink.calls.parties import PartyRules
from pbxlink.calls.tracker import CallTrackerSettings
from pbxlink.daemon.replay import read_chunks, replay_outcomes

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "ami"
SETTINGS = CallTrackerSettings(parties=PartyRules(r"^1\d\d$", frozenset({"trunk"})))
# small and varied transcripts: a transfer with Local channels, a queue, a non-ASCII name
NAMES = ["attended_transfer_completed", "queue_abandoned", "non_ascii_caller_name"]


def _load(name: str) -> bytes:
    for candidate in (DATA_DIR / f"{name}.ami", DATA_DIR / f"{name}.ami.gz"):
        if candidate.is_file():
            return b"".join(read_chunks(candidate))
    pytest.fail(f"recording {name} is missing from {DATA_DIR}")


def _outcomes(chunks: list[bytes]) -> list[dict[str, Any]]:
    return list(replay_outcomes(chunks, SETTINGS, events=True))


@pytest.fixture(scope="module", params=NAMES)
def transcript(request: pytest.FixtureRequest) -> tuple[bytes, list[dict[str, Any]]]:
    data = _load(request.param)
    whole = _outcomes([data])
    assert whole, "the transcript yields outcomes"
    return data, whole


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=40))
def test_any_rechunking_of_a_transcript_gives_the_same_outcomes(
    transcript: tuple[bytes, list[dict[str, Any]]], cuts: list[float]
) -> None:
    data, whole = transcript
    points = sorted({int(c * len(data)) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    assert _outcomes(chunks) == whole


def test_one_byte_reads_give_the_same_outcomes(
    transcript: tuple[bytes, list[dict[str, Any]]],
) -> None:
    data, whole = transcript
    assert _outcomes([data[i : i + 1] for i in range(len(data))]) == whole
