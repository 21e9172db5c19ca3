"""``make bench``: every qqconn performance figure, side by side with its baselines, in one run.

Usage: ``python bench/run.py [--quick] [--no-botpy] [--no-profile] [--only ITEMS]``

* full run (``make bench``): about 30–40 minutes on the 2-core machine (item 10, many
  connections at scale, is 17–20 of them: ``bench/scale.py`` prints its plan); rewrites
  ``docs/benchmarks.md`` and saves the raw results to ``bench/results/``;
* ``--quick``: a smoke run of the harness (small sizes, one repeat, short windows) in under
  2 minutes; it writes ``bench/results/quick-*.json`` and leaves the docs alone unless
  ``--write-docs`` is given.

Every scenario runs in fresh processes: the fake gateway (``bench/gateway_proc.py``) in one,
the client (``bench/scen_qqconn.py``, ``scen_bare.py`` or ``scen_botpy.py``) in another; repeats
alternate the order of the sides so that drift on a noisy machine favours none. The official
SDK runs from ``bench/.venv-botpy`` (created here on first use, git-ignored), never from the
project's venv. See docs/benchmarks.md for the method behind each figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, ROOT, GatewayProcess, cpu_jiffies, eprint, run_client

PY = sys.executable
BOTPY_VENV = BENCH / ".venv-botpy"
BOTPY_PY = BOTPY_VENV / "bin" / "python"
PYSPY = BOTPY_VENV / "bin" / "py-spy"
BOTPY_REQUIREMENTS = ["qq-botpy==1.2.1", "py-spy==0.4.3"]
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Config:
    name: str
    burst: int = 200_000
    burst_reps: int = 5
    botpy_burst: int = 50_000
    botpy_burst_reps: int = 1
    detect_hb_ms: int = 1000
    detect_reps: int = 3
    recover_reps: int = 4
    recover_4009_reps: int = 2
    botpy_recover_reps: int = 1
    seed_reps: int = 2
    seed_codes: tuple[str, ...] = ("1000", "4009", "none")
    long_window_s: float = 60.0
    many_n: int = 1000
    many_window_s: float = 30.0
    many_reps: int = 3
    many_botpy_reps: int = 2
    many_ramp_per_s: float = 100.0
    many_hb_ms: int = 1000
    many_tick_s: float = 0.5
    machine_events: int = 20_000
    mem_parts_n: int = 50


FULL = Config("full")
QUICK = Config(
    "quick",
    burst=20_000,
    burst_reps=1,
    botpy_burst=5_000,
    botpy_burst_reps=1,
    detect_reps=1,
    recover_reps=1,
    recover_4009_reps=1,
    botpy_recover_reps=1,
    seed_reps=1,
    seed_codes=("4009",),
    long_window_s=5.0,
    many_n=100,
    many_window_s=5.0,
    many_reps=1,
    many_botpy_reps=1,
    many_ramp_per_s=200.0,
    machine_events=2_000,
    mem_parts_n=10,
)


# -- environment ------------------------------------------------------------------------


def ensure_botpy_venv() -> str | None:
    """Create bench/.venv-botpy with the official SDK (and py-spy) if needed; None if ready."""
    marker = BOTPY_VENV / ".bench-installed"
    if marker.exists() and marker.read_text() == " ".join(BOTPY_REQUIREMENTS):
        return None
    eprint(f"creating {BOTPY_VENV.relative_to(ROOT)} ({', '.join(BOTPY_REQUIREMENTS)}) ...")
    try:
        if not BOTPY_PY.exists():
            subprocess.run([sys.executable, "-m", "venv", str(BOTPY_VENV)], check=True)
        subprocess.run(
            [str(BOTPY_PY), "-m", "pip", "install", "-q", *BOTPY_REQUIREMENTS],
            check=True,
            timeout=600,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return f"could not create the botpy venv: {exc}"
    marker.write_text(" ".join(BOTPY_REQUIREMENTS))
    return None


def _version(python: str, dist: str) -> str | None:
    try:
        out = subprocess.run(
            [python, "-c", f"from importlib.metadata import version; print(version({dist!r}))"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip() or None
    except (subprocess.SubprocessError, OSError):
        return None


def environment() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "qqconn": _version(PY, "qqconn"),
        "websockets": _version(PY, "websockets"),
        "httpx": _version(PY, "httpx"),
        "transitions": _version(PY, "transitions"),
        "qq-botpy": _version(str(BOTPY_PY), "qq-botpy") if BOTPY_PY.exists() else None,
        "aiohttp (botpy)": _version(str(BOTPY_PY), "aiohttp") if BOTPY_PY.exists() else None,
    }


def loadavg() -> list[float]:
    with open("/proc/loadavg", encoding="ascii") as fh:
        return [float(x) for x in fh.read().split()[:3]]


# -- running scenarios --------------------------------------------------------------------


def scenario(
    side: str,
    name: str,
    *args: str,
    hb_ms: int = 41250,
    tick: float | None = None,
    timeout: float = 300,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Start a fresh fake gateway, run one client scenario against it, stop the gateway."""
    python = str(BOTPY_PY) if side == "botpy" else PY
    busy0, total0 = cpu_jiffies()
    gw = GatewayProcess.start(PY, hb_ms=hb_ms, tick=tick)
    try:
        cmd = [
            python,
            str(BENCH / f"scen_{side}.py"),
            name,
            *gw.args(),
            "--hb-ms",
            str(hb_ms),
            *args,
        ]
        if profile is not None:
            cmd = [
                str(PYSPY),
                "record",
                "-r",
                "200",
                "--format",
                "raw",
                "-o",
                str(profile),
                "--",
                *cmd,
            ]
        result = run_client(cmd, timeout)
    finally:
        gw.stop()
    busy1, total1 = cpu_jiffies()
    # How busy the whole machine was (all cores, every process: ours and anyone else's).
    result["machine_busy_pct"] = round(100 * (busy1 - busy0) / max(total1 - total0, 1), 1)
    result.setdefault("side", side)
    if "error" in result:
        eprint(
            f"  !! {side} {name} {' '.join(args)}: {result['error']}\n{result.get('stderr', '')[-1500:]}"
        )
    return result


