"""Statecharts of the connection machine, drawn from the very table that runs it.

The diagrams in ``statecharts/`` are not drawn by hand: :func:`chart` reads
:data:`qqconn.machine.STATES` and :func:`qqconn.machine.build_rows` (whatever rows the table
has today) and :func:`render` writes that as Mermaid (``stateDiagram-v2``, what GitHub shows in
the README), Graphviz ``dot`` source, or SVG. ``tests/test_statecharts.py`` fails when the
committed files drift from the table; ``make statecharts`` rewrites them.

How the picture reads, top to bottom:

* a black dot marks the start; it points at the initial state;
* each state is a box coloured by what it means (an attempt under way, the session live,
  between attempts, terminal); the terminal states (``final`` in STATES: FATAL, STOPPED) sit
  together on the bottom row in a box of their own, with a double border, and nothing leaves them;
* internal transitions (``dest: None``) are listed *inside* their state's box, one row per
  line, ``trigger [guard] / action``, in table order, instead of as self-loops whose labels pile
  up; a row that fires only when every guarded row of the same trigger before it failed says
  ``[else]``;
* guarded rows of one trigger that leave several states for several destinations (such as
  ``connection_ended``) go through one choice, a diamond named after the trigger whose arrows
  carry the guards; triggers whose rows lead to the same set of destinations share one choice,
  drawn as a decision table that lists, per destination, the rows that lead there (the arrows
  into it name the triggers);
* one row leaving several states for one destination (``stop``) joins in a small dot first, so
  its label is written once; rows that take the same arrow share it, one line each.

What the pictures leave out, on purpose, because it would hide the machine's shape under
dozens of rows that do nothing:

* the catch-all ``ignore`` rows that :func:`~qqconn.machine.build_rows` generates for every
  (state, trigger) pair that means nothing there (``after="ignore"``);
* the ``ignore_unexpected`` rows (a protocol oddity, logged at WARNING and otherwise ignored);
* the ``refuse_start`` rows (starting twice raises :class:`~qqconn.errors.LocalProtocolError`).

Both text formats say so in a comment of their own. Output is deterministic: the same table
gives byte-identical files (no timestamps, table order).

Nothing here needs a dependency: Mermaid and ``dot`` source are plain text. Only *drawing* an
SVG needs Graphviz's ``dot`` program. A plain install still has the SVG: the wheel ships the
committed drawing as package data (``qqconn/connection.svg``), and :func:`render` returns it
whenever it was drawn from the ``dot`` source the current table gives (the SVG carries that
source's SHA-256). Only an SVG of a *changed* table, without ``dot`` installed, raises
:class:`GraphvizUnavailable`, whose message says what to install.

Run ``python -m qqconn.statecharts DIR`` (what ``make statecharts`` does) to write
``DIR/connection.mmd``, ``DIR/connection.dot`` and ``DIR/connection.svg``, and the packaged copy.

The package, by concern: :mod:`~qqconn.statecharts.model` (the :class:`Chart` read from the
table), :mod:`~qqconn.statecharts.mermaid` and :mod:`~qqconn.statecharts.dot` (the two text
formats), :mod:`~qqconn.statecharts.svg` (drawing with ``dot``, the packaged drawing and its
fingerprint), :mod:`~qqconn.statecharts.output` (:func:`render`, :func:`write_all`, the
command). Every name is importable from ``qqconn.statecharts`` itself.
"""

from __future__ import annotations

# `name as name`: importable from here, as from the one module this package was, not in __all__.
from qqconn.statecharts.model import LEFT_OUT, Chart, Edge, chart, diagram_rows
from qqconn.statecharts.model import TITLE as TITLE
from qqconn.statecharts.model import _label as _label
from qqconn.statecharts.output import FILES, Format, render, write_all
from qqconn.statecharts.output import main as main
from qqconn.statecharts.svg import INSTALL_DOT as INSTALL_DOT
from qqconn.statecharts.svg import PACKAGED_SVG, GraphvizUnavailable, draw_svg
from qqconn.statecharts.svg import SVG_SOURCE_MARK as SVG_SOURCE_MARK

__all__ = [
    "FILES",
    "LEFT_OUT",
    "PACKAGED_SVG",
    "Chart",
    "Edge",
    "Format",
    "GraphvizUnavailable",
    "chart",
    "diagram_rows",
    "draw_svg",
    "render",
    "write_all",
]
