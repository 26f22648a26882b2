"""SIPp phones and callers for the lab: render a scenario, run it, stop it by pid.

A `Phone` is a SIPp UAS standing in for an agent's phone (or the carrier on
the trunk port): it answers, never answers, is busy, or answers and then
transfers blind by SIP REFER.  A `Call` is a SIPp UAC: one caller, or N calls
at a rate.  Everything binds to 127.0.0.1 inside the instance's port block.
"""

from __future__ import annotations

import enum
import re
import shutil
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

XML_DIR = Path(__file__).resolve().parent / "sipp"

DTMF_INFO_BLOCK = """
  <!-- DTMF as SIP INFO (application/dtmf-relay), DTMF_DELAY_MS after the answer -->
  <recv request="BYE" timeout="{{DTMF_DELAY_MS}}" ontimeout="dtmf" next="bye_in"/>
  <label id="dtmf"/>
  <send retrans="500">
    <![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "{{CALLER_NAME}}" <sip:{{CALLER}}@{{FROM_HOST}}>;tag=[pid]pbxlab00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 INFO
      Contact: <sip:{{CALLER}}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={{DTMF}}
      Duration=160
    ]]>
  </send>
  <recv response="200"/>
"""


class PhoneBehaviour(enum.Enum):
    ANSWER = "uas_answer.xml"
    NO_ANSWER = "uas_noanswer.xml"
    BUSY = "uas_busy.xml"
    REFER = "uas_refer.xml"
    DECLINE = "uas_decline.xml"
    HOLD = "uas_hold.xml"


@dataclass(frozen=True, slots=True)
class Phone:
    """An agent phone (or the carrier): how it treats every call it gets."""

    behaviour: PhoneBehaviour
    ring_ms: int = 1000
    talk_ms: int = 60000
    refer_to: str = ""
    hold_after_ms: int = 0  # HOLD: talk this long, then hold ...
    hold_ms: int = 0  # ... this long, then resume and talk talk_ms more

    @classmethod
    def answers(cls, ring_ms: int = 1000, talk_ms: int = 60000) -> Phone:
        return cls(PhoneBehaviour.ANSWER, ring_ms, talk_ms)

    @classmethod
    def never_answers(cls) -> Phone:
        return cls(PhoneBehaviour.NO_ANSWER)

    @classmethod
    def busy(cls) -> Phone:
        return cls(PhoneBehaviour.BUSY)

    @classmethod
    def holds(
        cls, ring_ms: int = 1000, hold_after_ms: int = 1500, hold_ms: int = 2000, talk_ms: int = 2000
    ) -> Phone:
        """Answers, puts the call on hold (re-INVITE sendonly), resumes, hangs up (BYE)."""
        return cls(PhoneBehaviour.HOLD, ring_ms, talk_ms, "", hold_after_ms, hold_ms)

    @classmethod
    def declines(cls, ring_ms: int = 1500) -> Phone:
        """Rings ring_ms, then the user declines (603 Decline)."""
        return cls(PhoneBehaviour.DECLINE, ring_ms)

    @classmethod
    def transfers(cls, to: str, ring_ms: int = 1000, talk_ms: int = 2000) -> Phone:
        return cls(PhoneBehaviour.REFER, ring_ms, talk_ms, to)


@dataclass(frozen=True, slots=True)
class Call:
    """A caller (UAC).  hold_ms counts from the answer (Asterisk answers
    inbound calls itself, before the greeting)."""

    dial: str
    caller: str
    caller_name: str = "Caller"
    hold_ms: int = 5000
    answer_timeout_ms: int = 60000
    dtmf: str = ""
    dtmf_delay_ms: int = 800
    from_host: str = ""  # default: 127.0.0.1
    extra_headers: tuple[str, ...] = ()
    count: int = 1
    rate: float = 1.0
    rate_period_ms: int = 1000
    max_concurrent: int = 0  # 0: as many as count
    template: str = "caller.xml"  # or another UAC scenario in pbxlab/sipp/
    params: tuple[tuple[str, str], ...] = ()  # extra placeholders of that template


class SippError(RuntimeError):
    """SIPp could not be started or failed."""


def render(template: str, params: dict[str, str], dest: Path, *, dtmf: bool = False) -> Path:
    """Fill the {{KEY}} placeholders of a scenario template; write it to dest."""
    text = (XML_DIR / template).read_text(encoding="utf-8")
    if dtmf:
        text = text.replace("<!--DTMF-->", DTMF_INFO_BLOCK)
    for key, value in params.items():
        text = text.replace("{{" + key + "}}", value)
    left = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)))
    if left:
        raise SippError(f"{template}: placeholders not filled in: {left}")
    dest.write_text(text, encoding="utf-8")
    return dest


