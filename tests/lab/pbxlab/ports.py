"""The one free-port helper of the tests: a TCP port on 127.0.0.1 that is free right now.

The kernel picks it (bind to port 0); between this call and the caller's own bind another
process may take it, which is why servers under test bind to port 0 themselves where they can.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
