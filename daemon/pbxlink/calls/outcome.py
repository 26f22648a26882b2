"""The versioned JSON form of call outcomes and live events (schema: docs/outcome.schema.json).

The encoding is the wire codec's (:mod:`pbxlink.wire.codec`); these names are kept for the
callers that want the plain-object form (``pbxlink replay``, tests).
"""

from __future__ import annotations

from typing import Any

from pbxlink.calls.model import TrackerOutput
from pbxlink.wire.codec import to_builtins
from pbxlink.wire.instant import iso_utc, seconds

__all__ = ["iso_utc", "seconds", "to_json"]


def to_json(output: TrackerOutput) -> dict[str, Any]:
    """An outcome or a live event as its contract JSON object."""
    document: dict[str, Any] = to_builtins(output)
    return document
