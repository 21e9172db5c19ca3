"""Rule 19 against the fake gateway: a dispatch too large for ``max_frame_bytes`` that the server
replays after every Resume. qqconn skips that one ``s`` (told to the host in the StateChange, the
snapshot and the log), delivers what follows exactly once, never walks into FATAL, and a restart
from the state file does not ask for the skipped event again."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from qqconn import ConnectionManager, State
from qqconn.endings import EndingKind
from qqconn.protocol import Dispatch
from qqconn.testing import FakeGateway
from tests.driver_support import FAST, manager_for

POLICY = replace(FAST, max_frame_bytes=16 * 1024)
BIG = "x" * (POLICY.max_frame_bytes + 1024)


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def _manager(
    gw: FakeGateway, got: list[Dispatch], changes: list[Any], **kw: Any
) -> ConnectionManager:
    options = {
        "on_dispatch": got.append,
        "on_state_change": changes.append,
        "rng": random.Random(5),
        "policy": POLICY,
    }
    return manager_for(gw, **{**options, **kw})


async def test_poison_frame_is_skipped_once_and_the_rest_delivered(tmp_path: Path) -> None:
    """One oversized dispatch replayed after each Resume: exactly its s is lost (reported in the
    StateChange, the snapshot and qqconn.poison_frame_skipped), every later event arrives once,
    no quick drop counted, no FATAL; a restart from a checkpoint taken before the skip gets
    past it the same way."""
    state_file = tmp_path / "state.json"
    async with FakeGateway(heartbeat_interval_ms=300, seed=2) as gw:
        got: list[Dispatch] = []
        changes: list[Any] = []
        mgr = _manager(gw, got, changes, state_file=state_file)
        with capture_logs() as logs:
            task = asyncio.create_task(mgr.run())
            await _until(lambda: mgr.state is State.ALIVE)
            for i in range(5):
                await gw.dispatch("C2C_MESSAGE_CREATE", {"n": i})
            await _until(lambda: len(got) == 6)
            poison = await gw.dispatch("C2C_MESSAGE_CREATE", {"content": BIG})
            for i in range(5, 10):
                await gw.dispatch("C2C_MESSAGE_CREATE", {"n": i})
            await _until(lambda: len(got) == 11 and mgr.state is State.ALIVE)
            await asyncio.sleep(0.3)  # nothing else turns up
            await mgr.stop()
            await task
        assert mgr.machine.fatal is None and mgr.machine.quick_drops <= 1
        seqs = [d.seq for d in got]
        accepted = gw.accepted()
        assert seqs == [1, *[s for s in accepted if s != poison]], (seqs, poison)
        assert len(seqs) == len(set(seqs))  # none duplicated
        lost = set(accepted) - set(seqs) - {1}
        assert lost == {poison}  # exactly one seq lost: the poison frame
        # Three sockets: the live one, the Resume that met it again, the Resume past it.
        assert gw.resumes == 2 and gw.identifies == 1
        assert [c.close_code for c in gw.connections[:2]] == [1009, 1009]
        skipped = [c.ending for c in changes if c.ending is not None and c.ending.skipped_seq]
        assert [(e.kind, e.skipped_seq) for e in skipped] == [
            (EndingKind.POISON_FRAME_SKIPPED, poison)
        ]
        assert mgr.machine.snapshot_fields()["skipped"] == {"seqs": [poison], "sessions": 0}
        lines = [e for e in logs if e["event"] == "qqconn.poison_frame_skipped"]
        assert [(e["seq"], e["lost"], e["session_id"]) for e in lines] == [
            (poison, "event", gw.current_session_id)
        ]
        doc = json.loads(state_file.read_text())
        assert doc["session_id"] == gw.current_session_id and doc["last_seq"] == accepted[-1]

        # A restart inside the resume window, checkpoint at the event just before the skip.
        doc["last_seq"] = poison - 1
        doc["skipped"] = {"seqs": [poison], "sessions": 0}
        state_file.write_text(json.dumps(doc))
        got2: list[Dispatch] = []
        mgr2 = _manager(gw, got2, [], state_file=state_file)
        task2 = asyncio.create_task(mgr2.run())
        await _until(lambda: len(got2) == 5 and mgr2.state is State.ALIVE)
        await mgr2.stop()
        await task2
        # Without memory of the skip the restart meets the frame again; it must get past it
        # the same way, losing the same one s and nothing else.
        assert [d.seq for d in got2] == [s for s in accepted if s > poison]
        assert mgr2.machine.fatal is None


async def test_checkpoint_records_the_skip(tmp_path: Path) -> None:
    """The state file written after a skip resumes past the poison frame: a restarted process
    never asks for it again (one Resume, no 1009)."""
    state_file = tmp_path / "state.json"
    async with FakeGateway(heartbeat_interval_ms=300, seed=3) as gw:
        got: list[Dispatch] = []
        mgr = _manager(gw, got, [], state_file=state_file)
        task = asyncio.create_task(mgr.run())
        await _until(lambda: mgr.state is State.ALIVE)
        await gw.dispatch("C2C_MESSAGE_CREATE", {"n": 0})
        await _until(lambda: len(got) == 2)
        poison = await gw.dispatch("C2C_MESSAGE_CREATE", {"content": BIG})
        await _until(lambda: mgr.machine.skipped_seqs == (poison,) and mgr.state is State.ALIVE)
        doc = json.loads(state_file.read_text())
        # Nothing after the poison frame was handled yet: the checkpoint names it all the same.
        assert doc["last_seq"] == poison and doc["skipped"]["seqs"] == [poison]
        await mgr.stop()
        await task
        opened = len(gw.connections)
        after = await gw.dispatch("C2C_MESSAGE_CREATE", {"n": 1})
        got2: list[Dispatch] = []
        mgr2 = _manager(gw, got2, [], state_file=state_file)
        task2 = asyncio.create_task(mgr2.run())
        await _until(lambda: [d.seq for d in got2] == [after] and mgr2.state is State.ALIVE)
        await mgr2.stop()
        await task2
        assert len(gw.connections) == opened + 1  # straight past it: one socket, no 1009
        assert gw.connections[-1].close_code != 1009
