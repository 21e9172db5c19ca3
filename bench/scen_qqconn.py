"""Client side of the benchmarks, qqconn: one scenario per process, one RESULT line out.

Run by bench/run.py against a bench/gateway_proc.py it started; see docs/benchmarks.md for
what each scenario measures. Every timestamp is ``time.monotonic()``, which on Linux is the
system-wide CLOCK_MONOTONIC, so it compares directly with the fake gateway's records.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Control,
    Fakes,
    GcPauses,
    LoopCounts,
    analyse_recovery,
    client_parser,
    cpu_s,
    emit,
    fakes_cpu,
    heartbeat_window,
    paced_phase,
    raise_nofile,
    ramp,
    rss_kb,
    timed_burst,
    until,
    window_figures,
)

from qqconn import ConnectionManager, FatalError, Policy, State
from qqconn.protocol import Dispatch

INTENTS = 1 << 30 | 1 << 25  # PUBLIC_GUILD_MESSAGES | GROUP_AND_C2C_EVENT


class Sink:
    """The host's on_dispatch: count, and stamp the first and the goal-th event."""

    def __init__(self, record: bool = False) -> None:
        self.count = 0
        self.goal = -1
        self.t_first = 0.0
        self.t_last = 0.0
        self.done = asyncio.Event()
        self.record = record
        self.seen: list[tuple[float, int | None]] = []

    def reset(self, goal: int) -> None:
        self.count = 0
        self.goal = goal
        self.done.clear()

    def __call__(self, d: Dispatch) -> None:
        self.count += 1
        if self.count == 1:
            self.t_first = time.monotonic()
        if self.count == self.goal:
            self.t_last = time.monotonic()
            self.done.set()
        if self.record:
            self.seen.append((time.monotonic(), d.seq if d.type != "READY" else None))


