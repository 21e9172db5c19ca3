"""``qqconn run --shards`` and ``--redis`` as real subprocesses against an in-process fake
gateway that enforces session_start_limit: every shard in one process, two processes sharing
one Redis, and a shard SIGKILLed and restarted elsewhere that Resumes from Redis.

Every wait is bounded; every process and the redis-server are stopped on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qqconn import cli
from qqconn.cli.status import judge
from qqconn.testing import FakeGateway
from tests.driver_support import GATEWAY_SLACK_S
from tests.redis_support import RedisServer, redis_server
from tests.test_cli import HB_MS, POLICY_TOML, SECRET, Proc, _env, _pump
from tests.test_cli_http import ops_url

__all__ = ["redis_server"]

WINDOW_S = 0.5  # the client's identify_window_s
GATEWAY_WINDOW_S = WINDOW_S - GATEWAY_SLACK_S  # the fake's
POLICY = POLICY_TOML + f"identify_window_s = {WINDOW_S}\nresume_window_s = 60.0\n"


@contextlib.asynccontextmanager
async def run_cli(
    gw: FakeGateway, workdir: Path, *extra: str, state: bool = True, policy: str = POLICY
) -> AsyncIterator[Proc]:
    """``python -m qqconn run`` in ``workdir`` (its only files are made there)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "qqconn.toml").write_text(policy)
    args = [
        "--app-id",
        gw.app_id,
        "--api-base",
        gw.api_base,
        "--token-url",
        gw.token_url,
        "--config",
        "qqconn.toml",
        "--log-format",
        "json",
    ]
    if state:
        args += ["--state-file", "state.json"]
    env = _env(QQ_CLIENT_SECRET=SECRET)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qqconn",
        "run",
        *args,
        *extra,
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    p = Proc(proc, workdir / "state.json")
    p.readers = [
        asyncio.create_task(_pump(proc.stdout, p.stdout)),
        asyncio.create_task(_pump(proc.stderr, p.stderr)),
    ]
    try:
        yield p
    finally:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await proc.wait()
        for task in p.readers:
            task.cancel()
        await asyncio.gather(*p.readers, return_exceptions=True)


def _gateway(seed: int) -> FakeGateway:
    gw = FakeGateway(client_secret=SECRET, heartbeat_interval_ms=HB_MS, seed=seed)
    gw.faults.enforce_session_limit = True
    gw.identify_window_s = GATEWAY_WINDOW_S
    return gw


def _lines(p: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in list(p.stdout)]


def _never_two_in_a_window(gw: FakeGateway) -> None:
    times = [t for t, _ in gw.identify_log]
    assert gw.refused_starts == []
    assert all(b - a >= gw.identify_window_s for a, b in itertools.pairwise(times)), gw.identify_log


async def _status(state_file: Path) -> tuple[int, str]:
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qqconn",
        "status",
        "--state-file",
        str(state_file),
        "--max-age",
        "10",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    async with asyncio.timeout(15):
        out, err = await probe.communicate()
    assert probe.returncode is not None
    return probe.returncode, out.decode() + err.decode()


# -- every shard in one process ---------------------------------------------------------------


async def test_shards_auto_runs_the_recommended_count(tmp_path: Path) -> None:
    """`--shards auto`: the 3 shards /gateway/bot recommends, one Identify per window, every
    stdout line names its shard and guild events arrive on the shard they route to; the
    state file holds every shard and status is 0 only while all are alive; SIGTERM: 0."""
    async with _gateway(11) as gw, run_cli(gw, tmp_path, "--shards", "auto") as p:
        gw.recommended_shards = 3
        await p.until(lambda: (p.state() or {}).get("state") == "alive", timeout=20)
        doc = p.state() or {}
        assert doc["shard_count"] == 3 and set(doc["shards"]) == {"0", "1", "2"}
        assert all(s["state"] == "alive" for s in doc["shards"].values())
        _never_two_in_a_window(gw)
        assert sorted(s for _, s in gw.identify_log) == [0, 1, 2]
        sent = []
        for guild in (0, 1 << 22, 2 << 22, 5 << 22):
            sent.append(await gw.dispatch_guild("AT_MESSAGE_CREATE", guild))
        await p.until(lambda: len(p.stdout) >= 3 + len(sent))
        events = [d for d in _lines(p) if d["t"] != "READY"]
        assert [(d["shard"], d["s"]) for d in events] == sent
        assert [s for s, _ in sent] == [0, 1, 2, 2]
        assert {d["shard"] for d in _lines(p) if d["t"] == "READY"} == {0, 1, 2}
        status, text = await _status(p.state_file)
        assert status == 0, text

        p.proc.send_signal(signal.SIGTERM)
        assert await p.exit_status() == 0, p.err
        status, text = await _status(p.state_file)
        assert status == 1 and "shard 0: state is stopped" in text


