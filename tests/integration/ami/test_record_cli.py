"""``pbxlink record`` as a real subprocess against a loopback AMI peer; the transcript reader."""

from __future__ import annotations

import asyncio
import gzip
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from loopback_ami import LoopbackAmi, frame  # type: ignore[import-not-found]

from pbxlink.ami.framing import AmiFramer, Frame
from pbxlink.daemon.amiclient.record import iter_transcript

NAME = "Иван Петров"


async def run_record(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pbxlink.cli",
        "record",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def read_back(path: Path) -> tuple[AmiFramer, list[Frame]]:
    framer = AmiFramer()
    return framer, [f for chunk in iter_transcript(path, chunk_size=7) for f in framer.feed(chunk)]


async def test_record_command_saves_the_wire_bytes_until_sigterm(tmp_path: Path) -> None:
    server = LoopbackAmi()
    port = await server.start()
    secret_file = tmp_path / "secret"
    secret_file.write_text("pbxlink\n")
    out = tmp_path / "session.ami"
    try:
        proc = await run_record("--out", str(out), "--port", str(port), "--secret-file", str(secret_file))
        async with asyncio.timeout(15):
            await server.snapshot_served.wait()
            event = frame("Event: Newchannel", f"CallerIDName: {NAME}")
            await server.push(event[:30])  # splits the Cyrillic name across writes
            await asyncio.sleep(0.05)
            await server.push(event[30:])
            await asyncio.sleep(1.3)  # the recorder flushes every second
            assert event in out.read_bytes()
            proc.send_signal(signal.SIGTERM)
            _, stderr = await proc.communicate()
    finally:
        await server.stop()
    assert proc.returncode == 0, stderr
    assert b"recorded" in stderr
    raw = out.read_bytes()
    assert raw.startswith(b"Asterisk Call Manager/9.0.0\r\nResponse: Success\r\n")
    assert b"pbxlink\r\n" not in raw.split(b"\r\n", 1)[1]  # the secret is never recorded
    framer, frames = read_back(out)
    assert framer.banner == "Asterisk Call Manager/9.0.0"
    assert [f.get("CallerIDName") for f in frames if f.event == "Newchannel"] == [NAME]
    assert frames[-1].response == "Goodbye"


async def test_record_command_with_a_wrong_secret_exits_69_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    server = LoopbackAmi(login_delay_on_failure=0.05)
    port = await server.start()
    secret_file = tmp_path / "secret"
    secret_file.write_text("wrong\n")
    out = tmp_path / "session.ami.gz"
    try:
        proc = await run_record(
            "--out",
            str(out),
            "--port",
            str(port),
            "--secret-file",
            str(secret_file),
            "--duration",
            "5",
        )
        async with asyncio.timeout(15):
            _, stderr = await proc.communicate()
    finally:
        await server.stop()
    assert proc.returncode == 69
    assert b"AMI login failed for user 'pbxlink'" in stderr
    assert not out.exists()


async def test_record_command_rejects_a_missing_secret_file(tmp_path: Path) -> None:
    proc = await run_record("--out", str(tmp_path / "x"), "--secret-file", str(tmp_path / "no"))
    _, stderr = await proc.communicate()
    assert proc.returncode == 78
    assert b"--secret-file" in stderr


def test_iter_transcript_reads_plain_and_gzip_alike(tmp_path: Path) -> None:
    real = Path(__file__).parents[2] / "unit/ami/data/inbound_answered_cyrillic.ami"
    packed = tmp_path / "no-suffix"  # gzip is detected by content, not by name
    packed.write_bytes(gzip.compress(real.read_bytes()))
    assert b"".join(iter_transcript(real)) == real.read_bytes()
    assert b"".join(iter_transcript(packed, chunk_size=1000)) == real.read_bytes()
    _, plain_frames = read_back(real)
    _, packed_frames = read_back(packed)
    assert plain_frames == packed_frames
    assert len(plain_frames) > 200
