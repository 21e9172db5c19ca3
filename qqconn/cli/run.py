"""``qqconn run``: connect for real, one JSON line per event, exit with a status a supervisor reads.

Everything the run needs is validated first (:func:`run_options`: identity, secret, intents,
shard, policy, URLs, and every path it will write); only then is the driver imported and the
connection opened. See :mod:`qqconn.cli` for the exit statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from qqconn.cli import paths
from qqconn.cli.logs import configure_logging
from qqconn.cli.options import (
    DEFAULT_INTENTS,
    DEFAULT_STATE_REFRESH_S,
    ENV_APP_ID,
    EXIT_FATAL_PERMANENT,
    EXIT_FATAL_RETRYABLE,
    EXIT_OK,
    EXIT_STDOUT_CLOSED,
    EXIT_USAGE,
    HELP_API_BASE,
    HELP_TOKEN_URL,
    UsageError,
    load_policy,
    parse_shard,
    positive_float,
)
from qqconn.cli.output import EventSink, output_checkpoint, output_checkpoints
from qqconn.cli.secrets import ENV_SECRET, read_secret

if TYPE_CHECKING:
    from qqconn.policy import Policy

__all__ = ["RunOptions", "add_parser", "cmd_run", "run_options"]


def add_parser(sub: Any) -> None:
    """Add ``run`` to the subcommands."""
    run = sub.add_parser(
        "run",
        help="connect for real: one JSON line per event on stdout, logs on stderr",
        description="Connect to the QQ gateway and keep the connection alive. Prints one JSON "
        'object per dispatch ({"shard", "s", "t", "id", "d"}) on stdout, logs on stderr. The secret comes '
        f"from ${ENV_SECRET} or --secret-file, never from the command line. Exit: 0 stopped by "
        "SIGINT/SIGTERM, 75 FATAL retryable, 78 FATAL not retryable, 2 usage/config error.",
        allow_abbrev=False,
    )
    run.add_argument("--app-id", metavar="ID", help=f"the bot's AppID (default: ${ENV_APP_ID})")
    run.add_argument(
        "--secret-file",
        metavar="FILE",
        help=f"read the client secret from FILE (default: ${ENV_SECRET})",
    )
    run.add_argument("--api-base", metavar="URL", help=f"REST API base (default: {HELP_API_BASE})")
    run.add_argument(
        "--token-url", metavar="URL", help=f"access-token endpoint (default: {HELP_TOKEN_URL})"
    )
    run.add_argument(
        "--intents",
        default=DEFAULT_INTENTS,
        metavar="INTENTS",
        help="intent names joined by | or , (GUILDS|PUBLIC_GUILD_MESSAGES) or an integer "
        f"(default: {DEFAULT_INTENTS})",
    )
    run.add_argument(
        "--shard", default=None, metavar="ID/COUNT", help="the one shard to connect (default: 0/1)"
    )
    run.add_argument(
        "--shards",
        metavar="auto|N",
        help="connect every shard of the bot in this process: auto (the count /gateway/bot "
        "recommends) or N; with several shards --state-file holds them all (qqconn status "
        "is healthy only when every shard is alive). Not with --shard",
    )
    run.add_argument(
        "--redis",
        metavar="URL",
        help="share the identify limiter and the resume checkpoints with every process of "
        "this bot through Redis (redis://HOST:PORT/DB); a shard restarted elsewhere Resumes "
        "from it; needs qqconn[redis]",
    )
    run.add_argument(
        "--config", metavar="FILE", help="TOML file with a [policy] table (Policy field names)"
    )
    run.add_argument(
        "--state-file", metavar="FILE", help="keep a JSON snapshot here (for qqconn status)"
    )
    run.add_argument(
        "--state-refresh",
        type=positive_float("--state-refresh", allow_zero=True),
        default=DEFAULT_STATE_REFRESH_S,
        metavar="SECONDS",
        help="rewrite the state file at least this often, so status can spot a hung "
        f"process (default: {DEFAULT_STATE_REFRESH_S:g}; 0: only on state changes)",
    )
    run.add_argument(
        "--output",
        metavar="FILE",
        help="append each event to FILE (one JSON line) instead of stdout; FILE is also the "
        "resume checkpoint: a restart resumes after its last complete line, so across a crash "
        "every event is written exactly once",
    )
    run.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve /metrics, /livez, /readyz and the live status page / on HOST:PORT "
        "(127.0.0.1:9100, [::1]:9100, :9100 for every interface; port 0 picks a free one, "
        "logged as qqconn.cli.http); needs qqconn[ops,metrics]",
    )
    run.add_argument(
        "--log-format",
        choices=("console", "json"),
        default="console",
        help="stderr log format: console (for people) or json (one object per line)",
    )
    run.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="lowest level logged (default: info)",
    )
    run.set_defaults(func=cmd_run)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Everything ``qqconn run`` needs, validated."""

    app_id: str
    secret: str
    intents: int
    shard: tuple[int, int]
    policy: Policy
    api_base: str | None
    token_url: str | None
    state_file: Path | None
    state_refresh_s: float
    output: Path | None
    #: ``--http``: where the ops endpoints listen (None: nowhere).
    http: tuple[str, int] | None
    log_format: str
    log_level: str
    #: ``--shards``: "auto", a count, or None (one shard, ``shard``).
    shards: int | str | None = None
    #: ``--redis``: the Redis URL (None: this process's own limiter, the state file only).
    redis: str | None = None

    def __repr__(self) -> str:  # never the secret
        return f"RunOptions(app_id={self.app_id!r}, shard={self.shard}, intents={self.intents})"


