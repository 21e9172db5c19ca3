"""Render bench/run.py's results as docs/benchmarks.md (``render(results) -> str``).

``python bench/report.py bench/results/bench-latest.json`` re-renders saved results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale as scale_item
from common import summary

#: Timer tolerance when judging "≤ 1.5 intervals": asyncio fires call_later timers about a
#: millisecond late, and the detection needs two of them (the heartbeat, then its ACK deadline).
DETECT_TOLERANCE_S = 0.005


# -- formatting -------------------------------------------------------------------------------


def _num(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def fmt(values: list[Any], digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    """``median (min–max)`` over the runs, ``n/a`` when nothing was measured."""
    s = summary([None if v is None else v * scale for v in values])
    if s["n"] == 0:
        return "n/a"
    med = _num(s["median"], digits)
    if s["n"] == 1:
        return f"{med}{unit} (1 run)"
    return f"{med}{unit} ({_num(s['min'], digits)}–{_num(s['max'], digits)}, {s['n']} runs)"


def med(values: list[Any]) -> float | None:
    return summary(values)["median"]


def col(runs: list[dict[str, Any]] | None, key: str, sub: str | None = None) -> list[Any]:
    vals: list[Any] = []
    for r in runs or []:
        if "error" in r:
            vals.append(None)
            continue
        v = r.get(sub, {}) if sub else r
        vals.append(v.get(key) if isinstance(v, dict) else None)
    return vals


def verdict(ok: bool | None, detail: str = "") -> str:
    if ok is None:
        return "not measured"
    word = "**met**" if ok else "**missed**"
    return f"{word} ({detail})" if detail else word


def observed(res: dict[str, Any] | None, what: str = "noticed") -> str:
    if not res:
        return "not run"
    if "error" in res:
        return f"error: {res['error']}"
    if res.get(what):
        return f"yes, after {_num(res.get('noticed_after_s'))} s"
    return f"never within {res.get('window_s', 0):.0f} s"


# -- the table ------------------------------------------------------------------------------


def table(r: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    rows: list[str] = []
    judged: dict[str, Any] = {}

    def row(num: str, figure: str, qq: str, bare: str, botpy: str, target: str, met: str) -> None:
        rows.append(f"| {num} | {figure} | {qq} | {bare} | {botpy} | {target} | {met} |")

    # 1 -----------------------------------------------------------------------------------
    t = r.get("throughput")
    if t:
        qq_rate, bare_rate = (
            col(t.get("qqconn"), "events_per_s"),
            col(t.get("bare"), "events_per_s"),
        )
        ratio = (med(qq_rate) or 0) / med(bare_rate) if med(bare_rate) else None
        judged["throughput"] = ratio
        cfg = r["config"]
        row(
            "1",
            f"Dispatch throughput, events/s delivered to the callback ({cfg['burst']:,}-frame burst)",
            fmt(qq_rate, 3),
            fmt(bare_rate, 3),
            fmt(col(t.get("botpy"), "events_per_s"), 3)
            + (f" ({cfg['botpy_burst']:,}-frame bursts)" if t.get("botpy") else ""),
            "≥ 0.9× bare",
            verdict(None if ratio is None else ratio >= 0.9, f"{ratio:.2f}× bare" if ratio else ""),
        )
        row(
            "1",
            "Machine busy during these runs, % of both cores (every process, ours included)",
            fmt(col(t.get("qqconn"), "machine_busy_pct"), 3),
            fmt(col(t.get("bare"), "machine_busy_pct"), 3),
            fmt(col(t.get("botpy"), "machine_busy_pct"), 3),
            "—",
            "context: noise",
        )
        qc, bc = (
            col(t.get("qqconn"), "client_cpu_us_per_event"),
            col(t.get("bare"), "client_cpu_us_per_event"),
        )
        cpu_ratio = (med(bc) or 0) / med(qc) if med(qc) else None
        row(
            "1",
            "Client CPU per event, µs (same bursts)",
            fmt(qc, 3),
            fmt(bc, 3),
            fmt(col(t.get("botpy"), "client_cpu_us_per_event"), 3),
            "—",
            f"bare/qqconn = {cpu_ratio:.2f}" if cpu_ratio else "—",
        )
    # 2 -----------------------------------------------------------------------------------
    d = r.get("detect", {}).get("qqconn")
    long = r.get("long", {})
    if d:
        iv = d[0].get("interval_s", 1.0) if "error" not in d[0] else 1.0
        z = col(d, "from_last_ack_intervals", "zombie")
        zs = [x for x in z if x is not None]
        ok = bool(zs) and max(zs) <= 1.5 + DETECT_TOLERANCE_S / iv and len(zs) == len(z)
        judged["zombie"] = (ok, max(zs) if zs else None)
        row(
            "2",
            f"Zombie (ACKs stop, events would still flow): detected, in heartbeat intervals after the last ACK (interval {iv:g} s)",
            fmt(z, 4),
            "websockets keepalive: " + observed(long.get("bare_zombie")),
            observed(long.get("botpy_zombie")),
            "≤ 1.5",
            verdict(
                ok,
                (
                    f"worst {max(zs):.4f} {'≤' if ok else '>'} 1.5 + {DETECT_TOLERANCE_S * 1000:.0f} ms timer tolerance"
                    if zs
                    else "not detected"
                ),
            ),
        )
        row(
            "2",
            "Zombie: detected, intervals after the fault (fault at a random phase)",
            fmt(col(d, "from_fault_intervals", "zombie"), 3),
            "—",
            "—",
            "—",
            "—",
        )
        row(
            "2",
            "Half-open (total silence, not even pongs or close replies): detected, intervals after the last frame",
            fmt(col(d, "from_last_frame_intervals", "halfopen"), 4),
            "websockets keepalive: " + observed(long.get("bare_halfopen")),
            observed(long.get("botpy_halfopen")),
            "— (none set)",
            "—",
        )
    # 3 -----------------------------------------------------------------------------------
    rc = r.get("recover")
    if rc:
        q = rc.get("qqconn")
        rec = col(q, "recovery_s")
        recs = [x for x in rec if x is not None]
        ok = bool(recs) and len(recs) == len(rec) and max(recs) <= 0.050
        judged["op7"] = (ok, max(recs) if recs else None)
        b = rc.get("botpy")
        row(
            "3",
            "op 7 (then 4009) while 2,000 events/s flow: time until events flow again, ms",
            fmt(rec, 3, 1000),
            "—",
            fmt(col(b, "recovery_s"), 4, 1000) if b else "not run",
            "≤ 50 ms",
            verdict(ok, f"worst {max(recs) * 1000:.1f} ms" if recs else "no recovery"),
        )

        def lostdup(runs: list[dict[str, Any]] | None) -> str:
            if not runs:
                return "not run"
            lost = sum(x or 0 for x in col(runs, "lost"))
            dup = sum(x or 0 for x in col(runs, "duplicated"))
            acc = sum(x or 0 for x in col(runs, "accepted"))
            return f"{lost} / {dup} (of {acc:,} events, {len(runs)} runs)"

        lost_ok = all(
            (x == 0)
            for x in col(q, "lost")
            + col(q, "duplicated")
            + col(rc.get("qqconn_4009"), "lost")
            + col(rc.get("qqconn_4009"), "duplicated")
        )
        judged["lostdup"] = lost_ok
        row(
            "3",
            "op 7: events lost / duplicated",
            lostdup(q),
            "—",
            lostdup(b),
            "0 / 0",
            verdict(lost_ok),
        )
        row(
            "3",
            "op 7: old socket closed by (close code), ms after op 7",
            _closer(q),
            "—",
            _closer(b),
            "—",
            "—",
        )
        q4 = rc.get("qqconn_4009")
        row(
            "3",
            "close 4009 alone (no op 7): time until events flow again, ms; lost / duplicated",
            fmt(col(q4, "recovery_s"), 3, 1000) + "; " + lostdup(q4),
            "—",
            "not run",
            "— (policy: resume after U(0, 1) s)",
            "—",
        )
    # 4 -----------------------------------------------------------------------------------
    sl = r.get("seedloop")
    if sl:
        all_socks = [x for runs in sl.values() for x in col(runs, "sockets_before_fatal")]
        after = [x for runs in sl.values() for x in col(runs, "sockets_total")]
        ok = bool(all_socks) and all(x == 3 for x in all_socks) and all(x == 3 for x in after)
        judged["seed"] = ok
        codes = ", ".join(
            f"{'drop' if c == 'none' else c}: {'/'.join(str(x) for x in col(runs, 'sockets_before_fatal'))}"
            for c, runs in sl.items()
        )
        row(
            "4",
            "Seed's loop (each socket closed 100 ms after opening): sockets opened before FATAL, by close code",
            codes,
            _loop(long.get("bare_seedloop"), "websockets reconnect loop"),
            _loop(long.get("botpy_seedloop"), "botpy"),
            "exactly 3",
            verdict(ok, "and none after"),
        )
        times = "; ".join(
            f"{'drop' if c == 'none' else c}: {fmt(col(runs, 'time_to_fatal_s'), 3)}"
            for c, runs in sl.items()
        )
        row(
            "4",
            "Seed's loop: time from the first socket to FATAL, s",
            times,
            "never",
            "never",
            "—",
            "—",
        )
    # 5 -----------------------------------------------------------------------------------
    m = r.get("many")
    if m:
        cfg = r["config"]
        qm, bm, pm = m.get("qqconn"), m.get("bare"), m.get("botpy")
        qrss, brss = col(qm, "rss_per_conn_kb"), col(bm, "rss_per_conn_kb")
        mem_ratio = (med(qrss) or 0) / med(brss) if med(brss) else None
        judged["memory"] = mem_ratio
        n = cfg["many_n"]
        row(
            "5",
            f"{n:,} connections, one process: resident memory per connection, KiB",
            fmt(qrss, 3),
            fmt(brss, 3),
            fmt(col(pm, "rss_per_conn_kb"), 3) if pm else "not run",
            "≤ 1.5× bare",
            verdict(
                None if mem_ratio is None else mem_ratio <= 1.5,
                f"{mem_ratio:.1f}× bare" if mem_ratio else "",
            ),
        )
        qp99, bp99 = col(qm, "lateness_p99_ms"), col(bm, "lateness_p99_ms")
        late_ratio = (med(qp99) or 0) / med(bp99) if med(bp99) else None
        judged["lateness"] = late_ratio

        def late(runs: list[dict[str, Any]] | None) -> str:
            if not runs:
                return "not run"
            return (
                f"{fmt(col(runs, 'lateness_p50_ms'), 2)} / {fmt(col(runs, 'lateness_p99_ms'), 3)}"
            )

        row(
            "5",
            f"Heartbeat lateness p50 / p99, ms (interval {cfg['many_hb_ms'] / 1000:g} s; gap between beats − interval, at the fake)",
            late(qm),
            late(bm),
            (late(pm) + " (its own 30 s cadence)") if pm else "not run",
            "p99 ≤ 2× bare",
            verdict(
                None if late_ratio is None else late_ratio <= 2,
                f"{late_ratio:.1f}× bare" if late_ratio else "",
            ),
        )
        row(
            "5",
            "Longest garbage-collector pause in the windows, ms; gen-2 collections in the windows",
            _gc(qm),
            _gc(bm),
            _gc(pm) if pm else "not run",
            "—",
            "—",
        )
        row(
            "5",
            "CPU while steady, % of one core",
            fmt(col(qm, "cpu_pct_of_core"), 3),
            fmt(col(bm, "cpu_pct_of_core"), 3),
            fmt(col(pm, "cpu_pct_of_core"), 3) if pm else "not run",
            "—",
            "—",
        )
        fd = [x for x in col(qm, "false_detections")]
        fdw = [x for x in col(qm, "false_detections_in_window")]
        ok = bool(fd) and all(x == 0 for x in fd)
        judged["false"] = (ok, sum(x or 0 for x in fd), sum(x or 0 for x in fdw))
        row(
            "5",
            "False zombie detections (connections ended although the fake was healthy), ramp + window",
            f"{sum(x or 0 for x in fd)} ({sum(x or 0 for x in fdw)} in the steady windows), {len(fd)} runs",
            f"{sum(x or 0 for x in col(bm, 'false_detections'))} closed (no detector)",
            (f"{sum(x or 0 for x in col(pm, 'false_detections'))} (no detector)")
            if pm
            else "not run",
            "0",
            verdict(ok),
        )
        row(
            "5",
            f"Ramp: time until all {n:,} are READY/ALIVE (started at {cfg['many_ramp_per_s']:g}/s), s",
            fmt(col(qm, "ramp_s"), 3),
            fmt(col(bm, "ramp_s"), 3),
            fmt(col(pm, "ramp_s"), 3) if pm else "not run",
            "—",
            "—",
        )
        row(
            "5",
            "Sockets the fake accepted over the whole run (1 warm-up + n expected)",
            "/".join(str(x) for x in col(qm, "sockets_total")),
            "/".join(str(x) for x in col(bm, "sockets_total")),
            "/".join(str(x) for x in col(pm, "sockets_total")) if pm else "not run",
            "—",
            "—",
        )
        row(
            "5",
            "Machine busy during these runs, % of both cores (every process, ours included)",
            fmt(col(qm, "machine_busy_pct"), 3),
            fmt(col(bm, "machine_busy_pct"), 3),
            fmt(col(pm, "machine_busy_pct"), 3) if pm else "not run",
            "—",
            "context: noise",
        )
        row(
            "5",
            "Fake gateway CPU during the window, % of one core (context)",
            fmt(col(qm, "fake_cpu_pct_of_core"), 3),
            fmt(col(bm, "fake_cpu_pct_of_core"), 3),
            fmt(col(pm, "fake_cpu_pct_of_core"), 3) if pm else "not run",
            "—",
            "—",
        )
    # 6 -----------------------------------------------------------------------------------
    mach = r.get("machine")
    if mach:
        if "error" in mach:
            row("6", "The machine (bench/machine.py)", mach["error"], "—", "—", "—", "—")
        else:
            for w in mach.get("workloads", []):
                mu, bu = w["machine_us"], w["baseline_us"]
                row(
                    "6",
                    f"Machine, µs per event: {w['workload']}",
                    f"{mu['median']:.2f} ({mu['min']:.2f}–{mu['max']:.2f})",
                    f"{bu['median']:.2f} ({bu['min']:.2f}–{bu['max']:.2f}) hand-written dict dispatch",
                    "—",
                    "—",
                    f"{w['ratio']}× the baseline",
                )
            x = mach.get("exploration", {})
            if x:
                row(
                    "6",
                    "Exhaustive exploration: abstract states / edges / seconds",
                    f"{x.get('nodes', 0):,} / {x.get('edges', 0):,} / {x.get('seconds', 0):.2f}",
                    "—",
                    "—",
                    "—",
                    "—",
                )
    rows.extend(scale_rows(r))
    return rows, judged


def _gc(runs: list[dict[str, Any]] | None) -> str:
    if not runs:
        return "not run"
    gen2 = sum(x or 0 for x in col(runs, "gc_gen2_collections"))
    return f"{fmt(col(runs, 'gc_max_pause_ms'), 3)}; {gen2} gen-2"


def _closer(runs: list[dict[str, Any]] | None) -> str:
    if not runs:
        return "not run"
    by = col(runs, "old_closed_by")
    code = col(runs, "old_close_code")
    when = col(runs, "old_closed_s")
    first = f"{by[0]} ({code[0]})" if by and by[0] else "—"
    same = all(b == by[0] and c == code[0] for b, c in zip(by, code, strict=True))
    return f"{first}{'' if same else ' (varies)'}, {fmt(when, 3, 1000)}"


def _loop(res: dict[str, Any] | None, who: str) -> str:
    if not res:
        return "not run"
    if "error" in res:
        return f"error: {res['error']}"
    stop = "gave up" if res.get("gave_up") else "never stops"
    return f"{res.get('sockets')} sockets in {res.get('window_s', 0):.0f} s, {stop}"


# -- the document -----------------------------------------------------------------------------


def render(r: dict[str, Any]) -> str:
    env = r["environment"]
    cfg = r["config"]
    rows, judged = table(r)
    out: list[str] = []
    w = out.append
    w("# Benchmarks\n")
    w(
        "Every performance target of qqconn lives here, not in the test suite. Each figure is a "
        "ratio or a count measured side by side, in one run, on one machine: qqconn, a bare "
        "`websockets` client doing the least any gateway client must do (the limit), and the "
        "official QQ SDK `qq-botpy` (the peer), all against the same fake gateway running in its "
        "own process.\n"
    )
    w(
        "Reproduce with:\n\n    make bench          # full run, rewrites this file (about 30–40 min, 17–20 of them item 10)\n"
        "    .venv/bin/python bench/run.py --quick   # smoke run of the harness (< 2 min), docs untouched\n"
    )
    w(
        f"This run: **{env['date_utc']}**, `{cfg['name']}` configuration, {r.get('duration_s', 0):.0f} s; "
        f"{env['cpu']}, {env['cores']} cores (shared with other work, noisy), {env['memory_gib']} GiB, "
        f"Linux {env['kernel']}; Python {env['python']}; qqconn {env['qqconn']}, websockets "
        f"{env['websockets']}, httpx {env['httpx']}, transitions {env['transitions']}; "
        f"qq-botpy {env.get('qq-botpy') or 'not installed'} (aiohttp {env.get('aiohttp (botpy)') or '—'}). "
        f"Load average at start {r['loadavg_start']}, at end {r['loadavg_end']}. Loopback only "
        f"(127.0.0.1). Raw results: `bench/results/{cfg['name'] if cfg['name'] == 'quick' else 'bench'}-*.json` (git-ignored).\n"
    )
    if r.get("botpy_error"):
        w(f"botpy: {r['botpy_error']}\n")
    w("## Results\n")
    w(
        "Medians with min–max over the runs (the number of runs is given per cell). "
        '"bare" is the limit for items 1 and 5; for items 2–4 that column shows what plain '
        "`websockets` does with its own safety nets (keepalive pings, its reconnect loop), as a reference.\n"
    )
    w("| # | figure | qqconn | bare | botpy (official SDK) | target | met? |")
    w("| --- | --- | --- | --- | --- | --- | --- |")
    out.extend(rows)
    w("")
    w(gaps(r, judged))
    w(method(r))
    if r.get("scale"):
        w(scale_method(r))
    w(caveats(r))
    mach = r.get("machine")
    if mach and "markdown" in mach:
        w("## Item 6 in detail (bench/machine.py)\n")
        w(mach["markdown"] + "\n")
    hook = r.get("webhook")
    if hook:
        w("## Item 8: the webhook transport (bench/webhook.py)\n")
        w((hook.get("markdown") or f"not measured: {hook.get('error')}") + "\n")
    shards = r.get("shards")
    if shards:
        w("## Item 9: shards under the identify limit (bench/shards.py)\n")
        w((shards.get("markdown") or f"not measured: {shards.get('error')}") + "\n")
    if r.get("scale"):
        w(scale_section(r))
    prof = r.get("profile", {})
    if prof.get("throughput_profile"):
        w("## Profile of the qqconn client during a burst (py-spy, this run)\n")
        w(
            "Share of the samples taken in the event loop (`_run_once`), as self time (the function "
            "itself) and inclusive time (the function and what it calls). "
            f"Raw collapsed stacks: `{prof.get('throughput_profile_file', '')}`.\n"
        )
        w("```\n" + prof["throughput_profile"] + "\n```\n")
    parts = prof.get("mem_parts", {}).get("parts")
    if parts:
        w("## Memory of a manager's parts (bench/mem_parts.py, this run)\n")
        w("| part | KiB each | GC-tracked objects each | ms each (wall) |")
        w("| --- | --- | --- | --- |")
        for name, v in parts.items():
            objs = v.get("gc_objects_each")
            objs_text = "—" if objs is None else f"{objs:,.0f}"
            w(f"| `{name}` | {v['kib_each']:.1f} | {objs_text} | {v['ms_each']:.2f} |")
        w("")
    return "\n".join(out) + "\n"


def gaps(r: dict[str, Any], judged: dict[str, Any]) -> str:
    """Why each missed target is missed, with the evidence of this run, and what would close it."""
    out: list[str] = ["## Missed targets: why, and what would close the gap\n"]
    missed = False
    parts = r.get("profile", {}).get("mem_parts", {}).get("parts", {})
    ratio = judged.get("throughput")
    if ratio is not None and ratio < 0.9:
        missed = True
        out.append(
            f"**1. Dispatch throughput ({ratio:.2f}× bare).** Both clients spend most of their time "
            "in the same places (websockets' frame parser and its message assembler, and "
            "`json.loads`, about half of qqconn's samples; see the profile below). qqconn adds, per "
            "event: a typed `Dispatch`, the checks of `protocol.parse_frame`, the machine's "
            "dispatch fast path (`handle_dispatch`; item 6 puts it near a hand-written dict "
            "dispatch), and telling the machine what the host finished with (the resume "
            "checkpoint). The host lane no longer adds a hop: a plain `on_dispatch` runs inline "
            "from a loop callback, in slices, with no `asyncio.Queue`, task or coroutine per event "
            "(an `async def` callback still runs in its lane's task). What is left is the row "
            '"Client CPU per event" above: 0.9× needs qqconn\'s per-event cost within about '
            "1.5 µs of bare, i.e. no per-event object besides the `Dispatch` itself.\n"
        )
    z = judged.get("zombie")
    if z and not z[0] and z[1] is not None:
        missed = True
        out.append(
            f"**2. Zombie detection (worst {z[1]:.4f} intervals).** By construction the ACK "
            "deadline is half an interval after an unacknowledged heartbeat, which is 1.5 "
            "intervals after the last ACK; anything above that is event-loop lateness of the two "
            "timers (about 1 ms each on an idle loop, more while other processes hold the cores). "
            "The median is within a few ms of 1.5; the worst run is what misses. Closing the gap "
            "for good: start the ACK deadline from the heartbeat's *scheduled* time rather than "
            "from when its timer fired (so lateness of the first timer does not add), or use a "
            "ratio a little under 0.5 (0.45 gives 1.45 intervals plus lateness).\n"
        )
    o = judged.get("op7")
    if o and not o[0] and o[1] is not None:
        missed = True
        out.append(
            f"**3. op 7 recovery (worst {o[1] * 1000:.1f} ms).** See the per-run breakdown in the raw results (old socket closed, new socket opened, RESUMED).\n"
        )
    if judged.get("lostdup") is False:
        missed = True
        out.append(
            "**3. Events lost or duplicated.** See `lost`/`duplicated` per run in the raw results.\n"
        )
    if judged.get("seed") is False:
        missed = True
        out.append(
            "**4. Seed's loop.** Not exactly 3 sockets in every run: see `sockets_before_fatal` and `sockets_total` per run.\n"
        )
    mem = judged.get("memory")
    qrss = med(col(r.get("many", {}).get("qqconn"), "rss_per_conn_kb")) or 0.0
    tls_per_manager = qrss > 500  # ~800 KiB of it would be a TLS context of its own
    if mem is not None and mem > 1.5:
        missed = True
        machine = parts.get("ConnectionMachine()")
        manager = parts.get("ConnectionManager() (not started)")
        httpx_default = parts.get("httpx.AsyncClient() (default verify)")
        if machine and manager and httpx_default:
            evidence = (
                f"Measured part by part in this run (table at the end): a `ConnectionManager` "
                f"before it starts is {manager['kib_each']:.0f} KiB, of which its "
                f"`ConnectionMachine` (its own `transitions.Machine`) is {machine['kib_each']:.0f} KiB "
                f"and {machine.get('gc_objects_each', 0):,.0f} collector-tracked objects; a running "
                "manager adds its httpx client, its tasks, its timers and its socket."
            )
            if tls_per_manager:
                evidence += (
                    f" Each manager's `httpx.AsyncClient()` also builds its own TLS context "
                    f"({httpx_default['kib_each']:.0f} KiB, {httpx_default['ms_each']:.0f} ms each): "
                    "pass one context shared by the process (`verify=`)."
                )
        else:
            evidence = "(bench/mem_parts.py did not run: `--no-profile` or `--quick`.)"
        out.append(
            f"**5. Memory ({mem:.1f}× bare).** {evidence} A bare connection is a websockets "
            "connection, a dict of state and two small tasks. The managers of an app already share "
            "one httpx client, token source and `transitions.Machine`. `python bench/mem_conns.py` "
            "traces what a running connection allocates, against bare (300 connections with "
            "`on_state_change` as here, tracemalloc): qqconn 31.7 KiB before issue 10's cuts, "
            "22.5 KiB after (one shared "
            "`random.Random` and default `Policy`, flags instead of `asyncio.Event`s, a manager "
            "under the 30 attributes of a split instance dict, class-based context managers, "
            "lane deques only while items wait), bare 15.6 KiB; with `--no-trace --hb-ms 41250` "
            "(no reconnect churn on a loaded machine) 1,000 qqconn connections went from 35.3 to "
            "25.3 KiB resident each. What remains of the difference: the machine's ~50 fields in "
            "one combined instance dict (1.6 KiB; `__slots__` would close it, but the exploration "
            "harness snapshots `vars(machine)`), the last READY's `d` kept for `ready` (0.9 KiB), "
            "a coroutine frame more per connection (`run` awaiting `_run`, the attempt's `_main` "
            "awaiting `_read`), and small parts (feeder, lanes, timers, logger, bound methods). "
            "Closing it: slots on the machine (with a snapshot API for the harness) and on the "
            "driver's parts. Under load, false detections reconnect connections during the "
            "window and their churn shows in this item's figure.\n"
        )
    late = judged.get("lateness")
    if late is not None and late > 2:
        missed = True
        out.append(
            f"**5. Heartbeat lateness p99 ({late:.1f}× bare).** {_gc_evidence(r, parts)} "
            "While a collection runs no timer fires and no ACK is read, so every heartbeat due in "
            "that time is late by up to the pause. qqconn also spends more CPU on the same "
            'heartbeats (row "CPU while steady"): each beat goes through the `transitions` table '
            "(item 6: ~15 µs per lifecycle event against ~1.6 µs for a dict), starts two loop "
            "timers and creates a task for the send, and `heartbeat_sent` and the ACK go through "
            "the table again. Closing the gap: fewer long-lived objects per manager (one "
            "`transitions.Machine` shared by all models via `add_model`, or a table the machine "
            "walks itself; one TLS context per process), which shortens every full collection; a "
            "host running many managers can also call `gc.freeze()` once they are started; and "
            "a cheaper heartbeat path (send from the timer callback without a task, keep "
            "`heartbeat_sent`/`heartbeat_acked` off the table as dispatches already are).\n"
        )
    f = judged.get("false")
    if f and not f[0]:
        missed = True
        cause_start = (
            "each manager builds its own TLS context (see memory above) and "
            if tls_per_manager
            else ""
        )
        out.append(
            f"**5. False zombie detections ({f[1]} in all, {f[2]} in the steady windows).** The ACK "
            "deadline is 0.45 of the Hello interval: 450 ms in this test (18.6 s with QQ's real 41.25 s "
            "interval), so any stall of the event loop longer than about 450 ms reads as a dead "
            "connection (it is then closed and resumed: nothing is lost, but it is a false alarm "
            f"and a reconnect). While 1,000 managers start, {cause_start}the heap grows by about a "
            "thousand collector-tracked objects per manager, so the collector runs often and its "
            f"full collections walk up to a million objects. {_gc_evidence(r, parts)} A stall "
            "like that during the ramp, when many ACKs are in flight, ends dozens of connections "
            "at once. Closing the gap: fewer long-lived objects per manager (one shared "
            "`transitions.Machine`, see memory above), which shortens every full collection; a "
            "floor on the ACK deadline (say 2 s) so that short test intervals do not make the "
            "detector hair-trigger; and in a host that starts many managers, `gc.freeze()` once "
            "they are up.\n"
        )
    scale_paragraphs = scale_missed(r)
    if scale_paragraphs:
        missed = True
        out.extend(scale_paragraphs)
    if not missed:
        out.append("Every target with a measurement was met in this run.\n")
    return "\n".join(out) + "\n"


def _gc_evidence(r: dict[str, Any], parts: dict[str, Any]) -> str:
    m = r.get("many", {})
    q, b = m.get("qqconn") or [], m.get("bare") or []
    qmax = max((x for x in col(q, "gc_gen2_max_pause_ms") if x), default=0.0)
    qgen2 = sum(x or 0 for x in col(q, "gc_gen2_collections"))
    bmax = max((x for x in col(b, "gc_max_pause_ms") if x is not None), default=0.0)
    machine = parts.get("ConnectionMachine()", {})
    objs = machine.get("gc_objects_each")
    text = (
        f"Measured in this run's steady windows: qqconn's process did {qgen2} full (gen-2) "
        f"collection(s), the longest {qmax:.0f} ms; bare's longest collector pause was "
        f"{bmax:.0f} ms."
    )
    if objs:
        text += (
            f" Each `ConnectionMachine` holds about {objs:,.0f} objects the collector tracks (its "
            "own `transitions.Machine`: events, transitions, conditions, bound callbacks), so a "
            "full collection walks about a million objects for 1,000 managers (about 0.2–0.45 s "
            "on this machine)."
        )
    return text


def method(r: dict[str, Any]) -> str:
    cfg = r["config"]
    return f"""## Method