def alternate(sides: list[str], reps: int, run: Any) -> dict[str, list[dict[str, Any]]]:
    """Run ``run(side)`` ``reps`` times per side, alternating the order each repeat."""
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    for r in range(reps):
        for side in sides if r % 2 == 0 else sides[::-1]:
            res = run(side)
            out[side].append(res)
            eprint(f"  {side:8s} rep {r + 1}/{reps}: {_brief(res)}")
    return out


def _brief(res: dict[str, Any]) -> str:
    keys = (
        "events_per_s",
        "client_cpu_us_per_event",
        "recovery_s",
        "lost",
        "duplicated",
        "sockets_before_fatal",
        "time_to_fatal_s",
        "rss_per_conn_kb",
        "lateness_p99_ms",
        "cpu_pct_of_core",
        "false_detections",
        "noticed",
        "sockets",
        "error",
    )
    parts = []
    for k in keys:
        if k in res:
            v = res[k]
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    if "zombie" in res:
        z, h = res["zombie"], res.get("halfopen", {})
        parts.append(
            f"zombie={z.get('from_last_ack_intervals')!s:.6} halfopen={h.get('from_last_frame_intervals')!s:.6}"
        )
    return " ".join(parts)


def col(runs: list[dict[str, Any]], key: str, sub: str | None = None) -> list[Any]:
    vals = []
    for r in runs:
        v = r.get(sub, {}) if sub else r
        vals.append(v.get(key) if isinstance(v, dict) else None)
    return vals


# -- the items ----------------------------------------------------------------------------


def item_throughput(cfg: Config, botpy: bool) -> dict[str, Any]:
    eprint(f"[1] dispatch throughput: bursts of {cfg.burst:,} frames")
    runs = alternate(
        ["qqconn", "bare"],
        cfg.burst_reps,
        lambda side: scenario(side, "throughput", "--n", str(cfg.burst)),
    )
    if botpy:
        runs["botpy"] = [
            scenario("botpy", "throughput", "--n", str(cfg.botpy_burst))
            for _ in range(cfg.botpy_burst_reps)
        ]
        eprint(f"  botpy: {[_brief(r) for r in runs['botpy']]}")
    return runs


def item_detect(cfg: Config) -> dict[str, Any]:
    eprint(f"[2] time to detect a dead connection (Hello interval {cfg.detect_hb_ms} ms)")
    return alternate(
        ["qqconn"], cfg.detect_reps, lambda side: scenario(side, "detect", hb_ms=cfg.detect_hb_ms)
    )


def item_recover(cfg: Config, botpy: bool) -> dict[str, Any]:
    eprint("[3] time to recover: op 7 (then 4009) while 2,000 events/s flow")
    out = alternate(
        ["qqconn"], cfg.recover_reps, lambda side: scenario(side, "recover", "--trigger", "op7")
    )
    out["qqconn_4009"] = alternate(
        ["qqconn"],
        cfg.recover_4009_reps,
        lambda side: scenario(side, "recover", "--trigger", "close4009"),
    )["qqconn"]
    if botpy:
        out["botpy"] = alternate(
            ["botpy"], cfg.botpy_recover_reps, lambda side: scenario(side, "recover")
        )["botpy"]
    return out


