"""The exceptions pbxlink raises across its boundaries.

Every error carries data, not just a message, so callers (the CLI, the supervisor, tests) can
act on it without parsing text.
"""

from __future__ import annotations

from dataclasses import dataclass

EX_CONFIG = 78  # sysexits.h: configuration error; systemd's RestartPreventExitStatus uses it


class PbxlinkError(Exception):
    """Base of every error pbxlink raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the configuration, at a dotted key path such as ``ami.port``."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.reason}"


class ConfigError(PbxlinkError):
    """The configuration is invalid; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))