All timestamps are `time.monotonic()`, which on Linux is the system-wide `CLOCK_MONOTONIC`, so
the fake's records and the clients' stamps compare directly. The fake is
`qqconn.testing.FakeGateway` run by `bench/gateway_proc.py` in its own process, driven over a
JSON-lines control socket (burst, pump, faults, op 7, records). Each repeat starts a fresh fake and
a fresh client process; sides alternate their order from one repeat to the next. Logging: WARNING
and above only, for every side (qqconn via structlog's filtering logger, botpy's logger at WARNING
without its log file).

**Who does what per event.** *qqconn*: `ws.recv()` → `protocol.parse_frame` (JSON, op and shape
checks, a frozen `Dispatch`) → `machine.handle(DispatchReceived)` (epoch check, `s` bookkeeping,
deliver/drop) → `asyncio.Queue` → host task → `on_dispatch(dispatch)`, plus the delivery
bookkeeping (counters, checkpoint). *bare*: `ws.recv()` → `json.loads` → `op == 0` → skip an
`s` not above the last, remember `s` → `callback(dict)` inline. Same websockets options
(`compression=None`, no pings, 4 MiB `max_size`, default `max_queue`). The callback body is the
same on both sides (count, stamp the first and the last). *botpy*: its aiohttp reader →
`json.loads` → its parser builds a `GroupMessage`/`C2CMessage`/`Message` → one task per event for
the `on_…` handler (the same body).

