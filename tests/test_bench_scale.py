"""``make bench`` item 10 (bench/scale.py) without running it: its plan, the merging of several
fakes' heartbeat gaps and statistics, the verdicts of its targets, and its part of
docs/benchmarks.md rendered from a small synthetic result."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
import scale  # noqa: E402

# -- the plan ---------------------------------------------------------------------------------


def test_full_plan_runs_every_count_with_the_burst_and_the_freeze_where_asked() -> None:
    runs = {r.key: r for r in scale.plan(scale.FULL)}
    assert list(runs) == ["real-100", "real-1000", "real-10000", "stress-1000"]
    assert {k for k, r in runs.items() if r.burst} == {"real-1000"}
    assert runs["real-1000"].burst == 200_000
    assert {k for k, r in runs.items() if r.freeze_window_s} == {"real-10000"}
    real = runs["real-10000"]
    assert real.hb_ms == 41_250 and runs["stress-1000"].hb_ms == 1_000
    # Two intervals of window: every connection's beats give at least one gap.
    assert real.window_s == pytest.approx(2 * 41.25)
    # One fake per 2,500 connections (the warm-up connection counts).
    assert real.fakes(scale.FULL.per_fake) == 5
    assert runs["real-1000"].fakes(scale.FULL.per_fake) == 1


def test_full_plan_is_planned_within_the_item_budget() -> None:
    """An estimate from the plan's own figures (no clock): about 17 minutes on two cores."""
    total = scale.planned_s(scale.plan(scale.FULL))
    assert 14 * 60 < total < 18 * 60


def test_quick_plan_spreads_its_largest_count_over_several_fakes() -> None:
    runs = {r.key: r for r in scale.plan(scale.QUICK)}
    assert runs["real-200"].fakes(scale.QUICK.per_fake) == 3
    assert scale.planned_s(list(runs.values())) < 120


def test_estimate_counts_the_freeze_window_for_qqconn_only() -> None:
    r = next(r for r in scale.plan(scale.FULL) if r.key == "real-10000")
    assert r.estimate_s("qqconn") - r.estimate_s("bare") >= r.freeze_window_s


# -- several fakes ------------------------------------------------------------------------------


def test_merged_percentiles_are_over_all_gaps_not_an_average_of_the_fakes() -> None:
    calm = {"late": [0.001] * 99, "beats": 198, "connections_with_beats": 99, "fewest_beats": 2}
    late = {"late": [0.5], "beats": 3, "connections_with_beats": 1, "fewest_beats": 3}
    merged = common.merge_gaps([calm, late])
    assert merged["gaps"] == 100
    assert merged["beats"] == 201
    assert merged["p50_s"] == 0.001
    assert merged["p99_s"] == 0.5  # the hundredth gap of a hundred
    assert merged["max_s"] == 0.5 and merged["min_s"] == 0.001
    assert merged["connections_with_beats"] == 100
    assert merged["fewest_beats"] == 2
    assert merged["fakes"] == 2


def test_merged_gaps_of_nothing_are_none() -> None:
    merged = common.merge_gaps([{"late": [], "beats": 0, "fewest_beats": 0}])
    assert merged["p99_s"] is None and merged["gaps"] == 0


async def test_a_single_fake_and_its_merge_agree() -> None:
    """The fake's own percentiles and merge_gaps over its raw gaps are the same figures."""
    import gateway_proc

    from qqconn.protocol import OpCode

    def conn(times: list[float]) -> Any:
        frames = [SimpleNamespace(direction="in", op=OpCode.HEARTBEAT, at=t) for t in times]
        frames.append(SimpleNamespace(direction="out", op=OpCode.HEARTBEAT_ACK, at=times[0]))
        return SimpleNamespace(frames=frames)

    gw = SimpleNamespace(
        connections=[conn([10.0, 11.01, 12.03]), conn([10.5, 11.5]), conn([9.0, 10.2, 20.0])]
    )
    ctl = gateway_proc.Controller(gw)  # type: ignore[arg-type]
    own = await ctl.cmd_heartbeat_gaps(since=10.0, until=13.0, interval_s=1.0, raw=True)
    assert sorted(own["late"]) == pytest.approx([0.0, 0.01, 0.02])
    assert own["fewest_beats"] == 1  # the third connection's 10.2 only
    merged = common.merge_gaps([own])
    for key in ("gaps", "beats", "p50_s", "p99_s", "max_s", "fewest_beats"):
        assert merged[key] == own[key], key
    plain = await ctl.cmd_heartbeat_gaps(since=10.0, until=13.0, interval_s=1.0)
    assert "late" not in plain


