"""How many short inbound calls per second the lab Asterisk carries, and the AMI event rate.

For each rate, on a freshly started lab instance: the routing DID, the FastAGI route stub
sending every call to agent 101, 101 answering after 0.3 s, each caller hanging up 2 s after
the answer (distinct caller numbers), SIPp placing RATE calls/s for SECONDS s, and a raw AMI
recorder taking every frame. Prints one line per rate: calls answered by the agent (from the
recording), the SIPp caller exit codes (0: every call completed), peak channels, AMI events,
events per call, events/s (mean and peak 1-s bin), and Asterisk's CPU as % of one core.
Root; asserts nothing.

    sudo .venv/bin/python bench/bench_lab_capacity.py [--rates 10 25 50] [--seconds 8] [--offset 8]

Keep it bounded on shared machines: every rate is RATE x SECONDS calls.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "lab"))

from pbxlab.context import ScenarioContext, Truth
from pbxlab.driver import LabDriver
from pbxlab.instance import start_asterisk, stop_asterisk
from pbxlab.recording_reader import read_frames
from pbxlab.route_stub import StubRoute
from pbxlab.scenarios import ROUTING_DID, Scenario
from pbxlab.sipp import Call, Phone


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load(rate: int, seconds: int) -> Scenario:
    calls = rate * seconds

    def run(ctx: ScenarioContext) -> list[Truth]:
        ctx.route_stub(StubRoute("PJSIP/101", "owner", "101"))
        ctx.phones(a101=Phone.answers(ring_ms=300))
        caller = ctx.call(
            Call(
                ROUTING_DID,
                "+3805030[call_number]",
                "Bench",
                hold_ms=2000,
                count=calls,
                rate=rate,
                max_concurrent=rate * 10,
            ),
            trace_messages=False,
        )
        peak = 0
        while caller.alive():
            peak = max(peak, ctx.ami.channel_count())
            time.sleep(0.5)
        ctx.notes["peak_channels"] = peak
        return []

    return Scenario(f"bench_{rate}cps", f"{calls} calls at {rate}/s", run, heavy=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=int, nargs="+", default=[10, 25, 50])
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--offset", type=int, default=8)
    a = ap.parse_args()
    print(
        f"{'cps':>4} {'calls':>6} {'answered':>8} {'uac rc':>6} {'peak ch':>7} {'events':>7} "
        f"{'ev/call':>7} {'ev/s':>6} {'ev/s pk':>7} {'cpu %':>6} {'wall s':>6}"
    )
    with tempfile.TemporaryDirectory(prefix="pbxlab-bench-") as tmp:
        for rate in a.rates:
            stop_asterisk(a.offset)
            inst = start_asterisk(a.offset)
            rec = Path(tmp) / f"{rate}.ami"
            try:
                with LabDriver(inst, Path(tmp) / f"w{rate}", trace_messages=False) as drv:
                    cpu0, t0 = _cpu_seconds(inst.pid), time.monotonic()
                    res = drv.run_scenario(_load(rate, a.seconds), record_to=rec, idle_timeout=120)
                    cpu1, t1 = _cpu_seconds(inst.pid), time.monotonic()
            finally:
                stop_asterisk(a.offset)
            events = [f for f in read_frames(rec) if "Event" in f]
            answered = sum(
                1
                for e in events
                if e["Event"] == "BridgeEnter" and e.get("Channel", "").startswith("PJSIP/101-")
            )
            stamps = [float(e["Timestamp"]) for e in events if "Timestamp" in e]
            span = max(stamps) - min(stamps) if stamps else 0.0
            bins: dict[int, int] = {}
            for ts in stamps:
                bins[int(ts)] = bins.get(int(ts), 0) + 1
            calls = rate * a.seconds
            uac_rc = [s["exit"] for s in res.truth["driver"]["sipp"] if "uac" in s["label"]]
            print(
                f"{rate:>4} {calls:>6} {answered:>8} {uac_rc!s:>6} "
                f"{res.truth['driver'].get('peak_channels', 0):>7} {len(events):>7} "
                f"{len(events) / calls:>7.1f} {len(events) / max(span, 1e-9):>6.0f} "
                f"{max(bins.values()) if bins else 0:>7} "
                f"{100 * (cpu1 - cpu0) / (t1 - t0):>6.1f} {t1 - t0:>6.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
