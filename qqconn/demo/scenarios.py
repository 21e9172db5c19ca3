"""The tour's scenarios: each injects one fault the project exists for, and checks the outcome.

Each scenario plays on a :class:`~qqconn.demo.stage.Stage` and records its checks there; the
checks are docs/behaviour.md's rules, checked against what the fake
gateway recorded and the transitions the machine took.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from qqconn.demo.stage import Run, Stage
from qqconn.demo.timescale import SLACK_S
from qqconn.demo.verdict import Step
from qqconn.endings import EndingKind
from qqconn.errors import FatalError
from qqconn.machine import State
from qqconn.protocol import OpCode
from qqconn.testing import FakeGateway

__all__ = ["SCENARIOS", "Scenario"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One stop of the tour."""

    name: str
    title: str
    story: str
    play: Callable[[Stage], Awaitable[None]]


async def _until_alive(stage: Stage, run: Run, what: str = "ALIVE") -> None:
    await stage.until(lambda: run.mgr.state is State.ALIVE, 5.0, what)


async def _recovered(stage: Stage, run: Run, after: float, what: str) -> None:
    """Wait until the manager left ALIVE after `after` and came back by RESUMED."""
    await stage.until(lambda: run.left_alive(after) is not None, 5.0, f"{what}: detected")
    left = run.left_alive(after)
    assert left is not None
    await stage.until(lambda: run.alive_again(left.at) is not None, 5.0, f"{what}: ALIVE again")


def _resumed_checks(stage: Stage, run: Run, resumes: int) -> None:
    gw, m = run.gw, run.mgr.machine
    stage.check(
        "the session was resumed, never re-identified",
        gw.identifies == 1 and gw.resumes == resumes,
        f"identifies={gw.identifies}, resumes={gw.resumes} (wanted 1 and {resumes})",
    )
    stage.check(
        "counters back to zero (no quick drop, no failed attempt)",
        m.quick_drops == 0 and m.failed_attempts == 0,
        f"quick_drops={m.quick_drops}, failed_attempts={m.failed_attempts}",
    )
    stage.check("the host was never told FATAL", not run.fatals, f"{len(run.fatals)} notify")


async def _play_rotation(stage: Stage) -> None:
    async with stage.connection() as run:
        await _until_alive(stage, run)
        run.start_pump()
        await stage.pause(1.5)  # past the quick-drop threshold: op 7 on an old socket
        op7 = stage.fault("op 7 Reconnect", "the gateway sends op 7 Reconnect; events keep flowing")
        await run.gw.send_reconnect(close_after_s=0.5 * stage.slow)
        await _recovered(stage, run, op7.injected_at, "op 7")
        sent = [
            f.at for f in run.gw.connections[0].sent(OpCode.RECONNECT) if f.at >= op7.injected_at
        ]
        stage.measure(run, op7, since=sent[0] if sent else None)
        first = run.gw.connections[0]
        stage.check(
            "op 7: qqconn closed the socket itself, not a 1000/1001",
            first.closed_by == "client" and first.close_code not in (1000, 1001),
            f"closed_by={first.closed_by}, code={first.close_code}",
        )
        await stage.pause(1.5)  # lives past the quick-drop threshold: the 4009 is no quick drop
        rot = stage.fault("close 4009", "the gateway closes the socket: 4009 Session timed out")
        await run.gw.close(4009, "Session timed out")
        await _recovered(stage, run, rot.injected_at, "4009")
        stage.measure(run, rot)
        left = run.left_alive(rot.injected_at)
        back = run.alive_again(rot.injected_at)
        bound = stage.policy.rotation_delay_s[1] + SLACK_S + 1.0
        stage.check(
            f"4009: resumed within the rotation jitter (≤ {bound:.2f} s incl. slack)",
            left is not None and back is not None and back.at - left.at <= bound,
            "" if rot.recover_s is None else f"took {rot.recover_s:.2f} s",
        )
        await stage.pause(0.8)
        _resumed_checks(stage, run, resumes=2)


async def _kill_and_recover(
    stage: Stage,
    run: Run,
    *,
    fault: str,
    story: str,
    switch: str,
    kind: str,
    lifted: str,
) -> Step:
    """Shared by the zombie and half-open tours: on a healthy connection with events flowing,
    turn on the gateway fault ``switch``, wait until qqconn leaves ALIVE, lift the fault, wait
    for recovery, and check detection came within 2 heartbeat intervals of the last ACK.
    Returns the transition that left ALIVE."""
    await _until_alive(stage, run)
    run.start_pump()
    await stage.until(lambda: run.mgr.machine.acks >= 2, 3.0, "two heartbeats acknowledged")
    await stage.pause(0.6)
    injected = stage.fault(fault, story)
    setattr(run.gw.faults, switch, switch != "ack")  # ack=False / silent=True
    await stage.until(
        lambda: run.left_alive(injected.injected_at) is not None, 4.0, f"{kind} detected"
    )
    setattr(run.gw.faults, switch, switch == "ack")
    stage.view.say("demo", lifted, "blue")
    await _recovered(stage, run, injected.injected_at, kind)
    stage.measure(run, injected)
    left = run.left_alive(injected.injected_at)
    assert left is not None
    last_ack = run.last_ack_before(left.at)
    since_ack = None if last_ack is None else left.at - last_ack
    bound = 2 * stage.interval_s
    stage.check(
        f"{kind} detected within 2 heartbeat intervals of the last ACK "
        f"(≤ {bound:g} s + {SLACK_S:g} s slack)",
        since_ack is not None and since_ack <= bound + SLACK_S,
        "no ACK ever" if since_ack is None else f"{since_ack:.2f} s after the last ACK",
    )
    return left


