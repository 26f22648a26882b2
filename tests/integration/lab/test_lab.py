"""The lab itself is real: Asterisk 22 over AMI, a SIPp call through it, mosquitto."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest
from pbxlab.mosquitto import BrokerHandle
from pbxlab.recording_reader import read_bytes, read_frames
from pbxlab.session import LabSession

pytestmark = pytest.mark.lab


def test_asterisk_reports_version_22_over_ami(asterisk_lab: LabSession) -> None:
    with asterisk_lab.ami() as ami:
        settings = ami.core_settings()
        cli = ami.command("core show version")
    assert settings["AsteriskVersion"].startswith("22."), settings
    assert cli.startswith("Asterisk 22."), cli


def test_ami_events_carry_timestamps(asterisk_lab: LabSession) -> None:
    with asterisk_lab.ami() as ami:
        q = ami.subscribe()
        ami.checked("UserEvent", UserEvent="pbxlab-probe")
        event = ami.wait_event(lambda f: f.get("UserEvent") == "pbxlab-probe", q=q, timeout=5)
    assert float(event["Timestamp"]) > 1e9


def test_a_sipp_call_is_answered_by_the_agent_and_recorded_raw(
    asterisk_lab: LabSession, tmp_path: Path
) -> None:
    rec = tmp_path / "call.ami"
    result = asterisk_lab.run("inbound_answered", record_to=rec)
    assert result.problems == []
    raw = read_bytes(rec)
    assert raw.startswith(b"Asterisk Call Manager/")
    frames = list(read_frames(rec))
    assert frames[0].get("Response") == "Success"  # the login response comes first
    bridged = [f["Channel"] for f in frames if f.get("Event") == "BridgeEnter"]
    assert any(c.startswith("PJSIP/101-") for c in bridged)
    assert any(c.startswith("PJSIP/trunk-") for c in bridged)
    hangups = [f for f in frames if f.get("Event") == "Hangup"]
    assert len(hangups) == 2
    with asterisk_lab.ami() as ami:
        assert ami.channel_count() == 0


# ---- mosquitto: a minimal MQTT 3.1.1 client (stdlib) proves the broker is real --------
def _packet(kind: int, body: bytes) -> bytes:
    length, out = len(body), bytearray([kind])
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out) + body


def _string(s: str) -> bytes:
    return struct.pack("!H", len(s.encode())) + s.encode()


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    head = sock.recv(1)
    if not head:
        raise ConnectionError("broker closed the connection")
    mult, length = 1, 0
    while True:
        b = sock.recv(1)[0]
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return head[0], body


def _connect(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = _string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 30) + _string(client_id)
    sock.sendall(_packet(0x10, body))
    kind, ack = _read_packet(sock)
    assert kind == 0x20, kind
    assert ack[1] == 0, ack
    return sock


def test_mosquitto_round_trips_a_published_message(mosquitto_broker: BrokerHandle) -> None:
    topic, payload = "pbxlink/v1/test/roundtrip", "héllo ☎".encode()
    sub = _connect(mosquitto_broker.port, "pbxlab-sub")
    sub.sendall(_packet(0x82, struct.pack("!H", 1) + _string(topic) + b"\x01"))
    kind, _ = _read_packet(sub)
    assert kind == 0x90  # SUBACK
    pub = _connect(mosquitto_broker.port, "pbxlab-pub")
    pub.sendall(_packet(0x30, _string(topic) + payload))  # QoS 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kind, body = _read_packet(sub)
        if kind >> 4 == 3:
            tlen = struct.unpack("!H", body[:2])[0]
            got_topic = body[2 : 2 + tlen].decode()
            rest = body[2 + tlen :]
            if kind & 0x06:  # QoS 1: packet id precedes the payload
                rest = rest[2:]
            assert (got_topic, rest) == (topic, payload)
            break
    else:
        pytest.fail("no PUBLISH arrived")
    pub.close()
    sub.close()


def _retained(port: int, topic: str) -> bytes | None:
    sub = _connect(port, "pbxlab-retained-reader")
    try:
        sub.sendall(_packet(0x82, struct.pack("!H", 1) + _string(topic) + b"\x00"))
        deadline = time.monotonic() + 3
        sub.settimeout(3)
        while time.monotonic() < deadline:
            kind, body = _read_packet(sub)
            if kind >> 4 == 3:
                tlen = struct.unpack("!H", body[:2])[0]
                return body[2 + tlen :]
    except TimeoutError:
        return None
    finally:
        sub.close()
    return None


def test_mosquitto_keeps_retained_messages_across_a_kill(mosquitto_broker: BrokerHandle) -> None:
    topic = "pbxlink/v1/directory/380501110001"
    pub = _connect(mosquitto_broker.port, "pbxlab-retainer")
    pub.sendall(_packet(0x31, _string(topic) + b'{"schema":1}'))  # QoS 0, retain
    pub.close()
    time.sleep(2.5)  # autosave_interval is 1 s
    mosquitto_broker.stop(kill=True)
    assert not mosquitto_broker.running
    mosquitto_broker.start()
    assert _retained(mosquitto_broker.port, topic) == b'{"schema":1}'


def test_asterisk_comes_back_on_the_same_ports_after_a_crash(asterisk_lab: LabSession) -> None:
    before = asterisk_lab.instance
    asterisk_lab.restart_asterisk(kill=True)
    after = asterisk_lab.instance
    assert after.pid != before.pid
    assert (after.ami_port, after.sip_port, after.agi_port) == (
        before.ami_port,
        before.sip_port,
        before.agi_port,
    )
    assert asterisk_lab.driver.ami.core_settings()["AsteriskVersion"].startswith("22.")


def test_mosquitto_restart_keeps_its_port(mosquitto_broker: BrokerHandle) -> None:
    port, pid = mosquitto_broker.port, mosquitto_broker.pid
    mosquitto_broker.restart()
    assert mosquitto_broker.port == port
    assert mosquitto_broker.pid != pid
    _connect(port, "pbxlab-after-restart").close()
