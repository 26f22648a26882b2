"""The ``pbxlink`` command.

Each subcommand lives in the module that does its work. That module exposes two functions:

    def configure_parser(parser: argparse.ArgumentParser) -> None   # add its flags
    def main(args: argparse.Namespace) -> int                       # do the work, return the exit status

and is registered in :data:`COMMANDS` below. Only the chosen subcommand's module is imported, so
``pbxlink version`` stays fast and a problem in one part cannot break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Command:
    module: str
    help: str


COMMANDS: dict[str, Command] = {
    "run": Command("pbxlink.daemon.runtime", "run the daemon: AMI -> tracker -> outbox -> MQTT, FastAGI"),
    "check-config": Command("pbxlink.cli.check_config", "validate the config, print the effective one"),
    "replay": Command("pbxlink.daemon.replay", "print the outcomes of a recorded AMI session"),
    "record": Command("pbxlink.daemon.amiclient.record", "record a raw AMI session to a file"),
    "adapter": Command("pbxlink.adapters.service", "run a CRM adapter: MQTT outcomes -> rules -> CRM"),
    "crm": Command("pbxlink.adapters.crm_cli", "show the embedded CRM's records"),
    "explain": Command("pbxlink.adapters.explain", "explain the CRM actions for a recorded AMI session"),
    "route-probe": Command(
        "pbxlink.daemon.agi.probe", "ask the running FastAGI router what it would route for a caller"
    ),
    "schema": Command("pbxlink.cli.schema", "write or check the outcome JSON Schema (from the wire model)"),
    "version": Command("pbxlink.cli", "print the version"),
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """``pbxlink version`` has no flags."""
    del parser


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    if isinstance(argv, argparse.Namespace):  # called back as the `version` subcommand
        from pbxlink.daemon import __version__  # noqa: PLC0415

        print(f"pbxlink {__version__}")
        return 0
    args_list = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(
        prog="pbxlink",
        description="Asterisk call outcomes, responsible-manager routing and CRM rules over MQTT.",
    )
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    for name, command in COMMANDS.items():
        parser = sub.add_parser(name, help=command.help, description=command.help)
        if name == chosen:
            module = _import(command.module)
            if module is None:
                print(f"pbxlink {name}: not in this build ({command.module})", file=sys.stderr)
                return 2
            module.configure_parser(parser)
            parser.set_defaults(handler=module.main)
    args = top.parse_args(args_list)
    result: int = args.handler(args)
    return result


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise


if __name__ == "__main__":
    raise SystemExit(main())