async def _play_zombie(stage: Stage) -> None:
    async with stage.connection() as run:
        left = await _kill_and_recover(
            stage,
            run,
            fault="ACKs stop, socket open",
            story="the gateway stops acknowledging heartbeats; the socket stays open, events still flow",
            switch="ack",
            kind="zombie",
            lifted="the next connection will be healthy (ACKs on again)",
        )
        stage.check(
            "detected as a zombie (missing ACK)", left.ending is EndingKind.ZOMBIE, left.why
        )
        first = run.gw.connections[0]
        stage.check(
            "the zombie socket was closed by qqconn, not with 1000/1001",
            first.closed_by == "client" and first.close_code not in (1000, 1001),
            f"closed_by={first.closed_by}, code={first.close_code}",
        )
        await stage.pause(0.6)
        _resumed_checks(stage, run, resumes=1)


async def _play_half_open(stage: Stage) -> None:
    async with stage.connection() as run:
        left = await _kill_and_recover(
            stage,
            run,
            fault="server silent",
            story="the gateway goes silent: no ACK, no event, not even a pong or a close reply",
            switch="silent",
            kind="half-open",
            lifted="the server answers again (a fresh connection would reach it)",
        )
        first = run.gw.connections[0]
        await stage.until(lambda: first.closed_at is not None, 3.0, "old socket gone")
        assert first.closed_at is not None
        limit = stage.policy.close_timeout_s + 0.5 * stage.slow + SLACK_S
        stage.check(
            f"the silent socket was gone within close_timeout_s (≤ {limit:.2f} s incl. slack)",
            first.closed_at - left.at <= limit,
            f"{first.closed_at - left.at:.2f} s after detection",
        )
        await stage.pause(0.6)
        _resumed_checks(stage, run, resumes=1)


async def _seeds_loop_act(
    stage: Stage, code: int | None, label: str, text: str, variant: str
) -> None:
    after_s = 0.3 * stage.slow

    def configure(gw: FakeGateway) -> None:
        gw.faults.close_new_sockets(after_s, 50, code=code)

    async with stage.connection(configure) as run:
        fault = stage.fault(label, text)
        await stage.until(lambda: run.mgr.machine.is_terminal, 8.0, "FATAL")
        gw = run.gw
        opened = gw.connections[0].opened_at if gw.connections else fault.injected_at
        fatal = run.step_after(fault.injected_at, lambda st: st.dest == "FATAL")
        if fatal is not None:
            fault.detect_s = fatal.at - opened
            fault.outcome = "FATAL"
        await stage.until(lambda: bool(run.fatals), 2.0, "the host notified")
        stage.view.say("demo", "watching for a fourth socket …", "blue")
        await stage.pause(1.0)
        m = run.mgr.machine
        stage.check(
            f"FATAL (retryable) after the 3rd quick drop ({variant})",
            m.state is State.FATAL and m.fatal is not None and m.fatal.retryable,
            f"state={m.state.name}, fatal={m.fatal}",
        )
        stage.check(
            f"exactly 3 sockets opened, no 4th ({variant})",
            len(gw.connections) == 3,
            f"{len(gw.connections)} sockets",
        )
        quick = [st for st in run.steps if st.dest == "QUICK_DROPPED"]
        stage.check(
            f"all 3 counted as quick drops ({variant})",
            len(quick) == 3,
            f"{len(quick)} quick drops",
        )
        stage.check(
            f"the host was notified exactly once ({variant})",
            len(run.fatals) == 1,
            f"{len(run.fatals)}",
        )
        error = run.task.exception() if run.task is not None and run.task.done() else None
        stage.check(
            f"run() raised FatalError(retryable=True) ({variant})",
            isinstance(error, FatalError) and error.retryable,
            repr(error),
        )


async def _play_seeds_loop(stage: Stage) -> None:
    await _seeds_loop_act(
        stage,
        4009,
        "new sockets closed (4009)",
        "every new socket is closed 0.3 s after it opens, with a close frame (4009)",
        "close frames",
    )
    await _seeds_loop_act(
        stage,
        None,
        "new sockets dropped",
        "the same, but each socket is dropped without a close frame",
        "drops",
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "rotation",
            "the normal op 7 + 4009 rotation",
            "About every 30 min the gateway sends op 7 Reconnect, or closes with 4009.\n"
            "qqconn must Resume the same session: no event lost, none twice, while events flow.",
            _play_rotation,
        ),
        Scenario(
            "zombie",
            "a zombie connection (ACKs stop)",
            "The socket stays open and events still arrive, but heartbeats are no longer\n"
            "acknowledged. qqconn must notice within two heartbeat intervals, close, and Resume.",
            _play_zombie,
        ),
        Scenario(
            "half-open",
            "a half-open connection (server silent)",
            "The server went away without a word: nothing arrives, not even a close reply.\n"
            "qqconn must notice, close the socket in bounded time, and Resume.",
            _play_half_open,
        ),
        Scenario(
            "seeds-loop",
            "the seed's loop (every new socket closed at once)",
            "Every socket the client opens is closed within a second. Reconnecting forever is\n"
            "the bug this project exists for: FATAL after exactly 3 sockets, the host told once.",
            _play_seeds_loop,
        ),
    )
}
