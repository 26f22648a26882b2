"""Wire time: a UTC moment published as ``2026-11-22T23:06:31.123Z`` (milliseconds, ``Z``).

`Instant` is a :class:`datetime` (aware, UTC), so consumers compute with it as with any
datetime; its own type is what tells the wire codec to print it with exactly three fraction
digits (msgspec's own datetime form drops or widens the fraction).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Self

__all__ = ["Instant", "iso_utc", "seconds"]


class Instant(datetime):
    """An aware UTC datetime that the wire codec writes with millisecond precision."""

    __slots__ = ()

    @classmethod
    def from_epoch(cls, epoch: float) -> Self:
        """Epoch seconds (AMI ``Timestamp``) → the instant, rounded to the millisecond."""
        return cls.fromtimestamp(round(epoch, 3), UTC)

    @classmethod
    def of(cls, moment: datetime) -> Self:
        """Any aware datetime → the same moment in UTC (naive datetimes are refused)."""
        if moment.tzinfo is None:
            raise ValueError(f"{moment.isoformat()!r} has no time zone")
        if type(moment) is cls:
            return moment
        utc = moment.astimezone(UTC)
        return cls(
            utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=UTC
        )

    @classmethod
    def parse(cls, text: str) -> Self:
        """ISO 8601 with a zone (``Z`` or an offset) → the instant; ValueError otherwise."""
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            raise ValueError(f"{text!r} has no time zone")
        return cls.of(moment)

    @classmethod
    def parse_lenient(cls, text: str) -> Self:
        """As `parse`, but a time without a zone is UTC and a bare date is its midnight."""
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO 8601 time") from None
        return cls.of(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))

    def wire(self) -> str:
        """The published form: ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
        return self.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.microsecond // 1000:03d}Z"


def iso_utc(moment: datetime | float) -> str:
    """A datetime (any zone) or epoch seconds → the wire form ``…T23:06:31.123Z``."""
    if isinstance(moment, datetime):
        return Instant.of(moment).wire()
    return Instant.from_epoch(moment).wire()


def seconds(value: float) -> float:
    """A duration as published: seconds, never negative, millisecond precision."""
    return round(max(0.0, value), 3)
