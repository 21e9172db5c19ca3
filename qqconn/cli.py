"""The ``qqconn`` command: ``demo``, ``run``, ``status`` and ``diagram``.

The library never configures logging; this module does, for ``run`` (structlog to stderr,
console or JSON lines) and for ``demo`` (the live view). Heavy imports (the driver, websockets,
httpx, the fake gateway, the statecharts) happen inside the subcommand that needs them, so
``qqconn status`` stays cheap enough for a health probe.

Exit statuses of ``run`` (the contract a supervisor relies on):

* 0  — stopped by SIGINT/SIGTERM (state ``stopped``);
* 75 — FATAL, retryable (EX_TEMPFAIL): the reconnect budget or the quick-drop limit was spent;
* 78 — FATAL, not retryable (EX_CONFIG): banned/offline bot, bad shard or intents, credentials
  refused again after a token refresh;
* 2  — usage or configuration error (nothing was started);
* 1  — stdout was closed by its reader (the manager is stopped cleanly first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

if TYPE_CHECKING:
    from qqconn.policy import Policy

__all__ = [
    "EXIT_FATAL_PERMANENT",
    "EXIT_FATAL_RETRYABLE",
    "EXIT_OK",
    "EXIT_USAGE",
    "main",
]

EXIT_OK = 0
#: ``status``: the connection is not alive (or the file is stale); ``diagram``: cannot render.
EXIT_NOT_ALIVE = 1
EXIT_USAGE = 2
#: stdout was closed by its reader (a pipe's far end went away).
EXIT_STDOUT_CLOSED = 1
#: sysexits.h EX_TEMPFAIL: try again later.
EXIT_FATAL_RETRYABLE = 75
#: sysexits.h EX_CONFIG: restarting will not help until someone changes something.
EXIT_FATAL_PERMANENT = 78

ENV_APP_ID = "QQ_APP_ID"
ENV_SECRET = "QQ_CLIENT_SECRET"
DEFAULT_INTENTS = "PUBLIC_GUILD_MESSAGES"
#: The driver's defaults, repeated so that ``--help`` does not import the driver (a test keeps
#: them equal to ``qqconn.driver.DEFAULT_API_BASE`` / ``DEFAULT_TOKEN_URL``).
HELP_API_BASE = "https://api.sgroup.qq.com"
HELP_TOKEN_URL = "https://bots.qq.com/app/getAppAccessToken"
#: ``run`` rewrites the state file at least this often, so ``status --max-age`` can tell a hung
#: process from a quiet, healthy one (the manager itself writes only on state changes).
DEFAULT_STATE_REFRESH_S = 10.0

#: Shorter strings are not redacted from log lines (QQ AppSecrets are 32 characters).
MIN_REDACT_LEN = 8

#: Options that would put the secret on the command line (visible in ps, shell history).
_SECRET_FLAGS = ("--secret", "--client-secret", "--client_secret", "--app-secret")


class UsageError(Exception):
    """A usage or configuration problem: reported on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors raise UsageError (so main() decides the exit status and message)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


