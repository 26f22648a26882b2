"""The configuration: layering, strictness, secrets."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

from pbxlink.adapters.config import Settings as AdapterSettings
from pbxlink.adapters.config import load_settings as load_adapter_settings
from pbxlink.daemon.config import Settings as DaemonSettings
from pbxlink.daemon.config import load_settings
from pbxlink.foundation.config import SECTION_OWNERS, Secret, parse_section, to_toml
from pbxlink.foundation.errors import EX_CONFIG, ConfigError, ConfigProblem
from pbxlink.gateway.config import Settings as GatewayProcessSettings
from pbxlink.gateway.config import load_settings as load_gateway_settings

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "config" / "pbxlink.toml"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbxlink.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )


def test_embedded_defaults_load_without_any_file() -> None:
    settings = load_settings(None, environ={})
    assert settings.ami.host == "127.0.0.1"
    assert settings.ami.port == 5038
    assert settings.node.name == "pbx1"
    assert settings.ami.secret is None


def test_the_shipped_example_passes_check_config() -> None:
    result = run_cli("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "[ami]" in result.stdout
    assert 'name = "pbx1"' in result.stdout
    for section in ("[adapter]", "[crm]", "[crm.inquiries.on_missed]", "[mqtt]", "[log]", "[gateway]"):
        assert f"\n{section}\n" in result.stdout


_COMMENTED_KEY = re.compile(r"^# ?(?=\[|[A-Za-z_\"][\w\".-]*\s*=)", re.MULTILINE)


def _missing_keys(cls: Any, raw: Any, path: str) -> list[str]:
    missing: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        where = f"{path}.{f.name}" if path else f.name
        if tp == Secret | None:
            continue  # never written: filled from <name>_file / <name>_credential
        if f.name not in raw:
            missing.append(where)
            continue
        args = typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            missing += _missing_keys(tp, raw[f.name], where)
        elif typing.get_origin(tp) is tuple and args and dataclasses.is_dataclass(args[0]):
            for i, item in enumerate(raw[f.name]):
                missing += _missing_keys(args[0], item, f"{where}[{i}]")
    return missing


@pytest.mark.parametrize(
    "process", [DaemonSettings, AdapterSettings, GatewayProcessSettings], ids=["daemon", "adapter", "gateway"]
)
def test_the_shipped_example_shows_every_key_of_every_section_and_its_examples_are_valid(
    process: type[Any],
) -> None:
    # Commented keys count as shown; uncommented, they must still be a valid configuration.
    document = tomllib.loads(_COMMENTED_KEY.sub("", EXAMPLE.read_text(encoding="utf-8")))
    assert set(document) == set(SECTION_OWNERS)
    own = {f.name for f in dataclasses.fields(process)}
    problems: list[ConfigProblem] = []
    assert parse_section(process, {k: v for k, v in document.items() if k in own}, "", problems) is not None
    assert problems == []
    assert _missing_keys(process, document, "") == []


def test_unknown_key_and_wrong_type_exit_78_naming_every_path(tmp_path: Path) -> None:
    cfg = tmp_path / "pbxlink.toml"
    cfg.write_text('[ami]\nport = "five"\nhots = "x"\n[mqtt.tls_options]\na = 1\n[nodes]\nname = "x"\n')
    result = run_cli("check-config", "-c", str(cfg))
    assert result.returncode == EX_CONFIG
    assert result.stdout == ""
    for path in ("ami.port", "ami.hots", "mqtt.tls_options", "nodes"):
        assert f"  {path}: " in result.stderr, result.stderr
    assert "expected an integer, got string 'five'" in result.stderr
    assert "4 problem(s)" in result.stderr


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[ami\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, environ={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_layers_defaults_then_file_then_conf_d_then_flags(tmp_path: Path) -> None:
    (tmp_path / "pbxlink.toml").write_text('[ami]\nport = 5100\nhost = "10.0.0.1"\n[node]\nname = "a"\n')
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "10-port.toml").write_text("[ami]\nport = 5200\n")
    (conf_d / "20-name.toml").write_text('[node]\nname = "b"\n')
    settings = load_settings(tmp_path / "pbxlink.toml", overrides=["node.name=c"], environ={})
    assert settings.ami.host == "10.0.0.1"  # from the file
    assert settings.ami.port == 5200  # conf.d beats the file
    assert settings.node.name == "c"  # a flag beats conf.d
    assert settings.ami.username == "pbxlink"  # default untouched


def test_override_values_are_typed_and_checked() -> None:
    settings = load_settings(None, overrides=["ami.port=5039", "http.enabled=false"], environ={})
    assert settings.ami.port == 5039
    assert settings.http.enabled is False
    with pytest.raises(ConfigError) as info:
        load_settings(None, overrides=["ami.port=99999", "nonsense"], environ={})
    text = str(info.value)
    assert "ami.port: 99999 is not a TCP port" in text
    assert "nonsense: a --set flag looks like section.key=value" in text


def test_settings_are_frozen() -> None:
    settings = load_settings(None, environ={})
    with pytest.raises(AttributeError):
        settings.ami.port = 1  # type: ignore[misc]


def test_routing_rules_are_parsed_as_typed_records(tmp_path: Path) -> None:
    cfg = tmp_path / "r.toml"
    cfg.write_text(
        '[[routing.rules]]\nname = "reviews"\nlines = ["4930100300"]\naction = "target"\n'
        'target = "PJSIP/103"\n[[routing.rules]]\nname = "bad"\naction = "sometimes"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    assert "routing.rules[1].action: must be one of 'owner', 'off', 'target'" in str(info.value)
    cfg.write_text('[[routing.rules]]\nname = "reviews"\nlines = ["4930100300"]\naction = "off"\n')
    rule = load_settings(cfg, environ={}).routing.rules[0]
    assert (rule.name, rule.lines, rule.action) == ("reviews", ("4930100300",), "off")


def test_secret_written_inline_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('[ami]\nsecret = "hunter2"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    assert "ami.secret: secrets are not written in the config" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_secret_from_file_and_from_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "ami.secret").write_text("from-file\n")
    settings = load_settings(None, overrides=[f'ami.secret_file="{tmp_path / "ami.secret"}"'], environ={})
    assert settings.ami.secret == Secret("from-file")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "ami-secret").write_text("from-systemd")
    (creds / "mqtt-password").write_text("mqtt-pw")
    settings = load_settings(None, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert settings.ami.secret is not None
    assert settings.ami.secret.reveal() == "from-systemd"
    assert settings.mqtt.password == Secret("mqtt-pw")


def test_unreadable_or_empty_secret_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"ami\.secret_file: secret file .* is empty"):
        load_settings(None, overrides=[f'ami.secret_file="{tmp_path / "empty"}"'], environ={})
    with pytest.raises(ConfigError, match="cannot read secret file"):
        load_settings(None, overrides=[f'ami.secret_file="{tmp_path / "missing"}"'], environ={})


def test_run_requires_the_ami_secret() -> None:
    with pytest.raises(ConfigError, match="no AMI secret"):
        load_settings(None, environ={}, require_secrets=True)


def test_no_secret_appears_in_check_config_output(tmp_path: Path) -> None:
    (tmp_path / "ami.secret").write_text("s3cr3t-AMI-value")
    (tmp_path / "mqtt.pw").write_text("s3cr3t-MQTT-value")
    result = run_cli(
        "check-config",
        "--set",
        f'ami.secret_file="{tmp_path / "ami.secret"}"',
        "--set",
        f'mqtt.password_file="{tmp_path / "mqtt.pw"}"',
    )
    assert result.returncode == 0, result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr
    assert 'secret = "<redacted>"' in result.stdout
    assert 'password = "<redacted>"' in result.stdout


def test_secret_repr_is_redacted() -> None:
    secret = Secret("topsecret")
    assert "topsecret" not in repr(secret)
    assert "topsecret" not in f"{secret}"
    assert secret.reveal() == "topsecret"


def test_effective_config_round_trips_through_toml(tmp_path: Path) -> None:
    settings = load_settings(EXAMPLE, environ={})
    dumped = tmp_path / "dump.toml"
    dumped.write_text(to_toml(settings).replace('secret = "<redacted>"', ""))
    assert load_settings(dumped, environ={}) == settings


def test_an_unknown_key_does_not_hide_a_bad_value_beside_it(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text("[ami]\nport = 70000\nhots = 1\n[agi]\ndeadline_ms = -1\nbogus = true\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    paths = [p.path for p in info.value.problems]
    assert paths == ["ami.hots", "agi.bogus", "ami.port", "agi.deadline_ms"]


def test_check_config_validates_the_adapter_sections_too(tmp_path: Path) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text('[adapter]\nname = "crm"\ndatabse = "x"\n[crm.tasks]\nmode = "sometimes"\n')
    result = run_cli("check-config", str(cfg))
    assert result.returncode == EX_CONFIG
    assert "adapter.databse: unknown key" in result.stderr
    assert "crm.tasks.mode: must be one of" in result.stderr
    cfg.write_text('[adapter]\nname = "crm"\n[crm.tasks]\nmode = "one_each"\n')
    assert run_cli("check-config", "-q", str(cfg)).returncode == 0


def test_check_config_output_loads_back_as_the_same_settings_for_every_process(tmp_path: Path) -> None:
    rules = (
        '[crm.phone.line_regions]\n"4930100200" = "de"\n'
        '[[crm.requests.rules]]\nname = "repairs"\nkeywords = "Ремонт; сломался"\naction = "support"\n'
        'address = "role"\nrole = "service"\n[[crm.orders.rules]]\nname = "r"\nstatus = "cancelled"\n'
    )
    source = tmp_path / "src" / "pbxlink.toml"
    (tmp_path / "src" / "conf.d").mkdir(parents=True)
    source.write_text(EXAMPLE.read_text(encoding="utf-8"))
    (tmp_path / "src" / "conf.d" / "50-rules.toml").write_text(rules)
    result = run_cli("check-config", str(source))
    assert result.returncode == 0, result.stderr
    dumped = tmp_path / "dump" / "pbxlink.toml"
    dumped.parent.mkdir()
    dumped.write_text(result.stdout)
    assert load_settings(dumped, environ={}) == load_settings(source, environ={})
    adapter = load_adapter_settings(dumped, environ={})
    assert adapter == load_adapter_settings(source, environ={})
    assert adapter.crm.phone.region_for("4930100200") == "DE"
    assert adapter.crm.requests.rules[0].keywords == ("ремонт", "сломался")


def test_check_config_validates_the_gateway_sections_and_reads_their_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(
        '[gateway.email.service]\nhost = "imap.example"\nusername = "no-at-sign"\nport = 70000\n'
        '[gateway.web."bad name"]\norigins = ["shop.example"]\n'
    )
    result = run_cli("check-config", str(cfg))
    assert result.returncode == EX_CONFIG
    for problem in (
        "gateway.email.service.port: 70000 is not a TCP port",
        "gateway.email.service.password_file: set it (or password_credential)",
        "gateway.email.service.address: an e-mail address",
        "gateway.web.bad name: a source name is letters, digits, - _ . only",
        "gateway.web.bad name.origins: 'shop.example' is not an origin",
    ):
        assert problem in result.stderr
    (tmp_path / "pw").write_text("imap-password\n")
    (tmp_path / "token").write_text("form-token\n")
    cfg.write_text(
        f'[gateway.email.service]\nusername = "service@shop.example"\npassword_file = "{tmp_path / "pw"}"\n'
        f'[gateway.web.site]\ntoken_file = "{tmp_path / "token"}"\n'
        f'[gateway.telegram.bot]\ntoken_credential = "tg-bot"\n'
    )
    result = run_cli("check-config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "gateway.telegram.bot.token: not found" in result.stderr  # a warning: the gateway will refuse
    assert "no [[crm.requests.rules]] names the source 'email:service@shop.example'" in result.stderr
    assert "imap-password" not in result.stdout + result.stderr
    settings = load_gateway_settings(cfg, environ={})
    assert settings.gateway.email["service"].password == Secret("imap-password")
    assert settings.gateway.web["site"].token == Secret("form-token")
