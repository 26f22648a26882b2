"""A6: one client per real number, whatever its written form."""

from __future__ import annotations

import pytest

from pbxlink.rules.identity import PhoneFormat, PhoneKind, display, identify


@pytest.mark.parametrize(
    "raw",
    [
        "0981234567",
        "380981234567",
        "+380981234567",
        "098 123 45 67",
        "+38 (098) 123-45-67",
        "00380981234567",
        "80981234567",
        "8-098-123-45-67",
        "tel:+380981234567",
        "sip:+380981234567@trunk",
    ],
)
def test_ukrainian_forms_of_one_number_share_one_identity(raw: str) -> None:
    assert identify(raw, "UA").e164 == "+380981234567"


@pytest.mark.parametrize(
    "raw", ["89161234567", "8 916 123 45 67", "+79161234567", "79161234567", "9161234567"]
)
def test_russian_8_prefix_forms_share_one_identity(raw: str) -> None:
    assert identify(raw, "RU").e164 == "+79161234567"


def test_default_region_comes_from_the_line_so_a_ua_number_on_a_ru_line_still_resolves() -> None:
    assert identify("380981234567", "RU").e164 == "+380981234567"
    assert identify("00380981234567", "RU").e164 == "+380981234567"


@pytest.mark.parametrize(
    "raw",
    ["", "anonymous", "Anonymous <sip:anonymous@anonymous.invalid>", "unknown", "Restricted", "asterisk"],
)
def test_anonymous_callers_get_no_identity(raw: str) -> None:
    found = identify(raw, "UA")
    assert found.kind is PhoneKind.ANONYMOUS
    assert found.e164 is None
    assert found.raw == raw


def test_extensions_are_internal_not_clients() -> None:
    assert identify("101", "UA").kind is PhoneKind.INTERNAL


@pytest.mark.parametrize("raw", ["0000000000", "garbage!!", "+", "12345678901234567890"])
def test_garbage_is_invalid_and_keeps_the_raw_form(raw: str) -> None:
    found = identify(raw, "RU")
    assert found.kind is PhoneKind.INVALID
    assert found.e164 is None
    assert found.raw == raw


def test_extension_after_the_number_is_kept_apart() -> None:
    found = identify("098-123-45-67 ext. 12", "UA")
    assert (found.e164, found.extension) == ("+380981234567", "12")


def test_display_follows_the_format_setting() -> None:
    assert display("+380981234567", PhoneFormat.E164) == "+380981234567"
    assert display("+380981234567", PhoneFormat.INTERNATIONAL) == "+380 98 123 4567"
    assert display("+380981234567", PhoneFormat.NATIONAL) == "098 123 4567"