def _file_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_output_file_of_several_shards_resumes_each_from_its_own_lines(
    tmp_path: Path,
) -> None:
    """`--shards 3 --output FILE`: every line of the file carries its shard; a SIGKILL and a
    restart with the same file (no state file) Resumes every shard from its own last line:
    no new Identify, and every event, those sent while it was down included, exactly once,
    on the shard its guild routes to."""
    out = tmp_path / "events.jsonl"
    guilds = (0, 1 << 22, 2 << 22, 4 << 22)
    async with _gateway(14) as gw:
        gw.recommended_shards = 3
        args = ("--shards", "3", "--output", str(out))
        async with run_cli(gw, tmp_path, *args, state=False) as p:
            await p.until(lambda: out.exists() and len(_file_lines(out)) >= 3, timeout=20)
            before = [await gw.dispatch_guild("AT_MESSAGE_CREATE", g) for g in guilds]
            await p.until(lambda: len(_file_lines(out)) >= 3 + len(before), timeout=10)
            p.proc.send_signal(signal.SIGKILL)
            assert await p.exit_status() == -signal.SIGKILL
            assert p.stdout == []  # the events went to the file, not stdout
        during = [await gw.dispatch_guild("AT_MESSAGE_CREATE", g) for g in guilds]
        async with run_cli(gw, tmp_path, *args, state=False) as q:
            await q.until(lambda: len(_file_lines(out)) >= 3 + 2 * len(guilds), timeout=20)
            after = [await gw.dispatch_guild("AT_MESSAGE_CREATE", g) for g in guilds]
            await q.until(lambda: len(_file_lines(out)) >= 3 + 3 * len(guilds), timeout=10)
            q.proc.send_signal(signal.SIGTERM)
            assert await q.exit_status() == 0, q.err
    lines = _file_lines(out)
    assert all(type(d.get("shard")) is int for d in lines)
    assert sorted(d["shard"] for d in lines if d["t"] == "READY") == [0, 1, 2]
    assert gw.identifies == 3 and gw.resumes == 3
    events = [(d["shard"], d["s"]) for d in lines if d["t"] != "READY"]
    assert sorted(events) == sorted(before + during + after)  # none lost, none twice
    for shard in (0, 1, 2):
        seqs = [s for i, s in events if i == shard]
        assert seqs == sorted(seqs)


async def test_http_with_several_shards_is_ready_only_when_every_shard_is(
    tmp_path: Path,
) -> None:
    """`--shards 2 --http`: the ops endpoints watch both shards. While shard 1 waits for its
    identify permit (a 3 s window), /readyz is 503 naming it; once both are ALIVE it is 200,
    /metrics has a state series per shard, /status.json lists both; no secret anywhere."""
    window = 3.0
    policy = POLICY_TOML + f"identify_window_s = {window}\nresume_window_s = 60.0\n"
    async with _gateway(15) as gw, httpx.AsyncClient(timeout=5.0) as http:
        gw.identify_window_s = window - GATEWAY_SLACK_S
        async with run_cli(
            gw, tmp_path, "--shards", "2", "--http", "127.0.0.1:0", policy=policy
        ) as p:
            await p.until(lambda: ops_url(p) is not None, timeout=20)
            base = str(ops_url(p))
            async with asyncio.timeout(20):  # until shard 0 is ALIVE (bounded)
                while True:
                    early = await http.get(base + "readyz")
                    waiting = early.json()["not_ready"]
                    if waiting and "0/2" not in [w["shard"] for w in waiting]:
                        break
                    await asyncio.sleep(0.05)
            assert early.status_code == 503, early.text
            assert [(w["shard"], w["state"]) for w in waiting] == [("1/2", "awaiting_permit")]
            assert len(gw.identify_log) == 1
            await p.until(lambda: len(gw.identify_log) == 2, timeout=20)
            await p.until(lambda: (p.state() or {}).get("state") == "alive", timeout=20)
            ready = await http.get(base + "readyz")
            assert ready.status_code == 200, ready.text
            metrics = (await http.get(base + "metrics")).text
            for shard in ("0/2", "1/2"):
                labels = f'app_id="{gw.app_id}",shard="{shard}"'
                assert f'qqconn_connection_state{{{labels},state="alive"}} 1.0' in metrics
            status = (await http.get(base + "status.json")).json()
            assert sorted(c["shard"] for c in status["connections"]) == ["0/2", "1/2"]
            for text in (metrics, ready.text, json.dumps(status), p.err):
                assert SECRET not in text and gw.valid_token() not in text
        _never_two_in_a_window(gw)


async def test_one_shard_fatal_stops_every_shard_and_exits_78(tmp_path: Path) -> None:
    """`--shards 2`: one shard told 4915 (banned) is FATAL, not retryable; the other shard is
    stopped with it (one process, one bot: on_shard_fatal="stop_all") and the exit is 78,
    as for one shard; the state file says which shard failed."""
    async with _gateway(16) as gw, run_cli(gw, tmp_path, "--shards", "2") as p:
        await p.until(lambda: (p.state() or {}).get("state") == "alive", timeout=20)
        (sock,) = [
            c.index for c in gw.connections if c.is_open and c.session_id == gw.shard_session_id(1)
        ]
        await gw.close(4915, index=sock)
        assert await p.exit_status(timeout=20) == cli.EXIT_FATAL_PERMANENT == 78, p.err
        shards = (p.state() or {})["shards"]
        assert shards["1"]["state"] == "fatal" and shards["1"]["fatal"]["retryable"] is False
        assert shards["0"]["state"] == "stopped"
        assert not [c for c in gw.connections if c.is_open]


