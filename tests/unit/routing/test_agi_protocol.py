"""FastAGI wire format: environment parsing, reply parsing, SET VARIABLE quoting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxlink.daemon.agi.probe import agi_environment
from pbxlink.daemon.agi.protocol import (
    AgiProtocolError,
    AgiReply,
    parse_agi_environment,
    parse_agi_reply,
    set_variable_command,
)
from pbxlink.routing.model import RouteRequest


def test_res_agi_environment_becomes_a_route_request() -> None:
    env = parse_agi_environment(
        agi_environment(4573, caller="0981234567", line="4930100200", uniqueid="1763.12", linkedid="1763.10")
    )
    assert env.network_script == "route"
    assert env.get("calleridname") == "\u041e\u043b\u044c\u0433\u0430"
    assert env.route_request() == RouteRequest(
        caller="0981234567",
        line="4930100200",
        uniqueid="1763.12",
        linkedid="1763.10",
        channel="PJSIP/trunk-00000001",
    )


def test_without_arguments_the_line_is_the_extension_and_linkedid_unknown() -> None:
    block = (
        b"agi_request: agi://127.0.0.1/route\nagi_extension: 4930100200\n"
        b"agi_callerid: unknown\nagi_uniqueid: 1.2\n\n"
    )
    env = parse_agi_environment(block)
    assert env.network_script == "route"
    assert env.route_request() == RouteRequest(
        caller="unknown", line="4930100200", uniqueid="1.2", linkedid=None
    )


def test_query_string_and_slashes_do_not_change_the_script() -> None:
    env = parse_agi_environment(b"agi_network_script: /route?x=1\n\n")
    assert env.network_script == "route"


@pytest.mark.parametrize(
    "block",
    [
        b"hello\n\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"agi_callerid: 1\n\n",
        b"agi_bad name: x\nagi_request: agi://x/route\n\n",
        b"".join(b"agi_x%d: 1\n" % i for i in range(500)) + b"\n",
    ],
)
def test_non_agi_blocks_are_protocol_errors(block: bytes) -> None:
    with pytest.raises(AgiProtocolError):
        parse_agi_environment(block)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"200 result=1\n", AgiReply(200, "1")),
        (b"200 result=0 (timeout)\n", AgiReply(200, "0")),
        (b"510 Invalid or unknown command\n", AgiReply(510, "Invalid or unknown command")),
        (
            b"511 Command Not Permitted on a dead channel or intercept routine\n",
            AgiReply(511, "Command Not Permitted on a dead channel or intercept routine"),
        ),
        (b"HANGUP\n", AgiReply(0, "", hangup=True)),
    ],
)
def test_replies_parse(line: bytes, reply: AgiReply) -> None:
    assert parse_agi_reply(line) == reply


def test_garbage_reply_is_a_protocol_error() -> None:
    with pytest.raises(AgiProtocolError):
        parse_agi_reply(b"whatever\n")


def test_set_variable_quotes_and_escapes() -> None:
    assert set_variable_command("PBXLINK_ROUTE", "PJSIP/101") == b'SET VARIABLE PBXLINK_ROUTE "PJSIP/101"\n'
    assert set_variable_command("X", "") == b'SET VARIABLE X ""\n'
    assert set_variable_command("X", 'a"b\\c\nd') == b'SET VARIABLE X "a\\"b\\\\c d"\n'
    with pytest.raises(ValueError, match="variable name"):
        set_variable_command("X Y", "1")


@given(st.binary(max_size=400))
def test_any_bytes_parse_or_raise_the_one_error(block: bytes) -> None:
    try:
        parse_agi_environment(block)
    except AgiProtocolError:
        return
