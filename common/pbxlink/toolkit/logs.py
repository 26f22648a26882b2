"""structlog set-up: JSON lines on stdout for journald, a readable console on a TTY.

Context is bound per unit of work (``structlog.contextvars.bound_contextvars(call_id=…)``).
Secrets never reach the output: values of :class:`~pbxlink.foundation.config.Secret` are redacted
wherever they appear, keys that name secrets are redacted, and the plain text of every secret
loaded by the config is scrubbed from every string as a last line of defence.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from pbxlink.foundation.config import LogSettings, Secret

REDACTED = "<redacted>"
_SECRET_KEYS = re.compile(r"(secret|password|passwd|token|authorization)", re.IGNORECASE)


class SecretScrubber:
    """A structlog processor that removes secrets from an event dict."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._plain = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            event_dict[key] = self._clean(key, value)
        return event_dict

    def _clean(self, key: str, value: Any) -> Any:
        if isinstance(value, Secret) or (_SECRET_KEYS.search(key) and value not in (None, "")):
            return REDACTED
        if isinstance(value, str):
            for plain in self._plain:
                if plain in value:
                    value = value.replace(plain, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(key, v) for v in value]
        return value


def configure_logging(
    settings: LogSettings,
    *,
    secrets: Iterable[Secret | None] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog (and stdlib logging, for libraries) once per process."""
    out = stream if stream is not None else sys.stdout
    level = getattr(logging, settings.level.upper())
    use_console = settings.format == "console" or (settings.format == "auto" and out.isatty())
    scrubber = SecretScrubber(s.reveal() for s in secrets if s is not None)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        scrubber,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer(ensure_ascii=False, default=str)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Libraries (panoramisk, aiomqtt/paho, asyncio) log through the stdlib: route them to the
    # same stream, through the same scrubber, as one JSON line each.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.INFO))
