"""The soak: a seeded random schedule of every fault the fake gateway can inject, interleaved
with dispatch traffic, against one manager and against fifty at once (engine: tests/soak.py,
whose docstring defines every check and the event accounting).

``--soak-seconds`` (default: the short in-suite run, about a minute with both tests) sets the
total time; ``--soak-fifty-seconds`` sets the fifty-manager run alone (``make soak`` runs it for
``FIFTY_SECONDS``, default 3660 s: the issue 14 hour). Both print resident memory, file
descriptors and tasks at the start, every ten minutes at most and at the end, with a flatness
verdict, and fail when they do not stay flat.
``make soak`` asks for longer. ``SOAK_SEED=<n>`` replays a schedule; the seed is
printed in the summary line (``pytest -s``) and in every failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qqconn import State
from qqconn.testing import FakeGateway
from tests.soak import (
    SOAK_POLICY,
    LoopLag,
    Runner,
    Scheduler,
    Step,
    excusing_lag,
    run_soak,
)
from tests.soak_model import ZOMBIE_CLOSE_CODE, End, Planned
from tests.soak_report import LogTap, SoakReport
from tests.test_driver import manager_for

#: Share of --soak-seconds for each test (the rest is start-up and shut-down).
SINGLE_SHARE = 0.3
FIFTY_SHARE = 0.6


def _seed() -> int:
    """SOAK_SEED, or a fresh seed; printed first, so even a crash shows how to replay it."""
    env = os.environ.get("SOAK_SEED")
    seed = int(env) if env else random.SystemRandom().randrange(1 << 31)
    print(f"soak seed {seed} (replay with SOAK_SEED={seed})")
    return seed


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Hand each soak test its time budget, and a pytest-timeout that fits it."""
    if "soak_seconds" not in metafunc.fixturenames:
        return
    total = float(metafunc.config.getoption("--soak-seconds"))
    fifty = "fifty" in metafunc.function.__name__
    share = FIFTY_SHARE if fifty else SINGLE_SHARE
    seconds = max(total * share, 5.0)
    fifty_seconds = metafunc.config.getoption("--soak-fifty-seconds")
    if fifty and fifty_seconds is not None:
        seconds = float(fifty_seconds)
    mark = pytest.mark.timeout(int(seconds * 1.5) + 90)
    metafunc.parametrize("soak_seconds", [pytest.param(seconds, marks=mark)], ids=[f"{seconds:g}s"])


async def test_soak_one_manager(soak_seconds: float, tmp_path: Path) -> None:
    """One manager under a seeded fault schedule keeps every guarantee of tests/soak.py."""
    seed = _seed()
    report = await run_soak(managers=1, seconds=soak_seconds, seed=seed, state_dir=tmp_path)
    print(report.line("1 manager"))
    print(f"soak[1 manager] resources: {report.resources}")
    assert not report.violations, report.failure("1 manager")
    assert report.faults >= soak_seconds, report.failure("1 manager")


#: Seeds replayed in every run (issue 14): a regression the soak catches fails every run, not
#: one run in five. Each runs the one-manager soak for FIXED_SEED_SECONDS.
FIXED_SEEDS = (7, 2026)
FIXED_SEED_SECONDS = 8.0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", FIXED_SEEDS)
async def test_soak_one_manager_fixed_seed(seed: int, tmp_path: Path) -> None:
    """The one-manager soak from a fixed seed keeps every guarantee of tests/soak.py."""
    report = await run_soak(managers=1, seconds=FIXED_SEED_SECONDS, seed=seed, state_dir=tmp_path)
    print(report.line(f"1 manager, seed {seed}"))
    assert not report.violations, report.failure(f"1 manager, seed {seed}")
    assert report.faults >= FIXED_SEED_SECONDS, report.failure(f"1 manager, seed {seed}")


