"""``make bench`` item 10: many connections in one process, at scale, beside a bare client.

Run by ``bench/run.py`` (``--only 10``), or alone::

    python bench/scale.py [--quick] [--only real-10000] [--sides qqconn,bare] [--json PATH]

Each run is one count of connections in one client process (``bench/scen_qqconn.py`` or
``bench/scen_bare.py``, scenario ``many``, item 5's code with item 10's options) against
several fake gateways (``bench/gateway_proc.py``), one per :attr:`ScaleConfig.per_fake`
connections, each on its own loopback port: connection ``i`` goes to fake ``i % k``, so no
fake is the bottleneck, and the client merges their statistics and heartbeat gaps
(``common.merge_gaps`` / ``merge_stats``). The runs (FULL):

* 100, 1,000 and 10,000 connections at QQ's real Hello interval (41.25 s): after all are
  ALIVE/READY, half an interval for the last ones' first beats, then a window of two intervals
  (each connection contributes at least one gap). The 1,000 run then carries item 1's
  200,000-frame burst on its first connection while the other 1,000 stay connected; the 10,000
  qqconn run then calls ``gc.freeze()`` and measures a second window as long as the first.
* 1,000 connections at the stress interval (1 s), as item 5: two intervals, a 30 s window.

Every count runs for qqconn and for bare, one after the other, the order alternating from one
count to the next. The targets and their verdicts are the pure functions at the end
(:func:`verdicts`), which ``bench/report.py`` renders and tests/test_bench_scale.py checks.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, GatewayProcess, cpu_jiffies, eprint, run_client

SIDES = ("qqconn", "bare")


@dataclass(frozen=True)
class ScaleConfig:
    name: str
    #: Counts at the real interval; the smallest is shown but judged loosely (fixed costs).
    counts: tuple[int, ...] = (100, 1_000, 10_000)
    real_hb_ms: int = 41_250
    real_tick_s: float = 1.0
    ramp_per_s: float = 250.0
    #: The ramp never has more than this many connections not yet ALIVE/READY (closed loop:
    #: a client slower than the rate is timed at its own pace, not drowned in handshakes).
    max_pending: int = 100
    settle_intervals: float = 0.5
    window_intervals: float = 2.0
    stress_count: int = 1_000
    stress_hb_ms: int = 1_000
    stress_tick_s: float = 0.5
    stress_ramp_per_s: float = 100.0
    stress_settle_s: float = 2.0
    stress_window_s: float = 30.0
    #: The real-interval count whose run also carries the burst (connections idle beside it).
    burst_count: int = 1_000
    burst: int = 200_000
    #: The real-interval count whose qqconn run also measures a window after ``gc.freeze()``.
    freeze_count: int = 10_000
    per_fake: int = 2_500


FULL = ScaleConfig("full")
QUICK = ScaleConfig(
    "quick",
    counts=(50, 200),
    real_hb_ms=2_000,
    real_tick_s=0.5,
    stress_count=200,
    stress_ramp_per_s=200.0,
    stress_window_s=4.0,
    burst_count=200,
    burst=20_000,
    freeze_count=200,
    per_fake=100,  # three fakes for 201 connections: the merging is exercised too
)


# -- the plan (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    key: str  # "real-1000", "stress-1000"
    n: int
    hb_ms: int
    tick_s: float
    ramp_per_s: float
    settle_s: float
    window_s: float
    burst: int
    freeze_window_s: float  # qqconn only
    max_pending: int = 0

    def fakes(self, per_fake: int) -> int:
        return max(1, math.ceil((self.n + 1) / per_fake))

    def estimate_s(self, side: str) -> float:
        """Wall time of one side of this run: start-up, ramp, settle, window(s), burst, stop."""
        est = 8 + self.n / self.ramp_per_s + self.settle_s + self.window_s + self.n / 1000
        if side == "qqconn":
            est += self.freeze_window_s + self.n / 1000  # its managers stop one by one
        if self.burst:
            est += 8 + self.burst / 40_000
        return est


def plan(cfg: ScaleConfig) -> list[Run]:
    """The runs of item 10, in order."""
    runs = []
    iv = cfg.real_hb_ms / 1000
    for n in cfg.counts:
        runs.append(
            Run(
                key=f"real-{n}",
                n=n,
                hb_ms=cfg.real_hb_ms,
                tick_s=cfg.real_tick_s,
                ramp_per_s=cfg.ramp_per_s,
                settle_s=cfg.settle_intervals * iv,
                window_s=cfg.window_intervals * iv,
                burst=cfg.burst if n == cfg.burst_count else 0,
                freeze_window_s=cfg.window_intervals * iv if n == cfg.freeze_count else 0.0,
                max_pending=cfg.max_pending,
            )
        )
    runs.append(
        Run(
            key=f"stress-{cfg.stress_count}",
            n=cfg.stress_count,
            hb_ms=cfg.stress_hb_ms,
            tick_s=cfg.stress_tick_s,
            ramp_per_s=cfg.stress_ramp_per_s,
            settle_s=cfg.stress_settle_s,
            window_s=cfg.stress_window_s,
            burst=0,
            freeze_window_s=0.0,
            max_pending=cfg.max_pending,
        )
    )
    return runs


def planned_s(runs: list[Run], sides: tuple[str, ...] = SIDES) -> float:
    return sum(r.estimate_s(s) for r in runs for s in sides)


# -- running --------------------------------------------------------------------------------


def scale_scenario(py: str, side: str, run: Run, per_fake: int) -> dict[str, Any]:
    """Start the run's fakes, run one side's client process against them, stop the fakes."""
    busy0, total0 = cpu_jiffies()
    fakes = [
        GatewayProcess.start(py, hb_ms=run.hb_ms, tick=run.tick_s)
        for _ in range(run.fakes(per_fake))
    ]
    try:
        more = [
            {k: f.info[k] for k in ("control", "api_base", "token_url", "ws_url", "app_id")}
            for f in fakes[1:]
        ]
        cmd = [
            py,
            str(BENCH / f"scen_{side}.py"),
            "many",
            *fakes[0].args(),
            "--hb-ms",
            str(run.hb_ms),
            "--n",
            str(run.n),
            "--ramp-per-s",
            str(run.ramp_per_s),
            "--settle",
            str(run.settle_s),
            "--window",
            str(run.window_s),
            "--more-fakes",
            json.dumps(more),
            "--max-pending",
            str(run.max_pending),
        ]
        if run.burst:
            cmd += ["--burst", str(run.burst)]
        if side == "qqconn" and run.freeze_window_s:
            cmd += ["--freeze-window", str(run.freeze_window_s)]
        result = run_client(cmd, timeout=3 * run.estimate_s(side) + 300)
    finally:
        for f in fakes:
            f.stop()
    busy1, total1 = cpu_jiffies()
    result["machine_busy_pct"] = round(100 * (busy1 - busy0) / max(total1 - total0, 1), 1)
    result.setdefault("side", side)
    if "error" in result:
        eprint(f"  !! {side} {run.key}: {result['error']}\n{result.get('stderr', '')[-1500:]}")
    return result


def brief(res: dict[str, Any]) -> str:
    if "error" in res:
        return f"error={res['error']}"
    parts = [
        f"rss/conn={res.get('rss_per_conn_kb', 0):.1f}KiB",
        f"ramp={res.get('ramp_s', 0):.1f}s",
        f"p50/p99={res.get('lateness_p50_ms') or 0:.1f}/{res.get('lateness_p99_ms') or 0:.1f}ms",
        f"gc_max={res.get('gc_max_pause_ms', 0):.1f}ms"
        f"(cpu {res.get('gc_max_pause_cpu_ms', 0):.1f}ms, gen {res.get('gc_max_pause_generation')})",
        f"cpu={res.get('cpu_pct_of_core', 0):.1f}%",
        f"false={res.get('false_detections')}",
        f"sockets={res.get('sockets_total')}",
        f"retried={res.get('connects_retried', 0)}",
        f"fakes_busiest={res.get('fake_cpu_window', {}).get('busiest_pct_of_core', 0):.1f}%",
    ]
    if "burst" in res:
        parts.append(f"burst={res['burst']['events_per_s']:.0f}/s")
    if "frozen" in res:
        parts.append(f"frozen_gc_max={res['frozen']['gc_max_pause_ms']:.1f}ms")
    return " ".join(parts)


def item_scale(
    cfg: ScaleConfig, py: str, only: set[str] | None = None, sides: tuple[str, ...] = SIDES
) -> dict[str, Any]:
    runs = [r for r in plan(cfg) if only is None or r.key in only]
    total = planned_s(runs, sides)
    eprint(
        f"[10] many connections at scale: {', '.join(r.key for r in runs)}; "
        f"planned {total / 60:.1f} min ({total:.0f} s)"
    )
    out: dict[str, Any] = {
        "config": asdict(cfg),
        "plan": [asdict(r) | {"fakes": r.fakes(cfg.per_fake)} for r in runs],
        "planned_s": round(total),
        "runs": {},
    }
    started = time.monotonic()
    for j, run in enumerate(runs):
        order = sides if j % 2 == 0 else sides[::-1]
        eprint(f"  {run.key}: {run.n:,} connections, {run.fakes(cfg.per_fake)} fake(s)")
        out["runs"][run.key] = {}
        for side in order:
            res = scale_scenario(py, side, run, cfg.per_fake)
            out["runs"][run.key][side] = res
            eprint(f"    {side:7s} {brief(res)}")
    out["duration_s"] = round(time.monotonic() - started, 1)
    return out


# -- targets and verdicts (pure) ------------------------------------------------------------

#: Memory per connection, qqconn / bare, at every count but the smallest.
MEMORY_RATIO = 1.5
#: Heartbeat lateness p99 at the stress interval, qqconn / bare.
LATENESS_RATIO = 2.0
#: Longest collector pause in the steady window at the largest count, ms.
GC_PAUSE_MS = 50.0
#: Burst throughput beside the idle connections, qqconn / bare.
THROUGHPUT_RATIO = 0.9
#: "Flat": qqconn's KiB per connection at the largest count / at the second largest.
FLAT_RATIO = 1.25


def _ok(res: dict[str, Any] | None) -> bool:
    return bool(res) and "error" not in res  # type: ignore[operator]


def _get(res: dict[str, Any] | None, *path: str) -> Any:
    v: Any = res if _ok(res) else None
    for p in path:
        v = v.get(p) if isinstance(v, dict) else None
    return v


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is not positive."""
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _verdict(
    key: str, figure: str, qq: Any, bare: Any, target: str, ok: bool | None, detail: str
) -> dict[str, Any]:
    return {
        "key": key,
        "figure": figure,
        "qqconn": qq,
        "bare": bare,
        "target": target,
        "ok": ok,
        "detail": detail,
    }


