"""The crash soak: ``qqconn run --output FILE`` killed with SIGKILL at random moments while the
fake gateway injects random faults, restarted after each kill with the same output and state
file; across all restarts every accepted event is in FILE exactly once, in order.

The accounting follows tests/soak.py's: the truth is the fake (``gw.accepted(sid)``, the ``s``
of every dispatch each session accepted, READY being ``s = 1``). FILE is read as written: each
READY line opens a session, each dispatch line carries its session id in ``d`` (the pump puts
it there). For every session in FILE the dispatches must be ``2, 3, 4, …`` with no repeat and no
gap (a prefix of what the server accepted). The last session must be complete. An earlier
session may stop short only when the harness injected a fault that forgets it (op 9 ``false``,
refused Resumes) while it was the server's current session: what it accepted after the last
line is ``lost_forgotten``. A session whose READY never reached FILE (killed or cut before the
line was written) was never held: what it accepted is ``lost_unlearned``. Anything else
incomplete is a violation. sent == written + lost_forgotten + lost_unlearned.

The seed is printed; ``SOAK_SEED=<n>`` replays the schedule (kill moments and faults; process
and socket timing do not replay, which is why every check reads what really happened).
``--crash-kills`` sets the number of kills of the random-seed run (``make soak`` asks for 60);
``make test`` runs it with 8 kills, and two fixed seeds with 4 kills each, so a regression the
soak catches fails every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qqconn.testing import FakeGateway
from tests.test_cli import SECRET, qqconn_run

#: Limits far beyond what random faults reach: the crash soak is about kills, not FATAL.
POLICY_TOML = """\
[policy]
quick_disconnect_threshold_s = 0.2
max_quick_disconnects = 1000
max_reconnect_attempts = 1000
backoff_s = [0.02, 0.1]
backoff_jitter = 0.0
connect_timeout_s = 2.0
close_timeout_s = 0.3
rotation_delay_s = [0.0, 0.02]
"""

#: Faults that keep the session resumable, and those that forget it.
FAULTS = ("op7", "drop", "close1011", "close4009", "zombie", "token500", "gateway500")
FORGETTING = ("op9_false", "resume_4006")


def _seed(fixed: int | None) -> int:
    if fixed is not None:
        return fixed
    env = os.environ.get("SOAK_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 31)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The random-seed run gets ``--crash-kills`` kills; the fixed seeds four each."""
    if "crash_plan" not in metafunc.fixturenames:
        return
    kills = int(metafunc.config.getoption("--crash-kills"))
    plans = [(None, kills), (14, 4), (2026, 4)]
    metafunc.parametrize(
        "crash_plan",
        [
            pytest.param(
                p, marks=pytest.mark.timeout(int(p[1] * 8) + 90), id=f"seed-{p[0]}-{p[1]}k"
            )
            for p in plans
        ],
    )


@dataclass
class CrashReport:
    seed: int
    kills: int = 0
    faults: int = 0
    sent: int = 0
    written: int = 0
    duplicated: int = 0
    gaps: int = 0
    lost_forgotten: int = 0
    lost_unlearned: int = 0
    sessions: int = 0
    violations: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"crash soak seed={self.seed} kills={self.kills} faults={self.faults} "
            f"sessions={self.sessions} events sent={self.sent} written={self.written} "
            f"lost={self.lost_forgotten + self.lost_unlearned} (forgotten={self.lost_forgotten} "
            f"unlearned={self.lost_unlearned}) duplicated={self.duplicated} gaps={self.gaps} "
            f"violations={len(self.violations)} (replay with SOAK_SEED={self.seed})"
        )


class Chaos:
    """Random faults from a seeded RNG; remembers which sessions a forgetting fault hit."""

    def __init__(self, gw: FakeGateway, rng: random.Random, report: CrashReport) -> None:
        self.gw = gw
        self.rng = rng
        self.report = report
        self.forgotten: set[str] = set()
        self.running = True

    def _mark(self) -> None:
        sid = self.gw.current_session_id
        if sid is not None:
            self.forgotten.add(sid)

    async def run(self) -> None:
        gw, rng = self.gw, self.rng
        for _ in range(100_000):
            if not self.running:
                return
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            if not self.running:
                return
            fault = rng.choice(FAULTS + FAULTS + FORGETTING)  # forgetting ones rarer
            self.report.faults += 1
            hold = rng.uniform(0.3, 1.2)
            if fault == "op7":
                await gw.send_reconnect()
            elif fault == "drop":
                await gw.drop()
            elif fault == "close1011":
                await gw.close(1011)
            elif fault == "close4009":
                await gw.close(4009)
            elif fault == "op9_false":
                self._mark()
                await gw.send_invalid_session(False)
            elif fault == "zombie":
                gw.faults.ack = False
                await asyncio.sleep(hold)
                gw.faults.ack = True
            elif fault == "token500":
                gw.faults.token_endpoint = "http500"
                await asyncio.sleep(hold)
                gw.faults.token_endpoint = "ok"
            elif fault == "gateway500":
                gw.faults.gateway_endpoint = "http500"
                await asyncio.sleep(hold)
                gw.faults.gateway_endpoint = "ok"
            elif fault == "resume_4006":
                self._mark()
                gw.faults.resume = "4006"
                await asyncio.sleep(hold)
                self._mark()
                gw.faults.resume = "ok"


