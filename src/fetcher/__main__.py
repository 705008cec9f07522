"""`python -m fetcher` is the same program as `fetcher`."""

from .cli import main

raise SystemExit(main())
