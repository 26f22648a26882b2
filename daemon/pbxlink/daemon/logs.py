"""The daemon's logging is the toolkit's (:mod:`pbxlink.toolkit.logs`); this name stays for its callers."""

from pbxlink.toolkit.logs import SecretScrubber, configure_logging

__all__ = ["SecretScrubber", "configure_logging"]