1. **Throughput.** After a 5,000-frame warm-up burst, the fake writes a burst of
   {cfg["burst"]:,} realistic dispatches (`bench/realistic.py`: 70 % `GROUP_AT_MESSAGE_CREATE`, 20 %
   `C2C_MESSAGE_CREATE`, 10 % `AT_MESSAGE_CREATE`, ~530 bytes each, ids and openids as the real
   gateway sends them) straight into the socket's websockets protocol, 256 frames per
   `transport.write`, with flow control. Rate = (n − 1) / (time of the last event in the callback −
   time of the first), client side. The fake spends ~4 µs of CPU per frame, a quarter of the
   fastest client, so the client is the bottleneck (the fake's CPU per frame is in the raw
   results). CPU per event is the client process's user + system time over the burst / n: it is
   steadier than the rate on a shared machine. botpy gets {cfg["botpy_burst"]:,}-frame bursts (it is slower).
2. **Detection.** Hello interval {cfg["detect_hb_ms"]} ms, default `Policy` (ACK deadline 0.5 interval,
   stale after 3 intervals). After three ACKs and a random pause of 0–1 interval, the fake stops
   ACKs (zombie: everything else still works) or goes silent (half-open: nothing is written, not
   even pongs or replies to a close frame). Detection = the host's `on_state_change` leaving ALIVE;
   last ACK / last frame = the fake's record of what it wrote. The peers are watched for
   {cfg["long_window_s"]:g} s each: "noticed" means their socket closed or a new one opened.
   websockets' reference uses its default keepalive (ping every 20 s, 20 s timeout).
