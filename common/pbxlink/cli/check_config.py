"""``pbxlink check-config``: validate a configuration the way ``nginx -t`` does.

Every process reads the same file with the same loader; this command loads it as each of them
(the daemon and the CRM adapter) and reports every problem of every section at once, each with its
key path, on stderr with exit 78 (EX_CONFIG). Else it exits 0 and prints the effective
configuration (secrets redacted).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pbxlink.adapters import config as adapter_config
from pbxlink.daemon import config as daemon_config
from pbxlink.foundation.config import add_config_arguments, to_toml
from pbxlink.foundation.errors import EX_CONFIG, ConfigError, ConfigProblem
from pbxlink.gateway import config as gateway_config

# The adapter's own tables, printed after the daemon's (whose effective config has the shared ones).
_ADAPTER_SECTIONS = ("adapter", "crm")
_GATEWAY_SECTIONS = ("gateway",)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("file", nargs="?", type=Path, default=None, help="the config file (same as -c)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing when the config is valid")


def _load(loader: Callable[[], Any], problems: list[ConfigProblem]) -> Any:
    """Run one process's loader; add its problems to ``problems`` (those already there once)."""
    try:
        return loader()
    except ConfigError as exc:
        problems.extend(p for p in exc.problems if p not in problems)
        return None


def main(args: argparse.Namespace) -> int:
    path: Path | None = args.file or args.config
    if args.file is not None and args.config is not None and args.file != args.config:
        print("pbxlink check-config: give the file once (positional or -c)", file=sys.stderr)
        return EX_CONFIG
    problems: list[ConfigProblem] = []
    daemon = _load(lambda: daemon_config.load_settings(path, overrides=args.overrides), problems)
    adapter = _load(lambda: adapter_config.load_settings(path, overrides=args.overrides), problems)
    gateway = _load(lambda: gateway_config.load_settings(path, overrides=args.overrides), problems)
    if problems or daemon is None or adapter is None or gateway is None:
        source = str(path) if path is not None else "embedded defaults"
        print(f"pbxlink: {source}: {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EX_CONFIG
    if daemon.ami.secret is None:
        print(
            "pbxlink: warning: no AMI secret found (set ami.secret_file or the systemd "
            f"credential '{daemon.ami.secret_credential}'); `pbxlink run` will refuse to start",
            file=sys.stderr,
        )
    for warning in _gateway_warnings(gateway, adapter):
        print(f"pbxlink: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        sys.stdout.write(to_toml(daemon))
        sys.stdout.write("\n" + to_toml(adapter, _ADAPTER_SECTIONS))
        sys.stdout.write("\n" + to_toml(gateway, _GATEWAY_SECTIONS))
    return 0


def _gateway_warnings(gateway: gateway_config.Settings, adapter: adapter_config.Settings) -> list[str]:
    """What the gateway will refuse at start (secrets not found here) and sources no request rule
    names (their requests would all be logged as unmatched)."""
    warnings = [
        f"{p}; `pbxlink gateway` will refuse to start"
        for p in gateway_config.missing_secrets(gateway.gateway)
    ]
    rules = adapter.crm.requests.rules
    if not any(not rule.sources for rule in rules):
        named = {source for rule in rules for source in rule.sources}
        warnings.extend(
            f"{where}: no [[crm.requests.rules]] names the source {source!r}; its requests match no rule"
            for source, where in gateway_config.source_names(gateway.gateway).items()
            if source not in named
        )
    return warnings
