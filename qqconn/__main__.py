"""``python -m qqconn``: the same as the ``qqconn`` command."""

from qqconn.cli import main

raise SystemExit(main())
