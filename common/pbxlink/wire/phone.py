"""Phone numbers: one identity (E.164) for every written form of a number.

`normalize(raw, default_region)` is used by everyone (routing, the call tracker, the CRM
adapters). It never raises: anonymous callers, SIP URIs, extensions and garbage come back with
`e164=None` and a `kind` saying why, and the raw text is always kept.

Order of the steps (each fixes a case the phonenumbers library gets wrong on its own):

1. strip a display name and a SIP/tel URI down to the user part;
2. anonymous markers (``anonymous``, ``<unknown>``, ``restricted``…) → ``ANONYMOUS``;
3. short digit strings (extensions, ≤ `internal_max_digits`) → ``INTERNAL``;
   valid short service numbers (112, 103…) → ``SHORT``;
4. region pre-rules: UA ``80XXXXXXXXX`` (the old "8-0XX" habit) → ``0XXXXXXXXX``;
   ``00`` → ``+`` (RU/KZ metadata only knows ``810``);
5. parse with the line's default region; a digit string that starts with a country code is also
   tried as ``+digits``, which wins when the default-region reading is invalid or when the string
   starts with the default region's own country code (``4930…`` on a German line is +49 30…);
6. only ``is_valid_number`` results become ``E164``; anything else is ``INVALID``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from phonenumbers import shortnumberinfo

__all__ = ["NumberKind", "PhoneNumber", "e164_digits", "normalize"]


class NumberKind(StrEnum):
    """What a raw caller/callee string turned out to be."""

    E164 = "e164"  # a valid public number; `e164` is set
    ANONYMOUS = "anonymous"  # withheld / unknown caller
    INTERNAL = "internal"  # an extension (short digit string)
    SHORT = "short"  # a short service/emergency number (112, 103…)
    INVALID = "invalid"  # garbage or an impossible number


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A number as written (`raw`) and, when it is a real public number, its E.164 form."""

    raw: str
    e164: str | None
    kind: NumberKind
    region: str | None = None  # region of the number (e.g. "KZ" for +7 7xx), E164 only
    extension: str | None = None  # "доб. 123", ";ext=12", "#12"

    def to_json(self) -> dict[str, str | None]:
        """The `external` object of the outcome contract: {"raw", "e164"}."""
        return {"raw": self.raw, "e164": self.e164}


_ANONYMOUS = frozenset(
    {
        "",
        "anonymous",
        "unknown",
        "<unknown>",
        "unavailable",
        "restricted",
        "private",
        "withheld",
        "asterisk",
        "s",
        "none",
        "null",
    }
)
_URI = re.compile(r"^(?:sips?|tel):(?P<user>[^@;?>]*)", re.IGNORECASE)
_ANGLE = re.compile(r"<(?P<inner>[^>]*)>")
_DIGITS_ONLY = re.compile(r"^\d+$")
_SEPARATORS = re.compile(r"[\s\-().]")
_UA_LEGACY_8 = re.compile(r"^80(\d{9})$")
# a raw number longer than this is not a phone number (E.164 allows 15 digits, plus formatting)
_MAX_RAW = 64


def normalize(raw: str, default_region: str, *, internal_max_digits: int = 5) -> PhoneNumber:
    """Classify and normalize one raw number. Never raises."""
    text = raw if isinstance(raw, str) else ""
    region = (default_region or "").upper()
    if len(text) > _MAX_RAW * 4:
        return PhoneNumber(raw=text, e164=None, kind=NumberKind.INVALID)
    user = _user_part(text)
    if user.lower() in _ANONYMOUS or user.lower().startswith("anonymous"):
        return PhoneNumber(raw=text, e164=None, kind=NumberKind.ANONYMOUS)
    compact = _SEPARATORS.sub("", user)
    if len(compact) > _MAX_RAW:
        return PhoneNumber(raw=text, e164=None, kind=NumberKind.INVALID)
    if _DIGITS_ONLY.match(compact):
        if len(compact) <= internal_max_digits:
            return PhoneNumber(raw=text, e164=None, kind=NumberKind.INTERNAL)
        if _is_short_service_number(compact, region):
            return PhoneNumber(raw=text, e164=None, kind=NumberKind.SHORT)
    return _parse_public(text, user, compact, region)


def e164_digits(e164: str) -> str:
    """ "+380981234567" → "380981234567" (the directory topic form)."""
    return e164[1:] if e164.startswith("+") else e164


def _user_part(text: str) -> str:
    """`"Name" <sip:+380…@host>` → `+380…`; `tel:+380…` → `+380…`; plain text unchanged."""
    stripped = text.strip()
    angle = _ANGLE.search(stripped)
    if angle is not None and angle.group("inner").strip():
        stripped = angle.group("inner").strip()
    uri = _URI.match(stripped)
    if uri is not None:
        return uri.group("user").strip()
    return stripped


def _is_short_service_number(digits: str, region: str) -> bool:
    if len(digits) > 6 or not region:
        return False
    try:
        parsed = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        return False
    return bool(shortnumberinfo.is_valid_short_number(parsed))


def _candidates(compact: str, region: str) -> list[tuple[str, str | None]]:
    """Strings to try, in order, each with the region to parse it with."""
    if compact.startswith("+"):
        return [(compact, None)]
    digits = compact
    if region == "UA":
        legacy = _UA_LEGACY_8.match(digits)
        if legacy is not None:
            digits = "0" + legacy.group(1)
    if digits.startswith("00") and _DIGITS_ONLY.match(digits):
        return [("+" + digits[2:], None), (digits, region or None)]
    own_code = phonenumbers.country_code_for_region(region) if region else 0
    as_international = ("+" + digits, None)
    if own_code and digits.startswith(str(own_code)) and _DIGITS_ONLY.match(digits):
        return [as_international, (digits, region)]
    if _DIGITS_ONLY.match(digits) and not digits.startswith("0"):
        return [(digits, region or None), as_international]
    return [(digits, region or None)]


def _parse_public(text: str, user: str, compact: str, region: str) -> PhoneNumber:
    # keep extension markers ("доб.", "ext", "#", ";ext=") for the library: parse `user` when
    # the compact form is not plain digits
    if not _DIGITS_ONLY.match(compact.lstrip("+")):
        candidates = [(user, region or None)]
    else:
        candidates = _candidates(compact, region)
    for candidate, parse_region in candidates:
        try:
            parsed = phonenumbers.parse(candidate, parse_region)
        except phonenumbers.NumberParseException:
            continue
        if not phonenumbers.is_valid_number(parsed):
            continue
        return PhoneNumber(
            raw=text,
            e164=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
            kind=NumberKind.E164,
            region=phonenumbers.region_code_for_number(parsed),
            extension=parsed.extension or None,
        )
    return PhoneNumber(raw=text, e164=None, kind=NumberKind.INVALID)