#: Seeds of the network-fault soak replayed in every run: the one-manager soak with the fault
#: proxy's faults (latency, stall, reset mid-frame, trickle, half-close) drawn far more often
#: than the fake's, so each seed reaches every one of them in a few seconds.
PROXY_SEEDS = (3, 14, 99)
PROXY_WEIGHTS = {
    "net_latency": 20.0,
    "net_stall": 20.0,
    "net_reset": 20.0,
    "net_trickle": 15.0,
    "net_half_close": 20.0,
}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("seed", PROXY_SEEDS)
async def test_soak_network_faults_fixed_seed(seed: int, tmp_path: Path) -> None:
    """Through the fault proxy, each network fault ends as docs/behaviour.md says (a stall is a
    zombie then a Resume, a reset or half-close a drop then a Resume, latency and a trickle no
    ending at all), with every guarantee of tests/soak.py: 0 lost, 0 duplicated, no gap."""
    label = f"1 manager, network faults, seed {seed}"
    report = await run_soak(
        managers=1,
        seconds=FIXED_SEED_SECONDS,
        seed=seed,
        state_dir=tmp_path,
        weights=PROXY_WEIGHTS,
    )
    print(report.line(label))
    print(f"soak[{label}] faults: {dict(report.by_fault)}")
    assert not report.violations, report.failure(label)
    net = sum(n for kind, n in report.by_fault.items() if kind.startswith("net_"))
    assert net >= FIXED_SEED_SECONDS / 2, report.failure(label)
    assert report.duplicated == 0 and report.gaps == 0, report.failure(label)
    assert report.lost == report.lost_forgotten + report.lost_fatal + report.lost_unlearned


#: Mostly oversized frames, with events flowing: two in a row at one point of the stream must
#: not read as rule 19's poison frame come back (the soak's frame is never replayed). Before the
#: soak moved the stream on first, a 300 s run of this mix lost 9 events (200 violations).
#: Only these faults (a forgotten session or a FATAL would account for losses of its own).
OVERSIZED_WEIGHTS = {kind: 0.0 for kind in Scheduler.WEIGHTS} | {
    "oversized": 10.0,
    "drop": 1.0,
    "op7": 1.0,
}


@pytest.mark.timeout(120)
async def test_soak_oversized_frames_in_a_row_lose_nothing(tmp_path: Path) -> None:
    label = "3 managers, oversized frames"
    report = await run_soak(
        managers=3,
        seconds=FIXED_SEED_SECONDS * 2,
        seed=19,
        state_dir=tmp_path,
        weights=OVERSIZED_WEIGHTS,
        pump_rate=(2, 0.1, 0.3),
        pace_s=0.0,
    )
    print(report.line(label))
    assert not report.violations, report.failure(label)
    assert report.by_fault["oversized(1009)"] >= 10, report.failure(label)
    assert report.sent > 0 and report.lost == 0 and report.gaps == 0, report.failure(label)


async def test_soak_fifty_managers(soak_seconds: float, tmp_path: Path) -> None:
    """Fifty managers taking faults concurrently keep the same guarantees, and nothing leaks."""
    seed = _seed()
    report = await run_soak(
        managers=50,
        seconds=soak_seconds,
        seed=seed,
        state_dir=tmp_path,
        weights={"endpoint_hang": 0.1, "resume_thrice": 0.1},
        pump_rate=(2, 0.1, 0.3),
        pace_s=1.0,
        hb_ms=400,
    )
    print(report.line("50 managers"))
    print(f"soak[50 managers] resources: {report.resources}")
    assert not report.violations, report.failure("50 managers")
    assert report.faults >= soak_seconds * 10, report.failure("50 managers")


# -- what the soak found (fixed; kept as regression tests) ---------------------------------------


async def _until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