3. **Recovery.** The fake pumps 2,000 realistic events/s through its normal dispatch path (buffered
   while the session is detached, replayed on Resume). The connection is first left to mature
   5.5 s: qqconn deliberately backs off an op 7 that arrives within the quick-drop threshold (5 s)
   of the socket opening (a server answering every RESUMED with op 7 must not loop it), and QQ's
   real rotation comes after ~30 min. Then, 1 s into the pump, it sends op 7 and closes 4009 any
   socket the client has not closed within 200 ms. Time = first event delivered to the callback that
   the fake wrote on the new socket (replays included) − op 7 written. Lost = accepted by the fake
   and never delivered; duplicated = delivered twice. Default `Policy`. "close 4009 alone" is the
   same without op 7 (the policy waits U(0, 1) s before resuming: by design).
4. **The seed's loop.** `faults.close_new_sockets(0.1, …)` before the manager starts; default
   `Policy` (3 quick drops within 5 s → FATAL); close code 1000, 4009, or a drop without a close
   frame. Sockets = connections the fake accepted up to FATAL, and 1 s after it. The peers run for
   {cfg["long_window_s"]:g} s (websockets' `async for ws in connect()` reconnect loop; botpy as shipped).
5. **Many connections.** {cfg["many_n"]:,} connections in one process, each with its own session
   (own Identify), Hello interval {cfg["many_hb_ms"]} ms, started at {cfg["many_ramp_per_s"]:g} per second after one
   warm-up connection; then a {cfg["many_window_s"]:g} s steady window. Memory = (RSS at the end − RSS
   after the warm-up connection) / n, read from `/proc/self/status` in the client process. CPU =
   client user + system time over the window. Lateness = for each connection, each gap between two
   consecutive heartbeats the fake received during the window, minus the interval (qqconn and bare
   both schedule the next beat one interval after the previous one fired); p50/p99 over all gaps.
   botpy beats every 30 s whatever Hello says, so its gaps are taken over the whole run against
   30 s. False detections = qqconn connections that left ALIVE before the end although the fake was
   healthy, ramp included. bare only reads the token and URL from the harness (no HTTP); qqconn
   fetches a token and `/gateway/bot` per manager, as in production; botpy also calls `/users/@me`.
   The fake's per-socket fault watchdog ticks every 10 ms by default; with 1,000 sockets that alone
   took 50–64 % of a core and inflated every side's lateness (bare p99 112 ms instead of 25 ms in a
   trial), so item 5 runs the fake with a {cfg["many_tick_s"]:g} s tick (`--tick`; no timed fault is used there).
   The fake's CPU during the window is reported so that it can be checked it was not the bottleneck.
