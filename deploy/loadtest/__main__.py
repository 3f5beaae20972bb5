"""``python -m deploy.loadtest shift|soak``: see :mod:`deploy.loadtest.run`."""

import sys

from deploy.loadtest.run import main

sys.exit(main())
