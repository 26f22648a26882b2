"""FastAGI wire format (pure): the environment block Asterisk sends, commands and replies.

Asterisk opens a TCP connection, sends ``agi_<name>: <value>`` lines and one empty line, then
waits for commands (one per line) and answers each with ``200 result=<n> [(data)]``, ``5xx``
on errors, and possibly an unsolicited ``HANGUP`` when the caller hangs up (AGISIGHUP).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pbxlink.foundation.errors import PbxlinkError
from pbxlink.routing.model import RouteRequest

__all__ = [
    "AgiEnvironment",
    "AgiProtocolError",
    "AgiReply",
    "parse_agi_environment",
    "parse_agi_reply",
    "set_variable_command",
]

MAX_ENV_LINES = 200


class AgiProtocolError(PbxlinkError):
    """What a peer sent is not a FastAGI request."""


@dataclass(frozen=True, slots=True)
class AgiEnvironment:
    """The ``agi_*`` variables of one request (names without the ``agi_`` prefix)."""

    variables: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        return self.variables.get(name, default)

    @property
    def network_script(self) -> str:
        """What follows ``agi://host:port/`` (``route``), without a query string."""
        return self.get("network_script").split("?", 1)[0].strip("/")

    @property
    def args(self) -> tuple[str, ...]:
        found: list[str] = []
        index = 1
        while f"arg_{index}" in self.variables:
            found.append(self.variables[f"arg_{index}"])
            index += 1
        return tuple(found)

    def route_request(self) -> RouteRequest:
        """AGI(agi://…/route,<line>,<linkedid>[,<caller>]) → RouteRequest.

        Without arguments the line is the dialed extension and the caller is agi_callerid.
        """
        args = self.args
        line = args[0] if args and args[0] else self.get("extension")
        linkedid = args[1] if len(args) > 1 and args[1] else None
        caller = args[2] if len(args) > 2 and args[2] else self.get("callerid")
        return RouteRequest(
            caller=caller,
            line=line,
            uniqueid=self.get("uniqueid"),
            linkedid=linkedid,
            channel=self.get("channel"),
        )


def parse_agi_environment(block: bytes) -> AgiEnvironment:
    """The bytes up to and including the empty line → AgiEnvironment, or AgiProtocolError."""
    text = block.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if len(lines) > MAX_ENV_LINES:
        raise AgiProtocolError(f"more than {MAX_ENV_LINES} environment lines")
    variables: dict[str, str] = {}
    for raw_line in lines:
        line = raw_line.rstrip("\r")
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.startswith("agi_") or not name[4:].replace("_", "").isalnum():
            raise AgiProtocolError(f"not an AGI environment line: {line[:80]!r}")
        variables[name[4:]] = value.strip()
    if "network_script" not in variables and "request" not in variables:
        raise AgiProtocolError("no agi_request / agi_network_script in the environment")
    if "network_script" not in variables:
        request = variables["request"]
        _, _, after_scheme = request.partition("://")
        _, _, script = after_scheme.partition("/")
        variables["network_script"] = script
    return AgiEnvironment(variables)


@dataclass(frozen=True, slots=True)
class AgiReply:
    code: int  # 200, 510, 511, 520 …; 0 for HANGUP
    result: str
    hangup: bool = False


def parse_agi_reply(line: bytes) -> AgiReply:
    """One reply line → AgiReply; ``HANGUP`` lines are flagged; garbage is AgiProtocolError."""
    text = line.decode("utf-8", errors="replace").strip()
    if text.upper() == "HANGUP":
        return AgiReply(code=0, result="", hangup=True)
    code_text, _, rest = text.partition(" ")
    if len(code_text) != 3 or not code_text.isdigit():
        raise AgiProtocolError(f"not an AGI reply: {text[:80]!r}")
    result = rest.partition("result=")[2].split(" ", 1)[0] if "result=" in rest else rest
    return AgiReply(code=int(code_text), result=result)


def set_variable_command(name: str, value: str) -> bytes:
    """``SET VARIABLE NAME "value"`` with quotes and backslashes escaped, one line."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"bad channel variable name {name!r}")
    cleaned = value.replace("\r", " ").replace("\n", " ")
    escaped = cleaned.replace("\\", "\\\\").replace('"', '\\"')
    return f'SET VARIABLE {name} "{escaped}"\n'.encode()
