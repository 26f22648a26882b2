"""AmiSettings: checked when built, the secret kept out of repr."""

from __future__ import annotations

import pytest

from pbxlink.daemon.amiclient.shell import AmiSettings


def test_defaults_are_valid_and_match_asterisk_defaults() -> None:
    settings = AmiSettings()
    assert (settings.host, settings.port, settings.events) == ("127.0.0.1", 5038, "on")
    assert settings.max_frame_bytes == 1 << 20


def test_secret_is_not_in_repr() -> None:
    assert "hunter2" not in repr(AmiSettings(secret="hunter2"))


def test_every_non_positive_timer_is_named() -> None:
    with pytest.raises(ValueError, match="ping_interval, ping_timeout") as caught:
        AmiSettings(ping_interval=0, ping_timeout=-1)
    assert "action_timeout" not in str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"backoff_initial": 5.0, "backoff_max": 1.0}, "backoff_max"),
        ({"max_frame_bytes": 100}, "max_frame_bytes"),
        ({"queue_high_water": 1}, "queue_high_water"),
        ({"port": 70000}, "port out of range"),
        ({"secret": "a\r\nAction: Originate"}, "secret must not contain line breaks"),
        ({"username": "x\ny"}, "username must not contain line breaks"),
    ],
)
def test_bad_settings_are_refused_with_the_field_named(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AmiSettings(**change)  # type: ignore[arg-type]
