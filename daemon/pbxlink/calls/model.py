"""What the call tracker hands out: call outcomes and live events, the wire model's own records.

The records are defined once, in :mod:`pbxlink.wire.model` (the contract, docs/outcome.md);
this module names them for the tracker. Times are `pbxlink.wire.instant.Instant` (UTC,
milliseconds), made from the AMI ``Timestamp`` epoch seconds.
"""

from __future__ import annotations

from pbxlink.wire.model import (
    SCHEMA_VERSION,
    CallOutcome,
    Direction,
    ExternalParty,
    HandlerSegment,
    HangupBy,
    LiveEvent,
    LiveEventType,
    MissedAt,
    RoutingDecision,
    Transfer,
    TransferKind,
)

__all__ = [
    "SCHEMA_VERSION",
    "CallOutcome",
    "Direction",
    "ExternalParty",
    "HandlerSegment",
    "HangupBy",
    "LiveEvent",
    "LiveEventType",
    "MissedAt",
    "RoutingDecision",
    "TrackerOutput",
    "Transfer",
    "TransferKind",
]

TrackerOutput = CallOutcome | LiveEvent
