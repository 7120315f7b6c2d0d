"""`python -m kerasft` is `kerasft`."""

from kerasft.cli import main

raise SystemExit(main())