6. **The machine.** `bench/machine.py` (its own docstring says how), called by `bench/run.py`.
7. **botpy.** `qq-botpy` 1.2.1 from PyPI in `bench/.venv-botpy` (never a dependency of qqconn).
   Pointed at the fake at run time: `botpy.http.Route.SCHEME/DOMAIN/SANDBOX_DOMAIN`, and the token
   URL (a literal inside `Token.update_access_token`) through a shim for the `aiohttp` name of
   `botpy.robot` that swaps that one URL. The fake gains a `GET /users/@me` route in the harness
   (botpy calls it at login). Nothing else is changed; its installed files are untouched.
"""


def caveats(r: dict[str, Any]) -> str:
    m = r.get("many", {})
    q99 = [x for x in col(m.get("qqconn"), "lateness_p99_ms") if x is not None]
    b99 = [x for x in col(m.get("bare"), "lateness_p99_ms") if x is not None]
    spread = ""
    if q99 and b99:
        spread = (
            f"* **Heartbeat lateness is the noisiest figure.** In this run qqconn's p99 ranged "
            f"{min(q99):.0f}–{max(q99):.0f} ms and bare's {min(b99):.0f}–{max(b99):.0f} ms between "
            "repeats: a p99 over 30 s is set by the few longest stalls (another process taking the "
            "cores, a full garbage collection), so the verdict on that row can flip from one run to "
            "the next. The garbage-collector row is the structural part of it.\n"
        )
    return "## Caveats\n\n" + spread.rstrip("\n") + _CAVEATS


_CAVEATS = """
* **Noise.** The 2 cores are shared with other work (test suites of other sessions ran during
  some runs); wall-clock rates move by ±30 % between repeats. Sides are interleaved and medians
  reported; CPU µs per event is the steadier figure for item 1.
