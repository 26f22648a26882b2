"""Re-record every scenario into tests/data/ami: <name>.ami + <name>.truth.json.

profile="freepbx" records the scenarios of the FreePBX dialplan profile (their names start
with ``fpbx_``) on an instance started with that profile.

Starts a dedicated lab instance (offset 9 by default, PBXLAB_RECORD_OFFSET),
runs each scenario with a raw AMI recorder, gzips recordings over 2 MB, and
stops the instance.  Exit code 1 if any scenario's truth disagrees with its
recording.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from pathlib import Path

from pbxlab.driver import LabDriver
from pbxlab.instance import LAB_DIR, start_asterisk, stop_asterisk
from pbxlab.scenarios import scenarios_for

DATA_DIR = LAB_DIR.parent / "data" / "ami"
GZIP_OVER = 2 * 1024 * 1024


def record_all(
    offset: int | None = None,
    out: Path | None = None,
    only: list[str] | None = None,
    recorder: str = "pbxlab",
    profile: str = "lab",
) -> int:
    offset = int(os.environ.get("PBXLAB_RECORD_OFFSET", "9")) if offset in (None, 0) else offset
    out = out or DATA_DIR
    out.mkdir(parents=True, exist_ok=True)
    registry = scenarios_for(profile)
    names = only or list(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        print(f"unknown scenarios: {unknown}", file=sys.stderr)
        return 2
    stop_asterisk(offset)
    inst = start_asterisk(offset, profile=profile)
    bad = 0
    summary = {}
    try:
        with LabDriver(inst, recorder=recorder) as drv:
            for name in names:
                rec = out / f"{name}.ami"
                truth = out / f"{name}.truth.json"
                for stale in (rec, out / f"{name}.ami.gz"):
                    stale.unlink(missing_ok=True)
                t0 = time.monotonic()
                res = drv.run(name, record_to=rec, truth_to=truth)
                if rec.stat().st_size > GZIP_OVER:
                    gz = out / f"{name}.ami.gz"
                    gz.write_bytes(gzip.compress(rec.read_bytes(), 9, mtime=0))
                    rec.unlink()
                    data = json.loads(truth.read_text(encoding="utf-8"))
                    data["recording"] = gz.name
                    truth.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
                bad += bool(res.problems)
                summary[name] = round(time.monotonic() - t0, 1)
                print(f"{name:38} {res.duration_s:5.1f} s  problems: {res.problems or 'none'}", flush=True)
    finally:
        stop_asterisk(offset)
    print(json.dumps(summary))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(record_all())