def test_merged_stats_sum_the_fakes_and_keep_each() -> None:
    a0 = {"cpu_s": 1.0, "rss_kb": 100, "t": 50.0, "connections": 3, "live": 3}
    b0 = {"cpu_s": 2.0, "rss_kb": 200, "t": 50.1, "connections": 2, "live": 1}
    a1 = {"cpu_s": 1.5, "rss_kb": 100, "t": 60.0, "connections": 3, "live": 3}
    b1 = {"cpu_s": 7.0, "rss_kb": 200, "t": 60.1, "connections": 2, "live": 1}
    s0, s1 = common.merge_stats([a0, b0]), common.merge_stats([a1, b1])
    assert s0["cpu_s"] == 3.0 and s0["connections"] == 5 and s0["live"] == 4
    assert s0["rss_kb"] == 300 and s0["t"] == 50.0
    assert len(s0["per_fake"]) == 2
    cpu = common.fakes_cpu(s0, s1)
    assert cpu["busiest_pct_of_core"] == pytest.approx(50.0)  # 5 s of CPU in 10 s
    assert cpu["total_pct_of_core"] == pytest.approx(55.0)


def test_connections_go_round_robin_over_the_fakes() -> None:
    fakes = common.Fakes([{"n": 0}, {"n": 1}, {"n": 2}], ["c0", "c1", "c2"])  # type: ignore[list-item]
    assert [fakes.of(i)[0]["n"] for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert fakes.of(4)[1] == "c1"


# -- verdicts -----------------------------------------------------------------------------------


def side(**kw: Any) -> dict[str, Any]:
    base = {
        "rss_per_conn_kb": 20.0,
        "ramp_s": 5.0,
        "lateness_p50_ms": 1.0,
        "lateness_p99_ms": 10.0,
        "gc_max_pause_ms": 5.0,
        "gc_collections": 3,
        "gc_gen2_collections": 0,
        "cpu_pct_of_core": 2.0,
        "false_detections": 0,
        "false_detections_ramp": 0,
        "false_detections_in_window": 0,
        "sockets_total": 101,
        "fakes": 1,
        "fake_cpu_window": {"busiest_pct_of_core": 1.0, "total_pct_of_core": 1.0},
        "fake_cpu_ramp": {"busiest_pct_of_core": 9.0, "total_pct_of_core": 9.0},
        "machine_busy_pct": 50.0,
    }
    return base | kw


def result(**over: dict[str, Any]) -> dict[str, Any]:
    """A synthetic item-10 result: every target met unless ``over`` says otherwise."""
    runs: dict[str, dict[str, Any]] = {
        "real-100": {"qqconn": side(rss_per_conn_kb=90.0), "bare": side()},
        "real-1000": {
            "qqconn": side(
                rss_per_conn_kb=25.0,
                burst={
                    "events": 200_000,
                    "delivered": 200_000,
                    "events_per_s": 95_000.0,
                    "client_cpu_us_per_event": 10.0,
                },
            ),
            "bare": side(
                burst={
                    "events": 200_000,
                    "delivered": 200_000,
                    "events_per_s": 100_000.0,
                    "client_cpu_us_per_event": 9.0,
                }
            ),
        },
        "real-10000": {
            "qqconn": side(
                rss_per_conn_kb=27.0,
                gc_max_pause_ms=30.0,
                frozen={
                    "gc_max_pause_ms": 0.5,
                    "gc_gen2_collections": 0,
                    "gc_collections": 2,
                    "window_s": 82.5,
                    "cpu_pct_of_core": 3.0,
                    "lateness_p50_ms": 1.0,
                    "lateness_p99_ms": 5.0,
                    "frozen_objects": 1_000_000,
                },
            ),
            "bare": side(rss_per_conn_kb=19.0),
        },
        "stress-1000": {"qqconn": side(lateness_p99_ms=19.0), "bare": side(lateness_p99_ms=10.0)},
    }
    for key, sides in over.items():
        run_key = key.replace("_", "-")
        for s, v in sides.items():
            runs[run_key][s] = runs[run_key][s] | v
    plan = [asdict(r) | {"fakes": r.fakes(2500)} for r in scale.plan(scale.FULL)]
    return {
        "config": asdict(scale.FULL),
        "plan": plan,
        "planned_s": 1000,
        "duration_s": 990,
        "runs": runs,
    }


def by_key(sc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["key"]: v for v in scale.verdicts(sc)}


def test_every_target_met_in_the_synthetic_result() -> None:
    v = by_key(result())
    assert set(v) == {
        "memory-1000",
        "memory-10000",
        "flat",
        "lateness",
        "false",
        "gc",
        "throughput",
    }
    assert all(x["ok"] is True for x in v.values()), {k: x["detail"] for k, x in v.items()}
    assert v["memory-10000"]["detail"] == "1.42× bare"
    assert v["flat"]["qqconn"] == pytest.approx(27 / 25)


def test_memory_is_judged_at_every_count_but_the_smallest() -> None:
    """100 connections at 4.5× bare is fixed costs: shown, not judged."""
    v = by_key(result())
    assert "memory-100" not in v
    v = by_key(result(real_10000={"qqconn": {"rss_per_conn_kb": 28.6}}))
    assert v["memory-10000"]["ok"] is False and v["memory-10000"]["detail"] == "1.51× bare"


def test_flat_compares_the_two_largest_counts() -> None:
    v = by_key(result(real_10000={"qqconn": {"rss_per_conn_kb": 25.0 * 1.26}}))
    assert v["flat"]["ok"] is False
    v = by_key(result(real_10000={"qqconn": {"rss_per_conn_kb": 10.0}}))
    assert v["flat"]["ok"] is True  # cheaper per connection at scale is flat enough


def test_lateness_is_the_stress_runs_p99_against_bare() -> None:
    v = by_key(result(stress_1000={"qqconn": {"lateness_p99_ms": 21.0}}))
    assert v["lateness"]["ok"] is False and v["lateness"]["detail"] == "2.10× bare"
    # The real-interval runs' lateness does not enter this verdict.
    v = by_key(result(real_1000={"qqconn": {"lateness_p99_ms": 500.0}}))
    assert v["lateness"]["ok"] is True


def test_one_false_detection_anywhere_misses_and_says_where() -> None:
    v = by_key(result(real_100={"qqconn": {"false_detections": 2}}))
    assert v["false"]["ok"] is False
    assert v["false"]["qqconn"] == 2 and "2 at real-100" in v["false"]["detail"]


def test_a_failed_run_is_not_a_pass() -> None:
    sc = result()
    sc["runs"]["real-10000"]["qqconn"] = {"error": "timed out after 900 s"}
    v = by_key(sc)
    assert v["false"]["ok"] is False and v["false"]["detail"] == "not every run measured"
    assert v["memory-10000"]["ok"] is None
    assert v["gc"]["ok"] is None and v["flat"]["ok"] is None


def test_collector_pause_is_judged_at_the_largest_count() -> None:
    v = by_key(result(real_10000={"qqconn": {"gc_max_pause_ms": 51.0}}))
    assert v["gc"]["ok"] is False
    v = by_key(result(real_1000={"qqconn": {"gc_max_pause_ms": 400.0}}))
    assert v["gc"]["ok"] is True


def test_a_long_pause_names_its_generation_and_cpu_time() -> None:
    """The verdict stays on the wall-clock pause (what the loop lost); its detail says how much
    of it the collector spent on the CPU, which tells collecting from being descheduled."""
    v = by_key(
        result(
            real_10000={
                "qqconn": {
                    "gc_max_pause_ms": 768.0,
                    "gc_max_pause_cpu_ms": 1.5,
                    "gc_max_pause_generation": 0,
                }
            }
        )
    )
    assert v["gc"]["ok"] is False
    assert v["gc"]["detail"].endswith("768.0 ms (generation 0, 1.5 ms of it on the CPU)")


def test_throughput_is_the_burst_beside_the_idle_connections() -> None:
    v = by_key(
        result(real_1000={"qqconn": {"burst": {"events": 200_000, "events_per_s": 89_000.0}}})
    )
    assert v["throughput"]["ok"] is False and v["throughput"]["detail"] == "0.89× bare"
    assert "200,000-frame burst beside 1,000 idle" in v["throughput"]["figure"]


def test_ratio_guards_missing_and_zero() -> None:
    assert scale.ratio(None, 1.0) is None
    assert scale.ratio(1.0, 0.0) is None
    assert scale.ratio(3.0, 2.0) == 1.5


# -- the report -----------------------------------------------------------------------------------


def document(sc: dict[str, Any]) -> str:
    r = {
        "config": asdict(run.QUICK),
        "environment": {
            "date_utc": "2026-01-01 00:00 UTC",
            "cpu": "test cpu",
            "cores": 2,
            "memory_gib": 1.0,
            "kernel": "k",
            "python": "3.11",
            "qqconn": "0",
            "websockets": "0",
            "httpx": "0",
            "transitions": "0",
        },
        "loadavg_start": [0.0],
        "loadavg_end": [0.0],
        "scale": sc,
    }
    return report.render(r)


def test_the_document_shows_item_10_met() -> None:
    text = document(result())
    results = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in results.splitlines() if line.startswith("| 10 |")]
    assert len(rows) == 7
    assert all("**met**" in row for row in rows)
    section = text.split("## Item 10", 1)[1].split("\n## ", 1)[0]
    assert "| 10,000 at 41.25 s | qqconn | 27 |" in section
    assert "| 1,000 at 1 s | bare |" in section
    assert "`gc.freeze()` after the ramp, 10,000 connections" in section
    assert "longest collector pause 0.5 ms" in section and "unfrozen window: 30.0 ms" in section
    assert "95,000 events/s" in section
    assert "**10. Many connections at scale**" in text.split("## Method", 1)[1]
    missed = text.split("## Missed targets", 1)[1].split("\n## ", 1)[0]
    assert "**10." not in missed
    assert "Every target with a measurement was met in this run." in missed


