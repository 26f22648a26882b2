"""The published JSON Schema of outcomes and live events, generated from the wire model.

``pbxlink schema`` writes it (docs/outcome.schema.json is its committed output; a test fails
when they differ). The structure, types, enums, patterns and bounds come from the Structs in
:mod:`pbxlink.wire.model`; what one field means for another (an answered call has a handler, an
internal call has no external party …) is written below as `OUTCOME_RULES` / `LIVE_EVENT_RULES`,
the part of the contract JSON Schema can state but a type cannot.

The schema describes what pbxlink *publishes*: every field is present (``from_agent`` and
``to_agent`` on ``transferred`` events only) and nothing else is.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import msgspec.inspect
import msgspec.structs

from pbxlink.wire.instant import Instant
from pbxlink.wire.model import SCHEMA_VERSION, CallOutcome, LiveEvent

__all__ = ["LIVE_EVENT_RULES", "OUTCOME_RULES", "outcome_schema", "outcome_schema_text"]

TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
_NAMES = {"CallOutcome": "outcome", "LiveEvent": "live_event"}

_AGENT = {"type": "string", "minLength": 1}
_TIME = {"$ref": "#/$defs/time"}

OUTCOME_RULES: list[dict[str, Any]] = [
    {
        "if": {"properties": {"answered": {"const": True}}},
        "then": {
            "properties": {
                "missed_at": {"const": None},
                "first_answered_by": _AGENT,
                "last_handled_by": _AGENT,
                "answered_at": _TIME,
                "handlers": {"minItems": 1},
            }
        },
        "else": {
            "properties": {
                "first_answered_by": {"const": None},
                "last_handled_by": {"const": None},
                "answered_at": {"const": None},
                "handlers": {"maxItems": 0},
            }
        },
    },
    {
        "if": {"properties": {"direction": {"const": "internal"}}},
        "then": {"properties": {"external": {"const": None}, "line": {"const": None}}},
        "else": {"properties": {"external": {"type": "object"}}},
    },
    {
        "if": {"properties": {"direction": {"const": "inbound"}}},
        "then": {"properties": {"initiator": {"const": None}}},
    },
]

LIVE_EVENT_RULES: dict[str, Any] = {
    "if": {"properties": {"type": {"const": "transferred"}}},
    "then": {"required": ["from_agent", "to_agent"]},
    "else": {"not": {"anyOf": [{"required": ["from_agent"]}, {"required": ["to_agent"]}]}},
}


def _schema_hook(kind: type) -> dict[str, Any]:
    if kind is Instant:
        return _TIME
    raise NotImplementedError(kind)


def _always_written(struct: type[msgspec.Struct]) -> list[str]:
    """The JSON names of the fields the encoder always writes (all but those left unset)."""
    return [f.encode_name for f in msgspec.structs.fields(struct) if f.default is not msgspec.UNSET]


def _rename(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _rename(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename(v) for v in node]
    if isinstance(node, str) and node.startswith("#/$defs/"):
        name = node.removeprefix("#/$defs/")
        return "#/$defs/" + _NAMES.get(name, name)
    return node


def outcome_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of outcomes and live events, schema version 1."""
    _, components = msgspec.json.schema_components(
        (CallOutcome, LiveEvent), schema_hook=_schema_hook, ref_template="#/$defs/{name}"
    )
    structs: dict[str, type[msgspec.Struct]] = {}
    pending: list[type[msgspec.Struct]] = [CallOutcome, LiveEvent]
    while pending:
        struct = pending.pop()
        structs[struct.__name__] = struct
        for info in msgspec.structs.fields(struct):
            pending.extend(_struct_types(info.type, structs))
    defs: dict[str, Any] = {
        "time": {
            "type": "string",
            "pattern": TIME_PATTERN,
            "description": "ISO 8601 UTC with milliseconds, from the AMI Timestamp header",
        }
    }
    for name, component in sorted(components.items()):
        if name in structs:
            component["additionalProperties"] = False
            component["required"] = _always_written(structs[name])
        defs[_NAMES.get(name, name)] = _rename(component)
    defs["outcome"]["allOf"] = OUTCOME_RULES
    defs["live_event"].update(LIVE_EVENT_RULES)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://pbxlink.invalid/schema/outcome-{SCHEMA_VERSION}.json",
        "title": f"pbxlink call outcome and live event, schema {SCHEMA_VERSION}",
        "description": (
            "One outcome per finished call (topic pbxlink/v1/{node}/call/outcome) and live events "
            "(pbxlink/v1/{node}/call/event). Generated from pbxlink.wire.model by `pbxlink schema`; "
            "see docs/outcome.md."
        ),
        "oneOf": [{"$ref": "#/$defs/outcome"}, {"$ref": "#/$defs/live_event"}],
        "$defs": defs,
    }


def _struct_types(annotation: Any, seen: dict[str, type[msgspec.Struct]]) -> list[type[msgspec.Struct]]:
    found: list[type[msgspec.Struct]] = []
    if isinstance(annotation, msgspec.inspect.Type):
        return found
    info = msgspec.inspect.type_info(annotation)
    stack: list[msgspec.inspect.Type] = [info]
    while stack:
        current = stack.pop()
        if isinstance(current, msgspec.inspect.StructType):
            if current.cls.__name__ not in seen:
                found.append(current.cls)
        elif isinstance(current, msgspec.inspect.UnionType):
            stack.extend(current.types)
        elif isinstance(current, msgspec.inspect.VarTupleType | msgspec.inspect.ListType):
            stack.append(current.item_type)
    return found


def outcome_schema_text() -> str:
    """The schema as the committed file holds it (2-space indent, UTF-8, final newline)."""
    return json.dumps(outcome_schema(), indent=2, ensure_ascii=False) + "\n"