* **Loopback, `ws://`, `http://`.** No TLS anywhere, so TLS handshakes and contexts are in none
  of these figures (in production every side pays for its handshakes; how many TLS contexts each
  side builds is then part of its memory).
* **Short intervals.** Items 2 and 5 use a 1 s Hello interval (QQ sends ~41.25 s) to keep the run
  short; detection figures are in intervals and scale, but the ACK deadline (0.5 interval) becomes a
  500 ms stall budget, which matters for false detections under load.
* **The bare baseline is not a product.** It never detects anything, never reconnects, builds no
  typed events and hands dicts to the callback inline: it is the floor, not a competitor.
* **botpy's heartbeat** is fixed at 30 s whatever Hello announces, and it ignores ACKs; its
  lateness is measured against its own 30 s cadence.
* **The fake in one process** served every side; its CPU is in the raw results (and in the table
  for item 5), well below a core in every item, so it was not the bottleneck with the coarse tick.
"""


# -- item 10: many connections at scale (bench/scale.py) -------------------------------------


def _retried(res: dict[str, Any]) -> str:
    """The bare side's ramp retries (sockets that ended before READY), when there were any."""
    n = res.get("connects_retried")
    return f" + {n:,} retried before READY" if n else ""


def _scale_num(x: Any, digits: int = 3) -> str:
    return _num(x, digits) if isinstance(x, int | float) else "—"


def scale_rows(r: dict[str, Any]) -> list[str]:
    """Item 10's target rows for the Results table (per-count figures: its own section)."""
    sc = r.get("scale")
    if not sc:
        return []
    rows = []
    for v in scale_item.verdicts(sc):
        rows.append(
            f"| 10 | {v['figure'][0].upper() + v['figure'][1:]} | {_scale_num(v['qqconn'])} | "
            f"{_scale_num(v['bare'])} | — | {v['target']} | {verdict(v['ok'], v['detail'])} |"
        )
    return rows