async def _pump(gw: FakeGateway, pumping: asyncio.Event) -> None:
    """Dispatches into the current session, each carrying its session id, about 200 a second."""
    for n in range(1_000_000):
        if not pumping.is_set():
            return
        sid = gw.current_session_id
        if sid is not None:
            gw.dispatch_nowait("GROUP_AT_MESSAGE_CREATE", {"n": n, "sid": sid}, session_id=sid)
        await asyncio.sleep(0.005)


def _lines(output: Path) -> list[dict[str, Any]]:
    """The complete lines of FILE (a torn last line is the next restart's to cut)."""
    text = output.read_text() if output.exists() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line]


def account(
    lines: list[dict[str, Any]], gw: FakeGateway, forgotten: set[str], report: CrashReport
) -> None:
    """Check FILE against the fake's books (the module docstring's rules)."""
    order: list[str] = []
    written: dict[str, list[int]] = {}
    current: str | None = None
    for line in lines:
        if line.get("t") == "READY":
            sid = line["d"]["session_id"]
            if sid in written:
                report.violations.append(f"READY of {sid} written twice")
            written.setdefault(sid, [])
            order.append(sid)
            current = sid
            continue
        sid = line["d"].get("sid") if isinstance(line.get("d"), dict) else None
        if sid is None:
            continue  # not a pumped dispatch (none are expected; nothing to account)
        if sid != current:
            report.violations.append(f"s={line['s']} of {sid} written under session {current}")
            continue
        seqs = written[sid]
        last = seqs[-1] if seqs else 1  # the highest s written so far (seqs only grows)
        if line["s"] <= last:
            report.duplicated += 1  # every repeated line counts, not only the first
            if report.duplicated <= 20:
                report.violations.append(f"duplicate s={line['s']} of {sid} after {last}")
            continue
        if line["s"] != last + 1:
            report.gaps += line["s"] - last - 1
            report.violations.append(f"gap: s={line['s']} of {sid} after {last}")
        seqs.append(line["s"])
        report.written += 1
    report.sessions = len(order)
    for sid in gw.session_ids:
        accepted = gw.accepted(sid)
        report.sent += len(accepted)
        if sid not in written:
            report.lost_unlearned += len(accepted)
            continue
        missing = len(accepted) - len(written[sid])
        if missing == 0:
            continue
        if sid == order[-1]:
            report.violations.append(f"the last session {sid} is missing {missing} events")
        elif sid in forgotten:
            report.lost_forgotten += missing
        else:
            report.violations.append(
                f"session {sid} stopped {missing} events short and no fault forgot it"
            )
    if report.written + report.lost_forgotten + report.lost_unlearned != report.sent:
        report.violations.append("accounting: sent != written + lost")


async def crash_soak(tmp_path: Path, seed: int, kills: int) -> CrashReport:
    """Kill ``qqconn run`` ``kills`` times at random moments under random faults, then let a
    last process finish; return the accounting."""
    rng = random.Random(seed)
    report = CrashReport(seed=seed)
    output = tmp_path / "events.jsonl"
    args = ("--output", str(output))
    async with FakeGateway(heartbeat_interval_ms=300, client_secret=SECRET) as gw:
        pumping = asyncio.Event()
        pumping.set()
        chaos = Chaos(gw, random.Random(rng.getrandbits(32)), report)
        pumper = asyncio.create_task(_pump(gw, pumping))
        chaos_task = asyncio.create_task(chaos.run())
        try:
            for _ in range(kills):
                async with qqconn_run(gw, tmp_path, *args, policy=POLICY_TOML) as proc:
                    await asyncio.sleep(rng.uniform(0.3, 2.5))
                    assert proc.proc.returncode is None, f"qqconn run exited:\n{proc.err}"
                    proc.proc.send_signal(signal.SIGKILL)
                    assert await proc.exit_status() == -signal.SIGKILL
                report.kills += 1
            chaos.running = False
            await chaos_task
            gw.faults.ack = True
            gw.faults.token_endpoint = gw.faults.gateway_endpoint = "ok"
            gw.faults.resume = "ok"
            async with qqconn_run(gw, tmp_path, *args, policy=POLICY_TOML) as last:
                await last.until(
                    lambda: (
                        len(gw.live_connections) == 1
                        and gw.current_session_id
                        in {
                            line["d"].get("session_id")
                            for line in _lines(output)
                            if line.get("t") == "READY"
                        }
                    ),
                    timeout=30,
                )
                await asyncio.sleep(0.5)
                pumping.clear()
                await pumper
                final = gw.accepted()[-1:]
                await last.until(
                    lambda: [line["s"] for line in _lines(output)][-1:] == final, timeout=30
                )
                last.proc.send_signal(signal.SIGTERM)
                assert await last.exit_status() == 0, last.err
        finally:
            chaos.running = False
            pumping.clear()
            for task in (pumper, chaos_task):
                with contextlib.suppress(BaseException):
                    await task
        account(_lines(output), gw, chaos.forgotten, report)
    return report


async def test_crash_soak(crash_plan: tuple[int | None, int], tmp_path: Path) -> None:
    """SIGKILL at random moments under random faults, restart each time: every accepted event
    is in --output FILE exactly once, in order; losses only where a fault forgot the session."""
    fixed, kills = crash_plan
    seed = _seed(fixed)
    print(f"\ncrash soak seed {seed} (replay with SOAK_SEED={seed})")
    started = time.monotonic()
    report = await crash_soak(tmp_path, seed, kills)
    print(f"{report.line()} time={time.monotonic() - started:.1f}s")
    assert not report.violations, f"{report.line()}\n" + "\n".join(report.violations[:20])
    assert report.kills == kills
    assert report.written > 0 and report.sessions >= 1
