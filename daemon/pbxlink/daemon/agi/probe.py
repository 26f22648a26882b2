"""Ask a FastAGI route server the way Asterisk's res_agi does (for admins, tests and bench).

`ask()` opens the connection, sends the ``agi_*`` environment block and one empty line,
answers every command with ``200 result=1`` until the server closes, and returns the channel
variables the server set. `pbxlink route-probe` (see `main`) prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from dataclasses import dataclass, field

__all__ = ["AgiSession", "agi_environment", "ask", "main"]

_SET = re.compile(r'^SET VARIABLE (\w+) "((?:[^"\\]|\\.)*)"$')


@dataclass
class AgiSession:
    variables: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    closed_by_server: bool = False


def agi_environment(
    port: int,
    *,
    caller: str,
    line: str,
    uniqueid: str = "1700000000.1",
    linkedid: str | None = None,
    script: str = "route",
    host: str = "127.0.0.1",
) -> bytes:
    """The environment block res_agi sends for AGI(agi://host:port/script,line[,linkedid])."""
    env = {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://{host}:{port}/{script}",
        "agi_channel": "PJSIP/trunk-00000001",
        "agi_language": "en",
        "agi_type": "PJSIP",
        "agi_uniqueid": uniqueid,
        "agi_version": "22.10.1",
        "agi_callerid": caller,
        "agi_calleridname": "\u041e\u043b\u044c\u0433\u0430",  # a Cyrillic display name
        "agi_callingpres": "0",
        "agi_dnid": line,
        "agi_rdnis": "unknown",
        "agi_context": "pbxlink-inbound",
        "agi_extension": line,
        "agi_priority": "11",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "140000000000000",
        "agi_arg_1": line,
    }
    if linkedid is not None:
        env["agi_arg_2"] = linkedid
    return "".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n"


async def ask(
    port: int,
    *,
    caller: str,
    line: str = "4930100200",
    uniqueid: str = "1700000000.1",
    linkedid: str | None = None,
    script: str = "route",
    host: str = "127.0.0.1",
    reply: bytes = b"200 result=1\n",
) -> AgiSession:
    """One AGI() against agi://host:port/script; returns what the server set."""
    reader, writer = await asyncio.open_connection(host, port)
    session = AgiSession()
    try:
        writer.write(
            agi_environment(
                port, caller=caller, line=line, uniqueid=uniqueid, linkedid=linkedid, script=script, host=host
            )
        )
        await writer.drain()
        while True:
            raw = await reader.readline()
            if not raw:
                session.closed_by_server = True
                break
            command = raw.decode("utf-8", errors="replace").rstrip("\n")
            session.commands.append(command)
            match = _SET.match(command)
            if match is not None:
                session.variables[match.group(1)] = re.sub(r"\\(.)", r"\1", match.group(2))
            writer.write(reply)
            await writer.drain()
    finally:
        writer.close()
    return session


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """`pbxlink route-probe CALLER LINE [--host --port --path]`."""
    parser.add_argument("caller", help="caller number as the trunk sends it")
    parser.add_argument("line", help="the DID called")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4573)
    parser.add_argument("--path", default="route")


def main(args: argparse.Namespace) -> int:
    """`pbxlink route-probe CALLER LINE`: print what the running daemon would route."""
    try:
        session = asyncio.run(
            asyncio.wait_for(
                ask(args.port, caller=args.caller, line=args.line, script=args.path, host=args.host), 5
            )
        )
    except (OSError, TimeoutError) as exc:
        print(f"no answer from agi://{args.host}:{args.port}/{args.path}: {exc}")
        return 1
    for name, value in session.variables.items():
        print(f"{name}={value}")
    return 0 if session.variables else 1