def _late(res: dict[str, Any]) -> str:
    return f"{_scale_num(res.get('lateness_p50_ms'), 2)} / {_scale_num(res.get('lateness_p99_ms'))}"


def scale_section(r: dict[str, Any]) -> str:
    """``## Item 10``: one row per count and side, then the burst and the gc.freeze() window."""
    sc = r.get("scale")
    if not sc:
        return ""
    out = ["## Item 10: many connections at scale (bench/scale.py)\n"]
    out.append(
        f"One run per count and side (planned {sc.get('planned_s', 0) / 60:.1f} min from the "
        f"configured ramp rate, took {sc.get('duration_s', 0) / 60:.1f} min: a client that starts "
        "connections more slowly than the rate, or a loaded machine, takes longer). Memory per connection at the smallest count is "
        "dominated by fixed costs (the process's first-use caches, pools, the shared HTTP client and "
        "token source, allocator arenas) spread over few connections: it is shown, but the "
        '"flat" target compares the two largest counts.\n'
    )
    out.append(
        "| run | side | KiB / connection | ramp to all ALIVE/READY, s | lateness p50 / p99, ms | "
        "longest collector pause, ms (collections / gen-2) | CPU steady, % core | false detections (ramp / window) "
        "| sockets accepted | fakes: busiest % core, window / ramp (fakes) | machine busy % |"
    )
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    notes: list[str] = []
    for key, sides in sc.get("runs", {}).items():
        n = int(key.split("-", 1)[1])
        hb = next((p["hb_ms"] for p in sc.get("plan", []) if p["key"] == key), None)
        label = f"{n:,} at {hb / 1000:g} s" if hb else key
        for side in scale_item.SIDES:
            res = sides.get(side)
            if not res:
                continue
            if "error" in res:
                out.append(f"| {label} | {side} | error: {res['error']} |" + " |" * 9)
                continue
            fw, fr = res.get("fake_cpu_window", {}), res.get("fake_cpu_ramp", {})
            out.append(
                f"| {label} | {side} | {_scale_num(res.get('rss_per_conn_kb'))} | "
                f"{_scale_num(res.get('ramp_s'))} | {_late(res)} | "
                f"{_scale_num(res.get('gc_max_pause_ms'))} ({res.get('gc_collections', 0)} / "
                f"{res.get('gc_gen2_collections', 0)}) | "
                f"{_scale_num(res.get('cpu_pct_of_core'))} | "
                f"{res.get('false_detections_ramp', '—')} / {res.get('false_detections_in_window', '—')} | "
                f"{res.get('sockets_total', '—')} (1 warm-up + {n:,}"
                f"{_retried(res)}) | "
                f"{_scale_num(fw.get('busiest_pct_of_core'))} / {_scale_num(fr.get('busiest_pct_of_core'))} "
                f"({res.get('fakes', 1)}) | {_scale_num(res.get('machine_busy_pct'))} |"
            )
            b = res.get("burst")
            if b and "error" in b:
                notes.append(
                    f"* Burst beside {n:,} idle connections, {side}: failed ({b['error']})."
                )
            elif b:
                notes.append(
                    f"* Burst beside {n:,} idle connections, {side}: {b['events_per_s']:,.0f} events/s, "
                    f"{b['client_cpu_us_per_event']:.1f} µs of client CPU per event "
                    f"({b['delivered']:,} of {b['events']:,} delivered)."
                )
            f = res.get("frozen")
            if f:
                notes.append(
                    f"* `gc.freeze()` after the ramp, {n:,} connections, {side}, same process, a second "
                    f"window of {f['window_s']:.0f} s: longest collector pause "
                    f"{f['gc_max_pause_ms']:.1f} ms ({f['gc_gen2_collections']} gen-2; unfrozen window: "
                    f"{res.get('gc_max_pause_ms', 0):.1f} ms, {res.get('gc_gen2_collections', 0)} gen-2), "
                    f"lateness p50 / p99 {_scale_num(f.get('lateness_p50_ms'), 2)} / "
                    f"{_scale_num(f.get('lateness_p99_ms'))} ms, CPU {f['cpu_pct_of_core']:.1f} % of a core, "
                    f"{f['frozen_objects']:,} objects frozen."
                )
    out.append("")
    if notes:
        out.extend(notes)
        out.append("")
    return "\n".join(out) + "\n"


