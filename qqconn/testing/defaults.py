"""The fake gateway's default credentials and a fast :class:`~qqconn.Policy` for test suites.

A test points a manager at the fake with these names instead of repeating string literals::

    manager = qqconn.ConnectionManager(
        app_id=fake_gateway.app_id,
        client_secret=fake_gateway.client_secret,
        intents=1,
        api_base=fake_gateway.api_base,
        token_url=fake_gateway.token_url,
        policy=qqconn.testing.fast_policy(),
    )
"""

from __future__ import annotations

from typing import Any, Final

from qqconn.policy import Policy

__all__ = [
    "DEFAULT_APP_ID",
    "DEFAULT_CLIENT_SECRET",
    "FAST_POLICY_VALUES",
    "FIXTURE_HEARTBEAT_INTERVAL_MS",
    "fast_policy",
]

#: App id the fake gateway accepts unless given another (``FakeGateway(app_id=...)``).
DEFAULT_APP_ID: Final = "1000"
#: Client secret the fake gateway accepts unless given another; also ``gw.client_secret``.
DEFAULT_CLIENT_SECRET: Final = "s3cret"
#: Heartbeat interval the ``fake_gateway`` fixture announces in Hello (small, so tests run fast).
FIXTURE_HEARTBEAT_INTERVAL_MS: Final = 500

#: What :func:`fast_policy` changes from :class:`~qqconn.Policy`'s defaults (the production
#: values of docs/behaviour.md), each scaled so one test takes well under a second per event
#: yet stays far from timer noise on a loaded machine:
FAST_POLICY_VALUES: Final[dict[str, Any]] = {
    # A connection that ends within 1 s of opening counts as a quick drop (default 5 s).
    "quick_disconnect_threshold_s": 1.0,
    # Three quick drops in a row end in FATAL, as in production.
    "max_quick_disconnects": 3,
    # Five failed attempts in a row end in FATAL (default 100), so a refusal ends a test soon.
    "max_reconnect_attempts": 5,
    # Backoff ladder 50 ms, 100 ms, then 200 ms (default 2, 5, 10, 30, 60 s).
    "backoff_s": (0.05, 0.1, 0.2),
    # No jitter: delays are exactly the ladder, so a test can reason about them.
    "backoff_jitter": 0.0,
    # Wait after close 4008 (rate limited): 0.4 s (default 60 s).
    "rate_limit_wait_s": 0.4,
    # An attempt (token, URL, socket, Hello, READY) must finish within 3 s (default 20 s).
    "connect_timeout_s": 3.0,
    # Resume after a 4009 rotation within 0–20 ms (default 0–1 s).
    "rotation_delay_s": (0.0, 0.02),
    # Resume after op 9 ``d: true`` within 50–100 ms (default 1–5 s).
    "invalid_session_delay_s": (0.05, 0.1),
    # Closing a socket takes at most 0.5 s (default 2 s).
    "close_timeout_s": 0.5,
    # Heartbeat interval when Hello's is missing or absurd: 0.3 s (default 41.25 s).
    "default_heartbeat_interval_s": 0.3,
    # One Identify per 50 ms per bucket (default 5 s): tests that Identify again and again
    # keep the permit rule without waiting for it.
    "identify_window_s": 0.05,
}


def fast_policy(**overrides: Any) -> Policy:
    """A :class:`~qqconn.Policy` with test-suite timings (:data:`FAST_POLICY_VALUES`);
    ``overrides`` replace any field, e.g. ``fast_policy(max_reconnect_attempts=2)``.

    Every other field keeps its production default. Invalid values raise
    :class:`~qqconn.errors.ConfigError` like :class:`~qqconn.Policy` itself.
    """
    return Policy(**{**FAST_POLICY_VALUES, **overrides})
