"""``pbxlink schema``: write (or check) the JSON Schema generated from the wire model.

docs/outcome.schema.json is this command's output; ``--check`` exits 1 when a file differs
from what the model generates (a test runs the same comparison).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pbxlink.wire.schema import outcome_schema_text


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", type=Path, help="write the schema to this file (default: print it on stdout)"
    )
    parser.add_argument(
        "--check",
        type=Path,
        metavar="FILE",
        help="compare FILE with the generated schema; exit 1 when it differs",
    )


def main(args: argparse.Namespace) -> int:
    text = outcome_schema_text()
    if args.check is not None:
        path: Path = args.check
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != text:
            print(
                f"pbxlink schema: {path} differs from the wire model; run `pbxlink schema -o {path}`",
                file=sys.stderr,
            )
            return 1
        return 0
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
        return 0
    sys.stdout.write(text)
    return 0
