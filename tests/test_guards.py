"""qqconn.machine.guards: what each observation says of the end it saw, and the edges of the
guards that read the clock (the survivors of a mutation run over the module, issue 14 item 7).

Every test drives the machine through :class:`tests.test_machine.Run` with chosen times and
reads what a host reads: the ending's reason and fields (the StateChange and the snapshot carry
them), the commands, the counters."""

from __future__ import annotations

import pytest

from qqconn import commands as cmd
from qqconn import events as ev
from qqconn.checkpoint import Resumable
from qqconn.endings import Ending, EndingKind
from qqconn.events import Timer
from qqconn.machine import State
from qqconn.policy import Policy
from tests.test_machine import INTERVAL_S, Run, of

TOKEN_URL = "https://bots.qq.com/app/getAppAccessToken"
BOT_URL = "https://api.sgroup.qq.com/gateway/bot"
WS_URL = "wss://api.sgroup.qq.com/websocket/"


def _ending(r: Run) -> Ending:
    ending = r.m.last_ending
    assert ending is not None
    assert r.m.snapshot_fields()["last_ending"]["reason"] == ending.reason
    return ending


# -- observe_deadline: the attempt deadline names the timeout, the stage and the URL --------------


def _at_stage(r: Run, stage: str) -> None:
    """Leave attempt 1 at ``stage`` (restored sessions Resume, others Identify)."""
    match stage:
        case "none":
            pass
        case "token":
            r.feed(ev.ConnectProgressed(1, 0.1, "token", TOKEN_URL))
        case "gateway":
            r.feed(ev.ConnectProgressed(1, 0.1, "token", TOKEN_URL))
            r.feed(ev.ConnectProgressed(1, 0.2, "gateway", BOT_URL))
        case "handshake":
            r.feed(ev.ConnectProgressed(1, 0.3, "handshake", WS_URL))
        case "hello":
            r.feed(ev.ConnectProgressed(1, 0.3, "handshake", WS_URL))
            r.open(0.5)
        case "identify" | "resume":
            r.connect(0.5)


@pytest.mark.parametrize(
    ("stage", "before_socket", "where"),
    [
        ("none", True, ""),
        ("token", True, f": the token request to {TOKEN_URL} got no answer"),
        ("gateway", True, f": the gateway URL request to {BOT_URL} got no answer"),
        ("handshake", True, f": the WebSocket handshake with {WS_URL} did not complete"),
        ("hello", False, ": the socket opened but no Hello came"),
        ("identify", False, ": Identify was sent, no READY came"),
        ("resume", False, ": Resume was sent, no RESUMED came"),
    ],
)
def test_the_attempt_deadline_names_its_timeout_stage_url_and_socket(
    stage: str, before_socket: bool, where: str
) -> None:
    """Rule 2: an attempt with no READY/RESUMED within connect_timeout_s ends as DEADLINE whose
    reason names the timeout (7.5 s, not the default), the stage the attempt was caught in and
    the URL that stage asked; ``before_socket`` says whether its socket had opened."""
    restored = Resumable("old-sess", 4) if stage == "resume" else None
    r = Run(Policy(connect_timeout_s=7.5), restored=restored)
    r.start(0.0)
    _at_stage(r, stage)
    got = r.fire(Timer.ATTEMPT_DEADLINE, 7.5)
    assert r.m.state is State.BACKOFF
    ending = _ending(r)
    assert ending.kind is EndingKind.DEADLINE
    assert ending.reason == f"no READY/RESUMED within 7.5 s{where}"
    assert ending.before_socket is before_socket
    assert [c.reason for c in of(cmd.CloseSocket, got)] == [ending.reason]
    # Not a quick drop: no socket, or one that lived 7 s; the path passes no QUICK_DROPPED.
    assert [a.state for a in of(cmd.AnnounceState, got)] == ["backoff"]
    assert r.m.quick_drops == 0


# -- observe_send_failures and observe_stale: the count and the silence they report ----------------


@pytest.mark.parametrize("limit", [2, 3, 5])
def test_send_failures_ending_counts_the_failures_that_ended_it(limit: int) -> None:
    """Rule 7: the limit-th failed heartbeat send in a row ends the connection, and the reason
    says how many failed: the limit, counting the one that ended it."""
    r = Run(Policy(max_heartbeat_send_failures=limit))
    r.alive(0.0)
    t = 0.0
    for k in range(1, limit + 1):
        t = k * INTERVAL_S
        r.dispatch(t - 1.0, None)  # frames keep arriving: not stale
        r.fire(Timer.HEARTBEAT, t)
        assert r.m.state is State.ALIVE
        r.feed(ev.HeartbeatSendFailed(r.n, t, "OSError"))
        assert (r.m.state is State.ALIVE) is (k < limit)
    ending = _ending(r)
    assert ending.kind is EndingKind.SEND_FAILED
    assert ending.reason == f"{limit} heartbeat sends failed in a row"