def test_a_missed_target_stays_in_the_table_with_its_ratio_and_a_paragraph() -> None:
    text = document(
        result(
            real_10000={"qqconn": {"rss_per_conn_kb": 38.0, "gc_max_pause_ms": 120.0}},
            stress_1000={"qqconn": {"false_detections": 3, "false_detection_reasons": ["zombie"]}},
        )
    )
    results = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    mem = next(line for line in results.splitlines() if "Memory per connection at 10,000" in line)
    assert "**missed** (2.00× bare)" in mem
    missed = text.split("## Missed targets", 1)[1].split("\n## ", 1)[0]
    assert "**10. Memory per connection at 10,000 (2.00× bare).** qqconn 38.0 KiB" in missed
    assert "**10. False detections (3 at stress-1000).**" in missed and "zombie" in missed
    assert "**10. Longest collector pause at 10,000 (120.0 ms)." in missed
    assert "the same process's longest pause in a window as long was 0.5 ms" in missed
    assert "Every target with a measurement was met" not in missed


def test_a_failed_run_is_shown_as_its_error() -> None:
    sc = result()
    sc["runs"]["real-100"]["bare"] = {"error": "exit 1, no RESULT line"}
    section = document(sc).split("## Item 10", 1)[1]
    assert "| 100 at 41.25 s | bare | error: exit 1, no RESULT line |" in section


def test_a_failed_burst_is_not_measured_and_says_why() -> None:
    sc = result()
    sc["runs"]["real-1000"]["qqconn"]["burst"] = {"events": 200_000, "error": "RuntimeError: reset"}
    v = by_key(sc)
    assert v["throughput"]["ok"] is None
    section = document(sc).split("## Item 10", 1)[1]
    assert "Burst beside 1,000 idle connections, qqconn: failed (RuntimeError: reset)." in section
