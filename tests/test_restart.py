"""Crash and restart for real: `qqconn run` killed with SIGKILL while events flow, then restarted.

What this proves: the restarted process Resumes the session from the state file, so the gateway
replays what the dead process missed — no event is lost. What it cannot prove, and does not
claim: exactly-once output across a SIGKILL. The checkpoint (written at most once a second, after
the host's callback returned) lags the printed output by up to a second; the events printed in
that window are printed again after the restart. They carry the same ``s`` and ``id``, so a
consumer that keeps the highest ``s`` it saw drops them; the test checks exactly that bound.
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
