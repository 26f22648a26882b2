"""The edge: envelopes and outcomes are validated once; every problem names its field."""

from __future__ import annotations

import json
import re

import pytest

from pbxlink.adapters.inbox import validate
from pbxlink.rules.calls import CallInputError, CallOutcome, LiveEvent, parse_envelope
from pbxlink.rules.samples import event, event_message, missed, outcome, outcome_message


def test_a_published_outcome_and_event_parse_into_typed_records() -> None:
    envelope = validate(*outcome_message(outcome()))
    assert isinstance(envelope.body, CallOutcome)
    assert envelope.body.external is not None
    assert envelope.body.external.raw == "0981234567"
    live = validate(*event_message(event()))
    assert isinstance(live.body, LiveEvent)
    assert live.id == "pbx1:1700000000.1:2"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"direction": "sideways"}, "data.direction"),
        ({"answered": "yes"}, "data.answered"),
        ({"started_at": "2018-03-05 13:29:50"}, "data.started_at"),  # no time zone
        ({"missed_at": "lobby"}, "data.missed_at"),
        ({"external": None}, "data.external"),
        ({"rang": "101"}, "data.rang"),
        ({"transfers": [{"kind": "blind", "at": 5}]}, "data.transfers[0].at"),
        ({"schema": 2}, "data.schema"),
        ({"talk_seconds": -1}, "data.talk_seconds"),
    ],
)
def test_a_broken_outcome_is_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(CallInputError, match=re.escape(field)):
        validate(*outcome_message(missed(**change)))


def test_an_envelope_id_that_is_not_the_call_key_is_refused() -> None:
    _, payload = outcome_message(missed())
    document = json.loads(payload)
    document["id"] = "pbx1:other"
    with pytest.raises(CallInputError, match=r"envelope\.id"):
        parse_envelope(document)


def test_an_outcome_on_the_event_topic_is_refused() -> None:
    _, payload = outcome_message(missed())
    with pytest.raises(CallInputError, match="topic"):
        validate("pbxlink/v1/pbx1/call/event", payload)


def test_unknown_fields_are_ignored_for_additive_schema_growth() -> None:
    assert validate(*outcome_message(missed(new_field={"x": 1}))).id == "pbx1:1700000000.1"


def test_internal_calls_need_no_external_party() -> None:
    envelope = validate(*outcome_message(outcome(direction="internal", external=None)))
    assert isinstance(envelope.body, CallOutcome)
