"""qqconn.metrics: names, types and labels as scraped, and counters fed by real connections.

The scrapes are parsed with prometheus_client's own text parser; the integration tests run a
real ConnectionManager against the fake gateway on loopback, fed through ManagerFeed (the
adapter that needs no driver hooks). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from qqconn import ConnectionManager, FatalError, Policy, State
from qqconn.metrics import (
    ENDING_KINDS,
    NO_METRICS,
    STATE_NAMES,
    ConnectionMetrics,
    ManagerFeed,
    Metrics,
    ending_kind,
)
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

#: name → (type, label names) of every family, as scraped (counters without ``_total``).
EXPECTED = {
    "qqconn_connection_state": ("gauge", {"app_id", "shard", "state"}),
    "qqconn_connections_opened": ("counter", {"app_id", "shard"}),
    "qqconn_connection_endings": ("counter", {"app_id", "shard", "kind"}),
    "qqconn_consecutive_quick_drops": ("gauge", {"app_id", "shard"}),
    "qqconn_consecutive_failed_attempts": ("gauge", {"app_id", "shard"}),
    "qqconn_heartbeat_ack_latency_seconds": ("histogram", {"app_id", "shard"}),
    "qqconn_dispatches_delivered": ("counter", {"app_id", "shard"}),
    "qqconn_dispatches_replayed": ("counter", {"app_id", "shard"}),
    "qqconn_fatal": ("counter", {"app_id", "shard", "retryable"}),
    "qqconn_last_frame_age_seconds": ("gauge", {"app_id", "shard"}),
    "qqconn_event_loop_lag_seconds": ("gauge", set()),
}


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scrape(metrics: Metrics) -> dict[str, Any]:
    """Parse the exposition into {family name: family}, leaving out the ``*_created`` gauges
    prometheus_client adds next to each counter and histogram in the text format."""
    text = metrics.exposition().decode("utf-8")
    families = text_string_to_metric_families(text)
    return {f.name: f for f in families if not f.name.endswith("_created")}


def value(families: dict[str, Any], sample_name: str, **labels: str) -> float:
    """The value of the one sample called ``sample_name`` whose labels include ``labels``."""
    family_name = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    found = [
        s.value
        for s in families[family_name].samples
        if s.name == sample_name and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, (sample_name, labels, found)
    return float(found[0])


def test_every_family_has_its_name_type_and_labels() -> None:
    """Each documented family is exposed with its Prometheus type and exactly its labels."""
    metrics = Metrics()
    conn = metrics.for_connection("102000000", (0, 1))
    conn.frame_received(metrics.clock())
    conn.heartbeat_acked(0.02)
    families = scrape(metrics)
    assert set(families) == set(EXPECTED)
    for name, (kind, labels) in EXPECTED.items():
        family = families[name]
        assert family.type == kind, name
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
            if labels:
                assert sample.labels["app_id"] == "102000000"
                assert sample.labels["shard"] == "0/1"


def test_label_values_are_a_fixed_small_set() -> None:
    """The state and kind labels only ever take their documented values, whatever comes in."""
    metrics = Metrics()
    conn = metrics.for_connection("1", "0/1")
    conn.state_changed("not-a-state")
    conn.connection_ended("something the peer made up", 0, 0)
    families = scrape(metrics)
    states = {s.labels["state"] for s in families["qqconn_connection_state"].samples}
    kinds = {s.labels["kind"] for s in families["qqconn_connection_endings"].samples}
    assert states == set(STATE_NAMES)
    assert kinds == set(ENDING_KINDS)
    assert value(families, "qqconn_connection_endings_total", kind="other") == 1


def test_state_gauge_marks_exactly_the_current_state() -> None:
    """After each state change, one state reads 1 and the others 0; counters follow it."""
    metrics = Metrics()
    conn = metrics.for_connection("1", (0, 1))
    for state in ("connecting", "identified", "alive", "backoff"):
        conn.state_changed(state, quick_drops=2, failed_attempts=4)
        families = scrape(metrics)
        on = [s.labels["state"] for s in families["qqconn_connection_state"].samples if s.value]
        assert on == [state]
    assert value(families, "qqconn_consecutive_quick_drops") == 2
    assert value(families, "qqconn_consecutive_failed_attempts") == 4


def test_last_frame_age_is_computed_when_scraped() -> None:
    """The age grows with the clock between scrapes and has no sample before a first frame."""
    clock = FakeClock()
    metrics = Metrics(clock=clock)
    conn = metrics.for_connection("1", (0, 1))
    assert scrape(metrics)["qqconn_last_frame_age_seconds"].samples == []
    conn.frame_received(clock())
    clock.now += 2.5
    assert value(scrape(metrics), "qqconn_last_frame_age_seconds") == 2.5
    clock.now += 1.0
    assert value(scrape(metrics), "qqconn_last_frame_age_seconds") == 3.5


def test_registry_is_private_unless_one_is_given() -> None:
    """Two Metrics each get their own registry; a given one is used; the global one is untouched."""
    before = {m.name for m in REGISTRY.collect()}
    a, b = Metrics(), Metrics()
    assert a.registry is not b.registry
    a.for_connection("1", (0, 1)).connection_opened()
    assert value(scrape(a), "qqconn_connections_opened_total") == 1
    assert "qqconn_connections_opened" not in {f for f in scrape(b) if scrape(b)[f].samples}
    assert {m.name for m in REGISTRY.collect()} == before
    mine = CollectorRegistry()
    given = Metrics(registry=mine)
    assert given.registry is mine
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(registry=mine)


def test_for_connection_returns_one_object_per_shard() -> None:
    """Asking twice for one app id and shard gives the same object; (0, 2) and "0/2" are one."""
    metrics = Metrics()
    first = metrics.for_connection("1", (0, 2))
    assert metrics.for_connection("1", "0/2") is first
    assert metrics.for_connection("1", (1, 2)) is not first
    assert isinstance(first, ConnectionMetrics)


def test_no_metrics_has_every_method_and_does_nothing() -> None:
    """NO_METRICS takes every call a ConnectionMetrics takes and returns None."""
    calls = [
        ("state_changed", ("alive",)),
        ("connection_opened", ()),
        ("connection_ended", ("drop", 1, 2)),
        ("heartbeat_acked", (0.01,)),
        ("dispatch_delivered", ()),
        ("dispatch_replayed", ()),
        ("fatal", (True,)),
        ("frame_received", (1.0,)),
    ]
    real = Metrics().for_connection("1", (0, 1))
    for name, args in calls:
        assert getattr(NO_METRICS, name)(*args) is None
        assert getattr(real, name)(*args) is None


@pytest.mark.parametrize(
    ("kind", "reason", "expected"),
    [
        (None, "zombie: heartbeat not acknowledged", "zombie"),
        (None, "stale: no frame for 0.9 s", "stale"),
        (None, "connection lost without a close frame", "drop"),
        (None, "closed 4009: Session timed out", "close"),
        (None, "close 4914: bot taken down (sandbox only)", "close"),
        (None, "op 7 reconnect requested", "op7"),
        (None, "op 9 invalid session (resumable)", "op9"),
        (None, "token failed: HTTPStatusError: 500", "connect_failed"),
        (None, "handshake failed: InvalidStatus", "connect_failed"),
        (None, "no READY/RESUMED within 20 s", "deadline"),
        (None, "3 heartbeat sends failed in a row", "heartbeat_send_failed"),
        (None, "something new", "other"),
        ("ZOMBIE", None, "zombie"),
        ("invalid_session", "whatever", "op9"),
        ("made_up", None, "other"),
    ],
)
def test_ending_kind_maps_reasons_and_kinds_to_the_fixed_set(
    kind: str | None, reason: str | None, expected: str
) -> None:
    """Each ending reason the machine writes today, and kind names, map to one label value."""
    assert ending_kind(kind, reason) == expected


# -- against the fake gateway ------------------------------------------------------------------


@dataclass
class Live:
    gw: FakeGateway
    manager: ConnectionManager
    metrics: Metrics
    feed: ManagerFeed
    task: asyncio.Task[None]

    async def until(self, predicate: Any, timeout: float = 10.0) -> None:
        """Poll the feed and wait (bounded) until predicate() holds."""
        async with asyncio.timeout(timeout):
            while True:
                self.feed.poll()
                if predicate():
                    return
                await asyncio.sleep(0.02)

    def scrape(self) -> dict[str, Any]:
        self.feed.poll()
        return scrape(self.metrics)


@contextlib.asynccontextmanager
async def live(policy: Policy = FAST, **gateway: Any) -> AsyncIterator[Live]:
    """A manager on the fake gateway whose metrics are fed by a ManagerFeed."""
    metrics = Metrics()
    feed: ManagerFeed | None = None

    def on_state_change(change: Any) -> None:
        assert feed is not None
        feed.on_state_change(change)

    async with FakeGateway(heartbeat_interval_ms=200, **gateway) as gw:
        manager = ConnectionManager(
            app_id=gw.app_id,
            client_secret="s3cret",
            intents=1,
            api_base=gw.api_base,
            token_url=gw.token_url,
            policy=policy,
            on_state_change=on_state_change,
        )
        feed = ManagerFeed(manager, metrics.for_connection(manager.app_id, manager.shard))
        task = asyncio.create_task(manager.run())
        try:
            yield Live(gw, manager, metrics, feed, task)
        finally:
            await manager.stop()
            with contextlib.suppress(FatalError):
                async with asyncio.timeout(5):
                    await task


async def test_counters_move_on_real_connection_events() -> None:
    """A drop and a resume move opened, endings{drop}, delivered, the ACK histogram and state."""
    async with live() as run:
        await run.until(lambda: run.manager.state is State.ALIVE)
        for n in range(3):
            await run.gw.dispatch("C2C_MESSAGE_CREATE", {"n": n})
        await run.until(lambda: run.manager.dispatches_delivered >= 4)  # READY + 3
        acks = "qqconn_heartbeat_ack_latency_seconds_count"
        await run.until(lambda: value(scrape(run.metrics), acks) >= 2)
        await run.gw.drop()
        await run.until(lambda: run.gw.resumes == 1 and run.manager.state is State.ALIVE)
        await run.until(lambda: value(scrape(run.metrics), "qqconn_connections_opened_total") == 2)
        # The state gauge is set when the feed is polled and may trail manager.state by a poll
        # (failed once under load 10 with "0.0 == 1"): wait for it, bounded.
        await run.until(
            lambda: value(scrape(run.metrics), "qqconn_connection_state", state="alive") == 1
        )
        families = run.scrape()
        assert value(families, "qqconn_connection_endings_total", kind="drop") == 1
        assert (
            sum(
                s.value
                for s in families["qqconn_connection_endings"].samples
                if s.name.endswith("_total")
            )
            == 1
        )
        assert value(families, "qqconn_dispatches_delivered_total") == 4
        assert value(families, "qqconn_dispatches_replayed_total") == 0
        assert value(families, "qqconn_connection_state", state="alive") == 1
        assert value(families, "qqconn_consecutive_failed_attempts") == 0
        latency_sum = value(families, "qqconn_heartbeat_ack_latency_seconds_sum")
        assert 0 < latency_sum < 5
        assert 0 <= value(families, "qqconn_last_frame_age_seconds") < 5
        assert value(families, "qqconn_fatal_total", retryable="true") == 0


async def test_a_quick_drop_loop_counts_endings_and_one_retryable_fatal() -> None:
    """New sockets closed at once: three close endings, quick drops 3 in a row, fatal{true} = 1."""
    async with live() as run:
        run.gw.faults.close_new_sockets(after_s=0.05, count=10, code=4009)
        await run.until(lambda: run.manager.state is State.FATAL)
        families = run.scrape()
        assert value(families, "qqconn_connection_endings_total", kind="close") == 3
        assert value(families, "qqconn_consecutive_quick_drops") == 3
        assert value(families, "qqconn_fatal_total", retryable="true") == 1
        assert value(families, "qqconn_fatal_total", retryable="false") == 0
        assert value(families, "qqconn_connection_state", state="fatal") == 1


async def test_a_fatal_close_code_counts_a_non_retryable_fatal() -> None:
    """Close 4914 on the live socket: one close ending and fatal{retryable="false"} = 1."""
    async with live() as run:
        await run.until(lambda: run.manager.state is State.ALIVE)
        await run.gw.close(4914, "banned")
        await run.until(lambda: run.manager.state is State.FATAL)
        families = run.scrape()
        assert value(families, "qqconn_fatal_total", retryable="false") == 1
        assert value(families, "qqconn_fatal_total", retryable="true") == 0
        assert value(families, "qqconn_connection_endings_total", kind="close") == 1


async def test_metrics_hold_no_secret_and_no_session_id() -> None:
    """The scrape names neither the client secret, the access token nor the session id."""
    async with live() as run:
        await run.until(lambda: run.manager.state is State.ALIVE)
        await run.gw.dispatch("C2C_MESSAGE_CREATE", {"content": "hi"})
        await run.until(lambda: run.manager.dispatches_delivered >= 2)
        text = run.metrics.exposition().decode()
        session = run.gw.current_session_id
        assert session
        for secret in ("s3cret", run.gw.valid_token(), session):
            assert secret not in text


def test_the_readme_lists_every_metric_with_its_type_and_labels() -> None:
    """The README's operator section names each family exposed, with its type and labels."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## For operators: metrics, health and the status page", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`qqconn_"):
            labels = {c.strip("` ") for c in cells[2].split(",")} - {"—"}
            rows[cells[0].strip("`").removesuffix("_total")] = (cells[1], labels)
    assert rows == EXPECTED


def test_state_names_are_the_machine_states_in_order() -> None:
    """STATE_NAMES is every :class:`qqconn.State` value, in the machine's order: awaiting a
    permit included, so a connection waiting for the identify limiter shows on the gauge."""
    assert tuple(state.value for state in State) == STATE_NAMES
    metrics = Metrics()
    conn = metrics.for_connection("1", "0/1")
    conn.state_changed("awaiting_permit")
    families = scrape(metrics)
    assert value(families, "qqconn_connection_state", state="awaiting_permit") == 1
    assert value(families, "qqconn_connection_state", state="connecting") == 0
    conn.state_changed("connecting")
    families = scrape(metrics)
    assert value(families, "qqconn_connection_state", state="awaiting_permit") == 0
    assert value(families, "qqconn_connection_state", state="connecting") == 1
