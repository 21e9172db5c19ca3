"""qqconn.policy: the limits, the Hello-interval rule, the backoff delays and the close-code table."""

from __future__ import annotations

import math
import random
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qqconn.errors import ConfigError
from qqconn.policy import (
    CloseClass,
    Delay,
    Ending,
    Policy,
    Session,
    backoff_delay,
    classify_close,
    close_class,
)

NAN = float("nan")
INF = float("inf")

# -- defaults ------------------------------------------------------------------------------------


def test_defaults_are_behaviour_md_defaults() -> None:
    """Every bracketed default of behaviour.md is the Policy default."""
    p = Policy()
    assert p.quick_disconnect_threshold_s == 5.0
    assert p.max_quick_disconnects == 3
    assert p.max_reconnect_attempts == 100
    assert p.connect_timeout_s == 20.0
    assert p.backoff_s == (2.0, 5.0, 10.0, 30.0, 60.0)
    assert p.rate_limit_wait_s == 60.0
    assert p.invalid_session_delay_s == (1.0, 5.0)  # op 9 d: true → Resume after 1–5 s
    assert p.max_resume_failures == 3  # Resume fails 3 times in a row → Identify
    assert p.default_heartbeat_interval_s == 41.25
    assert p.min_heartbeat_interval_s == 0.1  # below 100 ms is absurd
    assert p.max_heartbeat_interval_s == 600.0  # above 10 minutes is absurd
    assert p.stale_after_intervals == 3.0
    assert p.max_heartbeat_send_failures == 3
    assert p.heartbeat_log_every == 5


def test_defaults_delays_are_short_and_jittered() -> None:
    """The 4009 delay is short and jittered, and backoff has jitter (no reconnecting in step)."""
    p = Policy()
    low, high = p.rotation_delay_s
    assert 0 <= low < high <= 5.0
    assert 0 < p.backoff_jitter < 1
    # A zombie is detected within two heartbeat intervals of the last ACK: the ACK deadline
    # must not exceed one interval (the next heartbeat is due at most one interval later).
    assert 0 < p.heartbeat_ack_timeout_ratio <= 1


def test_policy_is_frozen() -> None:
    """A policy cannot be changed after it was validated."""
    p = Policy()
    with pytest.raises(AttributeError):
        p.max_quick_disconnects = 99  # type: ignore[misc]


# -- validation ----------------------------------------------------------------------------------

POSITIVE_FLOATS = [
    "quick_disconnect_threshold_s",
    "rate_limit_wait_s",
    "connect_timeout_s",
    "default_heartbeat_interval_s",
    "min_heartbeat_interval_s",
    "max_heartbeat_interval_s",
    "heartbeat_ack_timeout_ratio",
    "stale_after_intervals",
    "close_timeout_s",
    "resume_window_s",
]
COUNTS = [
    "max_quick_disconnects",
    "max_reconnect_attempts",
    "max_resume_failures",
    "max_heartbeat_send_failures",
    "heartbeat_log_every",
    "max_frame_bytes",
]
RANGES = ["rotation_delay_s", "invalid_session_delay_s"]


def _invalid_cases() -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = []
    for name in POSITIVE_FLOATS:
        cases += [(name, v) for v in (-1.0, 0, 0.0, NAN, INF, -INF, True, False, "5", None)]
    for name in COUNTS:
        cases += [(name, v) for v in (0, -1, 1.5, 3.0, NAN, INF, True, "3", None)]
    for name in RANGES:
        cases += [
            (name, v)
            for v in (
                (2.0, 1.0),  # inverted
                (1.0,),
                (1.0, 2.0, 3.0),
                (-1.0, 1.0),
                (0.0, INF),
                (NAN, 1.0),
                (True, 2.0),
                [1.0, 2.0],  # a list is not a pair here (from_mapping converts)
                None,
                "1-5",
            )
        ]
    cases += [
        ("backoff_s", ()),
        ("backoff_s", [2.0, 5.0]),
        ("backoff_s", None),
        ("backoff_s", (2.0, -1.0)),
        ("backoff_s", (NAN,)),
        ("backoff_s", (INF,)),
        ("backoff_s", (True,)),
        ("backoff_s", ("2",)),
        ("backoff_jitter", -0.1),
        ("backoff_jitter", 1.0),
        ("backoff_jitter", 1.5),
        ("backoff_jitter", NAN),
        ("backoff_jitter", INF),
        ("backoff_jitter", True),
        ("heartbeat_ack_timeout_ratio", 1.5),
    ]
    return cases


