"""Logs: JSON lines, bound context, and no secret ever printed."""

from __future__ import annotations

import io
import json
import logging

import structlog

from pbxlink.foundation.config import LogSettings, Secret
from pbxlink.toolkit.logs import configure_logging


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_with_bound_context() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="json"), stream=out)
    log = structlog.get_logger()
    with structlog.contextvars.bound_contextvars(call_id="pbx1:1795385222.2"):
        log.info("call.finished", answered=True)
    (line,) = _lines(out)
    assert line["event"] == "call.finished"
    assert line["call_id"] == "pbx1:1795385222.2"
    assert line["level"] == "info"
    assert str(line["timestamp"]).endswith("Z")


def test_a_secret_never_reaches_the_logs() -> None:
    out = io.StringIO()
    secret = Secret("hunter2-ami")
    configure_logging(LogSettings(format="json", level="debug"), secrets=[secret, None], stream=out)
    log = structlog.get_logger()
    log.info("login", username="pbxlink", secret=secret)
    log.info("login.raw", password="hunter2-ami")
    log.warning("oops", detail="Action: Login\r\nSecret: hunter2-ami\r\n")
    log.error("nested", frame={"Secret": "hunter2-ami", "Username": "pbxlink"})
    logging.getLogger("panoramisk").warning("sent Secret: %s", "hunter2-ami")
    text = out.getvalue()
    assert "hunter2" not in text
    assert text.count("<redacted>") >= 5
    assert len(_lines(out)) == 5


def test_level_filters_debug() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="json", level="info"), stream=out)
    structlog.get_logger().debug("noise")
    structlog.get_logger().info("signal")
    assert [line["event"] for line in _lines(out)] == ["signal"]
