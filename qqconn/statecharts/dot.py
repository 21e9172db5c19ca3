"""The chart as Graphviz ``dot`` source: HTML-like labels, a decision table per shared choice."""

from __future__ import annotations

import html
from collections.abc import Sequence

from qqconn.statecharts.model import (
    _COLOURS,
    _DEFAULT_COLOUR,
    TITLE,
    Chart,
    Edge,
    _comment_lines,
    _label,
)

__all__ = ["to_dot"]

_LEGEND = (
    "blue: an attempt under way · green: the session is live · amber: between attempts · "
    "double border: terminal, nothing leaves it"
)
_HOW_TO_READ = (
    "Inside a box: its internal transitions, trigger [guard] / action, in table order. "
    "Rows of one trigger are tried top to bottom; [else] fires when every guard before it failed."
)


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


def to_dot(c: Chart) -> str:
    """The chart as Graphviz ``dot`` source (what the SVG is drawn from)."""
    out = [f"// {line}" for line in _comment_lines(c)]
    caption = (
        f'<b>{_h(TITLE)}</b><br/><font point-size="10">{_h(_LEGEND)}<br/>{_h(_HOW_TO_READ)}</font>'
    )
    out += [
        f"digraph {_q(TITLE)} {{",
        "\tgraph [rankdir=TB labelloc=t fontname=Helvetica fontsize=16 nodesep=0.2"
        f" ranksep=1.4 newrank=true label=<{caption}>]",
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
