"""``qqconn serve``: receive QQ events on an HTTP callback; one JSON line per event on stdout.

The webhook twin of ``qqconn run``: the same credentials (``--app-id`` / ``$QQ_APP_ID``,
``--secret-file`` / ``$QQ_CLIENT_SECRET``, never the secret on the command line), the same
stdout lines (``{"s", "t", "id", "d"}`` per event), the same structured logs on stderr, the
same exit statuses:

* 0  — stopped by SIGINT/SIGTERM;
* 75 — cannot listen, retryable (EX_TEMPFAIL): the port is taken, the server ended by itself;
* 78 — cannot listen, not retryable (EX_CONFIG): no permission for the port, an address that
  is not this host's, unreadable TLS certificate or key;
* 2  — usage or configuration error (one line on stderr; nothing was started);
* 1  — stdout was closed by its reader.

TLS: QQ calls HTTPS only, on ports 80, 443, 8080 or 8443. Either give ``--certfile`` and
``--keyfile`` (uvicorn serves HTTPS itself), or listen on loopback over plain HTTP behind a
reverse proxy (nginx, Caddy) that terminates TLS on one of those ports and passes the request
through unchanged (the signature covers the raw body, so the proxy must not rewrite it).

``main(argv)`` takes the arguments after ``serve``; :func:`add_arguments` and :func:`serve`
let the ``qqconn`` command mount it as a subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from qqconn.cli.logs import configure_logging
from qqconn.cli.options import (
    ENV_APP_ID,
    EXIT_FATAL_PERMANENT,
    EXIT_FATAL_RETRYABLE,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
)
from qqconn.cli.output import EventSink
from qqconn.cli.secrets import ENV_SECRET

__all__ = ["ServeOptions", "add_arguments", "main", "parse_listen", "serve", "serve_options"]

EXIT_STDOUT_CLOSED = 1
_SECRET_FLAGS = ("--secret", "--client-secret", "--client_secret", "--app-secret")
#: Keys of the config file's ``[webhook]`` table (a ``[policy]`` table, for ``qqconn run``,
#: may sit beside it and is ignored here, so one file serves both commands).
_WEBHOOK_KEYS = ("path", "dedupe_store", "dedupe_window_s", "dedupe_max_ids", "max_body_bytes")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``serve``'s options to ``parser`` (a subparser of the ``qqconn`` command)."""
    parser.add_argument(
        "--listen",
        required=True,
        metavar="HOST:PORT",
        help="address to listen on, e.g. 127.0.0.1:8080 behind a proxy, 0.0.0.0:8443 with "
        "--certfile, [::1]:8080 (QQ calls ports 80/443/8080/8443 only)",
    )
    parser.add_argument("--path", metavar="PATH", help="the callback URL's path (default: /)")
    parser.add_argument("--app-id", metavar="ID", help=f"the bot's AppID (default: ${ENV_APP_ID})")
    parser.add_argument(
        "--secret-file",
        metavar="FILE",
        help=f"read the client secret from FILE (default: ${ENV_SECRET})",
    )
    parser.add_argument(
        "--certfile", metavar="FILE", help="TLS certificate chain (PEM): serve HTTPS"
    )
    parser.add_argument("--keyfile", metavar="FILE", help="TLS private key (PEM), with --certfile")
    parser.add_argument(
        "--dedupe-store",
        metavar="FILE",
        help="keep the delivered event ids here, so a restart does not deliver a retry again",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with a [webhook] table (" + ", ".join(_WEBHOOK_KEYS) + ")",
    )
    parser.add_argument(
        "--state-file", metavar="FILE", help="keep a JSON snapshot here (for qqconn status)"
    )
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the probes on HOST:PORT apart from the callback: /livez (the event loop "
        "answers), /readyz (200 while the receiver listens) and /status.json; no /metrics "
        "(the WebSocket metrics do not apply); port 0 picks a free one (logged as qqconn.cli.http)",
    )
    parser.add_argument(
        "--log-format", choices=("console", "json"), default="console", help="stderr log format"
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="lowest level logged (default: info)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qqconn serve",
        description="Receive QQ events on an HTTP callback (the webhook transport). Prints one "
        'JSON object per event ({"s", "t", "id", "d"}) on stdout, logs on stderr. Exit: 0 '
        "stopped by SIGINT/SIGTERM, 75 cannot listen (retryable), 78 cannot listen (not "
        "retryable), 2 usage/config error.",
        allow_abbrev=False,
    )
    add_arguments(parser)
    return parser


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """Everything ``qqconn serve`` needs, validated."""

    app_id: str
    secret: str
    host: str
    port: int
    path: str
    certfile: str | None
    keyfile: str | None
    dedupe_store: str | None
    state_file: str | None
    webhook: Mapping[str, Any]
    #: ``--http``: where the probes listen (None: nowhere).
    http: tuple[str, int] | None
    log_format: str
    log_level: str

    def __repr__(self) -> str:  # never the secret
        return f"ServeOptions(app_id={self.app_id!r}, listen={self.host}:{self.port}, path={self.path!r})"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) into ``(host, port)``; UsageError otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise UsageError(f"--listen: expected HOST:PORT such as 127.0.0.1:8080, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"--listen: write an IPv6 address in brackets, [::1]:8080, got {text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:  # 0: any free port (the listening log line names it)
        raise UsageError(f"--listen: port must be 0..65535, got {port}")
    return host, port


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


def _load_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"config {path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path}: not valid TOML: {exc}") from None
    unknown = [key for key in doc if key not in ("webhook", "policy")]
    if unknown:
        raise UsageError(f"config {path}: unknown key or table {unknown[0]!r} ([webhook] is read)")
    table = doc.get("webhook", {})
    if not isinstance(table, dict):
        raise UsageError(f"config {path}: 'webhook' must be a table ([webhook])")
    for key in table:
        if key not in _WEBHOOK_KEYS:
            raise UsageError(
                f"config {path}: webhook.{key}: unknown key (known: {', '.join(_WEBHOOK_KEYS)})"
            )
    return dict(table)


def serve_options(args: argparse.Namespace, env: Mapping[str, str]) -> ServeOptions:
    """Validate ``qqconn serve``'s arguments (and environment) into :class:`ServeOptions`."""
    app_id = (args.app_id or env.get(ENV_APP_ID, "")).strip()
    if not app_id:
        raise UsageError(f"no AppID: use --app-id ID or set {ENV_APP_ID}")
    secret = _read_secret(args.secret_file, env)
    host, port = parse_listen(args.listen)
    webhook = _load_config(args.config) if args.config else {}
    path = args.path or webhook.pop("path", None) or "/"
    webhook.pop("path", None)
    if not isinstance(path, str) or not path.startswith("/"):
        raise UsageError(f"--path: must start with '/', got {path!r}")
    dedupe_store = args.dedupe_store or webhook.pop("dedupe_store", None)
    webhook.pop("dedupe_store", None)
    if (args.certfile is None) != (args.keyfile is None):
        raise UsageError("--certfile and --keyfile go together")
    for option, name in (("--certfile", args.certfile), ("--keyfile", args.keyfile)):
        if name is not None and not os.access(name, os.R_OK):
            raise UsageError(f"{option} {name}: cannot read")
    return ServeOptions(
        app_id=app_id,
        secret=secret,
        host=host,
        port=port,
        path=path,
        certfile=args.certfile,
        keyfile=args.keyfile,
        dedupe_store=dedupe_store,
        state_file=args.state_file,
        webhook=webhook,
        http=_parse_http(args.http) if args.http is not None else None,
        log_format=args.log_format,
        log_level=args.log_level,
    )


def _parse_http(text: str) -> tuple[str, int]:
    from qqconn.errors import ConfigError
    from qqconn.ops.server import parse_address

    try:
        return parse_address(text, option="--http")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


class _ReceiverView:
    """A :class:`WebhookReceiver` as the ops board reads a manager: app id, a ``shard`` label
    (``"webhook"``), ``state`` (ALIVE while it listens) and ``snapshot()``."""

    shard = "webhook"

    def __init__(self, receiver: Any) -> None:
        self._receiver = receiver
        self.app_id = receiver.app_id

    @property
    def state(self) -> Any:
        return self._receiver.state

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = self._receiver.snapshot()
        return snap


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qqconn serve`` with ``argv`` (the arguments after ``serve``); return the status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        for arg in args_list:
            if arg == "--":
                break
            if arg.split("=", 1)[0] in _SECRET_FLAGS:
                raise UsageError(
                    f"the client secret is never taken on the command line ({arg.split('=', 1)[0]} "
                    f"refused); set {ENV_SECRET} or use --secret-file FILE"
                )
        args = _build_parser().parse_args(args_list)
        return serve(args)
    except UsageError as exc:
        text = str(exc)
        print(text if text.startswith("qqconn") else f"qqconn serve: {text}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def serve(args: argparse.Namespace) -> int:
    """``qqconn serve`` with parsed arguments (for a parent parser); UsageError on bad ones."""
    opts = serve_options(args, os.environ)
    configure_logging(opts.log_format, opts.log_level, redact=[opts.secret])
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(encoding="utf-8")  # type: ignore[union-attr]
    return asyncio.run(_serve(opts))


async def _serve(opts: ServeOptions) -> int:
    import structlog

    from qqconn.errors import ConfigError, FatalError
    from qqconn.webhook.receiver import QQ_CALLBACK_PORTS, WebhookReceiver

    log = structlog.get_logger("qqconn.cli")
    stopping: list[asyncio.Task[None]] = []

    def stdout_gone() -> None:
        if not stopping:
            stopping.append(asyncio.get_running_loop().create_task(receiver.stop()))

    # The same one-JSON-line-per-event writer as `qqconn run`'s, closed pipe handling included.
    sink = EventSink(sys.stdout, log, on_closed=stdout_gone)
    on_dispatch = sink.write

    try:
        receiver = WebhookReceiver(
            app_id=opts.app_id,
            client_secret=opts.secret,
            on_dispatch=on_dispatch,
            host=opts.host,
            port=opts.port,
            path=opts.path,
            certfile=opts.certfile,
            keyfile=opts.keyfile,
            dedupe_store=opts.dedupe_store,
            state_file=opts.state_file,
            **opts.webhook,
        )
    except (ConfigError, TypeError) as exc:
        print(f"qqconn serve: {exc}", file=sys.stderr)
        return EXIT_USAGE

    ops = None
    if opts.http is not None:
        from qqconn.ops import OpsServer

        try:
            ops = OpsServer(host=opts.http[0], port=opts.http[1], title="qqconn serve")
            ops.watch(_ReceiverView(receiver))
            await ops.start()  # before listening for QQ: a busy port is a usage error
        except ConfigError as exc:
            print(f"qqconn serve: --http: {str(exc).removeprefix('http: ')}", file=sys.stderr)
            return EXIT_USAGE
        log.info("qqconn.cli.http", url=ops.url)

    loop = asyncio.get_running_loop()

    def on_signal(signame: str) -> None:
        if stopping:
            log.warning("qqconn.cli.already_stopping", signal=signame)
            return
        log.info("qqconn.cli.stopping", signal=signame)
        stopping.append(loop.create_task(receiver.stop(), name="qqconn-cli-stop"))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    if opts.port not in QQ_CALLBACK_PORTS and opts.port != 0:
        log.info(
            "qqconn.cli.port_not_callable_by_qq",
            port=opts.port,
            note="QQ calls ports 80/443/8080/8443 only: put a reverse proxy on one of them",
        )
    log.info(
        "qqconn.cli.started", transport="webhook", listen=f"{opts.host}:{opts.port}", path=opts.path
    )
    try:
        await receiver.run()
    except FatalError as exc:
        status = EXIT_FATAL_RETRYABLE if exc.retryable else EXIT_FATAL_PERMANENT
        log.error("qqconn.cli.exit", status=status, reason=exc.reason, retryable=exc.retryable)
        return status
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for task in stopping:
            with contextlib.suppress(Exception):
                await task
        if ops is not None:
            await ops.stop()
    status = EXIT_STDOUT_CLOSED if sink.closed else EXIT_OK
    log.info(
        "qqconn.cli.exit", status=status, state=receiver.state.value, **_counts(receiver.snapshot())
    )
    return status


def _counts(snap: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: snap[k] for k in ("events_delivered", "events_duplicate", "refused_total") if k in snap
    }


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
