"""What the tour prints after each scenario and at the end: results, paths, the summary table.

Pure formatting of :mod:`qqconn.demo.verdict` records onto a :class:`~qqconn.demo.view.LiveView`.
"""

from __future__ import annotations

from collections.abc import Sequence

from qqconn.demo.verdict import DemoReport, FaultTiming, ScenarioResult
from qqconn.demo.view import LiveView
from qqconn.machine import TRANSITIONS

__all__ = ["print_path", "print_result", "print_summary", "wrapped"]


def print_result(view: LiveView, result: ScenarioResult) -> None:
    s = view.s
    view.line()
    for timing in result.faults:
        detect = (
            "not detected" if timing.detect_s is None else f"detected in {timing.detect_s:.3f} s"
        )
        if timing.outcome == "FATAL":
            recover = "gave up: FATAL, host notified"
        elif timing.recover_s is None:
            recover = "not recovered"
        else:
            recover = f"live again in {timing.recover_s:.3f} s ({timing.outcome})"
        view.line(f"   {s(timing.fault, 'bold')}: {detect}, {recover}")
    d = result.delivery
    if d is not None:
        view.line(
            f"   events: {d.sent} sent, {d.delivered} delivered, {len(d.lost)} lost, "
            f"{len(d.duplicated)} duplicated"
        )
    for c in result.checks:
        mark = s(s.ok, "green") if c.ok else s(s.bad, "red", "bold")
        detail = s(f"  ({c.detail})", "dim") if c.detail and not c.ok else ""
        view.line(f"   {mark} {c.name}{detail}")


def wrapped(view: LiveView, label: str, parts: Sequence[tuple[str, str]], width: int = 100) -> None:
    """Print (plain, styled) parts after ``label``, wrapped at ``width`` plain characters."""
    indent = " " * (3 + len(label) + 2)
    line, used = f"   {view.s(label, 'bold')}: ", 3 + len(label) + 2
    for plain, styled in parts:
        if used + len(plain) > width and used > len(indent):
            view.line(line.rstrip())
            line, used = indent, len(indent)
            plain, styled = plain.lstrip(), styled.lstrip()
        line += styled
        used += len(plain)
    view.line(line.rstrip())


def print_path(view: LiveView, result: ScenarioResult) -> None:
    s = view.s
    for i, steps in enumerate(result.paths):
        if not steps:
            continue
        parts = [(steps[0].source, s.state(steps[0].source))]
        for st in steps:
            edge = f" {s.arrow}{st.trigger}{s.arrow} "
            parts.append((edge + st.dest, s(edge, "dim") + s.state(st.dest)))
        wrapped(view, "path" if len(result.paths) == 1 else f"path {i + 1}", parts)


def _diagram_edges() -> set[tuple[str, str, str]]:
    edges: set[tuple[str, str, str]] = set()
    for row in TRANSITIONS:
        dest = row["dest"]
        if dest is None:
            continue
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        for src in sources:
            edges.add((src.name, row["trigger"], dest.name))
    return edges


def print_summary(view: LiveView, report: DemoReport, show_path: bool) -> None:
    s = view.s
    view.line()
    label = " summary "
    view.line(s(s.rule * 2 + label + s.rule * (96 - len(label)), "bold"))
    header = (
        f"   {'scenario':<11} {'fault injected':<27} {'detect':>8} {'recover':>8}  "
        f"{'sent':>4} {'deliv':>5} {'lost':>4} {'dup':>3}  {'end state':<10} ok"
    )
    view.line(s(header, "bold"))
    for r in report.results:
        d = r.delivery
        events = (
            f"{d.sent:>4} {d.delivered:>5} {len(d.lost):>4} {len(d.duplicated):>3}"
            if d is not None
            else f"{'—':>4} {'—':>5} {'—':>4} {'—':>3}"
        )
        mark = s(s.ok, "green") if r.ok else s(s.bad, "red", "bold")
        for i, t in enumerate(r.faults or [FaultTiming("(none)", 0.0)]):
            detect = "—" if t.detect_s is None else f"{t.detect_s:.3f}s"
            recover = (
                "FATAL"
                if t.outcome == "FATAL"
                else ("—" if t.recover_s is None else f"{t.recover_s:.3f}s")
            )
            name = r.name if i == 0 else ""
            tail = f"  {events}  {s.state(r.end_state.upper(), 10)} {mark}" if i == 0 else ""
            view.line(f"   {name:<11} {t.fault[:27]:<27} {detect:>8} {recover:>8}{tail}")
    if show_path:
        used = {
            (st.source, st.trigger, st.dest)
            for r in report.results
            for steps in r.paths
            for st in steps
        }
        edges = _diagram_edges()
        view.line()
        view.line(f"   statechart edges taken: {len(used & edges)} of {len(edges)}")
        missing = sorted(edges - used)
        if missing:
            parts = [
                (text, text)
                for text in (
                    f"{a} {s.arrow}{t}{s.arrow} {b}" + (", " if i < len(missing) - 1 else "")
                    for i, (a, t, b) in enumerate(missing)
                )
            ]
            wrapped(view, "never taken here", parts)
    view.line()
    checks = sum(len(r.checks) for r in report.results)
    if report.ok:
        view.line(
            s(
                f"   {s.ok} {_plural(len(report.results), 'scenario')} behaved as docs/behaviour.md "
                f"requires ({checks} checks passed) in {report.wall_s:.1f} s",
                "green",
                "bold",
            )
        )
    else:
        view.line(s(f"   {s.bad} qqconn misbehaved:", "red", "bold"))
        for line in report.failures():
            view.line(s(f"     - {line}", "red"))


def _plural(n: int, noun: str) -> str:
    return f"{'all ' if n > 1 else ''}{n} {noun}{'s' if n != 1 else ''}"
