"""The ``qqconn`` command line: ``run`` as a real subprocess against an in-process fake gateway
(stdout JSON lines, the state file, every exit status), ``status`` as a health probe, ``diagram``,
and the promise that neither the secret nor the access token is ever printed.

Every wait is bounded; a subprocess that outlives its test is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from qqconn import cli
from qqconn.testing import FakeGateway

SECRET = "cli-s3cret-never-printed"
HB_MS = 300
#: A small policy (quick threshold 1 s, short backoff) so the FATAL paths take about a second.
POLICY_TOML = """\
[policy]
quick_disconnect_threshold_s = 1.0
max_quick_disconnects = 3
max_reconnect_attempts = 5
backoff_s = [0.05, 0.1]
backoff_jitter = 0.0
connect_timeout_s = 3.0
close_timeout_s = 0.5
rotation_delay_s = [0.0, 0.02]
"""


@dataclass
class Proc:
    """A running ``qqconn run`` and everything it printed so far."""

    proc: asyncio.subprocess.Process
    state_file: Path
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    def state(self) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return doc

    async def until(self, predicate: Any, timeout: float = 15.0) -> None:
        """Wait (bounded) until predicate() holds; fail early if the process died."""
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.proc.returncode is not None:
                    raise AssertionError(f"qqconn run exited {self.proc.returncode}:\n{self.err}")
                await asyncio.sleep(0.02)

    async def exit_status(self, timeout: float = 15.0) -> int:
        async with asyncio.timeout(timeout):
            status = await self.proc.wait()
            await asyncio.gather(*self.readers)
        return status

    @property
    def out(self) -> str:
        return "".join(self.stdout)

    @property
    def err(self) -> str:
        return "".join(self.stderr)


async def _pump(stream: asyncio.StreamReader | None, sink: list[str]) -> None:
    assert stream is not None
    while line := await stream.readline():
        sink.append(line.decode("utf-8", "replace"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QQ_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def qqconn_run(
    gw: FakeGateway,
    tmp_path: Path,
    *extra: str,
    policy: str | None = POLICY_TOML,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Proc]:
    """Start ``python -m qqconn run`` against ``gw``; kill it on the way out if still running."""
    state_file = tmp_path / "state.json"
    args = [
        "--app-id",
        gw.app_id,
        "--api-base",
        gw.api_base,
        "--token-url",
        gw.token_url,
        "--state-file",
        str(state_file),
    ]
    if policy is not None:
        config = tmp_path / "qqconn.toml"
        config.write_text(policy)
        args += ["--config", str(config)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qqconn",
        "run",
        *args,
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(QQ_CLIENT_SECRET=SECRET) if env is None else env,
    )
    p = Proc(proc, state_file)
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


def assert_no_secrets(gw: FakeGateway, *texts: str) -> None:
    """Neither the client secret nor the access token appears anywhere in ``texts``."""
    token = gw.valid_token()
    for text in texts:
        assert SECRET not in text
        assert token not in text


def usage(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; return (status, stdout, stderr)."""
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    """In-process CLI calls configure structlog and the root logger; undo both after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


# -- qqconn run: the four exit statuses -------------------------------------------------------


async def test_run_prints_dispatches_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """`run`: JSON line per dispatch, fresh state file, JSON logs; SIGTERM → exit 0, `stopped`."""
    async with (
        FakeGateway(client_secret=SECRET, heartbeat_interval_ms=HB_MS, seed=3) as gw,
        qqconn_run(
            gw, tmp_path, "--log-format", "json", "--log-level", "debug", "--state-refresh", "0.2"
        ) as p,
    ):
        await p.until(lambda: (p.state() or {}).get("state") == "alive")
        for n in range(3):
            await gw.dispatch("GROUP_AT_MESSAGE_CREATE", {"content": f"hi {n}"})
        await p.until(lambda: len(p.stdout) >= 4)
        first = (p.state() or {}).get("updated_at")
        await p.until(lambda: (p.state() or {}).get("updated_at") != first, timeout=5)

        probe = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "qqconn",
            "status",
            "--state-file",
            str(p.state_file),
            "--max-age",
            "5",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_env(),
        )
        async with asyncio.timeout(15):
            probe_out, _ = await probe.communicate()
        assert probe.returncode == 0, probe_out

        p.proc.send_signal(signal.SIGTERM)
        status = await p.exit_status()
        assert status == 0, p.err
        lines = [json.loads(line) for line in p.stdout]
        assert all(set(doc) == {"shard", "s", "t", "id", "d"} for doc in lines)
        assert all(doc["shard"] == 0 for doc in lines)
        assert lines[0]["t"] == "READY" and lines[0]["s"] == 1
        assert [doc["s"] for doc in lines[1:]] == gw.accepted()
        assert [doc["d"]["content"] for doc in lines[1:]] == ["hi 0", "hi 1", "hi 2"]
        logs = [json.loads(line) for line in p.stderr]  # every stderr line is one JSON object
        assert all({"event", "level", "timestamp"} <= set(doc) for doc in logs)
        events = [doc["event"] for doc in logs]
        assert "qqconn.transition" in events and "qqconn.cli.stopping" in events
        assert (p.state() or {})["state"] == "stopped"
        assert_no_secrets(gw, p.out, p.err, p.state_file.read_text(), probe_out.decode())


async def test_run_exits_75_when_the_quick_drop_limit_is_spent(tmp_path: Path) -> None:
    """Every new socket dropped after 0.1 s: FATAL (retryable) after the 3rd, exit status 75."""
    async with FakeGateway(client_secret=SECRET, heartbeat_interval_ms=HB_MS, seed=4) as gw:
        gw.faults.close_new_sockets(0.1, 50)
        async with qqconn_run(gw, tmp_path, "--log-format", "console") as p:
            status = await p.exit_status()
            assert status == cli.EXIT_FATAL_RETRYABLE == 75, p.err
            assert len(gw.connections) == 3
            state = p.state() or {}
            assert state["state"] == "fatal" and state["fatal"]["retryable"] is True
            assert "qqconn.fatal" in p.err
            assert_no_secrets(gw, p.out, p.err, p.state_file.read_text())


async def test_run_exits_78_when_the_bot_is_taken_down(tmp_path: Path) -> None:
    """Close 4914 on Identify: FATAL, not retryable, exit status 78, no second connection."""
    async with FakeGateway(client_secret=SECRET, heartbeat_interval_ms=HB_MS, seed=5) as gw:
        gw.faults.identify_close = 4914
        async with qqconn_run(gw, tmp_path, "--log-format", "json") as p:
            status = await p.exit_status()
            assert status == cli.EXIT_FATAL_PERMANENT == 78, p.err
            assert len(gw.connections) == 1
            state = p.state() or {}
            assert state["fatal"] == {
                "close_code": 4914,
                "reason": state["fatal"]["reason"],
                "retryable": False,
            }
            exit_line = [json.loads(x) for x in p.stderr if "qqconn.cli.exit" in x][-1]
            assert exit_line["status"] == 78 and exit_line["close_code"] == 4914
            assert_no_secrets(gw, p.out, p.err, p.state_file.read_text())


async def test_run_exits_2_on_an_unknown_policy_key(tmp_path: Path) -> None:
    """A [policy] key that is no Policy field: exit 2 naming it, nothing requested."""
    async with FakeGateway(client_secret=SECRET) as gw:
        bad = POLICY_TOML + "max_quick_drops = 5\n"
        async with qqconn_run(gw, tmp_path, policy=bad) as p:
            status = await p.exit_status()
        assert status == 2
        assert "max_quick_drops" in p.err and "unknown" in p.err
        assert gw.http_requests == []
        assert_no_secrets(gw, p.out, p.err)


async def test_run_exits_2_without_a_secret(tmp_path: Path) -> None:
    """No QQ_CLIENT_SECRET and no --secret-file: exit 2 saying where the secret comes from."""
    async with (
        FakeGateway(client_secret=SECRET) as gw,
        qqconn_run(gw, tmp_path, env=_env()) as p,
    ):
        status = await p.exit_status()
        assert status == 2
        assert "QQ_CLIENT_SECRET" in p.err and "--secret-file" in p.err
        assert gw.http_requests == []


async def test_run_reads_the_secret_from_a_file(tmp_path: Path) -> None:
    """--secret-file works (trailing newline stripped) and the app id may come from QQ_APP_ID."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    async with FakeGateway(client_secret=SECRET, heartbeat_interval_ms=HB_MS, seed=6) as gw:
        gw.faults.identify_close = 4914  # a quick, deterministic end once authenticated
        env = _env(QQ_APP_ID=gw.app_id)
        state_file = tmp_path / "state.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "qqconn",
            "run",
            "--secret-file",
            str(secret_file),
            "--api-base",
            gw.api_base,
            "--token-url",
            gw.token_url,
            "--state-file",
            str(state_file),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            async with asyncio.timeout(15):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 78, err.decode()
        assert gw.identifies == 1  # the token request with the file's secret worked
        assert_no_secrets(gw, out.decode(), err.decode(), state_file.read_text())


