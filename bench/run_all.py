"""Run every benchmark in one go and print their figures (`make bench`).

Each benchmark measures pbxlink side by side with its baseline in the same run:

* bench_tracker.py      framing + decode + tracking vs panoramisk's bare AMI parser
* bench_ami_framing.py  pbxlink's AMI framer vs panoramisk's parser
* bench_routing.py      AGI request -> answer with a 1M-number directory vs a constant-answer FastAGI
* bench_delivery.py     outbox + publish vs plain QoS 1 publishing (and, with --lab,
                        hangup -> PUBACK latency with the lab placing 20 calls/s)
* bench_crm.py          outcomes applied end to end with 1M clients, and the planner alone
* bench_retailcrm.py    outcomes/s and HTTP requests per outcome into the fake RetailCRM at
                        its 10 req/s quota, batched uploads vs one upload per call
* bench_bitrix24.py     outcomes/s and requests per outcome into the fake Bitrix24 under its
                        2 req/s leaky bucket (503s counted), batched vs one outcome per request;
                        signed webhook deliveries/s to a verifying receiver

    .venv/bin/python bench/run_all.py [--quick] [--lab]

--quick shrinks the data sets (for a smoke run); --lab adds the benchmarks that need the real
Asterisk lab (root). Figures and their history are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data sets, for a smoke run")
    parser.add_argument("--lab", action="store_true", help="also the lab benchmarks (root)")
    args = parser.parse_args()
    quick = args.quick
    runs: list[list[str]] = [
        ["bench_tracker.py", "--repeat", "2" if quick else "20", "--rounds", "1" if quick else "3"],
        ["bench_ami_framing.py", "--repeat", "5" if quick else "50", "--runs", "1" if quick else "3"],
        [
            "bench_routing.py",
            "--numbers",
            "10000" if quick else "1000000",
            "--requests",
            "500" if quick else "5000",
            "--open-requests",
            "200" if quick else "2000",
        ],
        ["bench_delivery.py", "throughput", "--messages", "300" if quick else "3000"],
        [
            "bench_crm.py",
            "--clients",
            "10000" if quick else "1000000",
            "--outcomes",
            "200" if quick else "2000",
        ],
    ]
    runs.append(["bench_retailcrm.py", "--outcomes", "300" if quick else "1000"])
    runs.append(
        [
            "bench_bitrix24.py",
            "--outcomes",
            "200" if quick else "600",
            "--deliveries",
            "300" if quick else "2000",
        ]
    )
    if args.lab:
        runs.append(["bench_delivery.py", "latency", "--rate", "20", "--seconds", "10" if quick else "60"])
        runs.append(["bench_lab_capacity.py", "--rates", "10", "25", "--seconds", "6"])
    failed = []
    for run in runs:
        print(f"\n######## {' '.join(run)}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(BENCH / run[0]), *run[1:]])
        print(f"######## {run[0]}: exit {code}, {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(run[0])
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
