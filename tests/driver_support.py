"""Running the real driver against the fake gateway in tests: a scaled-down policy, a host that
records what it sees, and a manager started and stopped around a test (every wait bounded).

Used by the driver's test modules (``tests/test_driver*.py``), the persistence, security and
hostile-frame tests and the soak.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from qqconn import ConnectionManager, FatalError, Policy, State
from qqconn.protocol import Dispatch
from qqconn.testing import FakeGateway

FAST = Policy(
    quick_disconnect_threshold_s=1.0,
    max_quick_disconnects=3,
    max_reconnect_attempts=5,
    backoff_s=(0.05, 0.1, 0.2),
    backoff_jitter=0.0,
    rate_limit_wait_s=0.4,
    connect_timeout_s=3.0,
    rotation_delay_s=(0.0, 0.02),
    invalid_session_delay_s=(0.05, 0.1),
    close_timeout_s=0.5,
    default_heartbeat_interval_s=0.3,
    identify_window_s=0.05,
)
INTENTS = 1 << 30 | 1 << 25
HB_MS = 300  # fake gateway Hello interval: heartbeats every 0.3 s, ACK deadline 0.15 s
#: Tests that make the fake enforce ``session_start_limit`` give it a window this much shorter
#: than the client's ``identify_window_s``. In production the client's margin is 2% of 5 s,
#: 0.1 s; a window scaled down to a few tenths of a second scales that margin down to a few
#: ms, less than a loaded loop's delivery jitter (CI, stop 18: shard 0's Identify reached the
#: fake late enough that shard 2's, sent 1.02 windows after it, was refused). The slack gives
#: the scaled tests production's margin back; what the client does is unchanged, and the
#: assertions judge the fake's receipt times against the fake's window.
GATEWAY_SLACK_S = 0.1


@dataclass
class Host:
    """What an adapter would see: dispatches, state changes, fatal notifies."""

    dispatches: list[Dispatch] = field(default_factory=list)
    states: list[State] = field(default_factory=list)
    fatals: list[FatalError] = field(default_factory=list)

    def on_dispatch(self, d: Dispatch) -> None:
        self.dispatches.append(d)

    def on_state_change(self, change: Any) -> None:
        self.states.append(change.state)

    def on_fatal(self, error: FatalError) -> None:
        self.fatals.append(error)

    def seqs(self) -> list[int | None]:
        return [d.seq for d in self.dispatches if d.type != "READY"]


@dataclass
class Run:
    gw: FakeGateway
    mgr: ConnectionManager
    host: Host
    task: asyncio.Task[None]

    async def until(self, predicate: Any, timeout: float = 10.0, what: str = "") -> None:
        """Wait (bounded) until predicate() is true."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)

    async def until_state(self, state: State, timeout: float = 10.0) -> None:
        await self.until(lambda: self.mgr.state is state, timeout)

    async def outcome(self, timeout: float = 15.0) -> BaseException | None:
        """Wait for run() to end; return the exception it raised, if any."""
        async with asyncio.timeout(timeout):
            try:
                await self.task
            except FatalError as exc:
                return exc
        return None


def manager_for(gw: FakeGateway, **options: Any) -> ConnectionManager:
    """A manager pointed at the fake gateway ``gw``: its app id, the secret "s3cret", INTENTS and
    the FAST policy unless ``options`` say otherwise (``manager_cls=`` picks a subclass)."""
    cls: type[ConnectionManager] = options.pop("manager_cls", ConnectionManager)
    settings = {"app_id": gw.app_id, "client_secret": "s3cret", "intents": INTENTS, "policy": FAST}
    return cls(api_base=gw.api_base, token_url=gw.token_url, **{**settings, **options})


@contextlib.asynccontextmanager
async def running(
    *,
    policy: Policy = FAST,
    hb_ms: int = HB_MS,
    configure: Any = None,
    **kwargs: Any,
) -> AsyncIterator[Run]:
    async with FakeGateway(heartbeat_interval_ms=hb_ms, seed=1) as gw:
        if configure is not None:
            configure(gw)
        host = Host()
        options: dict[str, Any] = {
            "on_dispatch": host.on_dispatch,
            "on_state_change": host.on_state_change,
            "on_fatal": host.on_fatal,
            "rng": random.Random(7),
            **kwargs,
        }
        mgr = manager_for(gw, policy=policy, **options)
        task = asyncio.create_task(mgr.run())
        run = Run(gw, mgr, host, task)
        try:
            yield run
        finally:
            async with asyncio.timeout(5):
                await mgr.stop()
                with contextlib.suppress(FatalError):
                    await task


def identify_frames(gw: FakeGateway) -> list[dict[str, Any]]:
    return [json.loads(f.payload_text) for f in gw.frames if f.direction == "in" and f.op == 2]