# -- qqconn run: usage errors, in-process -----------------------------------------------------


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ("[policy]\nmax_quick_disconnects = 0\n", "max_quick_disconnects"),
        ('[policy]\nbackoff_s = "fast"\n', "backoff_s"),
        ("[policy]\nbogus = 1\n", "bogus"),
        ("[polcy]\nmax_quick_disconnects = 3\n", "polcy"),
        ("[policy\n", "not valid TOML"),
    ],
    ids=["bad-value", "bad-type", "unknown-key", "unknown-table", "bad-toml"],
)
def test_bad_config_is_refused_naming_the_culprit(
    config: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad value, an unknown key or table, or broken TOML: exit 2 with a message naming it."""
    path = tmp_path / "bad.toml"
    path.write_text(config)
    env = {"QQ_CLIENT_SECRET": SECRET}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        status, out, err = usage(["run", "--app-id", "1", "--config", str(path)], capsys)
    assert status == 2 and out == ""
    assert named in err and str(path) in err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--shard", "2/2"], "--shard"),
        (["--shard", "x"], "--shard"),
        (["--intents", "GUILDZ"], "GUILDZ"),
        (["--api-base", "ftp://x"], "--api-base"),
        (["--log-format", "xml"], "--log-format"),
    ],
)
def test_bad_run_options_exit_2(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad --shard, --intents, URL or log format: exit 2 naming the option, nothing started."""
    monkeypatch.setenv("QQ_CLIENT_SECRET", SECRET)
    status, _, err = usage(["run", "--app-id", "1", *argv], capsys)
    assert status == 2 and named in err


@pytest.mark.parametrize(
    "argv", [["--secret", SECRET], [f"--secret={SECRET}"], ["--client-secret", SECRET]]
)
def test_secret_on_the_command_line_is_refused_without_echo(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A secret given as an option is refused (exit 2) and never echoed back."""
    status, out, err = usage(["run", "--app-id", "1", *argv], capsys)
    assert status == 2 and "never taken on the command line" in err
    assert SECRET not in out + err


def test_intents_accept_names_and_integers(monkeypatch: pytest.MonkeyPatch) -> None:
    """--intents takes GUILDS|PUBLIC_GUILD_MESSAGES, a comma list, or an integer mask."""
    monkeypatch.setenv("QQ_CLIENT_SECRET", SECRET)
    parser = cli._build_parser()
    for text, want in (
        ("GUILDS|PUBLIC_GUILD_MESSAGES", 1 | 1 << 30),
        ("guilds, guild_messages", 1 | 1 << 9),
        ("513", 513),
    ):
        args = parser.parse_args(["run", "--app-id", "1", "--intents", text])
        assert cli.run_options(args, os.environ).intents == want
    args = parser.parse_args(["run", "--app-id", "1", "--shard", "3/8"])
    opts = cli.run_options(args, os.environ)
    assert opts.shard == (3, 8) and SECRET not in repr(opts)


def test_help_shows_the_drivers_real_endpoints() -> None:
    """--help names the driver's default API base and token URL (kept in step by this test)."""
    from qqconn.driver import DEFAULT_API_BASE, DEFAULT_TOKEN_URL

    assert (cli.HELP_API_BASE, cli.HELP_TOKEN_URL) == (DEFAULT_API_BASE, DEFAULT_TOKEN_URL)


def test_json_logs_are_one_object_per_line_and_redact_the_secret() -> None:
    """configure_logging('json'): one JSON object per line, the secret replaced by ***."""
    stream = io.StringIO()
    cli.configure_logging("json", "info", stream=stream, redact=[SECRET])
    log = structlog.get_logger("qqconn")
    log.info("qqconn.test", detail=f"echoed {SECRET} by a server")
    log.debug("qqconn.hidden")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["event"] == "qqconn.test" and doc["level"] == "info"
    assert SECRET not in lines[0] and "***" in doc["detail"]


# -- qqconn diagram ---------------------------------------------------------------------------


def test_diagram_mermaid_to_stdout_and_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """diagram --format mermaid writes the machine's chart to stdout, or to -o FILE."""
    status, out, _ = usage(["diagram", "--format", "mermaid"], capsys)
    assert status == 0
    assert "stateDiagram-v2" in out and "QUICK_DROPPED" in out
    target = tmp_path / "chart.mmd"
    status, out, _ = usage(["diagram", "--format", "mermaid", "-o", str(target)], capsys)
    assert status == 0 and out == ""
    assert target.read_text() == usage(["diagram"], capsys)[1]


def test_python_dash_m_qqconn_without_a_command_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No subcommand: exit 2 with argparse's message."""
    status, _, err = usage([], capsys)
    assert status == 2 and "COMMAND" in err


# -- the README's operator examples -----------------------------------------------------------

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_the_readme_systemd_unit_never_restarts_a_configuration_error() -> None:
    """The README's unit: Restart=on-failure, but not on exit 2 (usage) or 78 (FATAL permanent)."""
    unit = README.split("/etc/systemd/system/qqconn.service", 1)[1].split("[Install]", 1)[0]
    settings = dict(
        line.strip().split("=", 1)
        for line in unit.splitlines()
        if "=" in line and not line.strip().startswith("#")
    )
    assert settings["Restart"] == "on-failure"
    prevented = {int(code) for code in settings["RestartPreventExitStatus"].split()}
    assert prevented == {cli.EXIT_USAGE, cli.EXIT_FATAL_PERMANENT} == {2, 78}