def _check_url(option: str, url: str | None) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"{option}: must be an http(s) URL, got {url!r}")
    if not parts.hostname:
        raise UsageError(f"{option}: {url!r} names no host (e.g. https://host.example/path)")


def run_options(args: argparse.Namespace, env: Mapping[str, str]) -> RunOptions:
    """Validate ``qqconn run``'s arguments (and environment) into :class:`RunOptions`.

    Every problem that can be found without connecting is found here, as a
    :class:`~qqconn.cli.options.UsageError` naming the option: the paths to write are tried.
    """
    from qqconn.policy import Policy
    from qqconn.protocol import Intents

    app_id = (args.app_id or env.get(ENV_APP_ID, "")).strip()
    if not app_id:
        raise UsageError(f"no AppID: use --app-id ID or set {ENV_APP_ID}")
    secret = read_secret(args.secret_file, env)
    try:
        intents = Intents.parse(args.intents)
    except ValueError as exc:
        raise UsageError(f"--intents: {exc}") from None
    if args.shards is not None and args.shard is not None:
        raise UsageError("--shards and --shard do not go together: pick one")
    shard = parse_shard(args.shard or "0/1")
    shards = _parse_shards(args.shards) if args.shards is not None else None
    redis = _check_redis(args.redis) if args.redis is not None else None
    policy = load_policy(args.config) if args.config else Policy()
    _check_url("--api-base", args.api_base)
    _check_url("--token-url", args.token_url)
    state_file = Path(args.state_file) if args.state_file else None
    output = Path(args.output) if args.output else None
    paths.check_distinct(state_file, output)
    if state_file is not None:
        paths.check_state_file(state_file)
    if output is not None:
        paths.check_output(output)
    http = _check_http(args.http) if args.http is not None else None
    return RunOptions(
        app_id=app_id,
        secret=secret,
        intents=intents,
        shard=shard,
        policy=policy,
        api_base=args.api_base,
        token_url=args.token_url,
        state_file=state_file,
        state_refresh_s=args.state_refresh,
        output=output,
        http=http,
        log_format=args.log_format,
        log_level=args.log_level,
        shards=shards,
        redis=redis,
    )


def _parse_shards(text: str) -> int | str:
    """``--shards auto|N``."""
    from qqconn.driver.shards import MAX_SHARDS

    if text.strip().lower() == "auto":
        return "auto"
    try:
        count = int(text)
    except ValueError:
        raise UsageError(f"--shards: expected auto or a count such as 4, got {text!r}") from None
    if not 1 <= count <= MAX_SHARDS:
        raise UsageError(f"--shards: need 1 ≤ N ≤ {MAX_SHARDS}, got {text!r}")
    return count


def _check_redis(url: str) -> str:
    """``--redis URL``: a usable URL, and redis-py installed (else a usage error)."""
    try:
        import redis  # noqa: F401
    except ImportError:
        raise UsageError(
            "--redis: needs the Python package 'redis': pip install 'qqconn[redis]'"
        ) from None
    from qqconn.errors import ConfigError
    from qqconn.redis import check_url

    try:
        return check_url(url)
    except ConfigError as exc:
        raise UsageError(f"--redis: {str(exc).removeprefix('redis: ')}") from None