class States:
    """on_state_change: every change with the time it reached the host."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, State, State, str]] = []

    def __call__(self, change: Any) -> None:
        self.changes.append((time.monotonic(), change.state, change.previous, change.trigger))

    def left_alive_after(self, t: float) -> tuple[float, State, State, str] | None:
        for c in self.changes:
            if c[0] >= t and c[2] is State.ALIVE:
                return c
        return None


def manager(a: argparse.Namespace, **kw: Any) -> ConnectionManager:
    return ConnectionManager(
        app_id=a.app_id,
        client_secret="s3cret",
        intents=INTENTS,
        api_base=a.api_base,
        token_url=a.token_url,
        **kw,
    )


async def stop_all(mgrs: list[ConnectionManager], tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*(m.stop() for m in mgrs), return_exceptions=True)
    for t in tasks:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(t, 5)


# -- 1. dispatch throughput ---------------------------------------------------------------


async def throughput(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    counts = LoopCounts()
    sink = Sink()
    mgr = manager(a, on_dispatch=sink)
    task = asyncio.create_task(mgr.run())
    await until(lambda: mgr.state is State.ALIVE, 20, what="ALIVE")
    sink.reset(a.warmup)
    await ctl.call("burst", n=a.warmup)
    await asyncio.wait_for(sink.done.wait(), 60)
    gc.collect()
    sink.reset(a.n)
    cpu0 = cpu_s()
    counts.start()
    fake = await ctl.call("burst", n=a.n)
    await asyncio.wait_for(sink.done.wait(), 300)
    loop_objects = counts.stop()
    cpu1 = cpu_s()
    elapsed = sink.t_last - sink.t_first
    result = {
        "side": "qqconn",
        "events": a.n,
        "delivered": sink.count,
        "events_per_s": (a.n - 1) / elapsed,
        "client_cpu_us_per_event": (cpu1 - cpu0) / a.n * 1e6,
        **LoopCounts.per(loop_objects, a.n),
        "fake_cpu_us_per_event": fake["cpu_s"] / a.n * 1e6,
        "fake_write_s": fake["t_end"] - fake["t_start"],
        "frame_bytes": fake["bytes"] / a.n,
        "dropped": mgr.dispatches_dropped,
        "last_seq": mgr.machine.last_seq,
        "expected_last_seq": fake["last_seq"],
    }
    result.update(await paced_phase(a, ctl, sink, counts))
    await stop_all([mgr], [task])
    return result


# -- 1b. heartbeats of an idle connection -------------------------------------------------


async def beats(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    counts = LoopCounts()
    mgr = manager(a)
    task = asyncio.create_task(mgr.run())
    await until(lambda: mgr.state is State.ALIVE, 20, what="ALIVE")
    await until(lambda: mgr.machine.acks >= 3, 30, what="3 ACKs")
    result = {
        "side": "qqconn",
        **await heartbeat_window(a.window, lambda: mgr.machine.acks, counts),
    }
    result["sockets"] = (await ctl.call("stats"))["connections"]
    await stop_all([mgr], [task])
    return result


# -- 2. time to detect a dead connection --------------------------------------------------


async def detect(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    states = States()
    mgr = manager(a, on_state_change=states)
    task = asyncio.create_task(mgr.run())
    interval = a.hb_ms / 1000
    out: dict[str, Any] = {"side": "qqconn", "interval_s": interval}
    rng = random.Random()
    for fault, on, off in (
        ("zombie", {"ack": False}, {"ack": True}),
        ("halfopen", {"silent": True}, {"silent": False}),
    ):
        await until(lambda: mgr.state is State.ALIVE, 20, what="ALIVE")
        base = mgr.machine.acks
        await until(
            lambda base=base: mgr.machine.acks >= base + 3, 10 * interval + 5, what="3 ACKs"
        )
        await asyncio.sleep(rng.uniform(0, interval))  # the fault lands at a random phase
        conns = await ctl.call("connections")
        live = [c for c in conns if c["closed_at"] is None]
        t_fault = (await ctl.call("faults", **on))["at"]
        try:
            await until(
                lambda t=t_fault: states.left_alive_after(t) is not None,
                10 * interval + 5,
                what="detection",
            )
        except TimeoutError:
            out[fault] = {"detected": False}
            await ctl.call("faults", **off)
            continue
        change = states.left_alive_after(t_fault)
        assert change is not None
        t_detect = change[0]
        reason = mgr.machine.last_ending.reason if mgr.machine.last_ending else None
        await ctl.call("faults", **off)
        t_back = time.monotonic()
        await until(lambda: mgr.state is State.ALIVE, 20, what="ALIVE again")
        recovered_s = time.monotonic() - t_back
        await asyncio.sleep(0.3)
        rows = {c["index"]: c for c in await ctl.call("connections", frames=True)}
        conn = rows[live[-1]["index"]]
        last_ack = max((t for t in conn["acks_out"] if t <= t_fault), default=None)
        last_frame = conn["last_out"]
        out[fault] = {
            "detected": True,
            "from_last_ack_intervals": None
            if last_ack is None
            else (t_detect - last_ack) / interval,
            "from_last_frame_intervals": None
            if last_frame is None
            else (t_detect - last_frame) / interval,
            "from_fault_intervals": (t_detect - t_fault) / interval,
            "reason": reason,
            "close_code": conn["close_code"],
            "closed_by": conn["closed_by"],
            "socket_gone_after_detect_s": None
            if conn["closed_at"] is None
            else conn["closed_at"] - t_detect,
            "resumed": conns[-1]["index"] < max(rows),
            "alive_again_after_fault_off_s": recovered_s,
        }
    await stop_all([mgr], [task])
    return out


# -- 3. time to recover -------------------------------------------------------------------


async def recover(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    sink = Sink(record=True)
    states = States()
    mgr = manager(a, on_dispatch=sink, on_state_change=states)
    task = asyncio.create_task(mgr.run())
    await until(lambda: mgr.state is State.ALIVE, 20, what="ALIVE")
    sid = mgr.machine.session_id
    # QQ rotates a connection after ~30 min; op 7 on a socket younger than the quick-drop
    # threshold is treated as a suspicious loop and backed off (by design). Let it mature.
    await asyncio.sleep(a.mature)
    await ctl.call("pump_start", rate=a.rate, session_id=sid)
    await asyncio.sleep(a.before)
    if a.trigger == "op7":
        t_trigger = (await ctl.call("reconnect", close_after_s=0.2))["at"]
    else:
        t_trigger = (await ctl.call("close", code=4009))["at"]
    await asyncio.sleep(a.after)
    await ctl.call("pump_stop")
    await asyncio.sleep(0.5)
    accepted = await ctl.call("accepted", session_id=sid)
    conns = await ctl.call("connections", frames=True)
    result = analyse_recovery(sink.seen, accepted, conns, t_trigger)
    alive = [c for c in states.changes if c[0] > t_trigger and c[1] is State.ALIVE]
    result["alive_again_s"] = alive[0][0] - t_trigger if alive else None
    result["side"] = "qqconn"
    result["trigger"] = a.trigger
    await stop_all([mgr], [task])
    return result


# -- 4. the seed's loop -------------------------------------------------------------------


async def seedloop(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    code = None if a.code == "none" else int(a.code)
    await ctl.call("faults", close_new_sockets=[0.1, 100000, code])
    fatal_at: list[float] = []
    mgr = manager(a, on_fatal=lambda e: fatal_at.append(time.monotonic()))
    t_run = time.monotonic()
    error: str | None = None
    try:
        await asyncio.wait_for(mgr.run(), a.window)
    except FatalError as exc:
        error = exc.reason
    except TimeoutError:
        error = None
    t_end = time.monotonic()
    await asyncio.sleep(1.0)  # anything opened after FATAL would show now
    conns = await ctl.call("connections")
    t_fatal = fatal_at[0] if fatal_at else None
    return {
        "side": "qqconn",
        "code": a.code,
        "fatal": t_fatal is not None,
        "fatal_reason": error,
        "sockets_before_fatal": sum(
            1 for c in conns if t_fatal is None or c["opened_at"] <= t_fatal
        ),
        "sockets_total": len(conns),
        "time_to_fatal_s": None if t_fatal is None else t_fatal - conns[0]["opened_at"],
        "time_from_run_s": None if t_fatal is None else t_fatal - t_run,
        "window_s": t_end - t_run,
    }


# -- 5. many connections in one process ---------------------------------------------------


async def many(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    """Item 5 (one fake), and item 10 with its options (several fakes, ``--settle``,
    ``--freeze-window``, ``--burst`` on connection 0 beside the idle others)."""
    raise_nofile()
    interval = a.hb_ms / 1000
    fakes = await Fakes.connect(a, ctl)
    changes: list[list[tuple[float, State, State, str]]] = []
    mgrs: list[ConnectionManager] = []
    tasks: list[asyncio.Task[None]] = []
    sink = Sink()
    # Connections whose first attempt is over (ALIVE, or ended): the ramp's bound counts the
    # others. One that ended and backs off no longer holds the ramp back.
    settled = [0]
    first_over = (State.ALIVE, State.BACKOFF, State.QUICK_DROPPED, State.FATAL, State.STOPPED)

    def record(log: list[tuple[float, State, State, str]], c: Any) -> None:
        if c.state in first_over and not any(x[1] in first_over for x in log):
            settled[0] += 1
        log.append((time.monotonic(), c.state, c.previous, c.trigger))

    def add() -> None:
        log: list[tuple[float, State, State, str]] = []
        changes.append(log)
        fake, _ = fakes.of(len(mgrs))
        mgr = ConnectionManager(
            app_id=fake["app_id"],
            client_secret="s3cret",
            intents=INTENTS,
            api_base=fake["api_base"],
            token_url=fake["token_url"],
            on_dispatch=sink if not mgrs else None,
            on_state_change=lambda c, log=log: record(log, c),
        )
        mgrs.append(mgr)
        tasks.append(asyncio.create_task(mgr.run()))

    # One warm connection first (lazy imports, first-use caches), then the baseline.
    add()
    await until(lambda: mgrs[0].state is State.ALIVE, 30, what="warm-up ALIVE")
    gc.collect()
    rss0 = rss_kb()
    t_ramp, fr0 = time.monotonic(), await fakes.stats()
    await ramp(a.n, a.ramp_per_s, add, lambda: len(mgrs) - settled[0], a.max_pending)
    await until(
        lambda: all(m.state is State.ALIVE for m in mgrs),
        300 + a.n / 50,
        step=0.1,
        what="all ALIVE",
    )
    ramp_s = time.monotonic() - t_ramp
    fr1 = await fakes.stats()
    # First heartbeats of the last ones (item 5: two intervals).
    await asyncio.sleep(2 * interval if a.settle is None else a.settle)
    pauses = GcPauses()
    t0, c0, f0 = time.monotonic(), cpu_s(), await fakes.stats()
    await asyncio.sleep(a.window)
    t1, c1, f1 = time.monotonic(), cpu_s(), await fakes.stats()
    gc.collect()
    rss1 = rss_kb()
    gaps = await fakes.gaps(since=t0, until=t1, interval_s=interval)
    extra: dict[str, Any] = {}
    t_end = t1
    if a.freeze_window > 0:
        # What the README recommends: gc.freeze() once the managers are up; same process,
        # same connections, a second window as long as the first.
        gc.freeze()
        t2, c2 = time.monotonic(), cpu_s()
        await asyncio.sleep(a.freeze_window)
        t3, c3 = time.monotonic(), cpu_s()
        fgaps = await fakes.gaps(since=t2, until=t3, interval_s=interval)
        extra["frozen"] = {
            **pauses.summary(t2, t3),
            "window_s": t3 - t2,
            "cpu_pct_of_core": 100 * (c3 - c2) / (t3 - t2),
            "lateness_p50_ms": None if fgaps["p50_s"] is None else 1000 * fgaps["p50_s"],
            "lateness_p99_ms": None if fgaps["p99_s"] is None else 1000 * fgaps["p99_s"],
            "frozen_objects": gc.get_freeze_count(),
        }
        gc.unfreeze()
        t_end = t3
    if a.burst > 0:
        try:
            extra["burst"] = await _burst(a, ctl, mgrs[0], sink)
        except (RuntimeError, TimeoutError) as exc:  # reported, and the run's figures kept
            extra["burst"] = {"events": a.burst, "error": f"{type(exc).__name__}: {exc}"}
        t_end = time.monotonic()
    # A connection that left ALIVE before we stopped it is a false detection: the fakes are
    # healthy throughout. Counted during the ramp, the window(s) and the burst.
    ended = [c for log in changes for c in log if c[2] is State.ALIVE and c[0] <= t_end]
    reasons = sorted({m.machine.last_ending.reason for m in mgrs if m.machine.last_ending})
    result = {
        **window_figures(
            side="qqconn",
            n=a.n,
            ramp_s=ramp_s,
            t0=t0,
            t1=t1,
            rss=(rss0, rss1),
            cpu=(c0, c1),
            fake=(f0, f1),
            gaps=gaps,
            pauses=pauses,
        ),
        "false_detections": len(ended),
        "false_detections_ramp": sum(1 for c in ended if c[0] < t0),
        "false_detections_in_window": sum(1 for c in ended if t0 <= c[0] <= t1),
        "false_detection_reasons": reasons[:5],
        "sockets_total": (await fakes.stats())["connections"],
        "fakes": len(fakes.controls),
        "fake_cpu_window": fakes_cpu(f0, f1),
        "fake_cpu_ramp": fakes_cpu(fr0, fr1),
        "fewest_beats": gaps["fewest_beats"],
        **extra,
    }
    t_stop = time.monotonic()
    await stop_all(mgrs, tasks)
    result["stop_all_s"] = time.monotonic() - t_stop
    await fakes.close()
    return result


async def _burst(
    a: argparse.Namespace, ctl: Control, mgr: ConnectionManager, sink: Sink
) -> dict[str, Any]:
    """Item 1's burst on connection 0 (on the first fake) while the others stay connected."""
    result = await timed_burst(ctl, sink, mgr.machine.session_id, a.warmup, a.burst)
    result["dropped"] = mgr.dispatches_dropped
    return result


async def amain() -> None:
    ap = client_parser(
        ["throughput", "beats", "detect", "recover", "seedloop", "many"],
        n=200_000,
        warmup=5_000,
        window_s=30.0,
    )
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--before", type=float, default=1.0)
    ap.add_argument("--mature", type=float, default=Policy().quick_disconnect_threshold_s + 0.5)
    ap.add_argument("--after", type=float, default=2.0)
    ap.add_argument("--trigger", choices=["op7", "close4009"], default="op7")
    ap.add_argument("--code", default="1000")
    a = ap.parse_args()
    ctl = await Control.connect(a.control)
    fn = {
        "throughput": throughput,
        "beats": beats,
        "detect": detect,
        "recover": recover,
        "seedloop": seedloop,
        "many": many,
    }
    result = await fn[a.scenario](a, ctl)
    await ctl.close()
    emit(result)


def main() -> None:
    # Logs: WARNING and above, rendered (to stderr) as in production; below that, filtered out.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    asyncio.run(amain())


if __name__ == "__main__":
    main()