# Found by the soak: run() used to write the state file only on its first transition, so for
# the whole first attempt the file still said what the previous process left ("alive").
async def test_state_file_is_rewritten_as_soon_as_a_manager_runs(tmp_path: Path) -> None:
    """A crashed process's 'alive' state file says 'connecting' once the next manager runs."""
    state_file = tmp_path / "state.json"
    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        gw.faults.token_endpoint = "hang"  # the first attempt stays in CONNECTING
        crashed = {
            "app_id": gw.app_id,
            "shard": [0, 1],
            "state": "alive",
            "session_id": "session-of-the-crashed-process",
            "last_seq": 7,
            "updated_at_unix": time.time(),
        }
        state_file.write_text(json.dumps(crashed))
        mgr = manager_for(gw, state_file=state_file)
        task = asyncio.create_task(mgr.run())
        try:
            await _until(lambda: any("AccessToken" in h.path for h in gw.http_requests))
            assert mgr.state is State.CONNECTING
            assert json.loads(state_file.read_text())["state"] == "connecting"
        finally:
            await mgr.stop()
            await task


# Found by the fifty-manager soak: each run() used to build an httpx client that parsed the CA
# bundle synchronously (~40 ms), so fifty managers starting together, or several restarting
# after FATAL, stalled every other manager's heartbeats for seconds.
async def test_starting_many_managers_parses_the_ca_bundle_at_most_once_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Five managers starting in one process parse the CA bundle on the loop at most once."""
    loads: list[str] = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(threading.current_thread().name)
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    loop_thread = threading.current_thread().name
    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        managers = [manager_for(gw) for _ in range(5)]
        tasks = [asyncio.create_task(m.run()) for m in managers]
        try:
            await _until(lambda: len(gw.http_requests) >= 5)
        finally:
            for m in managers:
                await m.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert loads.count(loop_thread) <= 1, loads


# -- judging under loop lag (issue 14 item 6) -----------------------------------------------------


def _judge_with_lag(step: Step, endings: list[End], lag_s: float | None) -> tuple[bool, SoakReport]:
    """Judge ``step`` after ``endings`` (observed at t = 1000 s) with one loop-lag sample of
    ``lag_s`` just after them (None: no lag at all), on a fake slot and fake time stamps."""
    LoopLag.reset()
    try:
        if lag_s is not None:
            LoopLag.sample(lag_s, at=1000.05)
        report = SoakReport(seed=0)
        runner = Runner(report, LogTap())
        slot = SimpleNamespace(
            name="slot0",
            policy=SOAK_POLICY,
            gw=SimpleNamespace(heartbeat_interval_ms=400),
            mgr=SimpleNamespace(machine=SimpleNamespace(fatal=None)),
            observer=SimpleNamespace(
                endings=[(e, 0.5) for e in endings], end_marks=[1000.0] * len(endings), judged=0
            ),
        )
        disturbed = runner._judge(slot, step)  # type: ignore[arg-type]
        return disturbed, report
    finally:
        LoopLag.reset()


_OP7_STEP = Step("op7", {}, "long", [Planned("op7", quick=(False,), certain=True)], fatal=False)
_ZOMBIE = End("watchdog", ZOMBIE_CLOSE_CODE, quick=False, reached=True, hello=True)


def test_a_watchdog_ending_under_loop_lag_is_excused_and_counted() -> None:
    """An op7 step pre-empted by the client's own zombie watchdog while the loop lagged past
    an eighth of the ACK deadline (0.4 s here) is accepted, counted as excused, with its lag."""
    disturbed, report = _judge_with_lag(_OP7_STEP, [_ZOMBIE], lag_s=0.3)
    assert report.violations == []
    assert report.excused == {"watchdog": 1}
    assert report.excused_max_lag_s == pytest.approx(0.3)
    assert disturbed  # the plan's FATAL check is left to the differential check
    assert "excused by loop lag: 1, max lag 0.30 s" in report.line("t")


@pytest.mark.parametrize("lag_s", [None, 0.03])
def test_the_same_watchdog_ending_without_loop_lag_is_a_violation(lag_s: float | None) -> None:
    """The same ending with no lag, or lag below an eighth of the ACK deadline, is a violation."""
    _, report = _judge_with_lag(_OP7_STEP, [_ZOMBIE], lag_s=lag_s)
    assert len(report.violations) == 1
    assert "unplanned watchdog (hello=True, reached=True, lived 0.500 s)" in report.violations[0]
    assert report.excused == {}


def test_a_watchdog_in_place_of_a_drop_is_a_disturbance_at_any_lag() -> None:
    """A drop without close frame while an ACK is due races the zombie watchdog: counted as
    disturbed (as before), not excused and not a violation."""
    step = Step("drop", {}, "long", [Planned("close", None, quick=(False,))], fatal=False)
    disturbed, report = _judge_with_lag(step, [_ZOMBIE], lag_s=None)
    assert disturbed and report.violations == [] and report.excused == {}
    assert report.disturbed == 1 and report.disturbances == {"watchdog instead of drop": 1}


def test_lag_excuses_only_endings_a_late_loop_can_cause() -> None:
    """Under the same lag, a drop where op7 was planned is still a violation; a connect
    failure is excused only past an eighth of the connect timeout (3 s), not by the ACK lag."""
    _, report = _judge_with_lag(_OP7_STEP, [End("close", None, quick=False)], lag_s=2.0)
    assert len(report.violations) == 1 and report.excused == {}
    connect_failed = End("pre_socket", reached=False, hello=False)
    _, report = _judge_with_lag(_OP7_STEP, [connect_failed, End("op7", quick=False)], lag_s=0.3)
    assert len(report.violations) == 1 and report.excused == {}
    _, report = _judge_with_lag(_OP7_STEP, [connect_failed, End("op7", quick=False)], lag_s=2.0)
    assert report.violations == [] and report.excused == {"pre_socket": 1}


def test_an_excused_watchdog_takes_the_place_of_the_ending_it_pre_empted() -> None:
    """The zombie watchdog ended the connection the trigger (a drop) was for: the endpoint
    failures after it are judged against the rest of the plan as usual."""
    step = Step(
        "endpoint_failures",
        {},
        "long",
        [
            Planned("close", None, quick=(False,), certain=True),
            Planned("pre_socket", reached=(False,), hello=(False,)),
        ],
        fatal=False,
    )
    connect_failed = End("pre_socket", reached=False, hello=False)
    _, report = _judge_with_lag(step, [_ZOMBIE, connect_failed], lag_s=0.3)
    assert report.violations == [] and report.excused == {"watchdog": 1}
    _, report = _judge_with_lag(step, [_ZOMBIE, End("op7", quick=False)], lag_s=0.3)
    assert len(report.violations) == 1 and "caused endings" in report.violations[0]
    # Or it ended an extra attempt, after the trigger and before the planned failure.
    drop = End("close", None, quick=False)
    _, report = _judge_with_lag(step, [drop, _ZOMBIE, connect_failed], lag_s=0.3)
    assert report.violations == [] and report.excused == {"watchdog": 1}


def test_a_loop_late_at_every_wake_up_excuses_a_watchdog_ending() -> None:
    """No single wake-up late by an eighth of the ACK deadline, but lateness adding up to a
    quarter of it in the deadline before the ending: excused. Half of that: not."""
    LoopLag.reset()
    try:
        for n in range(10):
            LoopLag.sample(0.03, at=999.5 + n * 0.05)  # 10 x 30 ms = 0.3 s >= 0.1 s
        assert excusing_lag("watchdog", 1000.0, SOAK_POLICY, 0.4) == pytest.approx(0.03)
        LoopLag.reset()
        LoopLag.sample(0.025, at=999.8)  # 25 ms < 50 ms peak, < 100 ms in total
        LoopLag.sample(0.025, at=999.9)
        assert excusing_lag("watchdog", 1000.0, SOAK_POLICY, 0.4) is None
    finally:
        LoopLag.reset()


def test_lag_long_before_an_ending_does_not_excuse_it() -> None:
    """The lag must be measured around the ending: a spike a minute earlier excuses nothing."""
    LoopLag.reset()
    try:
        LoopLag.sample(1.0, at=940.0)
        assert excusing_lag("watchdog", 1000.0, SOAK_POLICY, 0.4) is None
        assert excusing_lag("watchdog", 940.5, SOAK_POLICY, 0.4) == pytest.approx(1.0)
        assert excusing_lag("close", 940.5, SOAK_POLICY, 0.4) is None
    finally:
        LoopLag.reset()
