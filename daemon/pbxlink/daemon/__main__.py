"""`python -m pbxlink.daemon` is the `pbxlink` command."""

from pbxlink.daemon.cli import main

raise SystemExit(main())
