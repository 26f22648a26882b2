"""The generic loader: a process declares its sections as dataclasses and gets the same rules."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pytest

from pbxlink.foundation.config import (
    SECTION_OWNERS,
    AtLeast,
    LogSettings,
    MqttSettings,
    NonEmpty,
    Secret,
    load_config,
    mqtt_problems,
    port_problems,
    to_toml,
)
from pbxlink.foundation.errors import ConfigError, ConfigProblem


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True, slots=True)
class BackendSettings:
    url: str = "https://crm.example"
    api_key_file: Path | None = None
    api_key_credential: str = "widget-api-key"
    api_key: Secret | None = None  # filled from the two keys above


@dataclass(frozen=True, slots=True)
class WidgetSettings:
    colour: Colour = Colour.RED
    count: Annotated[int, AtLeast(1)] = 1
    label: Annotated[str, NonEmpty()] = "w"
    note: str | None = None
    regions: Mapping[str, str] = field(default_factory=dict)
    backend: BackendSettings = field(default_factory=BackendSettings)


@dataclass(frozen=True, slots=True)
class ToySettings:
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    log: LogSettings = field(default_factory=LogSettings)
    widget: WidgetSettings = field(default_factory=WidgetSettings)


def test_a_process_reads_its_own_sections_and_leaves_other_processes_tables_alone(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        '[widget]\ncolour = "blue"\nnote = ""\n[widget.regions]\n"4930" = "DE"\n[ami]\nport = "x"\n'
    )
    settings = load_config(ToySettings, cfg, environ={})
    assert settings.widget.colour is Colour.BLUE
    assert settings.widget.note is None  # an empty optional string is "not set"
    assert dict(settings.widget.regions) == {"4930": "DE"}
    cfg.write_text("ami = 2\n[amy]\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(ToySettings, cfg, environ={})
    assert [p.path for p in info.value.problems] == ["ami", "amy"]
    assert info.value.problems[0].reason == "expected a table, got integer 2"
    assert info.value.problems[1].reason.startswith("unknown key (known here: adapter, agi, ami,")


def test_every_section_of_every_process_has_one_registered_owner() -> None:
    from pbxlink.adapters.config import Settings as AdapterProcess  # noqa: PLC0415
    from pbxlink.daemon.config import Settings as DaemonProcess  # noqa: PLC0415
    from pbxlink.gateway.config import Settings as GatewayProcess  # noqa: PLC0415

    daemon = {f.name for f in dataclasses.fields(DaemonProcess)}
    adapter = {f.name for f in dataclasses.fields(AdapterProcess)}
    gateway = {f.name for f in dataclasses.fields(GatewayProcess)}
    assert daemon | adapter | gateway == set(SECTION_OWNERS)
    shared = {name for name, owner in SECTION_OWNERS.items() if owner == "every process"}
    assert daemon & adapter == daemon & gateway == adapter & gateway == shared


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


def test_tls_files_without_tls_and_a_key_without_its_certificate_are_problems() -> None:
    mqtt = MqttSettings(ca_file=Path("/ca.pem"), key_file=Path("/client.key"))
    assert [str(p) for p in mqtt_problems(mqtt)] == [
        "mqtt.key_file: a private key needs its cert_file",
        "mqtt.ca_file: only used with tls = true; set it too",
        "mqtt.key_file: only used with tls = true; set it too",
    ]
    tls = MqttSettings(tls=True, ca_file=Path("/ca.pem"), cert_file=Path("/c.pem"), key_file=Path("/c.key"))
    assert mqtt_problems(tls) == []
    assert [p.path for p in port_problems(("mqtt.port", 0), ("x.port", 65535), ("y.port", 65536))] == [
        "mqtt.port",
        "y.port",
    ]


def test_a_secret_in_a_sub_section_is_read_by_the_same_rules(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k-from-file\n")
    settings = load_config(ToySettings, None, overrides=[f'widget.backend.api_key_file="{tmp_path / "key"}"'])
    assert settings.widget.backend.api_key == Secret("k-from-file")
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "widget-api-key").write_text("k-from-systemd")
    settings = load_config(ToySettings, None, environ={"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
    assert settings.widget.backend.api_key == Secret("k-from-systemd")
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError) as info:
        load_config(
            ToySettings,
            None,
            overrides=[f'widget.backend.api_key_file="{tmp_path / "empty"}"', 'widget.backend.api_key="x"'],
            environ={},
        )
    assert [p.path for p in info.value.problems] == ["widget.backend.api_key", "widget.backend.api_key_file"]