def item_seedloop(cfg: Config) -> dict[str, Any]:
    eprint("[4] the seed's loop: every socket closed 100 ms after it opens")
    out: dict[str, Any] = {}
    for code in cfg.seed_codes:
        out[code] = alternate(
            ["qqconn"],
            cfg.seed_reps,
            lambda side, code=code: scenario(side, "seedloop", "--code", code, "--window", "60"),
        )["qqconn"]
    return out


def item_long_windows(cfg: Config, botpy: bool) -> dict[str, Any]:
    """Items 2 and 4 for the peers that never give up or never notice: observed for a fixed
    window, all at once (each is idle or nearly so; 2 processes each)."""
    w = str(cfg.long_window_s)
    eprint(
        f"[2/4 peers] observing botpy and bare websockets for {cfg.long_window_s:g} s (in parallel)"
    )
    timeout = cfg.long_window_s + 60

    def peer_jobs(side: str) -> dict[str, Any]:
        """The same three long observations for one peer: zombie, half-open, the seed's loop."""
        jobs: dict[str, Any] = {
            f"{side}_{fault}": lambda fault=fault: scenario(
                side,
                "detect",
                "--fault",
                fault,
                "--window",
                w,
                hb_ms=cfg.detect_hb_ms,
                timeout=timeout,
            )
            for fault in ("zombie", "halfopen")
        }
        jobs[f"{side}_seedloop"] = lambda: scenario(
            side, "seedloop", "--window", w, timeout=timeout
        )
        return jobs

    jobs = peer_jobs("bare")
    if botpy:
        jobs |= peer_jobs("botpy")
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        out = {name: f.result() for name, f in futures.items()}
    for name, res in out.items():
        eprint(f"  {name}: {_brief(res)}")
    return out


def item_many(cfg: Config, botpy: bool) -> dict[str, Any]:
    eprint(
        f"[5] {cfg.many_n:,} connections in one process, Hello interval {cfg.many_hb_ms} ms, {cfg.many_window_s:g} s window"
    )
    args = [
        "--n",
        str(cfg.many_n),
        "--window",
        str(cfg.many_window_s),
        "--ramp-per-s",
        str(cfg.many_ramp_per_s),
    ]

    def run(side: str) -> dict[str, Any]:
        return scenario(
            side,
            "many",
            *args,
            hb_ms=cfg.many_hb_ms,
            tick=cfg.many_tick_s,
            timeout=cfg.many_n / cfg.many_ramp_per_s + cfg.many_window_s + 400,
        )

    out = alternate(["qqconn", "bare"], cfg.many_reps, run)
    if botpy:  # the peer is steadier and slower to start: fewer repeats
        out["botpy"] = alternate(["botpy"], cfg.many_botpy_reps, run)["botpy"]
    return out


