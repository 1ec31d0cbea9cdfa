"""`python -m ia3app ...`: see ia3app.cli.main."""

from ia3app.cli.main import main

raise SystemExit(main())
