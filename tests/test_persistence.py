"""Restarts: the state file carries the session across processes, and only when it should."""

from __future__ import annotations

import asyncio
import json
import random
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from qqconn import ConnectionManager, State
from qqconn._log import QuietLogger
from qqconn.driver.statefile import StateFile
from qqconn.protocol import Dispatch
from qqconn.testing import FakeGateway
from tests.driver_support import manager_for


def _manager(
    gw: FakeGateway, state_file: Path, got: list[Dispatch], **kw: Any
) -> ConnectionManager:
    options = {"on_dispatch": got.append, "state_file": state_file, "rng": random.Random(3)}
    return manager_for(gw, **{**options, **kw})


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_restart_resumes_and_replays_what_the_dead_process_missed(tmp_path: Path) -> None:
    """A manager started with a fresh state file Resumes (logged once); the host gets every event
    exactly once."""
    state_file = tmp_path / "state.json"
    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        # Assumed: the session outlives the 1000 qqconn's stop() closes with (the fake's
        # realistic default drops it, as gateways of this family may).
        gw.faults.drop_session_on_client_close = False
        first: list[Dispatch] = []
        mgr = _manager(gw, state_file, first)
        task = asyncio.create_task(mgr.run())
        await _until(lambda: mgr.state is State.ALIVE)
        for i in range(20):
            await gw.dispatch("C2C_MESSAGE_CREATE", {"n": i})
        await _until(lambda: len(first) == 21)
        await mgr.stop()
        await task
        doc = json.loads(state_file.read_text())
        assert doc["session_id"] == gw.current_session_id and doc["last_seq"] == 21
        for i in range(20, 30):  # sent while no process was connected
            await gw.dispatch("C2C_MESSAGE_CREATE", {"n": i})
        second: list[Dispatch] = []
        with capture_logs() as logs:
            mgr2 = _manager(gw, state_file, second)
        assert [e["event"] for e in logs] == ["qqconn.session_restored"]
        assert logs[0]["last_seq"] == 21 and 0 <= logs[0]["age_s"] < 60
        task2 = asyncio.create_task(mgr2.run())
        await _until(lambda: len(second) == 10)
        await asyncio.sleep(0.2)
        assert gw.identifies == 1 and gw.resumes == 1
        seqs = [d.seq for d in first + second]
        assert seqs == list(range(1, 32))  # READY (1), then 2..31, each once, in order
        await mgr2.stop()
        await task2


async def test_old_or_foreign_state_file_is_ignored_with_a_log_line(tmp_path: Path) -> None:
    """A state file older than resume_window_s, or of another app id, is ignored (Identify)."""
    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        for name, patch in (
            ("old", {"updated_at_unix": time.time() - 3600}),
            ("foreign", {"app_id": "999"}),
        ):
            state_file = tmp_path / f"{name}.json"
            doc = {
                "app_id": gw.app_id,
                "shard": [0, 1],
                "session_id": "gone",
                "last_seq": 5,
                "state": "alive",
                "updated_at_unix": time.time(),
            }
            doc.update(patch)
            state_file.write_text(json.dumps(doc))
            with capture_logs() as logs:
                mgr = _manager(gw, state_file, [])
            assert mgr.machine.session_id is None
            assert [e["event"] for e in logs] == ["qqconn.state_file_ignored"]


async def test_refused_resume_after_restart_falls_back_to_identify(tmp_path: Path) -> None:
    """A restored session the server no longer knows (4006) is forgotten; Identify follows."""
    state_file = tmp_path / "state.json"
    state_file.write_text(
        json.dumps(
            {
                "app_id": "1000",
                "shard": [0, 1],
                "session_id": "expired",
                "last_seq": 3,
                "state": "alive",
                "updated_at_unix": time.time(),
            }
        )
    )
    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        mgr = _manager(gw, state_file, [])
        task = asyncio.create_task(mgr.run())
        await _until(lambda: mgr.state is State.ALIVE and gw.identifies == 1)
        assert gw.connections[0].resume_count == 1
        await mgr.stop()
        await task


def test_a_state_file_that_cannot_be_written_is_logged_not_raised(tmp_path: Path) -> None:
    """Writing into a directory that does not exist logs qqconn.state_file_failed and raises
    nothing; a write that succeeds leaves only the file (mode 0600), no temporary file."""
    log = QuietLogger(structlog.get_logger("qqconn"))
    with capture_logs() as logs:
        StateFile(tmp_path / "gone" / "state.json", log=log).write({"state": "alive"})
    assert [e["event"] for e in logs] == ["qqconn.state_file_failed"]
    path = tmp_path / "state.json"
    StateFile(path, log=log).write({"state": "alive"})
    assert json.loads(path.read_text()) == {"state": "alive"}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_state_file_saying_alive_never_names_a_forgotten_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """op 9 (not resumable) forgets the session: from then on no state file the manager writes
    names it; once the new session is handled the file says alive with the new session."""
    written: list[dict[str, Any]] = []
    real_write = StateFile.write

    def record(self: StateFile, snapshot: dict[str, Any]) -> None:
        written.append(dict(snapshot))
        real_write(self, snapshot)

    monkeypatch.setattr(StateFile, "write", record)
    state_file = tmp_path / "state.json"
    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        got: list[Dispatch] = []
        mgr = _manager(gw, state_file, got)
        task = asyncio.create_task(mgr.run())
        await _until(lambda: mgr.state is State.ALIVE and len(got) == 1)
        old = gw.current_session_id
        await _until(lambda: json.loads(state_file.read_text())["session_id"] == old)
        forgotten_at = len(written)
        await gw.send_invalid_session(False)
        await _until(lambda: gw.identifies == 2 and len(got) == 2 and mgr.state is State.ALIVE)
        new = gw.current_session_id
        await _until(lambda: json.loads(state_file.read_text())["session_id"] == new)
        await mgr.stop()
        await task
    assert old != new and got[1].type == "READY"
    after = written[forgotten_at:]
    assert after and all(doc["session_id"] != old for doc in after), after
    alive = [doc["session_id"] for doc in after if doc["state"] == "alive"]
    assert alive and set(alive) <= {None, new} and alive[-1] == new