def item_machine(cfg: Config) -> dict[str, Any]:
    eprint("[6] the machine (bench/machine.py)")
    path = BENCH / "machine.py"
    if not path.exists():
        return {"error": "bench/machine.py is not there yet"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "machine.json"
        try:
            done = subprocess.run(
                [PY, str(path), "--events", str(cfg.machine_events), "--json", str(out)],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=ROOT,
            )
        except subprocess.TimeoutExpired:
            return {"error": "bench/machine.py timed out (300 s)"}
        if done.returncode != 0 or not out.exists():
            return {
                "error": f"bench/machine.py failed (exit {done.returncode})",
                "stderr": done.stderr[-2000:],
            }
        result = json.loads(out.read_text())
        result["markdown"] = done.stdout.strip()
        return result


def item_webhook(cfg: Config) -> dict[str, Any]:
    """Item 8: the webhook transport (bench/webhook.py): signed events/s and the cost per event."""
    eprint("[8] webhook transport: signed events/s through uvicorn; verification cost per event")
    out = RESULTS / "webhook-latest.json"
    events = "1000" if cfg is QUICK else "5000"
    try:
        done = subprocess.run(
            [PY, str(BENCH / "webhook.py"), "--events", events, "--json", str(out)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return {"error": "bench/webhook.py timed out (600 s)"}
    if done.returncode != 0 or not out.exists():
        return {
            "error": f"bench/webhook.py failed (exit {done.returncode})",
            "stderr": done.stderr[-2000:],
        }
    result = json.loads(out.read_text())
    result["markdown"] = done.stdout.strip()
    return result


def item_shards(cfg: Config) -> dict[str, Any]:
    """Item 9: 16 shards to ALIVE under the identify limit (bench/shards.py), as a ratio to
    the windows the limit makes them wait."""
    eprint("[9] shards: 16 shards to ALIVE with max_concurrency 1 and 4, against the limit")
    out = RESULTS / "shards-latest.json"
    reps = "1" if cfg is QUICK else "3"
    try:
        done = subprocess.run(
            [PY, str(BENCH / "shards.py"), "--reps", reps, "--json", str(out)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return {"error": "bench/shards.py timed out (600 s)"}
    if done.returncode != 0 or not out.exists():
        return {
            "error": f"bench/shards.py failed (exit {done.returncode})",
            "stderr": done.stderr[-2000:],
        }
    result = json.loads(out.read_text())
    result["markdown"] = done.stdout.strip()
    return result


def item_scale(cfg: Config) -> dict[str, Any]:
    """Item 10: 100, 1,000 and 10,000 connections (and 1,000 at 1 s), qqconn beside bare,
    against several fakes (bench/scale.py)."""
    import scale

    return scale.item_scale(scale.QUICK if cfg is QUICK else scale.FULL, PY)


def item_profile(cfg: Config, stamp: str) -> dict[str, Any]:
    """py-spy on one qqconn burst, and the memory of a manager's parts."""
    eprint("[profile] py-spy on a qqconn burst; memory per part")
    from profile_summary import summarise

    out: dict[str, Any] = {}
    parts = run_client([PY, str(BENCH / "mem_parts.py"), "--n", str(cfg.mem_parts_n)], 300)
    out["mem_parts"] = parts
    if PYSPY.exists():
        raw = RESULTS / f"profile-throughput-{stamp}.txt"
        res = scenario("qqconn", "throughput", "--n", str(cfg.burst), profile=raw)
        out["throughput_run"] = res
        if raw.exists():
            out["throughput_profile"] = summarise(str(raw), top=18, only="_run_once")
            out["throughput_profile_file"] = str(raw.relative_to(ROOT))
    else:
        out["throughput_profile"] = "py-spy not available (bench/.venv-botpy missing)"
    return out


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run of the harness (< 2 min)")
    ap.add_argument("--no-botpy", action="store_true", help="skip the official SDK")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument(
        "--write-docs", action="store_true", help="rewrite docs/benchmarks.md even with --quick"
    )
    ap.add_argument(
        "--only",
        default="1,2,3,4,5,6,7,8,9,10",
        help="comma list of items (7 = peers' long windows, 8 = webhook transport, 9 = shards, "
        "10 = many connections at scale)",
    )
    a = ap.parse_args()
    cfg = QUICK if a.quick else FULL
    only = set(a.only.split(","))
    started = time.monotonic()
    RESULTS.mkdir(parents=True, exist_ok=True)

    botpy = not a.no_botpy
    botpy_error = ensure_botpy_venv() if botpy else "skipped (--no-botpy)"
    if botpy_error:
        eprint(f"botpy: {botpy_error}")
        botpy = False
    results: dict[str, Any] = {
        "config": asdict(cfg),
        "environment": environment(),
        "botpy_error": botpy_error,
        "loadavg_start": loadavg(),
    }
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if "1" in only:
        results["throughput"] = item_throughput(cfg, botpy)
    if "2" in only:
        results["detect"] = item_detect(cfg)
    if "3" in only:
        results["recover"] = item_recover(cfg, botpy)
    if "4" in only:
        results["seedloop"] = item_seedloop(cfg)
    if "7" in only:
        results["long"] = item_long_windows(cfg, botpy)
    if "5" in only:
        results["many"] = item_many(cfg, botpy)
    if "6" in only:
        results["machine"] = item_machine(cfg)
    if "8" in only:
        results["webhook"] = item_webhook(cfg)
    if "9" in only:
        results["shards"] = item_shards(cfg)
    if "10" in only:
        results["scale"] = item_scale(cfg)
    if not a.no_profile and not a.quick:
        results["profile"] = item_profile(cfg, stamp)
    results["loadavg_end"] = loadavg()
    results["duration_s"] = round(time.monotonic() - started, 1)

    prefix = "quick" if a.quick else "bench"
    path = RESULTS / f"{prefix}-{stamp}.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    (RESULTS / f"{prefix}-latest.json").write_text(path.read_text())
    eprint(f"raw results: {path.relative_to(ROOT)} ({results['duration_s']:.0f} s)")

    from report import render

    text = render(results)
    if not a.quick or a.write_docs:
        DOC.write_text(text)
        eprint(f"wrote {DOC.relative_to(ROOT)}")
    else:
        (RESULTS / "quick-report.md").write_text(text)
        eprint(f"quick report: {(RESULTS / 'quick-report.md').relative_to(ROOT)} (docs untouched)")
    print(text.split("## Method")[0])


if __name__ == "__main__":
    main()
