"""The wire model: one codec for every process, the published schema generated from it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]  # no stubs published
import pytest

from pbxlink.cli import main as pbxlink
from pbxlink.wire.codec import WireError, decode, decode_envelope, encode, to_builtins
from pbxlink.wire.instant import Instant
from pbxlink.wire.model import CallOutcome, Envelope, LiveEvent, LiveEventType, Request
from pbxlink.wire.samples import sample_event, sample_outcome
from pbxlink.wire.schema import outcome_schema, outcome_schema_text

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "docs" / "outcome.schema.json"
EXPECTED = sorted((ROOT / "tests" / "data" / "ami").glob("*.expected.json"))


def test_the_committed_schema_is_the_one_the_model_generates() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == outcome_schema_text(), (
        "docs/outcome.schema.json is stale: run `pbxlink schema -o docs/outcome.schema.json`"
    )


def test_schema_check_fails_on_a_file_that_differs(tmp_path: Path) -> None:
    stale = tmp_path / "outcome.schema.json"
    stale.write_text(outcome_schema_text().replace('"minLength": 1', '"minLength": 2'), encoding="utf-8")
    assert pbxlink(["schema", "--check", str(stale)]) == 1
    assert pbxlink(["schema", "--check", str(COMMITTED)]) == 0


def test_every_recorded_outcome_reads_back_into_the_model_and_encodes_to_the_same_json() -> None:
    validator = jsonschema.Draft202012Validator(outcome_schema())
    seen = 0
    for path in EXPECTED:
        for document in json.loads(path.read_text(encoding="utf-8")):
            validator.validate(document)
            outcome = decode(json.dumps(document), CallOutcome)
            assert to_builtins(outcome) == document
            seen += 1
    assert seen >= 10


def test_times_are_written_with_exactly_three_fraction_digits_in_utc() -> None:
    assert Instant.from_epoch(1795389600.0).wire() == "2026-11-22T23:20:00.000Z"
    assert Instant.parse("2026-11-23T01:20:00.1234+02:00").wire() == "2026-11-22T23:20:00.123Z"
    with pytest.raises(ValueError, match="no time zone"):
        Instant.parse("2026-11-22T23:20:00")


def test_live_events_write_from_and_to_agent_only_when_transferred() -> None:
    assert "to_agent" not in to_builtins(sample_event())
    moved = sample_event(kind=LiveEventType.TRANSFERRED, from_agent="101", to_agent=None)
    assert to_builtins(moved)["to_agent"] is None
    jsonschema.Draft202012Validator(outcome_schema()).validate(to_builtins(moved))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "envelope: not JSON"),
        (b'{"schema": 1}', "envelope: Object missing required field `id`"),
        (b'{"schema":2,"id":"a","type":"call.outcome","node":"n","time":"x","data":{}}', "envelope.schema"),
        (b'{"schema":1,"id":"a","type":"fax","node":"n","time":"x","data":{}}', "envelope.type"),
        (b'{"schema":1,"id":"a","type":"call.event","node":"n","time":"x","data":{"seq":"1"}}', "data.seq"),
    ],
)
def test_bad_input_is_refused_naming_the_field(payload: bytes, reason: str) -> None:
    with pytest.raises(WireError) as caught:
        decode_envelope(payload)
    assert reason in caught.value.reason


def test_an_envelope_round_trips_with_its_typed_body() -> None:
    for body in (sample_outcome(), sample_event(seq=4)):
        envelope = Envelope.wrap(body, node="pbx1", time=Instant.from_epoch(1795389700.5))
        again = decode_envelope(encode(envelope))
        assert again == envelope
        assert isinstance(again.body, CallOutcome | LiveEvent)


def test_a_request_keeps_its_sender_and_refuses_a_broken_email() -> None:
    document = {
        "schema": 1,
        "id": "mail-1",
        "channel": "email",
        "source": "email:service@shop.example",
        "received_at": "2026-11-22T10:00:00Z",
        "from": {"name": "Іван", "email": " Ivan@Example.COM "},
        "subject": "Ремонт",
        "body": "не працює",
    }
    request = decode(json.dumps(document), Request)
    assert (request.sender_name, request.sender_email, request.sender_phone) == (
        "Іван",
        "ivan@example.com",
        None,
    )
    document["from"] = {"email": "nobody"}
    with pytest.raises(WireError, match=r"data\.from\.email"):
        decode(json.dumps(document), Request)