@pytest.mark.parametrize("intervals", [2.0, 3.0])
def test_stale_ending_names_the_silence_in_seconds(intervals: float) -> None:
    """Rule 6: a connection silent for stale_after_intervals heartbeat intervals ends STALE, and
    the reason gives that silence in seconds: intervals × interval (41.25 s each)."""
    r = Run(Policy(stale_after_intervals=intervals))
    r.alive(0.0)
    r.fire(Timer.HEARTBEAT, INTERVAL_S)
    r.feed(ev.HeartbeatAcked(1, INTERVAL_S))  # the last frame, at 41.25
    r.fire(Timer.HEARTBEAT, INTERVAL_S + intervals * INTERVAL_S)
    ending = _ending(r)
    assert ending.kind is EndingKind.STALE
    assert ending.reason == f"stale: no frame for {intervals * INTERVAL_S:g} s"


# -- frames_stale: exactly stale_after_intervals intervals of silence is stale ---------------------


@pytest.mark.parametrize(
    ("silent", "stale"), [(3 * INTERVAL_S, True), (3 * INTERVAL_S - 0.001, False)]
)
def test_silence_of_exactly_the_stale_limit_is_stale(silent: float, stale: bool) -> None:
    """Rule 6: "no frame for 3 intervals" includes exactly 3 (123.75 s, exact in binary): the
    heartbeat due then ends the connection STALE; one a millisecond earlier still beats."""
    r = Run()
    r.alive(0.0)
    r.fire(Timer.HEARTBEAT, INTERVAL_S)
    r.feed(ev.HeartbeatAcked(1, INTERVAL_S))  # the last frame, at 41.25
    assert (INTERVAL_S + 3 * INTERVAL_S) - INTERVAL_S == 3 * INTERVAL_S  # the premise: exact
    got = r.fire(Timer.HEARTBEAT, INTERVAL_S + silent)
    assert (r.m.state is State.BACKOFF) is stale
    assert (cmd.SendHeartbeat(1, 1) in got) is not stale
    if stale:
        assert _ending(r).kind is EndingKind.STALE


# -- loop_stalled: more than STALL_GRACE_S late, once per heartbeat (rule 21) ----------------------


def _awaiting_ack(r: Run) -> list[cmd.Command]:
    """ALIVE with heartbeat 1 sent at 41.25 and unacknowledged; returns its commands."""
    r.alive(0.0)
    got = r.fire(Timer.HEARTBEAT, INTERVAL_S)
    r.feed(ev.HeartbeatSent(1, INTERVAL_S))
    assert r.m.awaiting_ack
    return got


@pytest.mark.parametrize("timer", [Timer.ACK_DEADLINE, Timer.HEARTBEAT])
@pytest.mark.parametrize("late_s", [0.0, 0.1])
def test_a_timer_at_most_the_stall_grace_late_is_judged_at_once(
    timer: Timer, late_s: float
) -> None:
    """Rule 21: a timer on time, or late by exactly STALL_GRACE_S (0.1 s), is no stall: with
    the heartbeat unanswered it is a zombie at once, nothing is excused or logged as a stall."""
    r = Run()
    _awaiting_ack(r)
    at = INTERVAL_S + (20.0 if timer is Timer.ACK_DEADLINE else INTERVAL_S)
    got = r.feed(ev.TimerFired(timer, 1, at, late_s=late_s))
    assert r.m.state is State.BACKOFF and _ending(r).kind is EndingKind.ZOMBIE
    assert of(cmd.CloseSocket, got) and not r.m.stall_excused
    assert r.logged("qqconn.loop_stalled") == 0


