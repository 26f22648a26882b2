"""pbxlink daemon: AMI shell, call tracker, outbox, publisher, FastAGI server."""

__version__ = "0.1.0"
