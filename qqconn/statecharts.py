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
"""

from __future__ import annotations

import hashlib
import html
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qqconn.errors import QQConnError
from qqconn.machine import STATES, State, build_rows

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

Format = Literal["mermaid", "dot", "svg"]

#: The file each format is written to by :func:`write_all`.
FILES: dict[Format, str] = {
    "mermaid": "connection.mmd",
    "dot": "connection.dot",
    "svg": "connection.svg",
}

#: The SVG the package ships, so that ``qqconn diagram --format svg`` works without Graphviz.
PACKAGED_SVG = Path(__file__).resolve().with_name("connection.svg")

#: Rows whose ``after`` action is one of these are left out of the diagrams.
LEFT_OUT = ("ignore", "ignore_unexpected", "refuse_start")

TITLE = "qqconn connection machine"

#: The marker line the SVG carries so a stale SVG can be told without re-running ``dot``.
SVG_SOURCE_MARK = "<!-- qqconn: drawn from connection.dot sha256 {digest} -->"

#: How to get Graphviz's ``dot``, per system (said when an SVG cannot be drawn).
INSTALL_DOT = (
    "Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; "
    "Fedora: dnf install graphviz; Alpine: apk add graphviz"
)

#: Fill and border colour per state; a state the table adds later is drawn white.
_COLOURS: dict[str, tuple[str, str]] = {
    State.CONNECTING.name: ("#dbeafe", "#1d4ed8"),  # an attempt is under way
    State.IDENTIFIED.name: ("#dbeafe", "#1d4ed8"),
    State.ALIVE.name: ("#dcfce7", "#15803d"),  # the session is live
    State.QUICK_DROPPED.name: ("#fef3c7", "#b45309"),  # between attempts
    State.BACKOFF.name: ("#fef3c7", "#b45309"),
    State.FATAL.name: ("#fee2e2", "#b91c1c"),  # terminal: gave up
    State.STOPPED.name: ("#e5e7eb", "#374151"),  # terminal: stopped by the host
}
_DEFAULT_COLOUR = ("#ffffff", "#000000")

_LEGEND = (
    "blue: an attempt under way · green: the session is live · amber: between attempts · "
    "double border: terminal, nothing leaves it"
)
_HOW_TO_READ = (
    "Inside a box: its internal transitions, trigger [guard] / action, in table order. "
    "Rows of one trigger are tried top to bottom; [else] fires when every guard before it failed."
)


class GraphvizUnavailable(QQConnError, RuntimeError):
    """An SVG of a table other than the packaged drawing's was asked for, and Graphviz's
    ``dot`` program is not installed."""


# -- the chart: what is drawn, independent of the format ------------------------------------


@dataclass(frozen=True, slots=True)
class Edge:
    """One arrow: ``source`` to ``dest`` (state names, or a choice/junction node's id)."""

    source: str
    dest: str
    trigger: str = ""
    guard: str = ""
    action: str = ""

    def label(self) -> str:
        """``trigger [guard] / action``, the parts that are set."""
        return _label(self.trigger, self.guard, self.action)


@dataclass(slots=True)
class Chart:
    """The machine as the pictures draw it; every format is written from this."""

    #: State names in STATES order; the first is the initial state.
    states: list[str]
    #: The terminal (``final``) states.
    terminal: list[str]
    #: Per state, its internal transitions as ``trigger [guard] / action`` lines, in table order.
    internal: dict[str, list[str]]
    #: Choice nodes: id → the triggers whose guarded rows branch there (one choice per set of
    #: destinations, so the ways a connection can end share one diamond).
    choices: dict[str, list[str]] = field(default_factory=dict)
    #: Junction nodes (one row leaving several states): id → the trigger.
    junctions: dict[str, str] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    #: How many rows of each LEFT_OUT kind were not drawn.
    left_out: dict[str, int] = field(default_factory=dict)


def diagram_rows(rows: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The rows the diagrams draw: ``rows`` (default: :func:`~qqconn.machine.build_rows`)
    without those whose ``after`` action is in :data:`LEFT_OUT`."""
    table = build_rows() if rows is None else list(rows)
    return [row for row in table if row.get("after") not in LEFT_OUT]


def _names(value: Any) -> list[str]:
    values = value if isinstance(value, (list, tuple)) else [value]
    return [v.name if isinstance(v, State) else str(v) for v in values]


def _guard(row: dict[str, Any]) -> str:
    parts = [*_names(row.get("conditions", [])), *("!" + u for u in _names(row.get("unless", [])))]
    return " & ".join(parts)


def _action(row: dict[str, Any]) -> str:
    """The row's callbacks in the order transitions runs them: prepare, before, after."""
    return ", ".join(
        name for key in ("prepare", "before", "after") for name in _names(row.get(key, []))
    )


def _label(trigger: str, guard: str, action: str) -> str:
    text = trigger
    if guard:
        text = f"{text} [{guard}]" if text else f"[{guard}]"
    if action:
        text = f"{text} / {action}" if text else f"/ {action}"
    return text


def chart(
    rows: Sequence[dict[str, Any]] | None = None,
    states: Sequence[dict[str, Any]] | None = None,
) -> Chart:
    """What the pictures draw, from ``rows`` and ``states`` (default: the machine's own)."""
    table = build_rows() if rows is None else list(rows)
    state_defs = list(STATES if states is None else states)
    names = [_names(s["name"])[0] for s in state_defs]
    out = Chart(
        states=names,
        terminal=[_names(s["name"])[0] for s in state_defs if s.get("final")],
        internal={name: [] for name in names},
        left_out={kind: sum(1 for r in table if r.get("after") == kind) for kind in LEFT_OUT},
    )
    drawn = diagram_rows(table)
    # For "[else]": a row is the fallback of its (trigger, source) when a guarded row came first.
    guarded_before: set[tuple[str, str]] = set()
    fallback: list[set[str]] = []
    for row in drawn:
        sources = _names(row["source"])
        keys = {(row["trigger"], s) for s in sources}
        guarded = bool(_guard(row))
        fallback.append({s for t, s in keys if not guarded and (t, s) in guarded_before})
        if guarded:
            guarded_before |= keys

    groups: dict[tuple[str, tuple[str, ...]], list[tuple[int, dict[str, Any]]]] = {}
    for i, row in enumerate(drawn):
        sources = _names(row["source"])
        if row["dest"] is None:
            for source in sources:
                guard = "else" if source in fallback[i] else _guard(row)
                out.internal[source].append(_label(row["trigger"], guard, _action(row)))
        else:
            groups.setdefault((row["trigger"], tuple(sources)), []).append((i, row))

    def guard_of(i: int, row: dict[str, Any], source: str) -> str:
        return "else" if source in fallback[i] else _guard(row)

    choice_of: dict[frozenset[str], str] = {}
    for (trigger, group_sources), members in groups.items():
        sources = list(group_sources)

        if len(sources) > 1 and len(members) > 1:
            dests = frozenset(_names(row["dest"])[0] for _, row in members)
            node = choice_of.get(dests)
            if node is None:
                node = choice_of[dests] = f"choice_{len(choice_of) + 1}"
                out.choices[node] = []
            out.choices[node].append(trigger)
            out.edges.extend(Edge(s, node, trigger) for s in sources)
            for i, row in members:
                dest = _names(row["dest"])[0]
                guard = guard_of(i, row, sources[0])
                out.edges.append(Edge(node, dest, trigger, guard, _action(row)))
        elif len(sources) > 1:
            ((i, row),) = members
            node = f"join_{trigger}_{len(out.junctions) + 1}"
            out.junctions[node] = trigger
            out.edges.extend(Edge(s, node) for s in sources)
            dest = _names(row["dest"])[0]
            out.edges.append(Edge(node, dest, trigger, guard_of(i, row, sources[0]), _action(row)))
        else:
            for i, row in members:
                dest = _names(row["dest"])[0]
                out.edges.append(
                    Edge(sources[0], dest, trigger, guard_of(i, row, sources[0]), _action(row))
                )
    return out


def _comment_lines(c: Chart) -> list[str]:
    """The comment both text formats carry, saying where they come from and what is left out."""
    return [
        "Generated by `make statecharts` (python -m qqconn.statecharts) from"
        " qqconn.machine.STATES and build_rows(); do not edit by hand.",
        "Left out: the generated catch-all rows with after=ignore"
        f" ({c.left_out['ignore']}), the ignore_unexpected rows ({c.left_out['ignore_unexpected']})"
        f" and the refuse_start rows ({c.left_out['refuse_start']}).",
        "Internal transitions (dest None) are listed in their state (trigger [guard] / action)."
        " Rows of one trigger are tried in table order; [else] fires when every guard failed.",
        "assess is queued by the machine on entering QUICK_DROPPED and BACKOFF.",
    ]


# -- Mermaid ----------------------------------------------------------------------------------


def _mermaid(c: Chart) -> str:
    lines = ["---", f"title: {TITLE}", "---", "stateDiagram-v2"]
    lines += ["  %% " + line for line in _comment_lines(c)]
    lines.append("  direction TB")
    # One class per look; a terminal state's border is thicker.
    looks = {name: (*_COLOURS.get(name, _DEFAULT_COLOUR), name in c.terminal) for name in c.states}
    classes: dict[tuple[str, str, bool], str] = {}
    for look in looks.values():
        classes.setdefault(look, f"c{len(classes) + 1}")
    for (fill, stroke, terminal), cls in classes.items():
        width = "3px" if terminal else "1.5px"
        lines.append(
            f"  classDef {cls} fill:{fill},stroke:{stroke},stroke-width:{width},color:#111111"
        )
    lines.append("")
    for name in c.states:
        lines.append(f'  state "{name}" as {name}')
    for node in c.choices:
        lines.append(f"  state {node} <<choice>>")
    lines.append("")
    lines.append(f"  [*] --> {c.states[0]}")
    # Arrows carry trigger [guard] only (Mermaid lays long labels out badly; the actions are in
    # the dot/SVG), and the rows that take one arrow share it, separated by commas.
    merged: dict[tuple[str, str], list[str]] = {}
    for edge in c.edges:
        if edge.source in c.junctions:
            continue  # Mermaid has no plain junction: one labelled arrow per source instead
        if edge.dest in c.junctions:
            out = next(e for e in c.edges if e.source == edge.dest)
            edge = Edge(edge.source, out.dest, out.trigger, out.guard)
        if len(c.choices.get(edge.source, ())) == 1:
            edge = Edge(edge.source, edge.dest, "", edge.guard)
        label = _label(edge.trigger, edge.guard, "")
        labels = merged.setdefault((edge.source, edge.dest), [])
        if label and label not in labels:
            labels.append(label)
    for (source, dest), labels in merged.items():
        lines.append(f"  {source} --> {dest}" + (f": {', '.join(labels)}" if labels else ""))
    for name in c.terminal:
        lines.append(f"  {name} --> [*]")
    for name in c.states:
        # A state's description lines are drawn inside its box: its internal transitions.
        lines += [f"  {name}: {line}" for line in c.internal[name]]
    lines.append("")
    for name in c.states:
        lines.append(f"  class {name} {classes[looks[name]]}")
    return "\n".join(line.rstrip() for line in lines) + "\n"


# -- Graphviz ---------------------------------------------------------------------------------


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _state_label(name: str, internal: list[str], stroke: str) -> str:
    rows = [f'<tr><td align="center"><font point-size="14"><b>{_h(name)}</b></font></td></tr>']
    if internal:
        rows.append("<hr/>")
        cells = "<br/>".join(_h(line) for line in internal)
        rows.append(
            f'<tr><td align="left" balign="left"><font point-size="10" color="{stroke}">'
            f"{cells}</font></td></tr>"
        )
    return (
        '<<table border="0" cellborder="0" cellspacing="0" cellpadding="4">'
        + "".join(rows)
        + "</table>>"
    )


def _edge_label(edges: Sequence[Edge]) -> str:
    """One line per row, ``trigger [guard]`` with its action greyed: an HTML-like label."""
    lines = []
    for edge in edges:
        line = _h(_label(edge.trigger, edge.guard, ""))
        if edge.action:
            line += f' <font color="#6b7280" point-size="9">/ {_h(edge.action)}</font>'
        if line:
            lines.append(line)
    return (
        "<"
        + '<br align="left"/>'.join(lines)
        + ('<br align="left"/>' if len(lines) > 1 else "")
        + ">"
        if lines
        else ""
    )


def _dot(c: Chart) -> str:
    out = [f"// {line}" for line in _comment_lines(c)]
    caption = (
        f'<b>{_h(TITLE)}</b><br/><font point-size="10">{_h(_LEGEND)}<br/>{_h(_HOW_TO_READ)}</font>'
    )
    out += [
        f"digraph {_q(TITLE)} {{",
        "\tgraph [rankdir=TB labelloc=t fontname=Helvetica fontsize=16 nodesep=0.5"
        f" ranksep=0.55 newrank=true label=<{caption}>]",
        '\tnode [fontname=Helvetica shape=box style="rounded,filled" margin="0.1,0.05"]',
        '\tedge [fontname=Helvetica fontsize=11 color="#374151" arrowsize=0.8]',
        '\t__start [label="" shape=circle style=filled fillcolor=black width=0.22 id="start"]',
    ]
    for name in c.states:
        if name in c.terminal:
            continue
        fill, stroke = _COLOURS.get(name, _DEFAULT_COLOUR)
        out.append(
            f"\t{name} [label={_state_label(name, c.internal[name], stroke)}"
            f' fillcolor="{fill}" color="{stroke}" penwidth=1.5 id="state_{name}"]'
        )
    ports: dict[tuple[str, str], str] = {}
    for node, triggers in c.choices.items():
        if len(triggers) == 1:
            # A choice of one trigger is a diamond that names it; its arrows carry the guards.
            out.append(
                f'\t{node} [label="" xlabel={_q(triggers[0])} shape=diamond style=filled'
                f' fillcolor="#f9fafb" color="#374151" width=0.3 height=0.3 id="{node}"]'
            )
            continue
        # A choice several triggers share is a decision table: one cell per destination,
        # listing the rows that lead there; one unlabelled arrow leaves each cell.
        branches: dict[str, list[Edge]] = {}
        for edge in c.edges:
            if edge.source == node:
                branches.setdefault(edge.dest, []).append(edge)
        cells = []
        for dest, edges in branches.items():
            ports[(node, dest)] = node
            lines = "".join(
                f'{_h(_label(e.trigger, e.guard, ""))}<br align="left"/>'
                + (
                    f'<font color="#6b7280" point-size="9">    / {_h(e.action)}</font>'
                    '<br align="left"/>'
                    if e.action
                    else ""
                )
                for e in edges
            )
            cells.append(
                f'<tr><td align="left" balign="left"><b>&#8594; {_h(dest)}</b>'
                f'<br align="left"/>{lines}</td></tr>'
            )
        table = (
            '<<table border="1" cellborder="0" cellspacing="0" cellpadding="4" style="rounded"'
            ' color="#374151" bgcolor="#f9fafb"><tr><td align="left"><font point-size="10">'
            "&#9671; choice: the first row that holds, in table order</font></td></tr><hr/>"
            + "<hr/>".join(cells)
            + "</table>>"
        )
        out.append(f'\t{node} [label={table} shape=plain fontsize=10 id="{node}"]')
    for node in c.junctions:
        out.append(f'\t{node} [label="" shape=point width=0.08 color="#374151" id="{node}"]')
    if c.terminal:
        out.append("\tsubgraph cluster_terminal {")
        out.append(
            '\t\tlabel=<<font point-size="11">terminal: no way out</font>> style="dashed,rounded"'
            ' color="#9ca3af" fontname=Helvetica'
        )
        for name in c.terminal:
            fill, stroke = _COLOURS.get(name, _DEFAULT_COLOUR)
            out.append(
                f"\t\t{name} [label={_state_label(name, c.internal[name], stroke)}"
                f' fillcolor="{fill}" color="{stroke}" penwidth=2 peripheries=2 id="state_{name}"]'
            )
        out.append("\t}")
        out.append("\t{rank=sink; " + "; ".join(c.terminal) + "}")
    out.append(f"\t__start -> {c.states[0]}")
    # One arrow per (from, to), carrying every row that takes it, one line each.
    merged: dict[tuple[str, str], list[Edge]] = {}
    for edge in c.edges:
        merged.setdefault((edge.source, edge.dest), []).append(edge)
    for (source, dest), edges in merged.items():
        attrs = []
        tail = source
        if (source, dest) in ports:
            edges = []  # the decision table's cell for this destination lists the rows
        elif len(c.choices.get(dest, ())) == 1:
            edges = []  # the diamond names its one trigger
        elif len(c.choices.get(source, ())) == 1:
            edges = [Edge(e.source, e.dest, "", e.guard, e.action) for e in edges]
        label = _edge_label(edges)
        if label:
            attrs.append(f"label={label}")
        if dest in c.junctions or dest in c.choices:
            attrs.append("arrowhead=none")
        if dest in c.terminal:
            attrs.append(f'color="{_COLOURS.get(dest, _DEFAULT_COLOUR)[1]}"')
        out.append(f"\t{tail} -> {dest}" + (f" [{' '.join(attrs)}]" if attrs else ""))
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_program() -> str | None:
    return shutil.which("dot")


def draw_svg(dot_source: str) -> str:
    """Draw ``dot_source`` as SVG with Graphviz's ``dot`` program, marked with the source's
    SHA-256. Raises :class:`GraphvizUnavailable` when ``dot`` is not installed."""
    program = _dot_program()
    if program is None:
        raise GraphvizUnavailable(
            "drawing the svg statechart needs Graphviz's dot program, which is not installed"
            f" ({INSTALL_DOT}); the mermaid and dot formats need nothing"
        )
    done = subprocess.run(
        [program, "-Tsvg"],
        input=dot_source.encode("utf-8"),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"dot failed ({done.returncode}): {done.stderr.decode(errors='replace')[:500]}"
        )
    svg = done.stdout.decode("utf-8")
    digest = hashlib.sha256(dot_source.encode("utf-8")).hexdigest()
    lines = svg.replace("\r\n", "\n").split("\n")
    # After the XML declaration, the doctype and dot's "Generated by" comment.
    at = next(i for i, line in enumerate(lines) if line.startswith("<svg"))
    lines.insert(at, SVG_SOURCE_MARK.format(digest=digest))
    return "\n".join(line.rstrip() for line in lines).rstrip("\n") + "\n"


def _svg(dot_source: str) -> str:
    """The packaged drawing when it was drawn from ``dot_source``, else a fresh one."""
    mark = SVG_SOURCE_MARK.format(digest=hashlib.sha256(dot_source.encode("utf-8")).hexdigest())
    try:
        packaged = PACKAGED_SVG.read_text(encoding="utf-8")
    except OSError:
        packaged = ""
    if mark in packaged:
        return packaged
    try:
        return draw_svg(dot_source)
    except GraphvizUnavailable:
        raise GraphvizUnavailable(
            "the packaged statechart SVG was drawn from another table, and drawing a new one"
            f" needs Graphviz's dot program ({INSTALL_DOT})"
        ) from None


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
        return _mermaid(c)
    if fmt == "dot":
        return _dot(c)
    return _svg(_dot(c))


def write_all(directory: str | Path) -> list[Path]:
    """Write every format into ``directory`` (created if missing) as :data:`FILES` names them,
    the SVG freshly drawn by ``dot``; return the paths written. Files are only rewritten when
    their content changed."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    c = chart()
    texts: dict[Format, str] = {"mermaid": _mermaid(c), "dot": _dot(c)}
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


if __name__ == "__main__":
    raise SystemExit(main())