def test_the_first_late_ack_deadline_is_excused_the_second_is_a_zombie() -> None:
    """Rule 21: an ACK deadline 0.6 s late is excused once (re-checked a tenth of an interval
    later, the connection kept); the re-check, on time and still unanswered, is a zombie."""
    r = Run()
    _awaiting_ack(r)
    t = INTERVAL_S + 20.0
    got = r.feed(ev.TimerFired(Timer.ACK_DEADLINE, 1, t, late_s=0.6))
    assert r.m.state is State.ALIVE and r.m.stall_excused
    assert cmd.StartTimer(Timer.ACK_DEADLINE, INTERVAL_S * 0.1, 1) in got
    assert of(cmd.CloseSocket, got) == [] and r.logged("qqconn.loop_stalled", "warning") == 1
    got = r.feed(ev.TimerFired(Timer.ACK_DEADLINE, 1, t + 0.7, late_s=0.6))  # late again
    assert r.m.state is State.BACKOFF and _ending(r).kind is EndingKind.ZOMBIE
    assert of(cmd.CloseSocket, got)


# -- observe_poison and is_quick_drop: rule 19's point of the stream --------------------------------


def _oversized(r: Run, at: float) -> list[cmd.Command]:
    return r.feed(ev.SocketClosed(r.n, at, None, "", sent_code=1009))


def test_a_poison_frame_before_any_s_skips_s_1() -> None:
    """Rule 19 on a session whose READY carried no s: the oversized frame came back at the
    same point (no s yet) after a Resume, so the frame skipped is s = 1, the first."""
    r = Run()
    r.alive(0.0, seq=None)
    _oversized(r, 100.0)
    r.retry(110.0)
    assert cmd.SendResume(2, "sid-1", None) in r.connect(110.0)
    _oversized(r, 110.5)
    ending = _ending(r)
    assert ending.kind is EndingKind.POISON_FRAME_SKIPPED
    assert (ending.skipped_seq, r.m.skipped_seqs) == (1, (1,))
    assert ending.reason == "frame too large again after s=0: s=1 skipped"
    r.retry(120.0)
    assert cmd.SendResume(3, "sid-1", 1) in r.connect(120.0)


def test_another_ending_at_the_point_of_an_oversized_frame_is_not_a_poison_frame() -> None:
    """Only an oversized frame at the point of the previous one is a poison frame: a plain
    drop (no close frame) after the Resume, at that same point, stays a drop and skips nothing."""
    r = Run()
    r.alive(0.0, seq=5)
    _oversized(r, 100.0)
    r.retry(110.0)
    r.connect(110.0)
    r.close(120.0, None)
    ending = _ending(r)
    assert ending.kind is EndingKind.DROPPED and ending.skipped_seq is None
    assert r.m.skipped_seqs == () and r.m.last_seq == 5
    r.retry(130.0)
    assert cmd.SendResume(3, "sid-1", 5) in r.connect(130.0)


def test_a_poison_frame_on_a_young_socket_is_never_a_quick_drop() -> None:
    """Rule 19 / rule 1: a poison frame is not the network, so even one that ends a socket 0.5 s
    after it opened counts no quick drop and passes no QUICK_DROPPED, while a plain drop that
    young does."""
    r = Run()
    r.alive(0.0, seq=5)
    _oversized(r, 100.0)  # an old socket: no quick drop either way
    assert r.m.quick_drops == 0
    r.retry(110.0)
    r.connect(110.0)
    got = _oversized(r, 110.5)
    assert _ending(r).kind is EndingKind.POISON_FRAME_SKIPPED
    assert r.m.quick_drops == 0
    assert [a.state for a in of(cmd.AnnounceState, got)] == ["backoff"]
    r.retry(120.0)
    r.connect(120.0)
    r.close(120.5, 1006)  # the control: a young plain drop is quick
    assert r.m.quick_drops == 1


def test_a_poison_frame_back_after_its_skip_gives_the_session_up_naming_the_s() -> None:
    """Rule 19: the oversized frame came back even after s = 6 was skipped: the session is
    given up (Identify next), and the reason names the s that was skipped."""
    r = Run()
    r.alive(0.0, seq=5)
    _oversized(r, 100.0)
    r.retry(110.0)
    r.connect(110.0)
    _oversized(r, 110.5)
    assert _ending(r).skipped_seq == 6
    r.retry(120.0)
    assert cmd.SendResume(3, "sid-1", 6) in r.connect(120.0)
    _oversized(r, 120.5)
    ending = _ending(r)
    assert ending.kind is EndingKind.POISON_FRAME_SESSION_LOST
    assert ending.reason == "frame too large again after skipping s=6: session given up"
    assert r.m.session_id is None and r.m.sessions_given_up == 1
    r.retry(130.0)
    assert cmd.SendIdentify(4) in r.connect(130.0)
