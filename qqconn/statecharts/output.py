"""Rendering one format, writing them all, and ``python -m qqconn.statecharts DIR``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from qqconn.statecharts.dot import to_dot
from qqconn.statecharts.mermaid import to_mermaid
from qqconn.statecharts.model import chart
from qqconn.statecharts.svg import PACKAGED_SVG, GraphvizUnavailable, draw_svg, packaged_or_drawn

__all__ = ["FILES", "Format", "main", "render", "write_all"]

Format = Literal["mermaid", "dot", "svg"]

#: The file each format is written to by :func:`write_all`.
FILES: dict[Format, str] = {
    "mermaid": "connection.mmd",
    "dot": "connection.dot",
    "svg": "connection.svg",
}


def render(
    fmt: Format,
    *,
    rows: Sequence[dict[str, Any]] | None = None,
    states: Sequence[dict[str, Any]] | None = None,
) -> str:
    """Render the connection machine as ``mermaid`` (``stateDiagram-v2``), ``dot`` or ``svg``.

    ``rows`` and ``states`` default to the machine's own table (:func:`~qqconn.machine.build_rows`,
    :data:`~qqconn.machine.STATES`); pass others only to see how a changed table would look.
    The result is deterministic and ends with a newline. ``svg`` is the packaged drawing when it
    matches the table, else drawn by ``dot`` (:class:`GraphvizUnavailable` when it is missing).
    """
    if fmt not in FILES:
        raise ValueError(f"unknown statechart format {fmt!r}; use one of {sorted(FILES)}")
    c = chart(rows, states)
    if fmt == "mermaid":
        return to_mermaid(c)
    if fmt == "dot":
        return to_dot(c)
    return packaged_or_drawn(to_dot(c))


def write_all(directory: str | Path) -> list[Path]:
    """Write every format into ``directory`` (created if missing) as :data:`FILES` names them,
    the SVG freshly drawn by ``dot``; return the paths written. Files are only rewritten when
    their content changed."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    c = chart()
    texts: dict[Format, str] = {"mermaid": to_mermaid(c), "dot": to_dot(c)}
    texts["svg"] = draw_svg(texts["dot"])
    written = []
    for fmt, text in texts.items():
        written.append(_write(target / FILES[fmt], text))
    return written


def _write(path: Path, text: str) -> Path:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8", newline="\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qqconn.statecharts DIR``: write the statecharts into DIR and refresh the
    packaged SVG (``qqconn/connection.svg``) with the same drawing."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m qqconn.statecharts DIR", file=sys.stderr)
        return 2
    try:
        paths = write_all(args[0])
    except GraphvizUnavailable as exc:
        print(f"qqconn.statecharts: {exc}", file=sys.stderr)
        return 1
    svg = next(p for p in paths if p.name == FILES["svg"])
    paths.append(_write(PACKAGED_SVG, svg.read_text(encoding="utf-8")))
    for path in paths:
        print(path)
    return 0
