"""The ``pbxlink`` command.

Each subcommand lives in the module that does its work. That module exposes two functions:

    def configure_parser(parser: argparse.ArgumentParser) -> None   # add its flags
    def main(args: argparse.Namespace) -> int                       # do the work, return the exit status

and is registered in :data:`COMMANDS` below by a loader function. Only the chosen subcommand's
module is imported, so ``pbxlink version`` stays fast and a problem in one part cannot break the
others.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType


# Each loader imports its module only when called, so only the chosen subcommand's code is
# loaded; they are plain import statements all the same, so import-linter sees (and layers) them.
def _run() -> ModuleType:
    from pbxlink.daemon import runtime  # noqa: PLC0415 - see above

    return runtime


def _check_config() -> ModuleType:
    from pbxlink.cli import check_config  # noqa: PLC0415 - see above

    return check_config


def _replay() -> ModuleType:
    from pbxlink.daemon import replay  # noqa: PLC0415 - see above

    return replay


def _record() -> ModuleType:
    from pbxlink.daemon.amiclient import record  # noqa: PLC0415 - see above

    return record


def _adapter() -> ModuleType:
    from pbxlink.adapters import service  # noqa: PLC0415 - see above

    return service


def _gateway() -> ModuleType:
    from pbxlink.gateway import service  # noqa: PLC0415 - see above

    return service


def _crm() -> ModuleType:
    from pbxlink.adapters import crm_cli  # noqa: PLC0415 - see above

    return crm_cli


def _explain() -> ModuleType:
    from pbxlink.cli import explain  # noqa: PLC0415 - see above

    return explain


def _route_probe() -> ModuleType:
    from pbxlink.daemon.agi import probe  # noqa: PLC0415 - see above

    return probe


def _schema() -> ModuleType:
    from pbxlink.cli import schema  # noqa: PLC0415 - see above

    return schema


def _version() -> ModuleType:
    return sys.modules[__name__]


@dataclass(frozen=True, slots=True)
class Command:
    load: Callable[[], ModuleType]
    help: str


COMMANDS: dict[str, Command] = {
    "run": Command(_run, "run the daemon: AMI -> tracker -> outbox -> MQTT, FastAGI"),
    "check-config": Command(_check_config, "validate the config, print the effective one"),
    "replay": Command(_replay, "print the outcomes of a recorded AMI session"),
    "record": Command(_record, "record a raw AMI session to a file"),
    "adapter": Command(_adapter, "run a CRM adapter: MQTT outcomes -> rules -> CRM"),
    "gateway": Command(_gateway, "run the request gateway: e-mail (IMAP), Telegram, web forms -> MQTT"),
    "crm": Command(_crm, "show the embedded CRM's records"),
    "explain": Command(_explain, "explain the CRM actions for a recorded AMI session"),
    "route-probe": Command(_route_probe, "ask the running FastAGI router what it would route for a caller"),
    "schema": Command(_schema, "write or check the outcome JSON Schema (from the wire model)"),
    "version": Command(_version, "print the version"),
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
            module = command.load()
            module.configure_parser(parser)
            parser.set_defaults(handler=module.main)
    args = top.parse_args(args_list)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
