"""qqconn.endings: every way a connection ends → its Ending; the one delay ladder."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qqconn.endings import (
    FATAL_CLOSE_CODES,
    RECONNECT_CLOSE_CODE,
    CloseClass,
    Closed,
    ConnectFailure,
    DeadlinePassed,
    Delay,
    Ending,
    EndingKind,
    Observation,
    Op7,
    Op9,
    PoisonFrame,
    SendFailures,
    Session,
    Stale,
    Zombie,
    backoff_index,
    classify,
    classify_close,
    close_class,
    next_delay,
)
from qqconn.policy import Policy

#: docs/behaviour.md's fatal row, restated once: the code base's one copy must equal it.
SPEC_FATAL_CODES = [4001, 4002, 4010, 4011, 4012, 4013, 4014, 4914, 4915, 4924]


def test_fatal_close_codes_are_the_spec_row() -> None:
    """FATAL_CLOSE_CODES is exactly the fatal row of docs/behaviour.md's close-code table."""
    assert frozenset(SPEC_FATAL_CODES) == FATAL_CLOSE_CODES


# -- every observation kind → its Ending ------------------------------------------------------------

#: (observation, kind, session, delay, counts_as_quick, fatal, auth_failure, before_socket,
#:  close_code, consumes an attempt even after READY, reason)
CASES: list[tuple[Observation, EndingKind, Session, Delay, bool, bool, bool, bool, int | None, bool, str]] = [
    (Closed(4009, "Session timed out"), EndingKind.ROTATION, Session.KEEP, Delay.ROTATION,
     True, False, False, False, 4009, False, "closed 4009: Session timed out"),
    (Closed(1000), EndingKind.CLOSED, Session.KEEP, Delay.BACKOFF,
     True, False, False, False, 1000, False, "closed 1000"),
    (Closed(None), EndingKind.DROPPED, Session.KEEP, Delay.BACKOFF,
     True, False, False, False, None, False, "connection lost without a close frame"),
    (Closed(None, "", 1009), EndingKind.FRAME_TOO_LARGE, Session.KEEP, Delay.BACKOFF,
     True, False, False, False, 1009, False, "closed 1009: frame too large"),
    (Closed(4004, "authentication fail"), EndingKind.AUTH_FAILED, Session.KEEP, Delay.BACKOFF,
     True, False, True, False, 4004, False, "closed 4004: authentication fail"),
    (Closed(4008), EndingKind.RATE_LIMITED, Session.KEEP, Delay.RATE_LIMIT,
     True, False, False, False, 4008, True, "closed 4008"),
    (Closed(4006), EndingKind.SESSION_REJECTED, Session.FORGET, Delay.BACKOFF,
     True, False, False, False, 4006, False, "closed 4006"),
    (Closed(4915), EndingKind.FATAL_CLOSE, Session.FORGET, Delay.BACKOFF,
     False, True, False, False, 4915, False, "close 4915: bot banned"),
    (ConnectFailure("gateway", "HTTP 502"), EndingKind.CONNECT_FAILED, Session.KEEP,
     Delay.BACKOFF, True, False, False, True, None, False, "gateway failed: HTTP 502"),
    (ConnectFailure("token", "refused", refused=True), EndingKind.CREDENTIALS_REFUSED,
     Session.KEEP, Delay.BACKOFF, True, False, True, True, None, False, "token failed: refused"),
    (Zombie(), EndingKind.ZOMBIE, Session.KEEP, Delay.BACKOFF,
     True, False, False, False, RECONNECT_CLOSE_CODE, False, "zombie: heartbeat not acknowledged"),
    (Stale(123.75), EndingKind.STALE, Session.KEEP, Delay.BACKOFF,
     True, False, False, False, RECONNECT_CLOSE_CODE, False, "stale: no frame for 123.75 s"),
    (SendFailures(3), EndingKind.SEND_FAILED, Session.KEEP, Delay.BACKOFF,
     True, False, False, False, None, False, "3 heartbeat sends failed in a row"),
    (DeadlinePassed(20.0, before_socket=True), EndingKind.DEADLINE, Session.KEEP,
     Delay.BACKOFF, True, False, False, True, None, False, "no READY/RESUMED within 20 s"),
    (DeadlinePassed(3.5, before_socket=False), EndingKind.DEADLINE, Session.KEEP,
     Delay.BACKOFF, True, False, False, False, None, False, "no READY/RESUMED within 3.5 s"),
    (Op7(reached_session=True, young=False), EndingKind.OP7, Session.KEEP, Delay.NOW,
     False, False, False, False, RECONNECT_CLOSE_CODE, False, "op 7 reconnect requested"),
    (Op7(reached_session=True, young=True), EndingKind.OP7_YOUNG, Session.KEEP, Delay.BACKOFF,
     False, False, False, False, RECONNECT_CLOSE_CODE, False,
     "op 7 reconnect requested on a young connection"),
    (Op7(reached_session=False, young=True), EndingKind.OP7_EARLY, Session.KEEP, Delay.BACKOFF,
     False, False, False, False, RECONNECT_CLOSE_CODE, False, "op 7 before READY/RESUMED"),
    (Op7(reached_session=False, young=False), EndingKind.OP7_EARLY, Session.KEEP,
     Delay.BACKOFF, False, False, False, False, RECONNECT_CLOSE_CODE, False,
     "op 7 before READY/RESUMED"),
    (Op9(resumable=True), EndingKind.INVALID_SESSION_RESUMABLE, Session.KEEP,
     Delay.INVALID_SESSION, True, False, False, False, None, False,
     "op 9 invalid session (resumable)"),
    (Op9(resumable=False), EndingKind.INVALID_SESSION, Session.FORGET, Delay.BACKOFF,
     True, False, False, False, None, False, "op 9 invalid session"),
    (Op9(resumable=False, after_identify=True), EndingKind.IDENTIFY_REFUSED, Session.FORGET,
     Delay.BACKOFF, False, False, False, False, None, False,
     "op 9: the gateway refused the Identify"),
    (Op9(resumable=True, after_identify=True), EndingKind.IDENTIFY_REFUSED, Session.FORGET,
     Delay.BACKOFF, False, False, False, False, None, False,
     "op 9: the gateway refused the Identify"),
    (PoisonFrame(8, skipped_before=False), EndingKind.POISON_FRAME_SKIPPED, Session.KEEP,
     Delay.BACKOFF, False, False, False, False, 1009, False,
     "frame too large again after s=7: s=8 skipped"),
    (PoisonFrame(8, skipped_before=True), EndingKind.POISON_FRAME_SESSION_LOST, Session.FORGET,
     Delay.BACKOFF, False, False, False, False, 1009, False,
     "frame too large again after skipping s=8: session given up"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[repr(c[0]) for c in CASES])
def test_every_observation_classifies_to_its_ending(case: tuple[Any, ...]) -> None:
    """Each kind of end has one Ending: its kind, what becomes of the session, which delay,
    whether it is quick, fatal or an auth failure, and a reason an operator can read."""
    obs, kind, session, delay, quick, fatal, auth, before, code, consumes, reason = case
    e = classify(obs)
    assert e == Ending(
        kind,
        reason,
        code,
        session=session,
        delay=delay,
        counts_as_quick=quick,
        always_consumes_attempt=consumes,
        fatal=fatal,
        auth_failure=auth,
        before_socket=before,
        skipped_seq=obs.seq if kind is EndingKind.POISON_FRAME_SKIPPED else None,
    )


def test_every_ending_kind_is_reachable() -> None:
    """Every EndingKind is what some observation classifies to (none is dead)."""
    assert {classify(c[0]).kind for c in CASES} == set(EndingKind)


def test_only_op7_on_a_live_connection_reconnects_at_once() -> None:
    """Delay.NOW is op 7 on a live, not young, connection and nothing else."""
    now = [c[0] for c in CASES if classify(c[0]).delay is Delay.NOW]
    assert now == [Op7(reached_session=True, young=False)]


@pytest.mark.parametrize("received", [None, 1000, 1006, 4009, 4915])
def test_oversized_frame_wins_over_whatever_was_received(received: int | None) -> None:
    """When qqconn's own socket sent 1009, the end is an oversized frame whatever came back."""
    e = classify(Closed(received, "x", sent_code=1009))
    assert e.kind is EndingKind.FRAME_TOO_LARGE
    assert not e.fatal and e.session is Session.KEEP and e.close_code == 1009


@pytest.mark.parametrize("sent", [1000, 1001, 4000, None])
def test_other_sent_codes_leave_the_received_code_in_charge(sent: int | None) -> None:
    """A close code qqconn sent other than 1009 changes nothing: the received code decides."""
    for code in (None, 4009, 4915, 4006):
        assert classify(Closed(code, "r", sent_code=sent)) == classify_close(code, "r")


_OBSERVATIONS = st.one_of(
    st.builds(
        Closed,
        st.none() | st.integers(0, 10_000),
        st.text(max_size=300),
        st.none() | st.integers(0, 5000),
    ),
    st.builds(
        ConnectFailure, st.sampled_from(["token", "gateway", "handshake"]), st.text(), st.booleans()
    ),
    st.just(Zombie()),
    st.builds(Stale, st.floats(0.0, 1e6)),
    st.builds(SendFailures, st.integers(1, 100)),
    st.builds(DeadlinePassed, st.floats(0.01, 1e4), st.booleans()),
    st.builds(Op7, st.booleans(), st.booleans()),
    st.builds(Op9, st.booleans(), st.booleans()),
)


@given(_OBSERVATIONS)
def test_classify_is_total_and_only_fatal_codes_are_fatal(obs: Observation) -> None:
    """Any observation gives an Ending; only a fatal close code (not masked by an oversized
    frame) is fatal, and a fatal Ending never counts as quick; reasons stay short."""
    e = classify(obs)
    expected_fatal = (
        isinstance(obs, Closed) and obs.sent_code != 1009 and obs.code in FATAL_CLOSE_CODES
    )
    assert e.fatal == expected_fatal
    assert (e.kind is EndingKind.FATAL_CLOSE) == e.fatal
    assert not (e.fatal and e.counts_as_quick)
    if not isinstance(obs, ConnectFailure):
        assert len(e.reason) < 200


# -- the close-code table (one test per row of docs/behaviour.md's table) -------------------------


def _assert_resume_with_backoff(e: Ending) -> None:
    assert e.session is Session.KEEP
    assert e.delay is Delay.BACKOFF
    assert e.counts_as_quick
    assert not e.fatal
    assert not e.auth_failure
    assert not e.always_consumes_attempt


def test_close_4009_resumes_after_a_short_jittered_delay() -> None:
    """Row 'close 4009 (the normal ~30 min rotation)': Resume after a short jittered delay."""
    e = classify_close(4009, "Session timed out")
    assert close_class(4009) is CloseClass.ROTATION
    assert e.session is Session.KEEP
    assert e.delay is Delay.ROTATION
    assert e.counts_as_quick
    assert not e.fatal
    assert e.close_code == 4009


@pytest.mark.parametrize("code", [1000, 1001, 1005, 1006, None])
def test_close_transport_codes_resume_with_backoff(code: int | None) -> None:
    """Row 'close 1000/1001/1005/1006, no close frame, network error': Resume, with backoff."""
    assert close_class(code) is CloseClass.TRANSIENT
    _assert_resume_with_backoff(classify_close(code))
    assert classify_close(code).kind is (EndingKind.DROPPED if code is None else EndingKind.CLOSED)


@pytest.mark.parametrize("code", [1002, 1009, 1011, 1012, 3000])
def test_close_other_transport_codes_resume_with_backoff(code: int) -> None:
    """Other WebSocket codes (1011 keepalive timeout …) are network errors: Resume, backoff."""
    assert close_class(code) is CloseClass.TRANSIENT
    _assert_resume_with_backoff(classify_close(code))


@pytest.mark.parametrize(
    "code", [4006, 4007, 4900, 4901, 4902, 4903, 4905, 4910, 4913, 4916, 4920, 4950, 4999]
)
def test_close_identify_codes_forget_the_session(code: int) -> None:
    """Row '4006, 4007, 4900–4913 and other 49xx except 4914/4915/4924': forget, Identify."""
    e = classify_close(code)
    assert close_class(code) is CloseClass.IDENTIFY
    assert e.kind is EndingKind.SESSION_REJECTED
    assert e.session is Session.FORGET
    assert e.delay is Delay.BACKOFF
    assert e.counts_as_quick
    assert not e.fatal
    assert e.close_code == code


@pytest.mark.parametrize("code", [4000, 4003, 4005, 4015, 4100, 4500, 4899])
def test_close_unknown_4xxx_forgets_the_session(code: int) -> None:
    """A 4xxx code docs/behaviour.md has no row for means 'cannot resume': Identify, backoff."""
    e = classify_close(code)
    assert e.session is Session.FORGET
    assert e.delay is Delay.BACKOFF
    assert not e.fatal


def test_close_4004_refreshes_the_token_and_keeps_the_session() -> None:
    """Row 'close 4004': fetch a fresh token and retry once (the machine makes the 2nd fatal)."""
    e = classify_close(4004, "authentication fail")
    assert close_class(4004) is CloseClass.AUTH
    assert e.auth_failure
    assert e.session is Session.KEEP
    assert not e.fatal
    assert e.counts_as_quick


def test_close_4008_waits_keeps_session_and_consumes_an_attempt() -> None:
    """Row 'close 4008': keep the session, wait rate_limit_wait_s, Resume; consumes an attempt."""
    e = classify_close(4008)
    assert close_class(4008) is CloseClass.RATE_LIMITED
    assert e.session is Session.KEEP
    assert e.delay is Delay.RATE_LIMIT
    assert e.always_consumes_attempt
    assert not e.fatal


@pytest.mark.parametrize("code", SPEC_FATAL_CODES)
def test_close_fatal_codes_end_at_once_not_retryable(code: int) -> None:
    """Row 'close 4001, 4002, 4010–4014, 4914, 4915, 4924': FATAL, no further connection."""
    e = classify_close(code)
    assert close_class(code) is CloseClass.FATAL
    assert e.kind is EndingKind.FATAL_CLOSE
    assert e.fatal
    assert not e.counts_as_quick  # closes that go straight to FATAL are not quick drops
    assert e.close_code == code
    assert str(code) in e.reason
    assert len(e.reason) > len(f"close {code}: ")  # says why, for the operator


def test_close_reason_is_kept_but_shortened() -> None:
    """The server's close reason is kept for the log, shortened to a bounded length."""
    e = classify_close(4009, "x" * 10_000)
    assert "x" in e.reason
    assert len(e.reason) < 200


@given(code=st.one_of(st.none(), st.integers(min_value=0, max_value=10_000)))
def test_classify_close_is_total(code: int | None) -> None:
    """Every close code (or none) maps to an Ending; only the listed codes are fatal."""
    e = classify_close(code)
    assert isinstance(e, Ending)
    assert e.fatal == (code in SPEC_FATAL_CODES)
    assert e == classify(Closed(code))


# -- the delay ladder --------------------------------------------------------------------------------

BACKOFF_ENDING = classify(Closed(1006))


def test_backoff_index_is_failures_minus_one_and_the_last_step_repeats() -> None:
    """0 and 1 failures use the first step, n the n-th, and past the table the last repeats."""
    p = Policy()  # five steps
    assert [backoff_index(n, p) for n in range(9)] == [0, 0, 1, 2, 3, 4, 4, 4, 4]
    assert backoff_index(10**9, p) == 4
    assert backoff_index(-3, p) == 0
    assert [backoff_index(n, Policy(backoff_s=(7.0,))) for n in range(4)] == [0, 0, 0, 0]


@given(failures=st.integers(min_value=0, max_value=10_000), seed=st.integers(0, 2**32))
def test_backoff_delay_follows_backoff_s_within_jitter(failures: int, seed: int) -> None:
    """The delay after n failures is backoff_s[backoff_index(n)] × [0.8, 1.2]."""
    p = Policy()
    base = p.backoff_s[backoff_index(failures, p)]
    delay = next_delay(BACKOFF_ENDING, failures, p, random.Random(seed))
    assert base * (1 - p.backoff_jitter) <= delay <= base * (1 + p.backoff_jitter)


@given(
    backoff=st.lists(
        st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=8
    ).map(tuple),
    jitter=st.floats(min_value=0, max_value=0.99),
    failures=st.integers(min_value=0, max_value=50),
    seed=st.integers(0, 2**32),
)
def test_backoff_delay_any_policy_stays_within_bounds(
    backoff: tuple[float, ...], jitter: float, failures: int, seed: int
) -> None:
    """For any valid policy the delay is finite, ≥ 0 and within the jittered bounds."""
    p = Policy(backoff_s=backoff, backoff_jitter=jitter)
    base = backoff[backoff_index(failures, p)]
    delay = next_delay(BACKOFF_ENDING, failures, p, random.Random(seed))
    assert math.isfinite(delay)
    assert delay >= 0
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9


def test_backoff_delay_without_jitter_is_the_table() -> None:
    """With jitter 0 the delays are exactly backoff_s, the last value repeating."""
    p = Policy(backoff_jitter=0.0)
    rng = random.Random(0)
    got = [next_delay(BACKOFF_ENDING, n, p, rng) for n in range(0, 9)]
    assert got == [2.0, 2.0, 5.0, 10.0, 30.0, 60.0, 60.0, 60.0, 60.0]
    assert [next_delay(None, n, p, rng) for n in range(0, 9)] == got  # no ending: the ladder


def test_backoff_delay_jitter_spreads_connections() -> None:
    """Jitter makes many connections wait different times (they do not reconnect in step)."""
    p = Policy()
    delays = {next_delay(BACKOFF_ENDING, 3, p, random.Random(seed)) for seed in range(50)}
    assert len(delays) > 40
    assert min(delays) < 10.0 < max(delays)


def test_backoff_delay_is_deterministic_for_a_seed() -> None:
    """The delay depends only on the injected RNG (no global random)."""
    p = Policy()
    one = next_delay(BACKOFF_ENDING, 2, p, random.Random(7))
    assert one == next_delay(BACKOFF_ENDING, 2, p, random.Random(7))


@pytest.mark.parametrize("case", CASES, ids=[repr(c[0]) for c in CASES])
@pytest.mark.parametrize("failures", [0, 1, 3, 99])
def test_next_delay_for_every_kind_of_end(case: tuple[Any, ...], failures: int) -> None:
    """Every kind of end waits what its Delay says: op 7 on a live connection 0, 4009 within
    rotation_delay_s, 4008 exactly rate_limit_wait_s, op 9 true within
    invalid_session_delay_s, everything else the jittered backoff step for ``failures``."""
    p = Policy()
    e = classify(case[0])
    delays = [next_delay(e, failures, p, random.Random(seed)) for seed in range(30)]
    if e.delay is Delay.NOW:
        assert delays == [0.0] * 30
    elif e.delay is Delay.ROTATION:
        assert all(0.0 <= d <= 1.0 for d in delays) and len(set(delays)) > 20
    elif e.delay is Delay.RATE_LIMIT:
        assert delays == [60.0] * 30
    elif e.delay is Delay.INVALID_SESSION:
        assert all(1.0 <= d <= 5.0 for d in delays) and len(set(delays)) > 20
    else:
        base = p.backoff_s[backoff_index(failures, p)]
        assert all(base * 0.8 <= d <= base * 1.2 for d in delays)


@pytest.mark.parametrize(
    ("delay", "policy", "expected"),
    [
        (Delay.ROTATION, Policy(rotation_delay_s=(0.0, 0.0)), 0.0),
        (Delay.ROTATION, Policy(rotation_delay_s=(2.5, 2.5)), 2.5),
        (Delay.INVALID_SESSION, Policy(invalid_session_delay_s=(3.0, 3.0)), 3.0),
        (Delay.RATE_LIMIT, Policy(rate_limit_wait_s=0.01), 0.01),
        (Delay.BACKOFF, Policy(backoff_s=(0.0,), backoff_jitter=0.5), 0.0),
    ],
)
def test_next_delay_boundaries_follow_the_policy(
    delay: Delay, policy: Policy, expected: float
) -> None:
    """Degenerate ranges and zero steps give exactly the policy's number."""
    ending = Ending(EndingKind.CLOSED, "x", delay=delay)
    assert next_delay(ending, 5, policy, random.Random(1)) == expected


def test_a_poison_frame_names_the_seq_it_skips() -> None:
    """A skipped poison frame's Ending carries the s given up; giving up the session names none."""
    assert classify(PoisonFrame(8, skipped_before=False)).skipped_seq == 8
    assert classify(PoisonFrame(8, skipped_before=True)).skipped_seq is None
