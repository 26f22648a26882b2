"""pbxlink: adapters."""
