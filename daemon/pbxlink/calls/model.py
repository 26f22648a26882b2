"""What the call tracker hands out: the call outcome and the live events.

Times are epoch seconds (floats, from the AMI ``Timestamp`` header); :mod:`.outcome` turns these
records into the versioned JSON of the contract (docs/outcome.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

SCHEMA_VERSION = 1


class Direction(Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class MissedAt(Enum):
    """Where an unanswered call was lost."""

    IVR = "ivr"  # the caller never reached a person, a queue or voicemail
    QUEUE = "queue"  # waited in a queue / ring group, nobody answered
    AGENT = "agent"  # an agent's phone rang (direct dial), nobody answered
    VOICEMAIL = "voicemail"  # ended in voicemail
    EXTERNAL = "external"  # outbound: the external party did not answer


class HangupBy(Enum):
    EXTERNAL = "external"
    AGENT = "agent"
    SYSTEM = "system"  # the PBX ended it (dialplan Hangup(), timeouts)


class TransferKind(Enum):
    BLIND = "blind"
    ATTENDED = "attended"


class LiveEventType(Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    TRANSFERRED = "transferred"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class ExternalParty:
    raw: str
    e164: str | None


@dataclass(frozen=True, slots=True)
class HandlerSegment:
    """One stretch of time an agent talked with the other party."""

    agent: str
    answered_at: float
    ended_at: float
    # the outside number that took the call for the agent (their follow-me or call forward)
    forwarded_to: str | None = None

    @property
    def talk_seconds(self) -> float:
        return max(0.0, self.ended_at - self.answered_at)


@dataclass(frozen=True, slots=True)
class Transfer:
    kind: TransferKind
    from_agent: str | None
    to: str | None  # the target agent (or the extension a blind transfer sent the call to)
    at: float


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """The routing decision as the dialplan saw it (``PBXLINK_ROUTE*`` channel variables)."""

    target: str | None
    agent: str | None
    reason: str
    owner: str | None
    rule: str | None
    caller_e164: str | None
    line: str | None
    decided_in_ms: float | None


@dataclass(frozen=True, slots=True)
class CallOutcome:
    id: str
    linkedids: tuple[str, ...]
    direction: Direction
    answered: bool
    missed_at: MissedAt | None
    external: ExternalParty | None
    line: str | None
    initiator: str | None
    first_answered_by: str | None
    last_handled_by: str | None
    handlers: tuple[HandlerSegment, ...]
    rang: tuple[str, ...]
    transfers: tuple[Transfer, ...]
    queue: str | None
    started_at: float
    answered_at: float | None
    ended_at: float
    ring_seconds: float
    talk_seconds: float
    hangup_by: HangupBy | None
    recordings: tuple[str, ...]
    routing: RoutingDecision | None
    reconstructed: bool


@dataclass(frozen=True, slots=True)
class LiveEvent:
    type: LiveEventType
    call_id: str
    seq: int
    time: float
    direction: Direction
    external: ExternalParty | None
    line: str | None
    agent: str | None
    queue: str | None
    from_agent: str | None = None  # transferred only
    to_agent: str | None = None  # transferred only


TrackerOutput = CallOutcome | LiveEvent