def real_counts(scale: dict[str, Any]) -> list[int]:
    """The real-interval counts that were run, ascending."""
    return sorted(int(k.split("-", 1)[1]) for k in scale.get("runs", {}) if k.startswith("real-"))


def judge_memory(scale: dict[str, Any]) -> list[dict[str, Any]]:
    """Memory per connection ≤ 1.5× bare at every real-interval count but the smallest (where
    fixed costs dominate; with one count only, that one is judged)."""
    counts = real_counts(scale)
    out = []
    for n in counts[1:] if len(counts) > 1 else counts:
        run = scale["runs"][f"real-{n}"]
        q, b = _get(run.get("qqconn"), "rss_per_conn_kb"), _get(run.get("bare"), "rss_per_conn_kb")
        r = ratio(q, b)
        out.append(
            _verdict(
                f"memory-{n}",
                f"memory per connection at {n:,}, KiB",
                q,
                b,
                f"≤ {MEMORY_RATIO:g}× bare",
                None if r is None else r <= MEMORY_RATIO,
                "" if r is None else f"{r:.2f}× bare",
            )
        )
    return out


def judge_lateness(scale: dict[str, Any]) -> dict[str, Any] | None:
    """Heartbeat lateness p99 at the stress interval ≤ 2× bare."""
    key = next((k for k in scale.get("runs", {}) if k.startswith("stress-")), None)
    if key is None:
        return None
    run = scale["runs"][key]
    q, b = _get(run.get("qqconn"), "lateness_p99_ms"), _get(run.get("bare"), "lateness_p99_ms")
    r = ratio(q, b)
    n = key.split("-", 1)[1]
    return _verdict(
        "lateness",
        f"heartbeat lateness p99 at {int(n):,} (stress interval), ms",
        q,
        b,
        f"≤ {LATENESS_RATIO:g}× bare",
        None if r is None else r <= LATENESS_RATIO,
        "" if r is None else f"{r:.2f}× bare",
    )


