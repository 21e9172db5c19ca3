"""The manager's lifecycle (qqconn/driver/manager.py): stop() from every state is prompt, quiet
and final; stop() before run(); a broken logging setup never breaks the connection."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from qqconn import ConfigError, ConnectionManager, Policy, State
from qqconn.driver.attempt import Attempt
from qqconn.protocol import Dispatch
from qqconn.testing import FakeGateway
from tests.driver_support import FAST, manager_for, running


@pytest.mark.parametrize("where", ["token", "handshake", "identified", "alive", "backoff"])
async def test_stop_from_each_state_is_prompt_quiet_final(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() during token fetch, handshake, IDENTIFIED, ALIVE, BACKOFF sleep: prompt, quiet, final."""
    policy = replace(FAST, backoff_s=(30.0,), connect_timeout_s=30.0)
    if where == "identified":  # never send Identify: parks the machine in IDENTIFIED
        monkeypatch.setattr(Attempt, "send_identify", lambda self: None)

    def configure(gw: FakeGateway) -> None:
        if where == "token":
            gw.faults.token_endpoint = "hang"
        if where == "handshake":
            gw.faults.hello_delay_s = 30.0

    async with running(policy=policy, configure=configure) as r:
        if where == "token":
            await r.until(lambda: any("AccessToken" in h.path for h in r.gw.http_requests))
        elif where == "handshake":
            await r.gw.wait_for_connections(1)
        elif where == "identified":
            await r.until_state(State.IDENTIFIED)
        elif where == "alive":
            await r.until_state(State.ALIVE)
        else:
            await r.until_state(State.ALIVE)
            await r.gw.drop()
            await r.until_state(State.BACKOFF)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await r.mgr.stop()
        elapsed = loop.time() - started
        assert elapsed < FAST.close_timeout_s * 2 + 1, elapsed
        assert r.task.done() and r.task.exception() is None
        assert r.mgr.state is State.STOPPED
        sockets = len(r.gw.connections)
        await asyncio.sleep(0.3)
        assert len(r.gw.connections) == sockets and r.host.fatals == []
        assert r.mgr._feeder.timers.pending() == {}
        leftovers = [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith("qqconn-")]
        assert leftovers == []


async def test_stop_before_run_returns_at_once() -> None:
    """stop() before run(): run() returns at once and opens nothing."""
    async with FakeGateway() as gw:
        mgr = manager_for(gw, policy=Policy())
        await mgr.stop()
        async with asyncio.timeout(2):
            await mgr.run()
        assert mgr.state is State.STOPPED and gw.http_requests == []


async def test_a_raising_logging_setup_never_breaks_the_connection() -> None:
    """A host whose logging processor raises: log lines are lost, the connection is not."""

    def explode(logger: Any, name: str, event: Any) -> Any:
        raise BrokenPipeError("stderr went away")

    structlog.configure(processors=[explode])
    try:
        async with running() as r:
            await r.until_state(State.ALIVE)
            await r.gw.close(4009)
            await r.until(lambda: r.gw.resumes == 1 and r.mgr.state is State.ALIVE, timeout=5)
            await r.until(lambda: r.mgr.machine.acks >= 5, timeout=5)  # the 5th ACK logs INFO
            assert not r.task.done()
    finally:
        structlog.reset_defaults()


_GOOD: dict[str, Any] = {"app_id": "1", "client_secret": "s3cret", "intents": 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("app_id", " "),
        ("app_id", 102),
        ("client_secret", ""),
        ("intents", 0),
        ("intents", True),
        ("intents", 1 << 31),
        ("shard", (1, 1)),
        ("shard", (0, True)),
        ("shard", [0, 1]),
        ("api_base", "ftp://example.invalid"),
        ("token_url", None),
        ("resume_from", ("", 3)),
        ("resume_from", ("sid", -1)),
        ("resume_from", ("sid", True)),
        ("resume_from", "sid"),
    ],
)
def test_a_bad_argument_is_a_config_error_naming_it(field: str, value: object) -> None:
    """A constructor argument the manager cannot work with raises ConfigError naming it."""
    with pytest.raises(ConfigError) as info:
        ConnectionManager(**{**_GOOD, field: value})
    assert info.value.field == field


async def test_resume_from_resumes_that_session_after_that_seq() -> None:
    """resume_from=(session_id, seq): logged once, the first socket Resumes that session, and
    the host gets exactly the events after seq (none skipped, none repeated)."""
    async with FakeGateway() as gw:
        first: list[Dispatch] = []
        mgr = manager_for(gw, on_dispatch=first.append)
        task = asyncio.create_task(mgr.run())
        await gw.wait_for(lambda: mgr.state is State.ALIVE, 10)
        for i in range(5):
            await gw.dispatch("C2C_MESSAGE_CREATE", {"n": i})
        await gw.wait_for(lambda: len(first) == 6, 10)  # READY (s=1), then s=2..6
        await mgr.stop()
        await task
        second: list[Dispatch] = []
        sid = gw.current_session_id
        with capture_logs() as logs:
            mgr = manager_for(gw, on_dispatch=second.append, resume_from=(sid, 3))
        restored = [e for e in logs if e["event"] == "qqconn.session_restored"]
        assert [(e["last_seq"], e["source"]) for e in restored] == [(3, "host")]
        task = asyncio.create_task(mgr.run())
        try:
            await gw.wait_for(lambda: len(second) == 3, 10)
            assert [d.seq for d in second] == [4, 5, 6]
            assert gw.identifies == 1 and gw.resumes == 1
            assert mgr.snapshot()["session_id"] == sid
        finally:
            await mgr.stop()
            await task
