"""The AMI codec: byte framing, typed events, decoding (pure, no I/O)."""
