"""``python -m kerasq.cli``: the ``kerasq`` command."""

from kerasq.cli import main

raise SystemExit(main())
