"""Allow ``python -m slideserver``."""

from slideserver.cli import main

raise SystemExit(main())
