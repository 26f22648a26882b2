"""`python -m pbxlink.cli` is the `pbxlink` command."""

from pbxlink.cli import main

raise SystemExit(main())
