"""pbxlink: routing."""
