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
from qqconn.cli.output import EventSink, output_checkpoint
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
        'object per dispatch ({"s", "t", "id", "d"}) on stdout, logs on stderr. The secret comes '
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
        "--shard", default="0/1", metavar="ID/COUNT", help="shard to connect (default: 0/1)"
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
    shard = parse_shard(args.shard)
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
    )


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
    from qqconn.errors import ConfigError, FatalError

    log = structlog.get_logger("qqconn.cli")
    stream: TextIO = sys.stdout
    checkpoint = None
    if opts.output is not None:
        try:
            checkpoint = output_checkpoint(opts.output, opts.policy.resume_window_s, log)
            stream = opts.output.open("a", encoding="utf-8")
        except OSError as exc:  # the path changed since it was checked
            print(
                f"qqconn run: --output {opts.output}: cannot open: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return EXIT_USAGE
    stopping: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()

    def stop() -> None:
        if not stopping:
            stopping.append(loop.create_task(mgr.stop(), name="qqconn-cli-stop"))

    def on_signal(signame: str) -> None:
        if stopping:
            log.warning("qqconn.cli.already_stopping", signal=signame)
            return
        log.info("qqconn.cli.stopping", signal=signame)
        stop()

    sink = EventSink(stream, log, on_closed=stop)
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
    try:
        mgr = ConnectionManager(
            app_id=opts.app_id,
            client_secret=opts.secret,
            intents=opts.intents,
            shard=opts.shard,
            policy=opts.policy,
            api_base=opts.api_base or DEFAULT_API_BASE,
            token_url=opts.token_url or DEFAULT_TOKEN_URL,
            on_dispatch=sink.write,
            on_state_change=ops.on_state_change if ops is not None else None,
            state_file=opts.state_file,
            resume_from=checkpoint,
            metrics=metrics,
        )
    except ConfigError as exc:
        print(f"qqconn run: {exc}", file=sys.stderr)
        if ops is not None:
            await ops.stop()
        return EXIT_USAGE
    if ops is not None:
        ops.watch(mgr)  # the manager feeds the metrics itself

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    refresher = None
    if opts.state_file is not None and opts.state_refresh_s > 0:
        refresher = loop.create_task(
            _refresh_state_file(mgr, opts.state_refresh_s), name="qqconn-cli-state-refresh"
        )
    log.info(
        "qqconn.cli.started",
        shard=f"{opts.shard[0]}/{opts.shard[1]}",
        intents=opts.intents,
        state_file=str(opts.state_file) if opts.state_file else None,
    )
    try:
        await mgr.run()
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
        if stream is not sys.stdout:
            stream.close()
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for task in stopping:
            with contextlib.suppress(Exception):
                await task
        if ops is not None:
            await ops.stop()
    status = EXIT_STDOUT_CLOSED if sink.closed else EXIT_OK
    log.info("qqconn.cli.exit", status=status, state=mgr.state.value)
    return status


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
