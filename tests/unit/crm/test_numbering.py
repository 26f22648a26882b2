"""A2: inquiry number templates from the RemOnline article."""

from __future__ import annotations

from datetime import date

import pytest

from pbxlink.rules.numbering import NumberTemplateError, render_number


def test_counter_of_three_characters_is_zero_filled_001_002_003() -> None:
    day = date(2023, 6, 19)
    assert [render_number("{C:3}", n, day) for n in (1, 2, 3)] == ["001", "002", "003"]


def test_plain_counter_and_settable_start_give_28() -> None:
    assert render_number("{C}", 28, date(2023, 6, 19)) == "28"


def test_date_variables_and_literal_text_combine() -> None:
    assert render_number("RO-{Y}{M}{D}-{C:4}", 7, date(2023, 6, 9)) == "RO-20230609-0007"


def test_counter_wider_than_its_width_is_not_cut() -> None:
    assert render_number("{C:3}", 1234, date(2023, 1, 1)) == "1234"


@pytest.mark.parametrize("template", ["{X}", "{C:0}", "{C:abc}", "A{C", "A}{C}"])
def test_bad_templates_are_rejected(template: str) -> None:
    with pytest.raises(NumberTemplateError):
        render_number(template, 1, date(2023, 1, 1))
