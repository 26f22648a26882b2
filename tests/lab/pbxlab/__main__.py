"""python -m pbxlab: command line of the lab driver (see docs/lab.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pbxlab.driver import LabDriver
from pbxlab.instance import (
    LabError,
    running_instance,
    setup_asterisk,
    start_asterisk,
    stop_asterisk,
)
from pbxlab.mosquitto import start_mosquitto, stop_mosquitto
from pbxlab.record_all import record_all
from pbxlab.scenarios import scenarios_for


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pbxlab", description=__doc__)
    ap.add_argument("--offset", type=int, default=0, help="lab instance (PBXLAB_OFFSET)")
    ap.add_argument(
        "--profile",
        choices=["lab", "freepbx"],
        default="lab",
        help="dialplan profile (start, list, record-all)",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="build the cached sid root (once)")
    sub.add_parser("start", help="start the instance; print its description")
    sub.add_parser("stop", help="stop the instance by pid")
    sub.add_parser("status", help="print the running instance's description")
    sub.add_parser("list", help="list the scenarios")
    run = sub.add_parser("run", help="run scenarios against the running instance")
    run.add_argument("names", nargs="+")
    run.add_argument("--record-dir", type=Path, help="write <name>.ami + <name>.truth.json here")
    rec = sub.add_parser("record-all", help="re-record every scenario (see record_all.py)")
    rec.add_argument("--out", type=Path, default=None)
    rec.add_argument("--only", nargs="*")
    rec.add_argument("--recorder", choices=["pbxlab", "pbxlink"], default="pbxlab")
    bs = sub.add_parser("broker-start", help="start a lab mosquitto")
    bs.add_argument("--name", default="default")
    bs.add_argument("--port", type=int, default=0)
    bt = sub.add_parser("broker-stop", help="stop a lab mosquitto by pid")
    bt.add_argument("--name", default="default")
    a = ap.parse_args(argv)

    try:
        if a.cmd == "setup":
            print(f"setup took {setup_asterisk():.1f} s")
        elif a.cmd == "start":
            print(json.dumps(start_asterisk(a.offset, profile=a.profile).raw, indent=2))
        elif a.cmd == "stop":
            stop_asterisk(a.offset)
        elif a.cmd == "status":
            inst = running_instance(a.offset)
            if inst is None:
                print(f"instance {a.offset} is not running")
                return 1
            print(json.dumps(inst.raw, indent=2))
        elif a.cmd == "list":
            for s in scenarios_for(a.profile).values():
                print(f"{s.name:38} {s.description}")
        elif a.cmd == "run":
            inst = running_instance(a.offset)
            if inst is None:
                print(f"instance {a.offset} is not running (python -m pbxlab start)")
                return 1
            bad = 0
            with LabDriver(inst) as drv:
                for name in a.names:
                    rec_path = truth_path = None
                    if a.record_dir:
                        a.record_dir.mkdir(parents=True, exist_ok=True)
                        rec_path = a.record_dir / f"{name}.ami"
                        truth_path = a.record_dir / f"{name}.truth.json"
                    res = drv.run(name, record_to=rec_path, truth_to=truth_path)
                    bad += bool(res.problems)
                    print(f"{name}: {res.duration_s:.1f} s, problems: {res.problems or 'none'}")
            return 1 if bad else 0
        elif a.cmd == "record-all":
            return record_all(a.offset, a.out, a.only, a.recorder, a.profile)
        elif a.cmd == "broker-start":
            b = start_mosquitto(port=a.port or None, name=a.name)
            print(json.dumps({"host": b.host, "port": b.port, "pid": b.pid, "state_dir": str(b.state_dir)}))
        elif a.cmd == "broker-stop":
            stop_mosquitto(name=a.name)
    except LabError as exc:
        print(f"pbxlab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