def judge_false(scale: dict[str, Any]) -> dict[str, Any] | None:
    """No false detection (ramp and steady window) at any count: qqconn connections that left
    ALIVE although the fakes were healthy. A run that failed is not a pass."""
    runs = scale.get("runs", {})
    if not runs:
        return None
    per = {k: _get(v.get("qqconn"), "false_detections") for k, v in runs.items()}
    measured = {k: v for k, v in per.items() if v is not None}
    bad = {k: v for k, v in measured.items() if v}
    total = sum(measured.values())
    ok = None if not measured else not bad and len(measured) == len(per)
    detail = ", ".join(f"{v} at {k}" for k, v in bad.items()) or (
        "0 in every run" if ok else "not every run measured"
    )
    bare = sum(_get(v.get("bare"), "false_detections") or 0 for v in runs.values())
    return _verdict(
        "false",
        "false zombie/stale detections, ramp + steady window, all counts",
        total,
        bare,
        "0",
        ok,
        detail,
    )


def _gc_detail(res: dict[str, Any] | None) -> str:
    """What the longest pause was: no collection at all, or its generation and CPU time (a
    pause far longer than its CPU time is the process descheduled mid-collection)."""
    if _get(res, "gc_collections") == 0:
        return "; no collection in the window"
    cpu, gen = _get(res, "gc_max_pause_cpu_ms"), _get(res, "gc_max_pause_generation")
    if cpu is None:
        return ""
    return f" (generation {gen}, {cpu:.1f} ms of it on the CPU)"


