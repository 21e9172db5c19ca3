"""``python -m qqconn.statecharts DIR``: write the statecharts (see :func:`~qqconn.statecharts.main`)."""

from __future__ import annotations

from qqconn.statecharts.output import main

raise SystemExit(main())
