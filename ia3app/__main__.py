"""`python -m ia3app ...`: see ia3app.cli."""

from ia3app.cli import main

raise SystemExit(main())
