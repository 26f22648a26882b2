"""Read a raw AMI recording (.ami or .ami.gz) back into frames (for checks)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

from pbxlab.ami_client import Frame, parse_frame


def read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def read_frames(path: Path) -> Iterator[Frame]:
    """Every frame after the banner line, as a first-wins header dict."""
    data = read_bytes(path)
    _, _, rest = data.partition(b"\r\n")
    for raw in rest.split(b"\r\n\r\n"):
        if raw.strip():
            headers, _ = parse_frame(raw)
            yield headers