def test_status_of_several_shards_needs_every_one_alive(tmp_path: Path) -> None:
    """A file of several shards is unhealthy as soon as one shard is not alive."""
    import time

    now = time.time()

    def doc(states: list[str]) -> str:
        shards = {
            str(i): {"state": s, "heartbeat_interval_s": 41.25, "updated_at_unix": now - 500}
            for i, s in enumerate(states)
        }
        return json.dumps({"state": "alive", "shards": shards, "updated_at_unix": now, "alive": 0})

    assert judge(doc(["alive", "alive"]), now_unix=now, max_age_s=None).healthy
    health = judge(doc(["alive", "resuming"]), now_unix=now, max_age_s=None)
    assert not health.healthy and health.problem == "shard 1: state is resuming"
    assert not judge(doc([]), now_unix=now, max_age_s=None).healthy
    stale = judge(doc(["alive"]), now_unix=now + 200, max_age_s=None)
    assert not stale.healthy and "stale" in (stale.problem or "")
    path = tmp_path / "state.json"
    path.write_text(doc(["alive", "connecting"]))
    assert cli.main(["status", "--state-file", str(path)]) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--shards", "0"],
        ["--shards", "many"],
        ["--shards", "2", "--shard", "0/2"],
        ["--redis", "http://127.0.0.1:6379"],
        ["--redis", "redis://"],
    ],
)
def test_bad_shard_and_redis_options_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QQ_CLIENT_SECRET", SECRET)
    status = cli.main(["run", "--app-id", "102", *argv])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert ("--shards" in err) or ("--redis" in err)


# -- across processes, through Redis ----------------------------------------------------------


async def test_two_processes_sharing_redis_never_identify_in_one_window(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """`--shard 0/2` and `--shard 1/2`, two processes, one Redis: their Identifies (the
    first ones, and two rounds of re-Identify after op 9) are never in one window."""
    async with (
        _gateway(12) as gw,
        run_cli(gw, tmp_path / "a", "--shard", "0/2", "--redis", redis_server.url) as a,
        run_cli(gw, tmp_path / "b", "--shard", "1/2", "--redis", redis_server.url) as b,
    ):
        alive = lambda: all((x.state() or {}).get("state") == "alive" for x in (a, b))  # noqa: E731
        await a.until(alive, timeout=20)
        for round_ in (1, 2):
            await gw.send_invalid_session(False)
            await a.until(lambda n=2 + 2 * round_: len(gw.identify_log) == n, timeout=20)
            await a.until(alive, timeout=20)
        _never_two_in_a_window(gw)
        assert sorted(s for _, s in gw.identify_log) == [0, 0, 0, 1, 1, 1]
        for p in (a, b):
            assert all(line["shard"] == int(p is b) for line in _lines(p))
        assert not list((tmp_path / "a").glob("*.jsonl"))


async def test_sigkill_and_restart_elsewhere_resumes_from_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A shard killed with SIGKILL and started again in an empty directory (no state file)
    Resumes the session Redis holds: no new Identify, and no event lost."""
    async with _gateway(13) as gw:
        async with run_cli(gw, tmp_path / "one", "--redis", redis_server.url, state=False) as p:
            await p.until(lambda: any(d["t"] == "READY" for d in _lines(p)), timeout=20)
            before = [await gw.dispatch("GROUP_AT_MESSAGE_CREATE") for _ in range(5)]
            await p.until(lambda: len(p.stdout) >= 6)
            await asyncio.sleep(0.6)  # two heartbeats: the checkpoint reached Redis
            p.proc.send_signal(signal.SIGKILL)
            assert await p.exit_status() == -signal.SIGKILL
            first = _lines(p)
        during = [await gw.dispatch("GROUP_AT_MESSAGE_CREATE") for _ in range(3)]
        empty = tmp_path / "two"
        async with run_cli(gw, empty, "--redis", redis_server.url, state=False) as q:
            await q.until(lambda: len([d for d in _lines(q) if d["t"] != "READY"]) >= 3, 20)
            after = [await gw.dispatch("GROUP_AT_MESSAGE_CREATE") for _ in range(2)]
            await q.until(lambda: {d["s"] for d in _lines(q)} >= set(after), timeout=10)
            q.proc.send_signal(signal.SIGTERM)
            assert await q.exit_status() == 0, q.err
            second = _lines(q)
        assert gw.identifies == 1 and gw.resumes == 1
        assert not any(d["t"] == "READY" for d in second)
        seen = {d["s"] for d in first + second if d["t"] != "READY"}
        assert seen == set(before + during + after)
        assert sorted(p.name for p in empty.iterdir()) == ["qqconn.toml"]