def judge_gc(scale: dict[str, Any]) -> dict[str, Any] | None:
    """Longest collector pause in the steady window at the largest real-interval count ≤ 50 ms
    (qqconn; bare is shown beside it)."""
    counts = real_counts(scale)
    if not counts:
        return None
    run = scale["runs"][f"real-{counts[-1]}"]
    q, b = _get(run.get("qqconn"), "gc_max_pause_ms"), _get(run.get("bare"), "gc_max_pause_ms")
    return _verdict(
        "gc",
        f"longest collector pause in the steady window at {counts[-1]:,}, ms",
        q,
        b,
        f"≤ {GC_PAUSE_MS:g} ms",
        None if q is None else q <= GC_PAUSE_MS,
        "" if q is None else f"{q:.1f} ms" + _gc_detail(run.get("qqconn")),
    )


def judge_throughput(scale: dict[str, Any]) -> dict[str, Any] | None:
    """Burst throughput on one connection beside the idle others ≥ 0.9× bare."""
    key = next((k for k, v in scale.get("runs", {}).items() if _burst_of(v)), None)
    if key is None:
        return None
    run = scale["runs"][key]
    q = _get(run.get("qqconn"), "burst", "events_per_s")
    b = _get(run.get("bare"), "burst", "events_per_s")
    events = _burst_of(run)
    r = ratio(q, b)
    n = int(key.split("-", 1)[1])
    return _verdict(
        "throughput",
        f"dispatch throughput, {events:,}-frame burst beside {n:,} idle connections, events/s",
        q,
        b,
        f"≥ {THROUGHPUT_RATIO:g}× bare",
        None if r is None else r >= THROUGHPUT_RATIO,
        "" if r is None else f"{r:.2f}× bare",
    )


def _burst_of(run: dict[str, Any]) -> int:
    for side in SIDES:
        events = _get(run.get(side), "burst", "events")
        if events:
            return int(events)
    return 0


def judge_flat(scale: dict[str, Any]) -> dict[str, Any] | None:
    """Memory per connection "flat": qqconn's KiB per connection at the largest count within
    1.25× of that at the second largest (1,000 → 10,000 in the full run). The smallest count
    (100) is shown but not judged: the warm-up baseline's fixed costs dominate it."""
    counts = real_counts(scale)
    if len(counts) < 2:
        return None
    lo, hi = counts[-2], counts[-1]

    def kib(n: int, side: str) -> float | None:
        v = _get(scale["runs"][f"real-{n}"].get(side), "rss_per_conn_kb")
        return None if v is None else float(v)

    r = ratio(kib(hi, "qqconn"), kib(lo, "qqconn"))
    rb = ratio(kib(hi, "bare"), kib(lo, "bare"))
    return _verdict(
        "flat",
        f"memory per connection, {hi:,} / {lo:,} (flat: linear total)",
        r,
        rb,
        f"≤ {FLAT_RATIO:g}",
        None if r is None else r <= FLAT_RATIO,
        "" if r is None else f"{r:.2f}",
    )


def verdicts(scale: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item-10 target with its verdict (``ok`` None: not measured), in table order."""
    out = judge_memory(scale)
    for v in (
        judge_flat(scale),
        judge_lateness(scale),
        judge_false(scale),
        judge_gc(scale),
        judge_throughput(scale),
    ):
        if v is not None:
            out.append(v)
    return out


# -- alone ------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma list of run keys, e.g. real-10000")
    ap.add_argument("--sides", default=",".join(SIDES))
    ap.add_argument("--json", default="", help="write the results there")
    a = ap.parse_args()
    cfg = QUICK if a.quick else FULL
    only = set(a.only.split(",")) if a.only else None
    out = item_scale(cfg, sys.executable, only, tuple(a.sides.split(",")))
    for v in verdicts(out):
        eprint(f"  {v['figure']}: qqconn {v['qqconn']} bare {v['bare']} → {v['ok']} {v['detail']}")
    text = json.dumps(out, indent=1, default=str) + "\n"
    if a.json:
        Path(a.json).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
