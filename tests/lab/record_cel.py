"""Record Asterisk's CEL backends for a set of lab scenarios (tests/data/cel).

    sudo .venv/bin/python tests/lab/record_cel.py [--out tests/data/cel] [--only NAME ...]

Runs the scenarios one after the other on one lab instance (its CEL goes to SQLite through
cel_sqlite3_custom and to CSV through cel_custom, tests/lab/asterisk/cel*.conf) and writes
``cel.sqlite``, ``cel.csv`` and ``truth.json`` (every scenario's calls as the SIP side placed
them: the ground truth). The unit tests read both files back and compare the outcomes the
tracker rebuilds from them with the truth.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pbxlab.session import LabSession

SCENARIOS = (
    "inbound_answered",
    "inbound_agent_rings_caller_hangs_up",
    "queue_abandoned",
    "queue_timeout_voicemail",
    "agent_busy_group_answers",
    "ringall_one_answers",
    "ivr_hangup",
    "ivr_sales_answered",
    "blind_transfer_ami",
    "call_pickup_group",
    "outbound_answered",
    "outbound_busy",
    "internal_answered",
    "internal_unanswered",
    "click_to_call",
    "anonymous_caller",
    "attended_transfer_completed",
    "attended_transfer_abandoned",
    "blind_transfer_refer",
    "call_pickup_directed",
    "outbound_unanswered",
    "agent_no_answer_group_answers",
    "recorded_call_answered",
    "non_ascii_caller_name",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "cel")
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    names = args.only or list(SCENARIOS)
    session = LabSession.open()
    try:
        truths = []
        for name in names:
            result = session.run(name)
            if result.problems:
                print(f"{name}: {result.problems}", file=sys.stderr)
                return 1
            truths.append({"scenario": name, "calls": result.truth["calls"]})
            print(f"{name}: {len(result.truth['calls'])} call(s)")
        time.sleep(1.0)  # the backends write from Asterisk's own threads
        args.out.mkdir(parents=True, exist_ok=True)
        log_dir = session.instance.log_dir
        # the lab's database is in WAL mode: copy it through SQLite (WAL included) into one file
        (args.out / "cel.sqlite").unlink(missing_ok=True)
        with (
            sqlite3.connect(log_dir / "pbxlink-cel.db") as source,
            sqlite3.connect(args.out / "cel.sqlite") as copy,
        ):
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
        shutil.copyfile(log_dir / "pbxlink-cel.csv", args.out / "cel.csv")
        (args.out / "truth.json").write_text(json.dumps(truths, indent=1, ensure_ascii=False) + "\n")
    finally:
        session.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
