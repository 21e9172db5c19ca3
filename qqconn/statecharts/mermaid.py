"""The chart as Mermaid (``stateDiagram-v2``): what GitHub shows in the README."""

from __future__ import annotations

from qqconn.statecharts.model import (
    _COLOURS,
    _DEFAULT_COLOUR,
    TITLE,
    Chart,
    Edge,
    _comment_lines,
    _label,
)

__all__ = ["to_mermaid"]


def to_mermaid(c: Chart) -> str:
    """The chart as Mermaid ``stateDiagram-v2`` source (what GitHub draws in the README)."""
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
