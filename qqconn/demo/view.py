"""The live view: prints the tour as it happens, fed by the library's own log events.

:meth:`LiveView.observe` is a structlog processor. Each ``qqconn.transition`` the machine logs
becomes a line at the moment the edge is taken, with the counters and the guard's reason read
from the machine (:mod:`qqconn.demo.explain`); heartbeats and the library's warnings get a line
too. A line that cannot be written ends the view (a closed pipe), never the manager.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import structlog

from qqconn.demo.style import style_for

if TYPE_CHECKING:
    from qqconn.demo.stage import Run

__all__ = ["LiveView"]


class LiveView:
    """Prints the tour as it happens. Its :meth:`observe` is a structlog processor."""

    def __init__(
        self,
        out: TextIO,
        *,
        color: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.out = out
        self.s = style_for(out, os.environ if env is None else env, color=color)
        self.t0 = time.monotonic()
        #: The run whose events are shown (None between scenarios).
        self.run: Run | None = None
        #: The output is gone (a closed pipe): nothing more is written, the tour ends early.
        self.closed = False
        #: Bugs of the view itself, caught so they never reach the library's logging call.
        self.errors: list[str] = []

    # -- output helpers

    def line(self, text: str = "") -> None:
        """Write one line; never raises (it runs inside the library's logging calls)."""
        if self.closed:
            return
        try:
            self.out.write(self.s.fit(text) + "\n")
            self.out.flush()
        except (OSError, ValueError):  # the reader went away (`qqconn demo | head`)
            self.closed = True

    def stamp(self, at: float | None = None) -> str:
        t = (time.monotonic() if at is None else at) - self.t0
        return self.s(f"{t:+7.3f}", "dim")

    def say(self, tag: str, text: str, colour: str = "magenta") -> None:
        self.line(f"  {self.stamp()}  {self.s(tag.ljust(8), colour, 'bold')}{text}")

    def heading(self, number: int, total: int, name: str, title: str, story: str) -> None:
        s = self.s
        label = f" {number}/{total}  {name} {s.dash} {title} "
        self.line()
        self.line(s(s.rule * 2 + label + s.rule * max(4, 96 - len(label)), "bold"))
        for text in story.splitlines():
            self.line(s("   " + text, "dim"))
        self.line()

    # -- the structlog processor

    def observe(self, _logger: Any, method: str, event: MutableMapping[str, Any]) -> NoReturn:
        """Turn the library's log events into lines of the tour; drop them afterwards.

        This runs inside the machine's own logging calls, so it never raises anything but
        ``DropEvent``: a bug here is recorded (and fails the verdict), never passed on.
        """
        try:
            self._observe(method, event)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        raise structlog.DropEvent

    def _observe(self, method: str, event: MutableMapping[str, Any]) -> None:
        run = self.run
        name = str(event.get("event", ""))
        if run is None or not name.startswith("qqconn."):
            return
        run.log_events.append((name, method))
        if name == "qqconn.transition":
            self._transition(run, event)
        elif name == "qqconn.heartbeat":
            self.line(
                f"  {self.stamp()}  {self.s(self.s.heart, 'green')} "
                + self.s(
                    f"{event.get('acked')} heartbeats acknowledged {self.s.dot} "
                    f"last s={event.get('last_seq')} {self.s.dot} "
                    f"ACK after {event.get('latency_ms')} ms",
                    "dim",
                )
            )
        elif method in ("warning", "error", "exception", "critical") and name not in (
            "qqconn.connection_ended",
            "qqconn.fatal",
        ):
            detail = " ".join(
                f"{k}={v}"
                for k, v in event.items()
                if k not in ("event", "app_id", "shard", "level", "log_level")
            )
            self.say("library", f"{name} {detail}"[:160], "yellow")

    def _transition(self, run: Run, event: Mapping[str, Any]) -> None:
        s = self.s
        step = run.record_step(str(event["from"]), str(event["to"]), str(event["trigger"]))
        m = run.mgr.machine
        p = m.policy
        counters = s(
            f"quick {m.quick_drops}/{p.max_quick_disconnects} {s.dot} "
            f"failed {m.failed_attempts}/{p.max_reconnect_attempts} {s.dot} attempt {m.attempt}",
            "dim",
        )
        self.line(
            f"  {self.stamp(step.at)}  {s.state(step.source)} {s.arrow} {s.state(step.dest, 14)}"
            f"{' ' * max(0, 14 - len(step.source))}{s(step.trigger.ljust(17), 'bold')}{counters}"
        )
        self.line(f"  {' ' * 7}  {s('why', 'dim')} {step.why}")
