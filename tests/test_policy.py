"""qqconn.policy: the limits, their validation, the Hello-interval rule and the named bounds.

The close-code table and the delay ladder are :mod:`qqconn.endings`'s (tests/test_endings.py).
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import fields
from typing import Any

import pytest

from qqconn import endings
from qqconn import policy as policy_module
from qqconn.errors import ConfigError
from qqconn.policy import (
    CLOSE_GRACE_S,
    STOP_SLACK_S,
    Policy,
    backoff_delay,
)

NAN = float("nan")
INF = float("inf")

# -- defaults ------------------------------------------------------------------------------------


def test_defaults_are_behaviour_md_defaults() -> None:
    """Every bracketed default of docs/behaviour.md is the Policy default."""
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
    assert p.checkpoint_interval_s == 1.0  # the state file: at most once a second
    assert p.token_refresh_margin_s == 50.0  # inside the endpoint's 60 s renewal window


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
    "checkpoint_interval_s",
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
        ("identify_window_s", 0.0),
        ("identify_window_s", -5.0),
        ("identify_window_s", NAN),
        ("max_identify_refusals", 0),
        ("max_identify_refusals", True),
    ]
    cases += [
        ("token_refresh_margin_s", v) for v in (-1.0, -0.001, NAN, INF, -INF, True, "50", None)
    ]
    cases += [("progress_log_interval_s", v) for v in (-1.0, NAN, INF, True, "60", None)]
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


def test_token_refresh_margin_may_be_zero() -> None:
    """token_refresh_margin_s accepts 0 (refresh only once expired) and any finite margin
    (tests and the demo scale durations up)."""
    assert Policy(token_refresh_margin_s=0).token_refresh_margin_s == 0
    assert Policy(token_refresh_margin_s=150.0).token_refresh_margin_s == 150.0


def test_close_and_stop_bounds_are_named_and_follow_close_timeout() -> None:
    """The driver's bounds are the policy's: closing one socket is bounded by close_timeout_s
    plus CLOSE_GRACE_S (0.5 s); stop() by two close_timeout_s plus STOP_SLACK_S (1 s)."""
    assert (CLOSE_GRACE_S, STOP_SLACK_S) == (0.5, 1.0)
    assert Policy().close_bound_s == 2.5
    assert Policy().stop_bound_s == 5.0
    p = Policy(close_timeout_s=0.25)
    assert p.close_bound_s == 0.75
    assert p.stop_bound_s == 1.5
    assert p.close_bound_s > p.close_timeout_s  # the library's own timeout fires first


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


def test_from_mapping_accepts_every_field_from_a_toml_policy_table() -> None:
    """Every Policy field can be set from a [policy] TOML table, the new bounds included."""
    table = tomllib.loads(
        "[policy]\ncheckpoint_interval_s = 2.5\ntoken_refresh_margin_s = 30\n"
        "close_timeout_s = 1.0\nbackoff_s = [1, 2]\n"
    )["policy"]
    p = Policy.from_mapping(table)
    assert (p.checkpoint_interval_s, p.token_refresh_margin_s) == (2.5, 30)
    assert p.stop_bound_s == 3.0 and p.backoff_s == (1, 2)
    defaults = Policy()
    every = {f.name: getattr(defaults, f.name) for f in fields(Policy)}
    assert Policy.from_mapping(every) == defaults
    with pytest.raises(ConfigError) as info:
        Policy.from_mapping({"checkpoint_interval_s": 0})
    assert info.value.field == "checkpoint_interval_s"


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


# -- what moved to qqconn.endings ----------------------------------------------------------------


def test_endings_names_are_re_exported_unchanged() -> None:
    """``from qqconn.policy import Ending`` (and the other table names) keeps working."""
    for name in ("CloseClass", "Delay", "Ending", "EndingKind", "Session"):
        assert getattr(policy_module, name) is getattr(endings, name)
    assert policy_module.classify_close is endings.classify_close
    assert policy_module.close_class is endings.close_class


def test_backoff_delay_is_next_delay_on_the_backoff_ladder() -> None:
    """backoff_delay(policy, n, rng) is next_delay for an ending that waits backoff_s."""
    p = Policy()
    ending = endings.classify(endings.Closed(1006))
    for n in range(12):
        assert backoff_delay(p, n, random.Random(n)) == endings.next_delay(
            ending, n, p, random.Random(n)
        )
