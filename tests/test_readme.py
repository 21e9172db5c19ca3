"""The README cannot drift from the code: its chart, its policy table and its examples."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

from qqconn import Policy

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_chart_is_the_rendered_statechart() -> None:
    """The README's Mermaid chart is byte for byte statecharts/connection.mmd (run make statecharts)."""
    (chart,) = _blocks("mermaid")
    assert chart == (ROOT / "statecharts" / "connection.mmd").read_text(encoding="utf-8")


def test_policy_table_lists_every_field_with_its_default() -> None:
    """Every Policy field appears in the README's policy table, with its actual default."""
    table = README.split("## Policy", 1)[1].split("\n## ", 1)[0]
    defaults = Policy()
    for f in fields(Policy):
        row = next((line for line in table.splitlines() if f"`{f.name}`" in line), None)
        assert row is not None, f"{f.name} is missing from the README's policy table"
        value = getattr(defaults, f.name)
        if isinstance(value, tuple):
            shown = "(" + ", ".join(f"{v:g}" for v in value) + ")"
        elif f.name == "max_frame_bytes":
            shown = f"{value // (1024 * 1024)} MiB"
        else:
            shown = f"{value:g}"
        assert shown in row, f"{f.name}: README shows {row!r}, default is {shown}"


def test_python_examples_parse() -> None:
    """Every Python example in the README is valid Python."""
    examples = _blocks("python")
    assert len(examples) >= 2
    for code in examples:
        ast.parse(code)


def _section_block(title: str) -> str:
    section = README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]


async def test_embedding_example_runs_against_the_fake() -> None:
    """The README's embedding example, as written, connects, says who it is, replies through
    the message API with the token and app id headers, and stops when told."""
    import asyncio
    import contextlib
    import io

    from qqconn.testing import FakeGateway, fast_policy

    namespace: dict[str, object] = {"__name__": "readme_embedding"}
    exec(compile(_section_block("Embedding qqconn in an adapter"), "README.md", "exec"), namespace)
    run_bot = namespace["run_bot"]
    out = io.StringIO()
    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        stop = asyncio.Event()
        with contextlib.redirect_stdout(out):
            task = asyncio.create_task(
                run_bot(  # type: ignore[operator]
                    gw.app_id,
                    gw.client_secret,
                    stop,
                    api_base=gw.api_base,
                    token_url=gw.token_url,
                    policy=fast_policy(),
                )
            )
            await gw.wait_for(lambda: "logged in as" in out.getvalue(), timeout=10)
            await gw.dispatch("GROUP_AT_MESSAGE_CREATE")
            await gw.wait_for(lambda: gw.replies("group"), timeout=10)
            stop.set()
            async with asyncio.timeout(10):
                await task
    (reply,) = gw.replies("group")
    assert reply.method == "POST" and reply.headers["authorization"] == "QQBot ***"
    assert reply.headers["x-union-appid"] == gw.app_id
    assert reply.content is not None and reply.content.startswith("echo:")
    assert "ALIVE -> STOPPED" in out.getvalue()


def test_testing_example_passes_in_strict_mode(tmp_path: Path) -> None:
    """The README's fake-gateway test, as its own file, passes under pytest-asyncio strict mode."""
    import os
    import subprocess
    import sys

    test_file = tmp_path / "test_readme_example.py"
    test_file.write_text(_section_block("Testing your adapter against the fake gateway"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "asyncio",
            "--asyncio-mode=strict",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            str(test_file),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout


def _section_blocks(title: str) -> list[str]:
    section = README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


async def test_shards_examples_run_against_the_fake() -> None:
    """The README's sharded examples, as written: every recommended shard comes up and
    prints its events; the tenants runner ends a banned bot only; the Redis shard is built
    on the Redis objects."""
    import asyncio
    import contextlib
    import io

    from qqconn.testing import FakeGateway, fast_policy

    shards_code, tenants_code, redis_code = _section_blocks("Shards: one bot, many connections")
    namespace: dict[str, object] = {"__name__": "readme_shards"}
    for code in (shards_code, tenants_code, redis_code):
        exec(compile(code, "README.md", "exec"), namespace)
    out = io.StringIO()
    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        gw.recommended_shards = 2
        stop = asyncio.Event()
        with contextlib.redirect_stdout(out):
            task = asyncio.create_task(
                namespace["run_shards"](  # type: ignore[operator]
                    gw.app_id,
                    gw.client_secret,
                    stop,
                    api_base=gw.api_base,
                    token_url=gw.token_url,
                    policy=fast_policy(),
                )
            )
            async with asyncio.timeout(15):
                while out.getvalue().count("READY") < 2:
                    await asyncio.sleep(0.02)
            shard, _ = await gw.dispatch_guild("AT_MESSAGE_CREATE", 1 << 22)
            async with asyncio.timeout(5):
                while "AT_MESSAGE_CREATE" not in out.getvalue():
                    await asyncio.sleep(0.02)
            stop.set()
            async with asyncio.timeout(10):
                assert await task == 2
        assert f"shard {shard}: AT_MESSAGE_CREATE" in out.getvalue()

        from qqconn import BotShards

        banned = BotShards(
            app_id=gw.app_id,
            client_secret=gw.client_secret,
            intents=1 << 30,
            shards=1,
            policy=fast_policy(),
            api_base=gw.api_base,
            token_url=gw.token_url,
        )
        with contextlib.redirect_stdout(out):
            task = asyncio.create_task(namespace["run_tenants"]([banned]))  # type: ignore[operator]
            async with asyncio.timeout(10):
                while not banned.all_alive:
                    await asyncio.sleep(0.02)
            await gw.close(4915)
            async with asyncio.timeout(10):
                await task
        assert f"bot {gw.app_id} gave up" in out.getvalue()

    manager, client = namespace["redis_shard"](  # type: ignore[operator]
        "102", "s3cret", 1 << 30, (0, 2), "redis://127.0.0.1:6379/0"
    )
    from qqconn.redis import RedisCheckpoints, RedisIdentifyLimiter

    assert isinstance(manager.permits, RedisIdentifyLimiter)
    assert isinstance(manager.checkpoints, RedisCheckpoints)
    await client.aclose()