def _udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortBlock:
    """Hands out SIPp UAC signalling ports and media ports inside an instance's block."""

    def __init__(self, local_base: int, local_count: int, media_base: int, media_count: int):
        self._local = [local_base + i for i in range(local_count)]
        self._media = [media_base + i for i in range(0, media_count, 4)]
        self._li = 0
        self._mi = 0
        self._lock = threading.Lock()

    def local_port(self) -> int:
        with self._lock:
            for _ in range(len(self._local)):
                port = self._local[self._li % len(self._local)]
                self._li += 1
                if _udp_port_free(port):
                    return port
        raise SippError("no free SIPp signalling port left in the instance's block")

    def media_port(self) -> int:
        with self._lock:
            for _ in range(len(self._media)):
                port = self._media[self._mi % len(self._media)]
                self._mi += 1
                if all(_udp_port_free(port + k) for k in range(4)):
                    return port
        raise SippError("no free SIPp media port left in the instance's block")


class SippProcess:
    """One SIPp process, started and stopped by its pid."""

    def __init__(self, label: str, args: list[str], workdir: Path) -> None:
        self.label = label
        self.args = args
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self._err: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self) -> SippProcess:
        self._err = (self.workdir / f"{self.label}.stderr").open("wb")
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after `timeout` seconds."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int | None:
        """SIGTERM by pid, SIGKILL after 1 s; returns the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._err is not None:
            self._err.close()
            self._err = None
        return self.proc.returncode if self.proc else None

    def errors(self) -> str:
        """SIPp's stderr and error log (for failure messages)."""
        parts = []
        for name in (f"{self.label}.stderr", f"{self.label}.errors.log"):
            p = self.workdir / name
            if p.exists():
                parts.append(p.read_text(errors="replace")[-2000:])
        return "\n".join(parts)


class Sipp:
    """Builds SIPp processes for one lab instance."""

    def __init__(
        self, sip_port: int, ports: PortBlock, workdir: Path, *, trace_messages: bool = True
    ) -> None:
        exe = shutil.which("sipp")
        if exe is None:
            raise SippError("sipp not found on PATH (apt-get install sip-tester)")
        self.exe = exe
        self.sip_port = sip_port
        self.ports = ports
        self.workdir = workdir
        self.trace_messages = trace_messages
        self._n = 0

    def _common(self, label: str, trace_messages: bool) -> list[str]:
        args = [
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-mp",
            str(self.ports.media_port()),
            "-nostdin",
            "-aa",  # answer INFO/NOTIFY/OPTIONS/UPDATE 200 (REFER's NOTIFYs)
            "-trace_err",
            "-error_file",
            str(self.workdir / f"{label}.errors.log"),
        ]
        if trace_messages:
            args += ["-trace_msg", "-message_file", str(self.workdir / f"{label}.messages.log")]
        return args

    def _label(self, base: str) -> str:
        self._n += 1
        return f"{self._n:02d}-{base}"

    def phone(self, user: str, port: int, phone: Phone) -> SippProcess:
        """Start a UAS for `user` (agent extension or "carrier") on `port`."""
        label = self._label(f"uas-{user}")
        xml = render(
            phone.behaviour.value,
            {
                "USER": user,
                "RING_MS": str(phone.ring_ms),
                "TALK_MS": str(phone.talk_ms),
                "TARGET": phone.refer_to or "0",
                "HOLD_AFTER_MS": str(phone.hold_after_ms),
                "HOLD_MS": str(phone.hold_ms),
            },
            self.workdir / f"{label}.xml",
        )
        args = [self.exe, "-sf", str(xml), "-p", str(port), *self._common(label, self.trace_messages)]
        return SippProcess(label, args, self.workdir).start()

    def call(self, call: Call, *, trace_messages: bool | None = None) -> SippProcess:
        """Start a UAC placing `call` (count calls at rate per rate_period_ms)."""
        label = self._label(f"uac-{re.sub(r'[^0-9A-Za-z]', '_', call.caller)}")
        extra = "".join("\n" + h for h in call.extra_headers)
        xml = render(
            call.template,
            {
                **dict(call.params),
                "CALLER": call.caller,
                "CALLER_NAME": call.caller_name,
                "FROM_HOST": call.from_host or "127.0.0.1",
                "EXTRA_HEADERS": extra,
                "ANSWER_TIMEOUT_MS": str(call.answer_timeout_ms),
                "HOLD_MS": str(call.hold_ms),
                "DTMF": call.dtmf,
                "DTMF_DELAY_MS": str(call.dtmf_delay_ms),
            },
            self.workdir / f"{label}.xml",
            dtmf=bool(call.dtmf),
        )
        tm = self.trace_messages if trace_messages is None else trace_messages
        args = [
            self.exe,
            f"127.0.0.1:{self.sip_port}",
            "-sf",
            str(xml),
            "-s",
            call.dial,
            "-p",
            str(self.ports.local_port()),
            "-m",
            str(call.count),
            "-r",
            f"{call.rate:g}",
            "-rp",
            str(call.rate_period_ms),
            "-timeout",
            "180",
            "-timeout_error",
            *self._common(label, tm),
        ]
        if call.count > 1:
            # SIPp's default limit derives from the rate and may serialise calls
            args += ["-l", str(call.max_concurrent or call.count)]
        if call.count > 1:
            args += ["-trace_stat", "-stf", str(self.workdir / f"{label}.stat.csv"), "-fd", "1"]
        return SippProcess(label, args, self.workdir).start()
