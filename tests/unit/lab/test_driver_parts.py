"""Parts of the lab driver that need no Asterisk: SIPp rendering, AMI parsing, the route stub."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pbxlab.ami_client import parse_frame
from pbxlab.ports import free_port
from pbxlab.route_stub import RouteStub, StubRoute
from pbxlab.sipp import DTMF_INFO_BLOCK, SippError, render


def test_caller_scenario_carries_a_non_ascii_display_name_as_utf8(tmp_path: Path) -> None:
    params = {
        "CALLER": "+380501110016", "CALLER_NAME": "Олена ☎", "FROM_HOST": "127.0.0.1",
        "EXTRA_HEADERS": "\nPrivacy: id", "ANSWER_TIMEOUT_MS": "1000", "HOLD_MS": "2000",
        "DTMF": "1", "DTMF_DELAY_MS": "500",
    }  # fmt: skip
    xml = render("caller.xml", params, tmp_path / "c.xml", dtmf=True).read_bytes()
    assert 'From: "Олена ☎" <sip:+380501110016@127.0.0.1>'.encode() in xml
    assert b"Privacy: id" in xml
    assert b"Signal=1" in xml
    assert b"{{" not in xml


def test_rendering_refuses_a_scenario_with_placeholders_left(tmp_path: Path) -> None:
    with pytest.raises(SippError, match="RING_MS"):
        render("uas_answer.xml", {"USER": "101", "TALK_MS": "1000"}, tmp_path / "a.xml")


def test_dtmf_block_is_only_inserted_when_asked(tmp_path: Path) -> None:
    params = dict.fromkeys(
        ("CALLER", "CALLER_NAME", "FROM_HOST", "EXTRA_HEADERS", "ANSWER_TIMEOUT_MS", "HOLD_MS",
         "DTMF", "DTMF_DELAY_MS"), "1")  # fmt: skip
    xml = render("caller.xml", params, tmp_path / "c.xml").read_text()
    assert "INFO [next_url]" not in xml
    assert "INFO [next_url]" in DTMF_INFO_BLOCK


def test_ami_frame_parsing_keeps_command_output_and_first_header_value() -> None:
    headers, output = parse_frame(
        b"Response: Success\r\nActionID: 7\r\nOutput: Asterisk 22.10.1\r\nOutput: line 2\r\nActionID: 8"
    )
    assert headers == {"Response": "Success", "ActionID": "7"}
    assert output == ["Asterisk 22.10.1", "line 2"]


def _agi_session(port: int, caller: str) -> list[str]:
    """Play Asterisk's side of a FastAGI request; return the commands the server sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        env = f"agi_network: yes\nagi_request: agi://127.0.0.1/route\nagi_callerid: {caller}\n\n"
        s.sendall(env.encode())
        f = s.makefile("rwb")
        commands = []
        while line := f.readline():
            commands.append(line.decode().strip())
            f.write(b"200 result=1\n")
            f.flush()
        return commands


def test_route_stub_sets_the_three_routing_variables_per_caller() -> None:
    port = free_port()
    stub = RouteStub(
        port, StubRoute("", "unknown_caller"), {"+380501110001": StubRoute("PJSIP/101", "owner", "101")}
    ).start()
    try:
        known = _agi_session(port, "+380501110001")
        unknown = _agi_session(port, "+380999999999")
    finally:
        stub.stop()
    assert known == [
        'SET VARIABLE PBXLINK_ROUTE "PJSIP/101"',
        'SET VARIABLE PBXLINK_ROUTE_REASON "owner"',
        'SET VARIABLE PBXLINK_ROUTE_OWNER "101"',
    ]
    assert unknown[0] == 'SET VARIABLE PBXLINK_ROUTE ""'
    assert [r.caller for r in stub.requests] == ["+380501110001", "+380999999999"]
