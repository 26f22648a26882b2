"""The call tracker: typed AMI events in, one outcome per finished call out (pure, no I/O)."""
