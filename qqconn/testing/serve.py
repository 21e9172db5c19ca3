"""Run the fake gateway on its own, so ``qqconn run`` can be tried locally in two terminals.

``python -m qqconn.testing.serve [--host 127.0.0.1] [--port 0] [--ws-port 0]`` starts a
:class:`~qqconn.testing.FakeGateway` on loopback and prints one ``key=value`` line each on
stdout, then serves until SIGINT or SIGTERM (exit 0)::

    api_base=http://127.0.0.1:38411
    token_url=http://127.0.0.1:38411/app/getAppAccessToken
    gateway_url=ws://127.0.0.1:40125/websocket
    app_id=1000
    client_secret=s3cret

The secret is the fake's own test value, not a real one. A hint with the matching ``qqconn run``
command line goes to stderr, as do log lines (``-v`` shows every socket). Exit codes: 0 stopped
by a signal, 1 could not listen (port in use), 2 usage error (e.g. a host that is not loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

import structlog

from qqconn.testing.gateway import FakeGateway, is_loopback

__all__ = ["main"]

#: The lines :func:`main` prints, in order (``key=value`` each).
OUTPUT_KEYS = ("api_base", "token_url", "gateway_url", "app_id", "client_secret")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m qqconn.testing.serve",
        description="Serve a fake QQ gateway (REST + WebSocket) on loopback until SIGINT/SIGTERM.",
        allow_abbrev=False,
    )
    ap.add_argument("--host", default="127.0.0.1", help="loopback address (default: 127.0.0.1)")
    ap.add_argument(
        "--port", type=int, default=0, help="REST API port (default: 0, an ephemeral port)"
    )
    ap.add_argument(
        "--ws-port", type=int, default=0, help="WebSocket port (default: 0, an ephemeral port)"
    )
    ap.add_argument(
        "--heartbeat-interval-ms",
        type=int,
        default=41250,
        metavar="MS",
        help="heartbeat interval announced in Hello (default: 41250, the observed real value)",
    )
    ap.add_argument(
        "--dispatch-every",
        type=float,
        default=0.0,
        metavar="S",
        help="send a realistic GROUP_AT_MESSAGE_CREATE to the current session every S seconds "
        "(default: 0, off)",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="log every socket on stderr")
    return ap


async def _pump(gw: FakeGateway, every_s: float) -> None:
    """Dispatch one realistic group message every ``every_s`` while a session exists."""
    while True:
        await asyncio.sleep(every_s)
        if gw.current_session_id is not None:
            gw.dispatch_nowait("GROUP_AT_MESSAGE_CREATE")


async def _serve(gw: FakeGateway, dispatch_every_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals here: Ctrl-C
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        async with gw:
            values = {
                "api_base": gw.api_base,
                "token_url": gw.token_url,
                "gateway_url": gw.ws_url,
                "app_id": gw.app_id,
                "client_secret": gw.client_secret,
            }
            sys.stdout.write("".join(f"{key}={values[key]}\n" for key in OUTPUT_KEYS))
            sys.stdout.flush()
            print(
                f"fake gateway ready; in another terminal: QQ_APP_ID={gw.app_id} "
                f"QQ_CLIENT_SECRET={gw.client_secret} qqconn run --api-base {gw.api_base} "
                f"--token-url {gw.token_url}   (Ctrl-C here to stop)",
                file=sys.stderr,
                flush=True,
            )
            pump = asyncio.create_task(_pump(gw, dispatch_every_s)) if dispatch_every_s else None
            await stop.wait()
            if pump is not None:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a fake gateway until SIGINT/SIGTERM; see the module docstring. Returns the exit code."""
    ap = _parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else 2
    if not is_loopback(args.host):
        print(
            f"error: --host must be a loopback address (127.0.0.1, ::1), got {args.host!r}",
            file=sys.stderr,
        )
        return 2
    for name in ("port", "ws_port"):
        if not 0 <= getattr(args, name) <= 65535:
            print(f"error: --{name.replace('_', '-')} must be 0..65535", file=sys.stderr)
            return 2
    if args.heartbeat_interval_ms <= 0:
        print("error: --heartbeat-interval-ms must be > 0", file=sys.stderr)
        return 2
    if not (0 <= args.dispatch_every < float("inf")):  # also refuses NaN
        print("error: --dispatch-every must be a finite number >= 0", file=sys.stderr)
        return 2
    if not structlog.is_configured():  # a caller (the qqconn CLI) may have set up logging
        structlog.configure(
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            wrapper_class=structlog.make_filtering_bound_logger(
                logging.DEBUG if args.verbose else logging.INFO
            ),
        )
    gw = FakeGateway(
        host=args.host,
        http_port=args.port,
        ws_port=args.ws_port,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
    )
    try:
        asyncio.run(_serve(gw, args.dispatch_every))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C while closing
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