def _check_http(text: str) -> tuple[str, int]:
    """``--http HOST:PORT`` → ``(host, port)``; UsageError for a bad address or a missing
    extra (the port itself is bound before connecting, in :func:`_run`)."""
    from qqconn.errors import ConfigError
    from qqconn.ops.server import parse_address

    try:
        address = parse_address(text, option="--http")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    for module, extra in (("uvicorn", "ops"), ("prometheus_client", "metrics")):
        try:
            __import__(module)
        except ImportError:
            raise UsageError(
                f"--http: needs the Python package {module!r}: pip install 'qqconn[{extra}]'"
            ) from None
    return address


def cmd_run(args: argparse.Namespace) -> int:
    """``qqconn run``: validate, configure logging, run until stopped or FATAL."""
    opts = run_options(args, os.environ)
    configure_logging(opts.log_format, opts.log_level, redact=[opts.secret])
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(encoding="utf-8")  # type: ignore[union-attr]
    return asyncio.run(_run(opts))


async def _run(opts: RunOptions) -> int:
    import structlog

    from qqconn.driver import DEFAULT_API_BASE, DEFAULT_TOKEN_URL, ConnectionManager
    from qqconn.driver.shards import BotShards
    from qqconn.errors import ConfigError, FatalError

    log = structlog.get_logger("qqconn.cli")
    stream: TextIO = sys.stdout
    several = opts.shards is not None
    resume_from = None
    resumes: dict[int, tuple[str, int | None]] = {}
    if opts.output is not None:
        try:
            if several:
                resumes = output_checkpoints(opts.output, opts.policy.resume_window_s, log)
            else:
                resume_from = output_checkpoint(
                    opts.output, opts.policy.resume_window_s, log, shard=opts.shard[0]
                )
            stream = opts.output.open("a", encoding="utf-8")
        except OSError as exc:  # the path changed since it was checked
            print(
                f"qqconn run: --output {opts.output}: cannot open: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return EXIT_USAGE
    stopping: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    runner: Any = None  # the ConnectionManager, or the BotShards

    def stop() -> None:
        if not stopping and runner is not None:
            stopping.append(loop.create_task(runner.stop(), name="qqconn-cli-stop"))

    def on_signal(signame: str) -> None:
        if stopping:
            log.warning("qqconn.cli.already_stopping", signal=signame)
            return
        log.info("qqconn.cli.stopping", signal=signame)
        stop()

    sink = EventSink(stream, log, on_closed=stop, shard=opts.shard[0])
    ops = metrics = None
    if opts.http is not None:
        from qqconn.metrics import Metrics
        from qqconn.ops import OpsServer

        metrics = Metrics()
        try:
            ops = OpsServer(metrics=metrics, host=opts.http[0], port=opts.http[1])
            await ops.start()  # before connecting: a busy port is a usage error, exit 2
        except ConfigError as exc:
            print(f"qqconn run: --http: {str(exc).removeprefix('http: ')}", file=sys.stderr)
            if stream is not sys.stdout:
                stream.close()
            return EXIT_USAGE
        log.info("qqconn.cli.http", url=ops.url)
    shared = _Shared(opts)
    common: dict[str, Any] = {
        "app_id": opts.app_id,
        "client_secret": opts.secret,
        "intents": opts.intents,
        "policy": opts.policy,
        "api_base": opts.api_base or DEFAULT_API_BASE,
        "token_url": opts.token_url or DEFAULT_TOKEN_URL,
        "metrics": metrics,
        "permits": shared.permits,
        "checkpoints": shared.checkpoints,
    }
    try:
        if several:
            runner = BotShards(
                shards=opts.shards,  # type: ignore[arg-type]
                on_dispatch=sink.write_shard,
                on_state_change=_shard_changes(ops, opts.state_file, lambda: runner),
                on_shard_fatal="stop_all",
                resume_from=resumes,
                **common,
            )
        else:
            runner = ConnectionManager(
                shard=opts.shard,
                on_dispatch=sink.write,
                on_state_change=ops.on_state_change if ops is not None else None,
                state_file=opts.state_file,
                resume_from=resume_from,
                **common,
            )
    except ConfigError as exc:
        print(f"qqconn run: {exc}", file=sys.stderr)
        if ops is not None:
            await ops.stop()
        await shared.aclose()
        return EXIT_USAGE
    if ops is not None and not several:
        ops.watch(runner)  # the manager feeds the metrics itself

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    helpers: list[asyncio.Task[None]] = []
    if several:
        helpers.append(
            loop.create_task(
                _watch_shards(runner, ops, opts, stream if opts.output is not None else None, log),
                name="qqconn-cli-shards",
            )
        )
    elif opts.state_file is not None and opts.state_refresh_s > 0:
        helpers.append(
            loop.create_task(
                _refresh_state_file(runner, opts.state_refresh_s), name="qqconn-cli-state-refresh"
            )
        )
    log.info(
        "qqconn.cli.started",
        shard=f"{opts.shard[0]}/{opts.shard[1]}" if not several else None,
        shards=opts.shards,
        intents=opts.intents,
        state_file=str(opts.state_file) if opts.state_file else None,
        redis=opts.redis is not None,
    )
    try:
        await runner.run()
    except FatalError as exc:
        status = EXIT_FATAL_RETRYABLE if exc.retryable else EXIT_FATAL_PERMANENT
        log.error(
            "qqconn.cli.exit",
            status=status,
            reason=exc.reason,
            close_code=exc.close_code,
            retryable=exc.retryable,
        )
        return status
    finally:
        for task in helpers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if several and opts.state_file is not None:
            _write_shards_file(runner, opts.state_file, log)
        if stream is not sys.stdout:
            stream.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for task in stopping:
            with contextlib.suppress(Exception):
                await task
        if ops is not None:
            await ops.stop()
        await shared.aclose()
    status = EXIT_STDOUT_CLOSED if sink.closed else EXIT_OK
    state = runner.snapshot()["state"] if several else runner.state.value
    log.info("qqconn.cli.exit", status=status, state=state)
    return status


class _Shared:
    """``--redis``: the limiter and the checkpoint store every process of the bot shares."""

    def __init__(self, opts: RunOptions) -> None:
        self.permits: Any = None
        self.checkpoints: Any = None
        self._client: Any = None
        if opts.redis is None:
            return
        from qqconn.redis import RedisCheckpoints, RedisIdentifyLimiter, redis_client

        self._client = redis_client(opts.redis)
        self.permits = RedisIdentifyLimiter(
            self._client, app_id=opts.app_id, window_s=opts.policy.identify_window_s
        )
        self.checkpoints = RedisCheckpoints(
            self._client, ttl_s=max(opts.policy.resume_window_s, 60.0)
        )

    async def aclose(self) -> None:
        if self.checkpoints is not None:
            await self.checkpoints.flush(1.0)
            await self.checkpoints.aclose()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()


def _shard_changes(ops: Any, state_file: Path | None, bot: Any) -> Any:
    """BotShards' ``on_state_change``: the ops board hears it, the state file is rewritten."""
    from qqconn._log import get_logger

    log = get_logger("qqconn.cli")

    def changed(shard_id: int, change: Any) -> None:
        if ops is not None:
            ops.on_state_change(change)
        if state_file is not None:
            _write_shards_file(bot(), state_file, log)

    return changed


def _write_shards_file(bot: Any, path: Path, log: Any) -> None:
    """The state file of several shards: every shard's snapshot under ``"shards"``."""
    from qqconn.driver.statefile import StateFile

    StateFile(path, log=log).write(bot.state_document())


async def _watch_shards(bot: Any, ops: Any, opts: RunOptions, output: Any, log: Any) -> None:
    """Once the shards exist: the ops board watches each; the state file is rewritten every
    ``--state-refresh`` seconds."""
    await bot.started()
    if ops is not None:
        for manager in bot.managers.values():
            ops.watch(manager)
    if opts.state_file is None:
        return
    _write_shards_file(bot, opts.state_file, log)
    every = opts.state_refresh_s
    while every > 0:
        await asyncio.sleep(every)
        _write_shards_file(bot, opts.state_file, log)


async def _refresh_state_file(mgr: Any, every_s: float) -> None:
    """Rewrite the state file every ``every_s`` so its ``updated_at`` shows the process lives.

    The manager already refreshes it on heartbeat ACKs; this bounds the age even when
    heartbeats are slower than ``every_s``. The write is one synchronous step on the loop
    (the manager's own writer), so it cannot interleave with a write on a state change.
    """
    while True:
        await asyncio.sleep(every_s)
        if mgr.machine.is_terminal:
            return
        mgr.write_state_file()