# -- entry point --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``qqconn`` command line; return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        _refuse_secret_on_command_line(args_list)
        args = parser.parse_args(args_list)
        command: Callable[[argparse.Namespace], int] = args.func
        return command(args)
    except UsageError as exc:
        print(f"qqconn: {exc}" if not str(exc).startswith("qqconn") else str(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`qqconn demo | head`): stop quietly, as `cat` would.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_STDOUT_CLOSED


def _refuse_secret_on_command_line(argv: Sequence[str]) -> None:
    """Refuse ``--secret VALUE`` before argparse echoes VALUE in an "unrecognized" message."""
    for arg in argv:
        if arg == "--":
            return
        name = arg.split("=", 1)[0]
        if name in _SECRET_FLAGS:
            raise UsageError(
                f"the client secret is never taken on the command line ({name} refused); "
                f"set {ENV_SECRET} or use --secret-file FILE"
            )


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qqconn",
        description="Keeps a QQ Bot gateway connection alive, and says when it cannot.",
        allow_abbrev=False,  # else "--secret X" would silently mean "--secret-file X"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="the guided tour against the embedded fake gateway (no network, no credentials)",
        description="Play the failures qqconn exists for against the embedded fake gateway, "
        "show every transition live, and judge the result against behaviour.md. "
        "Exit 0 when every check passed, 1 otherwise.",
        allow_abbrev=False,
    )
    demo.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        choices=_scenario_names(),
        help="play only this scenario (repeatable): " + ", ".join(_scenario_names()),
    )
    demo.add_argument(
        "--slow",
        type=_positive_float("--slow"),
        default=1.0,
        metavar="FACTOR",
        help="stretch every duration (timers, policy, pauses) by FACTOR, e.g. 3 to watch",
    )
    demo.add_argument(
        "--path",
        action="store_true",
        help="print the path each scenario took through the state diagram",
    )
    demo.add_argument("--no-color", action="store_true", help="no ANSI colours")
    demo.set_defaults(func=_cmd_demo)

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
        type=_positive_float("--state-refresh", allow_zero=True),
        default=DEFAULT_STATE_REFRESH_S,
        metavar="SECONDS",
        help="rewrite the state file at least this often, so status --max-age can spot a hung "
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
    run.set_defaults(func=_cmd_run)

    status = sub.add_parser(
        "status",
        help="print a state file; exit 0 only when the connection is alive (a health probe)",
        description="Print the snapshot `qqconn run --state-file` keeps. Exit 0 when the state "
        "is alive (and, with --max-age, the file is fresh), 1 when it is not, 2 when the file "
        "is missing or unreadable.",
        allow_abbrev=False,
    )
    status.add_argument(
        "--state-file", required=True, metavar="FILE", help="the file `qqconn run` keeps"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.add_argument(
        "--max-age",
        type=_positive_float("--max-age"),
        metavar="SECONDS",
        help="also fail when the file was last written more than SECONDS ago",
    )
    status.set_defaults(func=_cmd_status)

    diagram = sub.add_parser(
        "diagram",
        help="write the connection machine's statechart (mermaid, dot or svg)",
        description="Render the state machine's chart from the very table that runs it.",
        allow_abbrev=False,
    )
    diagram.add_argument("--format", choices=("mermaid", "dot", "svg"), default="mermaid")
    diagram.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    diagram.set_defaults(func=_cmd_diagram)
    return parser


def _scenario_names() -> list[str]:
    # The names are fixed; listing them here keeps `qqconn status` from importing the demo.
    return ["rotation", "zombie", "half-open", "seeds-loop"]


def _positive_float(option: str, *, allow_zero: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(
                f"must be {'≥ 0' if allow_zero else '> 0'}, got {text!r}"
            )
        return value

    parse.__name__ = option  # argparse names the type in its messages
    return parse


# -- demo -----------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from qqconn.demo import run_demo

    report = asyncio.run(
        run_demo(
            args.scenario,
            slow=args.slow,
            show_path=args.path,
            color=False if args.no_color else None,
        )
    )
    if report.output_closed:
        return EXIT_STDOUT_CLOSED
    if report.ok:
        return EXIT_OK
    print(
        "qqconn demo: qqconn did not behave as behaviour.md requires:\n"
        + "\n".join(f"  - {line}" for line in report.failures()),
        file=sys.stderr,
    )
    return 1


# -- run ------------------------------------------------------------------------------------------


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
    log_format: str
    log_level: str

    def __repr__(self) -> str:  # never the secret
        return f"RunOptions(app_id={self.app_id!r}, shard={self.shard}, intents={self.intents})"


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read a TOML file's ``[policy]`` table into a :class:`~qqconn.Policy`.

    Raises :class:`UsageError` naming the file and the offending key for an unreadable file,
    invalid TOML, an unknown table or key, or a bad value.
    """
    from qqconn.errors import ConfigError
    from qqconn.policy import Policy

    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"config {path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path}: not valid TOML: {exc}") from None
    unknown = [key for key in doc if key != "policy"]
    if unknown:
        raise UsageError(
            f"config {path}: unknown key or table {unknown[0]!r} (only [policy] is read)"
        )
    table = doc.get("policy", {})
    if not isinstance(table, dict):
        raise UsageError(f"config {path}: 'policy' must be a table ([policy])")
    try:
        return Policy.from_mapping(table)
    except ConfigError as exc:
        raise UsageError(f"config {path}: policy.{exc}") from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"config {path}: [policy]: {exc}") from None


def _parse_shard(text: str) -> tuple[int, int]:
    parts = text.split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        shard = (int(parts[0]), int(parts[1]))
    except ValueError:
        raise UsageError(f"--shard: expected ID/COUNT such as 0/1, got {text!r}") from None
    if not 0 <= shard[0] < shard[1]:
        raise UsageError(f"--shard: need 0 ≤ ID < COUNT, got {text!r}")
    return shard


def _read_secret(secret_file: str | None, env: Mapping[str, str]) -> str:
    if secret_file is not None:
        try:
            secret = Path(secret_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise UsageError(f"--secret-file {secret_file}: cannot read: {reason}") from None
        if not secret:
            raise UsageError(f"--secret-file {secret_file}: the file is empty")
        return secret
    secret = env.get(ENV_SECRET, "").strip()
    if not secret:
        raise UsageError(
            f"no client secret: set {ENV_SECRET} or use --secret-file FILE "
            "(it is never taken on the command line)"
        )
    return secret


def run_options(args: argparse.Namespace, env: Mapping[str, str]) -> RunOptions:
    """Validate ``qqconn run``'s arguments (and environment) into :class:`RunOptions`."""
    from qqconn.policy import Policy
    from qqconn.protocol import Intents

    app_id = (args.app_id or env.get(ENV_APP_ID, "")).strip()
    if not app_id:
        raise UsageError(f"no AppID: use --app-id ID or set {ENV_APP_ID}")
    secret = _read_secret(args.secret_file, env)
    try:
        intents = Intents.parse(args.intents)
    except ValueError as exc:
        raise UsageError(f"--intents: {exc}") from None
    policy = load_policy(args.config) if args.config else Policy()
    for option, url in (("--api-base", args.api_base), ("--token-url", args.token_url)):
        if url is not None and not url.startswith(("http://", "https://")):
            raise UsageError(f"{option}: must be an http(s) URL, got {url!r}")
    return RunOptions(
        app_id=app_id,
        secret=secret,
        intents=intents,
        shard=_parse_shard(args.shard),
        policy=policy,
        api_base=args.api_base,
        token_url=args.token_url,
        state_file=Path(args.state_file) if args.state_file else None,
        state_refresh_s=args.state_refresh,
        output=Path(args.output) if args.output else None,
        log_format=args.log_format,
        log_level=args.log_level,
    )


def configure_logging(
    fmt: str, level: str = "info", *, stream: TextIO | None = None, redact: Sequence[str] = ()
) -> None:
    """Configure structlog (and route the stdlib's warnings through it) for ``qqconn run``.

    ``console``: aligned, coloured when ``stream`` is a terminal. ``json``: one JSON object per
    line with ``timestamp``, ``level`` and ``event``. Every string in ``redact`` (of at least
    :data:`MIN_REDACT_LEN` characters: a shorter one would mangle ordinary words) is replaced by
    ``***`` in every value, a last line of defence behind the library's own care.
    """
    import structlog

    out = sys.stderr if stream is None else stream
    levelno = logging.getLevelNamesMapping()[level.upper()]
    secrets = [s for s in redact if len(s) >= MIN_REDACT_LEN]

    def scrub(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        if secrets:
            for key, value in event.items():
                if isinstance(value, str) and any(s in value for s in secrets):
                    for s in secrets:
                        value = value.replace(s, "***")
                    event[key] = value
        return event

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors += [
            structlog.processors.format_exc_info,
            scrub,
            structlog.processors.JSONRenderer(ensure_ascii=False, default=str),
        ]
    else:
        processors += [scrub, structlog.dev.ConsoleRenderer(colors=out.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )

    class _ToStructlog(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                structlog.get_logger(record.name).log(
                    record.levelno, f"{record.name}.log", message=record.getMessage()[:500]
                )
            except Exception:
                self.handleError(record)

    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(max(levelno, logging.WARNING))  # httpx's per-request INFO lines stay out


def output_checkpoint(path: Path, resume_window_s: float, log: Any) -> tuple[str, int] | None:
    """The resume checkpoint an ``--output`` file holds: the session of its last READY line and
    the ``s`` of its last complete line. A torn last line (the process died mid-write) is cut
    off first: it was never completely written, so its event will be replayed.

    None when the file is missing, empty, older than ``resume_window_s``, or holds no READY.
    """
    try:
        data = path.read_bytes()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with path.open("r+b") as fh:
            fh.truncate(len(complete))
        log.warning("qqconn.cli.output_torn_line_removed", bytes=len(data) - len(complete))
    if age > resume_window_s:
        log.info("qqconn.cli.output_too_old_to_resume", age_s=round(age, 1))
        return None
    last_seq: int | None = None
    for raw in reversed(complete.splitlines()):
        try:
            doc = json.loads(raw)
        except ValueError:
            log.warning(
                "qqconn.cli.output_unreadable_line", line=raw[:80].decode("utf-8", "replace")
            )
            return None
        if last_seq is None:
            if not isinstance(doc, dict) or type(doc.get("s")) is not int:
                return None
            last_seq = doc["s"]
        if isinstance(doc, dict) and doc.get("t") == "READY":
            sid = doc.get("d", {}).get("session_id") if isinstance(doc.get("d"), dict) else None
            return (sid, last_seq) if isinstance(sid, str) and sid else None
    return None


def _cmd_run(args: argparse.Namespace) -> int:
    opts = run_options(args, os.environ)
    configure_logging(opts.log_format, opts.log_level, redact=[opts.secret])
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(encoding="utf-8")  # type: ignore[union-attr]
    return asyncio.run(_run(opts))


async def _run(opts: RunOptions) -> int:
    import structlog

    from qqconn.driver import DEFAULT_API_BASE, DEFAULT_TOKEN_URL, ConnectionManager
    from qqconn.errors import ConfigError, FatalError
    from qqconn.protocol import Dispatch

    log = structlog.get_logger("qqconn.cli")
    out: TextIO = sys.stdout
    checkpoint = None
    if opts.output is not None:
        checkpoint = output_checkpoint(opts.output, opts.policy.resume_window_s, log)
        out = opts.output.open("a", encoding="utf-8")
    stdout_closed: list[bool] = []
    stopping: list[asyncio.Task[None]] = []

    def on_dispatch(d: Dispatch) -> None:
        if stdout_closed:
            return
        line = json.dumps(
            {"s": d.seq, "t": d.type, "id": d.event_id, "d": d.data},
            ensure_ascii=False,
            separators=(",", ":"),
            default=str,
        )
        try:
            out.write(line + "\n")
            out.flush()
        except (BrokenPipeError, ValueError):  # the reader of stdout is gone: stop, do not spin
            stdout_closed.append(True)
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            log.error("qqconn.cli.stdout_closed", seq=d.seq)
            if not stopping:
                stopping.append(asyncio.get_running_loop().create_task(mgr.stop()))

    try:
        mgr = ConnectionManager(
            app_id=opts.app_id,
            client_secret=opts.secret,
            intents=opts.intents,
            shard=opts.shard,
            policy=opts.policy,
            api_base=opts.api_base or DEFAULT_API_BASE,
            token_url=opts.token_url or DEFAULT_TOKEN_URL,
            on_dispatch=on_dispatch,
            state_file=opts.state_file,
            resume_from=checkpoint,
        )
    except ConfigError as exc:
        print(f"qqconn run: {exc}", file=sys.stderr)
        return EXIT_USAGE

    loop = asyncio.get_running_loop()

    def on_signal(signame: str) -> None:
        if stopping:
            log.warning("qqconn.cli.already_stopping", signal=signame)
            return
        log.info("qqconn.cli.stopping", signal=signame)
        stopping.append(loop.create_task(mgr.stop(), name="qqconn-cli-stop"))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)

    refresher = None
    if opts.state_file is not None and opts.state_refresh_s > 0:
        refresher = loop.create_task(
            _refresh_state_file(mgr, opts.state_file, opts.state_refresh_s, log),
            name="qqconn-cli-state-refresh",
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
        if out is not sys.stdout:
            out.close()
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for task in stopping:
            with contextlib.suppress(Exception):
                await task
    status = EXIT_STDOUT_CLOSED if stdout_closed else EXIT_OK
    log.info("qqconn.cli.exit", status=status, state=mgr.state.value)
    return status


async def _refresh_state_file(mgr: Any, path: Path, every_s: float, log: Any) -> None:
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


# -- status ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Health:
    """What ``qqconn status`` concluded from a state file."""

    status: int
    problem: str | None
    snapshot: dict[str, Any] | None
    age_s: float | None


def read_health(
    path: str | os.PathLike[str], *, max_age_s: float | None = None, now: float | None = None
) -> Health:
    """Judge a state file: 0 alive (and fresh), 1 not alive or stale, 2 missing or unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return Health(
            EXIT_USAGE, f"{path}: no such state file (is qqconn run running?)", None, None
        )
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        return Health(EXIT_USAGE, f"{path}: cannot read: {reason}", None, None)
    try:
        snap = json.loads(text)
    except ValueError as exc:
        return Health(EXIT_USAGE, f"{path}: not a qqconn state file (bad JSON: {exc})", None, None)
    if not isinstance(snap, dict) or not isinstance(snap.get("state"), str):
        return Health(EXIT_USAGE, f"{path}: not a qqconn state file (no 'state')", None, None)
    age_s: float | None = None
    updated = snap.get("updated_at")
    if isinstance(updated, str):
        with contextlib.suppress(ValueError):
            stamp = datetime.fromisoformat(updated)
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)
            age_s = (time.time() if now is None else now) - stamp.timestamp()
    state = snap["state"]
    if state != "alive":
        fatal = snap.get("fatal")
        why = f": {fatal.get('reason')}" if isinstance(fatal, dict) and fatal.get("reason") else ""
        return Health(EXIT_NOT_ALIVE, f"state is {state}{why}", snap, age_s)
    if max_age_s is not None:
        if age_s is None:
            return Health(EXIT_NOT_ALIVE, "no usable updated_at to check --max-age", snap, None)
        if age_s > max_age_s:
            return Health(
                EXIT_NOT_ALIVE,
                f"stale: last written {age_s:.1f} s ago (> --max-age {max_age_s:g} s)",
                snap,
                age_s,
            )
    return Health(EXIT_OK, None, snap, age_s)


def _format_status(h: Health) -> str:
    snap = h.snapshot or {}
    fatal = snap.get("fatal")
    rows: list[tuple[str, str]] = [("state", str(snap.get("state")))]
    if isinstance(fatal, dict):
        code = fatal.get("close_code")
        rows.append(
            (
                "fatal",
                f"{fatal.get('reason')} (close code {code if code is not None else 'none'}, "
                f"{'retryable' if fatal.get('retryable') else 'not retryable'})",
            )
        )
    shard = snap.get("shard")
    rows += [
        ("app id", str(snap.get("app_id"))),
        ("shard", f"{shard[0]}/{shard[1]}" if isinstance(shard, list) and len(shard) == 2 else "?"),
        ("session", str(snap.get("session_id") or "none")),
        ("last seq", str(snap.get("last_seq"))),
        ("attempt", str(snap.get("attempt"))),
        ("failed attempts in a row", str(snap.get("reconnect_attempts"))),
        ("quick drops in a row", str(snap.get("quick_disconnects"))),
    ]
    interval = snap.get("heartbeat_interval_s")
    latency = snap.get("last_ack_latency_s")
    if isinstance(interval, (int, float)):
        beat = f"every {interval:g} s"
        if isinstance(latency, (int, float)):
            beat += f", last ACK after {latency * 1000:.1f} ms"
        rows.append(("heartbeat", beat))
    age = "" if h.age_s is None else f" ({h.age_s:.1f} s ago)"
    rows.append(("updated", f"{snap.get('updated_at')}{age}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append(f"{'healthy':<{width}}  " + ("yes" if h.status == EXIT_OK else f"no: {h.problem}"))
    return "\n".join(lines)


def _cmd_status(args: argparse.Namespace) -> int:
    health = read_health(args.state_file, max_age_s=args.max_age)
    if args.json:
        doc: dict[str, Any] = dict(health.snapshot or {})
        doc["healthy"] = health.status == EXIT_OK
        doc["problem"] = health.problem
        doc["age_s"] = None if health.age_s is None else round(health.age_s, 3)
        print(json.dumps(doc, sort_keys=True, ensure_ascii=False))
    elif health.snapshot is None:
        print(f"qqconn status: {health.problem}", file=sys.stderr)
    else:
        print(_format_status(health))
    return health.status


# -- diagram --------------------------------------------------------------------------------------


def _cmd_diagram(args: argparse.Namespace) -> int:
    from qqconn import statecharts

    try:
        text = statecharts.render(args.format)
    except statecharts.GraphvizUnavailable as exc:
        print(f"qqconn diagram: {exc}", file=sys.stderr)
        return EXIT_NOT_ALIVE
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8", newline="\n")
        except OSError as exc:
            raise UsageError(f"-o {args.output}: cannot write: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(text)
    return EXIT_OK
