"""The generic loader: a process declares its sections as dataclasses and gets the same rules."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pytest

from pbxlink.foundation.config import (
    AtLeast,
    LogSettings,
    MqttSettings,
    NonEmpty,
    Secret,
    load_config,
    to_toml,
)
from pbxlink.foundation.errors import ConfigError, ConfigProblem


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True, slots=True)
class WidgetSettings:
    colour: Colour = Colour.RED
    count: Annotated[int, AtLeast(1)] = 1
    label: Annotated[str, NonEmpty()] = "w"
    note: str | None = None
    regions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToySettings:
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    log: LogSettings = field(default_factory=LogSettings)
    widget: WidgetSettings = field(default_factory=WidgetSettings)


def test_a_process_reads_its_own_sections_and_leaves_the_named_others_alone(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[widget]\ncolour = "blue"\nnote = ""\n[widget.regions]\n"4930" = "DE"\n[ami]\nport = 1\n')
    settings = load_config(ToySettings, cfg, environ={}, others=("ami",))
    assert settings.widget.colour is Colour.BLUE
    assert settings.widget.note is None  # an empty optional string is "not set"
    assert dict(settings.widget.regions) == {"4930": "DE"}
    with pytest.raises(ConfigError, match=r"ami: unknown key"):
        load_config(ToySettings, cfg, environ={})


def test_enum_bounds_and_checks_report_every_problem_at_once(tmp_path: Path) -> None:
    def no_debug(settings: ToySettings) -> list[ConfigProblem]:
        return [ConfigProblem("log.level", "no debug here")] if settings.log.level == "debug" else []

    with pytest.raises(ConfigError) as info:
        load_config(
            ToySettings,
            None,
            overrides=["widget.colour=green", "widget.count=0", 'widget.label=""', "log.level=debug"],
            environ={},
            checks=(no_debug,),
        )
    assert [str(p) for p in info.value.problems] == [
        "widget.colour: must be one of 'red', 'blue', got 'green'",
        "widget.count: must be >= 1, got 0",
        "widget.label: must not be empty",
        "log.level: no debug here",
    ]


def test_the_mqtt_password_comes_from_its_file_or_the_credential_and_never_shows(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("pw-from-file\n")
    settings = load_config(
        ToySettings, None, overrides=[f'mqtt.password_file="{tmp_path / "pw"}"'], environ={}
    )
    assert settings.mqtt.password == Secret("pw-from-file")
    assert "pw-from-file" not in to_toml(settings)
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "mqtt-password").write_text("pw-from-systemd")
    settings = load_config(ToySettings, None, environ={"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
    assert settings.mqtt.password == Secret("pw-from-systemd")


def test_effective_toml_of_enums_and_tables_loads_back_equal(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[widget]\ncolour = "blue"\ncount = 3\n[widget.regions]\n"49 30" = "DE"\n')
    settings = load_config(ToySettings, cfg, environ={})
    (tmp_path / "dump.toml").write_text(to_toml(settings))
    assert load_config(ToySettings, tmp_path / "dump.toml", environ={}) == settings