@pytest.mark.parametrize(("name", "value"), _invalid_cases())
def test_invalid_value_raises_config_error_naming_the_field(name: str, value: Any) -> None:
    """An invalid value of any field raises ConfigError whose .field names that field."""
    with pytest.raises(ConfigError) as info:
        Policy(**{name: value})
    assert info.value.field == name
    assert name in str(info.value)


def test_every_field_is_validated() -> None:
    """Every Policy field appears in the invalid-value cases (a new field cannot skip them)."""
    covered = {name for name, _ in _invalid_cases()}
    assert covered == {f.name for f in fields(Policy)}


def test_inverted_heartbeat_bounds_are_refused() -> None:
    """min_heartbeat_interval_s above max_heartbeat_interval_s is refused by name."""
    with pytest.raises(ConfigError) as info:
        Policy(min_heartbeat_interval_s=10.0, max_heartbeat_interval_s=1.0)
    assert info.value.field == "min_heartbeat_interval_s"


@pytest.mark.parametrize("default", [0.05, 700.0])
def test_default_interval_outside_bounds_is_refused(default: float) -> None:
    """A default Hello interval outside [min, max] would itself be absurd: refused by name."""
    with pytest.raises(ConfigError) as info:
        Policy(default_heartbeat_interval_s=default)
    assert info.value.field == "default_heartbeat_interval_s"


def test_scaled_down_policy_is_accepted() -> None:
    """Tests may scale every number down: small but valid values are accepted."""
    p = Policy(
        quick_disconnect_threshold_s=0.05,
        max_quick_disconnects=1,
        max_reconnect_attempts=1,
        backoff_s=(0.0,),
        backoff_jitter=0.0,
        rate_limit_wait_s=0.01,
        connect_timeout_s=0.5,
        rotation_delay_s=(0.0, 0.0),
        invalid_session_delay_s=(0.0, 0.01),
        default_heartbeat_interval_s=0.2,
        min_heartbeat_interval_s=0.01,
        heartbeat_ack_timeout_ratio=1.0,
        close_timeout_s=0.01,
    )
    assert p.max_reconnect_attempts == 1


def test_from_mapping_refuses_unknown_key_by_name() -> None:
    """from_mapping names the unknown key (a typo in a config file is never ignored)."""
    with pytest.raises(ConfigError) as info:
        Policy.from_mapping({"max_quick_disconnect": 3})
    assert info.value.field == "max_quick_disconnect"


def test_from_mapping_turns_toml_lists_into_tuples() -> None:
    """TOML arrays become tuples, so a [policy] table can set backoff_s and the delay ranges."""
    p = Policy.from_mapping(
        {"backoff_s": [1, 2, 4], "rotation_delay_s": [0, 0.5], "max_quick_disconnects": 4}
    )
    assert p.backoff_s == (1, 2, 4)
    assert p.rotation_delay_s == (0, 0.5)
    assert p.max_quick_disconnects == 4


def test_from_mapping_validates_values() -> None:
    """from_mapping validates like the constructor: a bad value raises ConfigError by name."""
    with pytest.raises(ConfigError) as info:
        Policy.from_mapping({"backoff_s": []})
    assert info.value.field == "backoff_s"
    with pytest.raises(ConfigError) as info:
        Policy.from_mapping({"invalid_session_delay_s": [5, 1]})
    assert info.value.field == "invalid_session_delay_s"


def test_from_mapping_empty_is_the_default() -> None:
    """An empty [policy] table gives the defaults."""
    assert Policy.from_mapping({}) == Policy()


# -- the Hello interval (rule 4) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (41250, 41.25),
        (45000, 45.0),
        (100, 0.1),  # exactly 100 ms is allowed
        (600000, 600.0),  # exactly 10 minutes is allowed
        (1500.5, 1.5005),
    ],
)
def test_heartbeat_interval_valid_values_are_used(raw: object, expected: float) -> None:
    """A finite Hello interval within [100 ms, 10 min] is used as is (ms → s), not flagged."""
    assert Policy().heartbeat_interval(raw) == (expected, False)


