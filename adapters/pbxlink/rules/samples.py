"""Sample call outcomes and live events in the common-brief schema, built field by field.

Used by the CRM tests, the benchmark and the docs; not used at run time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pbxlink.rules.calls import envelope_for, request_envelope
from pbxlink.rules.facts import EmployeeFact

EMPLOYEES = (
    EmployeeFact("anna", "Анна", "101"),
    EmployeeFact("boris", "Борис", "102"),
    EmployeeFact("vera", "Вероника Лис", "103"),
    EmployeeFact("gleb", "Глеб (уволен)", "104", deleted=True),
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def outcome(**fields: Any) -> dict[str, Any]:
    """An inbound call answered by 101, overridable field by field."""
    base: dict[str, Any] = {
        "schema": 1,
        "id": "pbx1:1700000000.1",
        "linkedids": ["1700000000.1"],
        "direction": "inbound",
        "answered": True,
        "missed_at": None,
        "external": {"raw": "0981234567", "e164": "+380981234567"},
        "line": "4930100200",
        "initiator": None,
        "first_answered_by": "101",
        "last_handled_by": "101",
        "handlers": [
            {
                "agent": "101",
                "answered_at": "2018-03-05T13:30:05Z",
                "ended_at": "2018-03-05T13:32:00Z",
                "talk_seconds": 115,
            }
        ],
        "rang": ["101"],
        "transfers": [],
        "queue": None,
        "started_at": "2018-03-05T13:29:50Z",
        "answered_at": "2018-03-05T13:30:05Z",
        "ended_at": "2018-03-05T13:32:00Z",
        "ring_seconds": 15,
        "talk_seconds": 115,
        "hangup_by": "external",
        "recordings": [],
        "routing": None,
        "reconstructed": False,
    }
    base.update(fields)
    return base


def missed(**fields: Any) -> dict[str, Any]:
    """An inbound call that rang 101 and was missed there."""
    values: dict[str, Any] = {
        "answered": False,
        "missed_at": "agent",
        "first_answered_by": None,
        "last_handled_by": None,
        "handlers": [],
        "answered_at": None,
        "talk_seconds": 0,
    }
    values.update(fields)
    return outcome(**values)


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": 1,
        "type": "answered",
        "call_id": "pbx1:1700000000.1",
        "seq": 2,
        "time": "2018-03-05T14:30:05Z",
        "direction": "inbound",
        "external": {"raw": "0981234567", "e164": "+380981234567"},
        "line": "4930100200",
        "agent": "101",
        "queue": None,
    }
    base.update(fields)
    return base


def outcome_message(data: dict[str, Any], node: str = "pbx1") -> tuple[str, bytes]:
    """(topic, payload) of an outcome as the daemon publishes it."""
    return envelope_for(data, node)


def event_message(data: dict[str, Any], node: str = "pbx1") -> tuple[str, bytes]:
    """(topic, payload) of a live event as the daemon publishes it."""
    return envelope_for(data, node)


def request(**fields: Any) -> dict[str, Any]:
    """An A7 e-mail request, overridable field by field."""
    base: dict[str, Any] = {
        "schema": 1,
        "id": "mail:<a1@shop.example>",
        "channel": "email",
        "source": "email:service@shop.example",
        "received_at": "2023-10-01T09:00:00Z",
        "from": {"name": "Ольга", "email": "Olga@Example.com", "phone": None},
        "subject": "Сломался телефон",
        "body": "Здравствуйте! Нужен ремонт экрана.",
        "deal_id": None,
    }
    base.update(fields)
    return base


def request_message(data: dict[str, Any]) -> tuple[str, bytes]:
    return request_envelope(data)
