#!/usr/bin/env python3
"""Re-record every lab scenario into tests/data/ami (root; see docs/lab.md).

sudo .venv/bin/python tests/lab/record_all.py [--profile freepbx] [--only NAME ...]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pbxlab.record_all import record_all

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--offset", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", nargs="*")
    ap.add_argument(
        "--recorder",
        choices=["pbxlab", "pbxlink"],
        default="pbxlab",
        help="the lab's raw recorder, or `pbxlink record` (same format)",
    )
    ap.add_argument(
        "--profile",
        choices=["lab", "freepbx"],
        default="lab",
        help="the dialplan profile whose scenarios to record (docs/lab.md)",
    )
    a = ap.parse_args()
    sys.exit(record_all(a.offset, a.out, a.only, a.recorder, a.profile))
