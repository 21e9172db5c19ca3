"""The chart: what the statecharts draw, read from the machine's table, independent of the format.

:func:`chart` turns :data:`qqconn.machine.STATES` and :func:`qqconn.machine.build_rows` into a
:class:`Chart` (states, their internal transitions, choices, junctions, arrows); every format in
:mod:`qqconn.statecharts` is written from it. The look both text formats share (the title, the
colour of each state, the comment saying where the file comes from) is here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qqconn.machine import STATES, State, build_rows

__all__ = ["LEFT_OUT", "TITLE", "Chart", "Edge", "chart", "diagram_rows"]

#: Rows whose ``after`` action is one of these are left out of the diagrams.
LEFT_OUT = ("ignore", "ignore_unexpected", "refuse_start")

TITLE = "qqconn connection machine"

#: Fill and border colour per state; a state the table adds later is drawn white.
_COLOURS: dict[str, tuple[str, str]] = {
    State.CONNECTING.name: ("#dbeafe", "#1d4ed8"),  # an attempt is under way
    State.IDENTIFIED.name: ("#dbeafe", "#1d4ed8"),
    State.ALIVE.name: ("#dcfce7", "#15803d"),  # the session is live
    State.QUICK_DROPPED.name: ("#fef3c7", "#b45309"),  # between attempts
    State.BACKOFF.name: ("#fef3c7", "#b45309"),
    State.AWAITING_PERMIT.name: ("#fef3c7", "#b45309"),  # no socket: waiting for a permit
    State.FATAL.name: ("#fee2e2", "#b91c1c"),  # terminal: gave up
    State.STOPPED.name: ("#e5e7eb", "#374151"),  # terminal: stopped by the host
}
_DEFAULT_COLOUR = ("#ffffff", "#000000")


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
