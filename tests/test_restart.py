"""Crash and restart for real: `qqconn run` killed with SIGKILL while events flow, then restarted.

Two ways to keep the checkpoint, two guarantees:

* the state file alone (written at most once a second, after the host's callback returned): the
  restarted process Resumes and the gateway replays what the dead process missed, so no event is
  lost; the events printed after the last checkpoint are printed again (same ``s`` and ``id``),
  and the first test pins exactly that bound;
* ``--output FILE``: the output is its own checkpoint (one appended line per event; a restart
  resumes after the last complete line, cutting a torn one), so every event is written exactly
  once across the crash; the second test pins that.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from qqconn.testing import FakeGateway
from tests.test_cli import POLICY_TOML, SECRET, qqconn_run


def _seqs(lines: str) -> list[int]:
    return [json.loads(line)["s"] for line in lines.splitlines() if line.strip()]


async def test_kill_9_while_events_flow_then_restart_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL mid-stream, restart: Resume replays what the dead process missed; every accepted
    event is printed, and repeats are only those printed after the last checkpoint."""
    async with FakeGateway(heartbeat_interval_ms=300, client_secret=SECRET) as gw:
        pumping = asyncio.Event()
        pumping.set()

        async def pump() -> None:
            for i in range(3000):
                if not pumping.is_set():
                    return
                await gw.dispatch("GROUP_AT_MESSAGE_CREATE", {"n": i})
                await asyncio.sleep(0.004)

        async with qqconn_run(gw, tmp_path, policy=POLICY_TOML) as first:
            await first.until(lambda: gw.identifies == 1 and gw.current_session_id is not None)
            pumper = asyncio.create_task(pump())
            await first.until(lambda: len(_seqs(first.out)) >= 150)
            await asyncio.sleep(0.3)
            first.proc.send_signal(signal.SIGKILL)
            assert await first.exit_status() == -signal.SIGKILL
        printed_first = _seqs(first.out)
        checkpoint = json.loads((tmp_path / "state.json").read_text())
        assert checkpoint["session_id"] == gw.current_session_id
        await asyncio.sleep(0.3)  # events keep arriving while no process is connected

        async with qqconn_run(gw, tmp_path, policy=POLICY_TOML) as second:
            await second.until(lambda: gw.resumes >= 1 and len(_seqs(second.out)) > 0)
            await asyncio.sleep(0.5)
            pumping.clear()
            await pumper
            final = gw.accepted()[-1]
            await second.until(lambda: _seqs(second.out)[-1:] == [final])
            second.proc.send_signal(signal.SIGTERM)
            assert await second.exit_status() == 0
        printed_second = _seqs(second.out)

    assert gw.identifies == 1  # the restart resumed; it never identified a new session
    accepted = [s for s in gw.accepted() if s > 1]  # READY (s=1) is not in the replay buffer
    everything = printed_first + printed_second
    assert set(accepted) <= set(everything), "an accepted event was never printed"
    # The second run starts right after the checkpoint, in order, with no gap.
    assert printed_second[0] == checkpoint["last_seq"] + 1
    assert printed_second == list(range(printed_second[0], printed_second[-1] + 1))
    # Repeats are exactly the events printed after the checkpoint by the dead process.
    repeated = sorted(set(printed_first) & set(printed_second))
    assert repeated == [s for s in printed_first if s > checkpoint["last_seq"]]
    print(
        f"\nkill -9: printed {len(printed_first)} + {len(printed_second)}, "
        f"accepted {len(accepted)}, repeated after restart {len(repeated)}, lost 0"
    )
    # A consumer keeping the highest s it saw ends with every event exactly once, in order.
    high, deduped = 0, []
    for s in everything:
        if s > high:
            deduped.append(s)
            high = s
    assert [s for s in deduped if s > 1] == accepted


async def test_kill_9_with_output_file_writes_every_event_exactly_once(tmp_path: Path) -> None:
    """With --output FILE (the output is its own checkpoint), SIGKILL mid-stream and a restart
    leave every accepted event in FILE exactly once, in order: nothing lost, nothing repeated."""
    output = tmp_path / "events.jsonl"
    async with FakeGateway(heartbeat_interval_ms=300, client_secret=SECRET) as gw:
        pumping = asyncio.Event()
        pumping.set()

        async def pump() -> None:
            for i in range(3000):
                if not pumping.is_set():
                    return
                await gw.dispatch("GROUP_AT_MESSAGE_CREATE", {"n": i})
                await asyncio.sleep(0.004)

        def written() -> list[int]:
            text = output.read_text() if output.exists() else ""
            return _seqs(text[: text.rfind("\n") + 1])

        async with qqconn_run(gw, tmp_path, "--output", str(output), policy=POLICY_TOML) as first:
            await first.until(lambda: gw.identifies == 1)
            pumper = asyncio.create_task(pump())
            await first.until(lambda: len(written()) >= 150)
            await asyncio.sleep(0.3)
            first.proc.send_signal(signal.SIGKILL)
            assert await first.exit_status() == -signal.SIGKILL
        before = len(written())
        await asyncio.sleep(0.3)

        async with qqconn_run(gw, tmp_path, "--output", str(output), policy=POLICY_TOML) as second:
            await second.until(lambda: gw.resumes >= 1 and len(written()) > before)
            await asyncio.sleep(0.5)
            pumping.clear()
            await pumper
            final = gw.accepted()[-1]
            await second.until(lambda: written()[-1:] == [final])
            second.proc.send_signal(signal.SIGTERM)
            assert await second.exit_status() == 0
        assert first.out == "" and second.out == ""  # events went to the file, not stdout

    assert gw.identifies == 1
    seqs = written()
    assert seqs == [1, *[s for s in gw.accepted() if s > 1]], "lost, repeated or out of order"
    print(
        f"\nkill -9 with --output: {before} lines before the kill, {len(seqs)} in all, 0 repeated"
    )


def test_output_checkpoint_cuts_a_torn_line_and_finds_the_session(tmp_path: Path) -> None:
    """The --output checkpoint: a torn last line is cut off; the session comes from the last
    READY line and s from the last complete line; no READY, or too old, means no checkpoint."""
    import os

    import structlog

    from qqconn.cli import output_checkpoint

    log = structlog.get_logger("test")
    path = tmp_path / "events.jsonl"
    ready = '{"s":1,"t":"READY","id":null,"d":{"session_id":"sess-9"}}\n'
    path.write_text(ready + '{"s":2,"t":"X","id":"X:2","d":{}}\n{"s":3,"t":"X","id":"X:3","d":{')
    assert output_checkpoint(path, 300.0, log) == ("sess-9", 2)
    assert path.read_text().endswith('"X:2","d":{}}\n')  # the torn line is gone
    path.write_text('{"s":7,"t":"X","id":"X:7","d":{}}\n')
    assert output_checkpoint(path, 300.0, log) is None  # no READY: the session is unknown
    path.write_text(ready)
    os.utime(path, (1, 1))
    assert output_checkpoint(path, 300.0, log) is None  # older than the resume window
    assert output_checkpoint(tmp_path / "missing.jsonl", 300.0, log) is None