def scale_missed(r: dict[str, Any]) -> list[str]:
    """``Missed targets`` paragraphs for item 10, from this run's numbers."""
    sc = r.get("scale")
    if not sc:
        return []
    parts_table = bool(r.get("profile", {}).get("mem_parts", {}).get("parts"))
    runs = sc.get("runs", {})
    out = []
    for v in scale_item.verdicts(sc):
        if v["ok"] is not False:
            continue
        key = v["key"]
        if key.startswith("memory-"):
            n = int(key.split("-", 1)[1])
            out.append(
                f"**10. Memory per connection at {n:,} ({v['detail']}).** qqconn "
                f"{v['qqconn']:.1f} KiB against bare {v['bare']:.1f} KiB per connection (resident "
                "memory grown over the ramp / n). A bare connection is a websockets connection, a "
                "dict of state and two small tasks; a qqconn connection adds its manager: the "
                "machine's model (state, counters, records), its lanes, timers and tasks. Where "
                'the difference goes, part by part: the "Memory of a manager\'s parts" table '
                + ("below." if parts_table else "(bench/mem_parts.py, in the full run).")
                + " Closing it: fewer objects per connection, largest part first.\n"
            )
        elif key == "flat":
            out.append(
                f"**10. Memory per connection not flat ({v['detail']}; bare {_scale_num(v['bare'])}).** "
                "qqconn's KiB per connection grew with the count: something per connection grows "
                "with the number of connections (a list scanned or kept per connection, a "
                "registry that is never emptied), or the allocator holds more per object at "
                "scale. bare's ratio in the same run is the allocator's share.\n"
            )
        elif key == "lateness":
            run = next((x for k, x in runs.items() if k.startswith("stress-")), {})
            q, b = run.get("qqconn") or {}, run.get("bare") or {}
            out.append(
                f"**10. Heartbeat lateness p99 at the stress interval ({v['detail']}).** qqconn "
                f"{_scale_num(v['qqconn'])} ms against bare {_scale_num(v['bare'])} ms; in the same "
                f"window qqconn's longest collector pause was {_scale_num(q.get('gc_max_pause_ms'))} ms "
                f"({q.get('gc_gen2_collections', 0)} gen-2) and it used "
                f"{_scale_num(q.get('cpu_pct_of_core'))} % of a core against bare's "
                f"{_scale_num(b.get('cpu_pct_of_core'))} %. A beat is late by whatever holds the loop "
                "when its timer is due: a collection, or other connections' work. Closing it: "
                "`gc.freeze()` after start-up (see the frozen window in the item-10 section), and "
                "less work per heartbeat.\n"
            )
        elif key == "false":
            reasons = sorted(
                {
                    reason
                    for x in runs.values()
                    for reason in (x.get("qqconn") or {}).get("false_detection_reasons", [])
                }
            )
            server = [x for x in reasons if "4009" in x]
            why = (
                " A 4009 close is the fake's own watchdog, as the real gateway's (docs/protocol.md "
                "§7): no heartbeat from that socket for 1.5 intervals, counted from the socket's "
                "opening for the first one. qqconn's beats came that late: its event loop lagged "
                "(a start-up burst of handshakes, a collection, or the machine's other load), "
                "which docs/behaviour.md rule 21 cannot excuse on the server's side."
                if server
                else ""
            )
            own = [x for x in reasons if "4009" not in x]
            why += (
                " The other endings are qqconn's own detectors: rule 21 excuses an ACK late "
                "because the loop stalled, once per heartbeat, so these stalls outlasted the "
                "re-armed deadline."
                if own
                else ""
            )
            out.append(
                f"**10. False detections ({v['detail']}).** Connections left ALIVE although every "
                f"fake was healthy; their endings: {', '.join(reasons) or 'not recorded'}.{why} "
                "The per-count table says whether they came in the ramp or the steady window; "
                "closing it: less work per connection start and per heartbeat on the loop, and "
                "`gc.freeze()` after start-up.\n"
            )
        elif key == "gc":
            counts = scale_item.real_counts(sc)
            q = (runs.get(f"real-{counts[-1]}") or {}).get("qqconn") or {}
            frozen = q.get("frozen")
            after = (
                f" After `gc.freeze()` the same process's longest pause in a window as long was "
                f"{frozen['gc_max_pause_ms']:.1f} ms."
                if frozen
                else ""
            )
            out.append(
                f"**10. Longest collector pause at {counts[-1]:,} ({v['detail']}).** qqconn's "
                f"process did {q.get('gc_gen2_collections', 0)} full (gen-2) collection(s) in the "
                "steady window; a full collection walks every object the collector tracks, and "
                "every connection's objects are among them." + after + " Closing it: "
                '`gc.freeze()` once the managers are up (README, "Many connections in one '
                'process"), and fewer tracked objects per connection.\n'
            )
        elif key == "throughput":
            run = next((x for x in runs.values() if scale_item._burst_of(x)), {})
            qb = (run.get("qqconn") or {}).get("burst", {})
            bb = (run.get("bare") or {}).get("burst", {})
            out.append(
                f"**10. Burst throughput beside idle connections ({v['detail']}).** Client CPU per "
                f"event: qqconn {_scale_num(qb.get('client_cpu_us_per_event'))} µs, bare "
                f"{_scale_num(bb.get('client_cpu_us_per_event'))} µs. Compare item 1 (the same "
                "burst with no idle connection): if the ratio is the same there, the cost is per "
                "event (item 1's paragraph and profile); if it is worse here, the idle "
                "connections' timers and collections take the loop from the burst.\n"
            )
    return out


def scale_method(r: dict[str, Any]) -> str:
    sc = r.get("scale")
    if not sc:
        return ""
    c = sc["config"]
    counts = ", ".join(f"{n:,}" for n in c["counts"])
    return f"""**10. Many connections at scale** (`bench/scale.py`). {counts} connections at the
real Hello interval ({c["real_hb_ms"] / 1000:g} s) and {c["stress_count"]:,} at the stress interval
({c["stress_hb_ms"] / 1000:g} s), each count in one client process, qqconn and bare one after the
other in the same run (the order alternates from one count to the next), one run each. Item 5's
`many` scenario with options: one warm-up connection, then the count started at
{c["ramp_per_s"]:g}/s ({c["stress_ramp_per_s"]:g}/s at the stress interval) but never more than
{c.get("max_pending", 0):,} in their first attempt (started, neither ALIVE/READY nor ended) at a time
(a closed loop: a client slower than the rate
is timed at its own pace instead of piling up handshakes that time out and retry), every
connection with its own session. The fakes are several `bench/gateway_proc.py` processes, one per
{c["per_fake"]:,} connections, each on its own loopback port; connection *i* goes to fake *i* mod *k*
(qqconn's managers then share one HTTP client and token source per fake, as managers of one app
do), and their statistics and heartbeat gaps are merged (`common.merge_gaps`: percentiles over all
gaps together). Each fake's watchdog ticks every {c["real_tick_s"]:g} s ({c["stress_tick_s"]:g} s at
the stress interval); their CPU is reported per window and per ramp, the busiest fake's in the
table, so it can be checked that none was saturated. Every process raises its `RLIMIT_NOFILE` soft
limit to the hard one. At the real interval the window starts {c["settle_intervals"]:g} interval
after all are ALIVE/READY and lasts {c["window_intervals"]:g} intervals, so every connection
contributes at least one gap (its fewest beats in the window are in the raw results); at the stress
interval, as item 5 ({c["stress_settle_s"]:g} s, then {c["stress_window_s"]:g} s). Memory, lateness, CPU
and collector pauses as item 5. False detections: qqconn connections that left ALIVE up to the end
of the last measurement (ramp, window, burst), although the fakes were healthy; bare: connections
closed. The {c["burst_count"]:,}-connection run then sends item 1's {c["burst"]:,}-frame burst (after a
5,000-frame warm-up) on the warm-up connection while the others stay connected. The qqconn
{c["freeze_count"]:,}-connection run then calls `gc.collect()` and `gc.freeze()` and measures a second
window as long as the first in the same process: the effect of the README's advice, measured.
Targets: memory per connection ≤ {scale_item.MEMORY_RATIO:g}× bare at every count but the smallest;
"flat" = qqconn's KiB per connection at the largest count ≤ {scale_item.FLAT_RATIO:g}× that at the second
largest (the smallest is shown but not judged: fixed costs dominate it); lateness p99 at the stress
interval ≤ {scale_item.LATENESS_RATIO:g}× bare; no false detection in any run; longest collector pause in the
steady window at the largest count ≤ {scale_item.GC_PAUSE_MS:g} ms; burst throughput ≥
{scale_item.THROUGHPUT_RATIO:g}× bare.
"""


if __name__ == "__main__":
    data = json.loads(Path(sys.argv[1]).read_text())
    print(render(data))
