"""Phone identity for the CRM (A6): one client per real number, whatever its written form.

Identity is the E.164 form from the shared normalizer `pbxlink.wire.phone` (anonymous
callers and garbage get none, so they never merge); the raw form is always kept beside it.
This module adds what only the CRM needs: showing numbers the way the settings ask
(Megaplan «Формат телефонных номеров»).
"""

from __future__ import annotations

import enum

import phonenumbers

from pbxlink.wire.phone import NumberKind as PhoneKind
from pbxlink.wire.phone import PhoneNumber as PhoneIdentity
from pbxlink.wire.phone import normalize

__all__ = ["PhoneFormat", "PhoneIdentity", "PhoneKind", "display", "identify"]


class PhoneFormat(enum.Enum):
    """How numbers are shown to people."""

    E164 = "e164"
    INTERNATIONAL = "international"
    NATIONAL = "national"


def identify(raw: str, default_region: str) -> PhoneIdentity:
    """Classify and normalize one number as written, with the line's default region."""
    return normalize(raw, default_region)


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
