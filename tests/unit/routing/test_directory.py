"""Directory contract messages: parsed strictly, errors name the field, encode round-trips."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxlink.routing.directory import (
    DirectoryIndex,
    DirectoryPayloadError,
    encode_directory_entry,
    parse_directory_message,
)
from pbxlink.routing.model import ClientOwners, DirectoryEntry, Responsible, RoutingEntry
from pbxlink.wire.model import DirectoryTime

TOPIC = "pbxlink/v1/directory/380981234567"
CLIENT_NAME = "\u0422\u041e\u0412 \u0420\u043e\u043c\u0430\u0448\u043a\u0430"  # Cyrillic


def document(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": 1,
        "number": "+380981234567",
        "updated_at": "2026-11-22T10:00:00Z",
        "clients": [
            {
                "client_id": "42",
                "name": CLIENT_NAME,
                "created_at": "2025-01-01T00:00:00Z",
                "responsibles": [
                    {
                        "employee": "ivan",
                        "extension": "101",
                        "is_employee": True,
                        "blocked": False,
                        "deleted": False,
                    }
                ],
            }
        ],
        "employee": None,
    }
    doc.update(overrides)
    return doc


def test_a_contract_message_parses_into_an_entry() -> None:
    update = parse_directory_message(TOPIC, json.dumps(document()).encode())
    assert update.digits == "380981234567"
    assert update.entry == DirectoryEntry(
        number="+380981234567",
        updated_at=DirectoryTime.of(datetime(2026, 11, 22, 10, tzinfo=UTC)),
        clients=(
            ClientOwners(
                "42",
                CLIENT_NAME,
                DirectoryTime.of(datetime(2025, 1, 1, tzinfo=UTC)),
                (Responsible("ivan", "101"),),
            ),
        ),
        employee=None,
    )


def test_an_empty_payload_is_a_deletion() -> None:
    assert parse_directory_message(TOPIC, b"").entry is None


@pytest.mark.parametrize(
    ("topic", "payload", "field"),
    [
        ("pbxlink/v1/other/380981234567", json.dumps(document()).encode(), "topic"),
        ("pbxlink/v1/directory/+380981234567", json.dumps(document()).encode(), "topic"),
        ("pbxlink/v1/directory/098", json.dumps(document()).encode(), "topic"),
        (TOPIC, b"{not json", "$"),
        (TOPIC, b"\xff\xfe", "$"),
        (TOPIC, b"[1, 2]", "$"),
        (TOPIC, json.dumps(document(schema=2)).encode(), "schema"),
        (TOPIC, json.dumps(document(number="0981234567")).encode(), "number"),
        (TOPIC, json.dumps(document(number="+380671112233")).encode(), "number"),
        (TOPIC, json.dumps(document(updated_at="yesterday")).encode(), "updated_at"),
        (TOPIC, json.dumps(document(clients={})).encode(), "clients"),
        (
            TOPIC,
            json.dumps(document(clients=[{"client_id": "", "created_at": "2025-01-01"}])).encode(),
            "clients[0].client_id",
        ),
        (
            TOPIC,
            json.dumps(
                document(
                    clients=[
                        {
                            "client_id": "1",
                            "created_at": "2025-01-01",
                            "responsibles": [{"employee": "x", "blocked": "no"}],
                        }
                    ]
                )
            ).encode(),
            "clients[0].responsibles[0].blocked",
        ),
        (TOPIC, json.dumps(document(employee=7)).encode(), "employee"),
    ],
)
def test_contract_violations_name_the_field(topic: str, payload: bytes, field: str) -> None:
    with pytest.raises(DirectoryPayloadError) as caught:
        parse_directory_message(topic, payload)
    assert caught.value.field == field
    assert topic in str(caught.value)


def test_encode_then_parse_is_identity() -> None:
    entry = parse_directory_message(TOPIC, json.dumps(document()).encode()).entry
    assert entry is not None
    again = parse_directory_message(TOPIC, encode_directory_entry(entry)).entry
    assert again == entry


@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_parse_or_raise_the_one_error_type(payload: bytes) -> None:
    with contextlib.suppress(DirectoryPayloadError):
        parse_directory_message(TOPIC, payload)


def test_index_lookup_ignores_non_numbers() -> None:
    index = DirectoryIndex()
    index.put("380981234567", RoutingEntry(None, (), (), 0))
    assert index.lookup("+380981234567") is not None
    assert index.lookup("+38098123456²") is None
    assert index.lookup("") is None


def test_absurdly_nested_json_is_rejected_not_crashing() -> None:
    with pytest.raises(DirectoryPayloadError):
        parse_directory_message(TOPIC, b"[" * 100_000)
