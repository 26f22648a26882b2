"""E.164 normalization: the table of research/ecosystem.md §4 as executable documentation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxlink.wire.phone import NumberKind, PhoneNumber, e164_digits, normalize

SAME_UA_MOBILE = [
    "0981234567",
    "098 123 45 67",
    "+380981234567",
    "380981234567",
    "00380981234567",
    "+38 098 123 45 67",
    "+380 (98) 123-45-67",
    "80981234567",
    "8-098-123-45-67",
    "+3800981234567",
    "tel:+380981234567",
    "sip:+380981234567@trunk.example",
    '"Alice" <sip:0981234567@10.0.0.1:5060>',
]


@pytest.mark.parametrize("raw", SAME_UA_MOBILE)
def test_every_written_form_of_a_ukrainian_mobile_is_one_e164(raw: str) -> None:
    number = normalize(raw, "UA")
    assert number == PhoneNumber(raw=raw, e164="+380981234567", kind=NumberKind.E164, region="UA")


@pytest.mark.parametrize(
    ("raw", "region", "e164", "number_region"),
    [
        ("044 234-56-78", "UA", "+380442345678", "UA"),
        ("89161234567", "RU", "+79161234567", "RU"),
        ("8 916 123 45 67", "RU", "+79161234567", "RU"),
        ("79161234567", "RU", "+79161234567", "RU"),
        ("9161234567", "RU", "+79161234567", "RU"),
        ("8 (495) 123-45-67", "RU", "+74951234567", "RU"),
        ("810380981234567", "RU", "+380981234567", "UA"),
        ("00380981234567", "RU", "+380981234567", "UA"),
        ("380 98 123 4567", "RU", "+380981234567", "UA"),
        ("77011234567", "RU", "+77011234567", "KZ"),
        ("4930100200", "DE", "+4930100200", "DE"),
        ("+4930100200", "UA", "+4930100200", "DE"),
    ],
)
def test_national_international_and_foreign_forms_normalize(
    raw: str, region: str, e164: str, number_region: str
) -> None:
    number = normalize(raw, region)
    assert (number.e164, number.kind, number.region) == (e164, NumberKind.E164, number_region)


@pytest.mark.parametrize(
    ("raw", "region", "e164", "extension"),
    [
        ("+7 916 123-45-67 доб. 123", "RU", "+79161234567", "123"),
        ("+74951234567;ext=12", "RU", "+74951234567", "12"),
        ("098-123-45-67 ext. 12", "UA", "+380981234567", "12"),
        ("0981234567#12", "UA", "+380981234567", "12"),
        ("+380981234567x12", "UA", "+380981234567", "12"),
    ],
)
def test_extensions_are_kept_apart_from_the_number(raw: str, region: str, e164: str, extension: str) -> None:
    number = normalize(raw, region)
    assert (number.kind, number.e164, number.extension) == (NumberKind.E164, e164, extension)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "anonymous",
        "Anonymous",
        "<unknown>",
        "unknown",
        "restricted",
        "asterisk",
        "Anonymous <sip:anonymous@anonymous.invalid>",
        "  ",
    ],
)
def test_anonymous_callers_have_no_number(raw: str) -> None:
    assert normalize(raw, "UA") == PhoneNumber(raw=raw, e164=None, kind=NumberKind.ANONYMOUS)


@pytest.mark.parametrize("raw", ["101", "1001", "sip:101@pbx", "PJSIP/101"])
def test_extensions_are_internal_not_public(raw: str) -> None:
    number = normalize(raw, "UA")
    assert number.e164 is None
    assert number.kind in {NumberKind.INTERNAL, NumberKind.INVALID}
    if raw.isdigit():
        assert number.kind is NumberKind.INTERNAL


def test_a_short_service_number_longer_than_an_extension_is_short() -> None:
    assert normalize("112", "UA", internal_max_digits=2).kind is NumberKind.SHORT


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("0000000000", "RU"),
        ("2345678", "UA"),
        ("+", "UA"),
        ("hello world", "UA"),
        ("0981234567", ""),
        ("9" * 400, "UA"),
        ("+38098123456789012345", "UA"),
        ("\x00\xff☎", "UA"),
    ],
)
def test_garbage_and_impossible_numbers_are_invalid_with_raw_kept(raw: str, region: str) -> None:
    number = normalize(raw, region)
    assert number.e164 is None
    assert number.kind is NumberKind.INVALID
    assert number.raw == raw


@given(st.text(max_size=80), st.sampled_from(["UA", "RU", "DE", "US", "", "ZZ"]))
def test_normalize_never_raises_and_e164_is_canonical(raw: str, region: str) -> None:
    number = normalize(raw, region)
    assert number.raw == raw
    if number.e164 is not None:
        assert number.kind is NumberKind.E164
        assert number.e164.startswith("+")
        assert e164_digits(number.e164).isdigit()
        assert normalize(number.e164, region).e164 == number.e164


def test_outcome_external_object_carries_raw_and_e164() -> None:
    assert normalize("0981234567", "UA").to_json() == {"raw": "0981234567", "e164": "+380981234567"}
