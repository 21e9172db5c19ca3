"""The driver's own metrics hooks: ``ConnectionManager(metrics=...)`` against the fake gateway.

No ManagerFeed here: every number comes from the hook calls in qqconn/driver/. Every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from qqconn import ConnectionManager, FatalError, Policy, State
from qqconn.endings import EndingKind
from qqconn.metrics import ENDING_KINDS, Metrics, ending_kind
from qqconn.testing import FakeGateway

FAST = Policy(
    quick_disconnect_threshold_s=1.0,
    max_quick_disconnects=3,
    max_reconnect_attempts=5,
    backoff_s=(0.05, 0.1),
    backoff_jitter=0.0,
    connect_timeout_s=3.0,
    close_timeout_s=0.5,
)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """The one sample called ``name`` whose labels include ``labels``."""
    text = metrics.exposition().decode("utf-8")
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, (name, labels, found)
    return float(found[0])


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded in time) until ``predicate()`` holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def hooked(
    policy: Policy = FAST, **gateway: Any
) -> AsyncIterator[tuple[FakeGateway, ConnectionManager, Metrics]]:
    """A manager on the fake gateway that feeds its own Metrics."""
    metrics = Metrics()
    async with FakeGateway(**gateway) as gw:
        manager = ConnectionManager(
            app_id=gw.app_id,
            client_secret="s3cret",
            intents=1,
            api_base=gw.api_base,
            token_url=gw.token_url,
            policy=policy,
            metrics=metrics,
        )
        task = asyncio.create_task(manager.run())
        try:
            yield gw, manager, metrics
        finally:
            await manager.stop()
            with contextlib.suppress(FatalError):
                async with asyncio.timeout(5):
                    await task


def test_every_ending_kind_has_a_label_of_its_own_class() -> None:
    """Each EndingKind the machine can produce maps to a documented label, never "other"."""
    for kind in EndingKind:
        label = ending_kind(kind)
        assert label in ENDING_KINDS and label != "other", kind


async def test_every_heartbeat_ack_is_observed() -> None:
    """The ACK histogram counts exactly the ACKs the machine accepted (every one, no sampling)."""
    async with hooked(heartbeat_interval_ms=150) as (_, manager, metrics):
        await until(lambda: manager.state is State.ALIVE and manager.machine.acks >= 6)
        await manager.stop()
        assert manager.machine.attempt == 1
        count = sample(metrics, "qqconn_heartbeat_ack_latency_seconds_count")
        assert count == manager.machine.acks
        assert 0 < sample(metrics, "qqconn_heartbeat_ack_latency_seconds_sum") < 5 * count


async def test_a_socket_closed_before_hello_counts_as_opened() -> None:
    """Sockets the gateway closes before its Hello are counted as opened, and their endings."""
    async with hooked(heartbeat_interval_ms=200) as (gw, manager, metrics):
        gw.faults.hello_delay_s = 5.0
        gw.faults.close_new_sockets(after_s=0.05, count=10, code=None)
        await until(lambda: manager.state is State.FATAL)
        opened = sample(metrics, "qqconn_connections_opened_total")
        assert opened == manager.machine.attempt >= 3
        assert sample(metrics, "qqconn_connection_endings_total", kind="drop") == opened
        assert sample(metrics, "qqconn_fatal_total", retryable="true") == 1
        assert sample(metrics, "qqconn_connection_state", state="fatal") == 1


async def test_dispatches_state_and_frames_come_from_the_hooks() -> None:
    """Delivered dispatches, a drop and resume, the state gauge and the frame age all move."""
    async with hooked(heartbeat_interval_ms=200) as (gw, manager, metrics):
        await until(lambda: manager.state is State.ALIVE)
        for n in range(3):
            await gw.dispatch("C2C_MESSAGE_CREATE", {"n": n})
        await until(lambda: manager.dispatches_delivered >= 4)  # READY + 3
        assert sample(metrics, "qqconn_dispatches_delivered_total") == 4
        await gw.drop()
        await until(lambda: gw.resumes == 1 and manager.state is State.ALIVE)
        assert sample(metrics, "qqconn_connections_opened_total") == 2
        assert sample(metrics, "qqconn_connection_endings_total", kind="drop") == 1
        total_endings = sum(
            sample(metrics, "qqconn_connection_endings_total", kind=k) for k in ENDING_KINDS
        )
        assert total_endings == 1  # the BACKOFF → CONNECTING assess is not a second ending
        assert sample(metrics, "qqconn_connection_state", state="alive") == 1
        assert sample(metrics, "qqconn_connection_state", state="backoff") == 0
        assert 0 <= sample(metrics, "qqconn_last_frame_age_seconds") < 5
        assert sample(metrics, "qqconn_dispatches_replayed_total") == 0


async def test_an_ops_board_never_doubles_a_manager_that_feeds_itself() -> None:
    """Watching a manager that feeds the board's own Metrics adds no second count."""
    from qqconn.ops import Board

    async with hooked(heartbeat_interval_ms=200) as (gw, manager, metrics):
        board = Board(metrics=metrics)
        board.watch(manager)
        await until(lambda: manager.state is State.ALIVE)
        await gw.drop()
        await until(lambda: gw.resumes == 1 and manager.state is State.ALIVE)
        board.poll()
        assert sample(metrics, "qqconn_connections_opened_total") == 2
        assert sample(metrics, "qqconn_connection_endings_total", kind="drop") == 1
        assert sample(metrics, "qqconn_dispatches_delivered_total") == manager.dispatches_delivered
