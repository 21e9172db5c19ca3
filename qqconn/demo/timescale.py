"""The tour's time scale: every duration scaled down so the tour takes seconds, × ``--slow``.

Pure (no driver, no fake gateway): the policy and the constants the scenarios' timing rules use.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from qqconn.policy import Policy
from qqconn.protocol import Intents

__all__ = [
    "DEMO_SECRET",
    "EVENTS_PER_S",
    "HEARTBEAT_S",
    "INTENTS",
    "SLACK_S",
    "UNSCALED",
    "demo_policy",
]

#: Hello interval of the demo gateway (seconds, before ``--slow``).
HEARTBEAT_S = 0.5
#: Allowance for event-loop scheduling on a busy machine, added to every timing rule.
SLACK_S = 0.5
#: Events per second the demo gateway pushes while a scenario runs (before ``--slow``).
EVENTS_PER_S = 25
#: A fake credential for the fake gateway; never a real one.
DEMO_SECRET = "demo-secret-0000"
INTENTS = int(Intents.PUBLIC_GUILD_MESSAGES | Intents.GROUP_AND_C2C_EVENT)


#: Durations the tour does not stretch: they answer to the QQ token endpoint, whose renewal
#: window (a token's last 60 s, docs/protocol.md §3.1) and token lifetime do not stretch either.
UNSCALED = frozenset({"token_refresh_margin_s"})


def demo_policy(slow: float = 1.0) -> Policy:
    """The tour's policy: docs/behaviour.md's rules with every duration scaled down, then each
    duration but the :data:`UNSCALED` ones stretched × ``slow``."""
    base = Policy(
        quick_disconnect_threshold_s=1.0,
        max_quick_disconnects=3,
        max_reconnect_attempts=10,
        backoff_s=(0.1, 0.2, 0.4),
        backoff_jitter=0.2,
        rate_limit_wait_s=1.0,
        connect_timeout_s=3.0,
        rotation_delay_s=(0.0, 0.05),
        invalid_session_delay_s=(0.1, 0.2),
        default_heartbeat_interval_s=HEARTBEAT_S,
        close_timeout_s=0.5,
    )
    if slow == 1:
        return base
    changes: dict[str, Any] = {}
    for f in fields(base):
        if f.name.endswith("_s") and f.name not in UNSCALED:
            value = getattr(base, f.name)
            changes[f.name] = (
                tuple(v * slow for v in value) if isinstance(value, tuple) else value * slow
            )
    return replace(base, **changes)
