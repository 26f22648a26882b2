"""Phone identity for the CRM (A6): one client per real number, whatever its written form.

Identity is the E.164 form from the shared normalizer `pbxlink.wire.phone` (anonymous
callers and garbage get none, so they never merge); the raw form is always kept beside it.
This module adds what only the CRM needs: showing numbers the way the settings ask
(Megaplan «Формат телефонных номеров»).
"""

from __future__ import annotations

import enum
import functools

import phonenumbers

from pbxlink.wire.phone import NumberKind as PhoneKind
from pbxlink.wire.phone import PhoneNumber as PhoneIdentity
from pbxlink.wire.phone import normalize

__all__ = ["PhoneFormat", "PhoneIdentity", "PhoneKind", "display", "identify", "line_key"]


class PhoneFormat(enum.Enum):
    """How numbers are shown to people."""

    E164 = "e164"
    INTERNATIONAL = "international"
    NATIONAL = "national"


def identify(raw: str, default_region: str) -> PhoneIdentity:
    """Classify and normalize one number as written, with the line's default region."""
    return normalize(raw, default_region)


@functools.lru_cache(maxsize=1024)
def line_key(line: str | None, default_region: str) -> str | None:
    """A line (DID) compared like a number: "+4930100300", "4930100300" and, in region DE,
    "030100300" are one line; a line that is not a number (a trunk name) compares as written."""
    if line is None or not line.strip():
        return None
    number = normalize(line, default_region)
    return number.e164 if number.e164 is not None else line.strip()


def display(e164: str, style: PhoneFormat) -> str:
    """Format an E.164 identity for people, as the settings ask."""
    if style is PhoneFormat.E164:
        return e164
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    fmt = (
        phonenumbers.PhoneNumberFormat.INTERNATIONAL
        if style is PhoneFormat.INTERNATIONAL
        else phonenumbers.PhoneNumberFormat.NATIONAL
    )
    return phonenumbers.format_number(number, fmt)