@pytest.mark.parametrize(
    "raw",
    [0, -1, -41250, None, "x", "41250", NAN, INF, -INF, 99, 99.9, 600001, True, False,
     [41250], {"ms": 41250}, pytest.param(10**400, id="10**400")],
)  # fmt: skip
def test_heartbeat_interval_absurd_values_use_the_default(raw: object) -> None:
    """Missing, non-numeric, non-finite, below 100 ms or above 10 min → the default, flagged."""
    assert Policy().heartbeat_interval(raw) == (41.25, True)


def test_heartbeat_interval_default_follows_policy() -> None:
    """The replacement interval is the policy's default (tests may scale it down)."""
    p = Policy(default_heartbeat_interval_s=1.0)
    assert p.heartbeat_interval(None) == (1.0, True)


# -- backoff --------------------------------------------------------------------------------------


@given(failures=st.integers(min_value=0, max_value=10_000), seed=st.integers(0, 2**32))
def test_backoff_delay_follows_backoff_s_within_jitter(failures: int, seed: int) -> None:
    """The delay after n failures is backoff_s[n-1] (index 0 for 0, last repeats) × [0.8, 1.2]."""
    p = Policy()
    base = p.backoff_s[min(max(failures - 1, 0), len(p.backoff_s) - 1)]
    delay = backoff_delay(p, failures, random.Random(seed))
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
    base = backoff[min(max(failures - 1, 0), len(backoff) - 1)]
    delay = backoff_delay(p, failures, random.Random(seed))
    assert math.isfinite(delay)
    assert delay >= 0
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9


def test_backoff_delay_without_jitter_is_the_table() -> None:
    """With jitter 0 the delays are exactly backoff_s, the last value repeating."""
    p = Policy(backoff_jitter=0.0)
    rng = random.Random(0)
    got = [backoff_delay(p, n, rng) for n in range(0, 9)]
    assert got == [2.0, 2.0, 5.0, 10.0, 30.0, 60.0, 60.0, 60.0, 60.0]


def test_backoff_delay_jitter_spreads_connections() -> None:
    """Jitter makes many connections wait different times (they do not reconnect in step)."""
    p = Policy()
    delays = {backoff_delay(p, 3, random.Random(seed)) for seed in range(50)}
    assert len(delays) > 40
    assert min(delays) < 10.0 < max(delays)


def test_backoff_delay_is_deterministic_for_a_seed() -> None:
    """The delay depends only on the injected RNG (no global random)."""
    p = Policy()
    assert backoff_delay(p, 2, random.Random(7)) == backoff_delay(p, 2, random.Random(7))


# -- the close-code table (one test per row of behaviour.md's table) ------------------------------


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


@pytest.mark.parametrize("code", [1002, 1009, 1011, 1012, 3000])
def test_close_other_transport_codes_resume_with_backoff(code: int) -> None:
    """Other WebSocket codes (1011 keepalive timeout …) are network errors: Resume, with backoff."""
    assert close_class(code) is CloseClass.TRANSIENT
    _assert_resume_with_backoff(classify_close(code))


@pytest.mark.parametrize(
    "code", [4006, 4007, 4900, 4901, 4902, 4903, 4905, 4910, 4913, 4916, 4920, 4950, 4999]
)
def test_close_identify_codes_forget_the_session(code: int) -> None:
    """Row '4006, 4007, 4900–4913 and other 49xx except 4914/4915/4924': forget, Identify, backoff."""
    e = classify_close(code)
    assert close_class(code) is CloseClass.IDENTIFY
    assert e.session is Session.FORGET
    assert e.delay is Delay.BACKOFF
    assert e.counts_as_quick
    assert not e.fatal
    assert e.close_code == code


@pytest.mark.parametrize("code", [4000, 4003, 4005, 4015, 4100, 4500, 4899])
def test_close_unknown_4xxx_forgets_the_session(code: int) -> None:
    """A 4xxx code behaviour.md has no row for is treated as 'cannot resume': Identify, backoff."""
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


@pytest.mark.parametrize("code", [4001, 4002, 4010, 4011, 4012, 4013, 4014, 4914, 4915, 4924])
def test_close_fatal_codes_end_at_once_not_retryable(code: int) -> None:
    """Row 'close 4001, 4002, 4010–4014, 4914, 4915, 4924': FATAL, no further connection."""
    e = classify_close(code)
    assert close_class(code) is CloseClass.FATAL
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
    fatal = {4001, 4002, 4010, 4011, 4012, 4013, 4014, 4914, 4915, 4924}
    assert e.fatal == (code in fatal)
