"""``pbxlink check-config``: validate a configuration the way ``nginx -t`` does.

Exit 0 and print the effective configuration (secrets redacted), or exit 78 (EX_CONFIG) and list
every problem with its key path on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pbxlink.daemon.config import Settings, load_settings
from pbxlink.foundation.config import to_toml
from pbxlink.foundation.errors import EX_CONFIG, ConfigError, ConfigProblem


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The config flags every command that reads the config shares."""
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="main TOML file; conf.d/*.toml beside it is read too (default: embedded defaults only)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting (repeatable), e.g. --set ami.port=5039",
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("file", nargs="?", type=Path, default=None, help="the config file (same as -c)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing when the config is valid")


def _check_adapter_sections(settings: Settings) -> None:
    """The CRM adapter's [adapter]/[crm] sections, when the file has them, by the adapter's rules."""
    if not settings.adapter and not settings.crm:
        return
    from pbxlink.rules.settings import SettingsError, parse_settings  # noqa: PLC0415

    try:
        parse_settings({"adapter": dict(settings.adapter), "crm": dict(settings.crm)})
    except SettingsError as exc:
        raise ConfigError([_problem(text) for text in exc.problems]) from exc


def _problem(text: str) -> ConfigProblem:
    path, sep, reason = text.partition(": ")
    return ConfigProblem(path, reason) if sep else ConfigProblem("", text)


def main(args: argparse.Namespace) -> int:
    path: Path | None = args.file or args.config
    if args.file is not None and args.config is not None and args.file != args.config:
        print("pbxlink check-config: give the file once (positional or -c)", file=sys.stderr)
        return EX_CONFIG
    try:
        settings = load_settings(path, overrides=args.overrides)
        _check_adapter_sections(settings)
    except ConfigError as exc:
        source = str(path) if path is not None else "embedded defaults"
        print(f"pbxlink: {source}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EX_CONFIG
    if settings.ami.secret is None:
        print(
            "pbxlink: warning: no AMI secret found (set ami.secret_file or the systemd "
            f"credential '{settings.ami.secret_credential}'); `pbxlink run` will refuse to start",
            file=sys.stderr,
        )
    if not args.quiet:
        sys.stdout.write(to_toml(settings))
    return 0
