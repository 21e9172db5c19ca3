"""The webhook transport behind the WebSocket manager's host API, and the switch between them.

:class:`WebhookReceiver` has the shape of :class:`~qqconn.ConnectionManager`: the same
``on_dispatch(Dispatch)``, ``on_state_change(StateChange)`` and ``on_fatal(FatalError)``
callbacks, ``await run()`` / ``await stop()``, ``state`` (the connection machine's
:class:`~qqconn.machine.State`), ``snapshot()``. It serves :class:`~qqconn.webhook.asgi.WebhookApp`
under uvicorn on a socket it binds itself (so a port already taken is a clear
:class:`~qqconn.errors.FatalError`, not a ``sys.exit`` inside uvicorn), and never installs
signal handlers (the host owns them). Its lifecycle is the table
:data:`qqconn.webhook.core.LIFECYCLE`.

:func:`transport` builds either from one configuration mapping, so an adapter switches by
configuration and keeps its handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import os
import socket
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from qqconn._log import get_logger
from qqconn.driver.statefile import StateFile
from qqconn.errors import ConfigError, FatalError, LocalProtocolError
from qqconn.machine import State
from qqconn.webhook.asgi import DispatchCallback, WebhookApp, in_callback
from qqconn.webhook.core import (
    DEFAULT_DEDUPE_MAX_IDS,
    DEFAULT_DEDUPE_WINDOW_S,
    DEFAULT_MAX_BODY_BYTES,
    DedupeStore,
    is_terminal,
    next_state,
)

if TYPE_CHECKING:
    from qqconn import ConnectionManager, StateChange

__all__ = ["QQ_CALLBACK_PORTS", "WebhookReceiver", "transport"]

#: The ports QQ accepts in a callback URL (docs/protocol.md §6). Listening elsewhere is fine
#: behind a reverse proxy that listens on one of these.
QQ_CALLBACK_PORTS = (80, 443, 8080, 8443)

StateCallback = Callable[["StateChange"], Awaitable[None] | None]
FatalCallback = Callable[[FatalError], Awaitable[None] | None]

#: A bind error that will not go away by itself (exit 78 rather than 75 in ``qqconn serve``).
_PERMANENT_BIND_ERRORS = frozenset({errno.EACCES, errno.EPERM, errno.EADDRNOTAVAIL, errno.EINVAL})


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handlers (the host owns SIGINT/SIGTERM), telling us it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


class WebhookReceiver:
    """Receives QQ events on an HTTP callback and hands them to the WebSocket manager's callbacks.

    ``host``/``port``: where to listen (port 0 picks a free one; see :attr:`bound_port`).
    ``path``: the callback's path (404 elsewhere). ``certfile``/``keyfile``: serve HTTPS
    directly; without them, put a TLS-terminating reverse proxy in front (QQ calls HTTPS only,
    on ports 80/443/8080/8443). ``dedupe_store``: a file path or a
    :class:`~qqconn.webhook.core.DedupeStore`, so a restart does not deliver again what was
    delivered. ``state_file``: rewritten atomically (mode 0600) on every state change, for
    ``qqconn status``.

    ``await run()`` returns after ``stop()``; raises :class:`FatalError` when it cannot listen
    or the server ends by itself. :attr:`asgi` is the ASGI app, to mount elsewhere instead.
    """

    transport = "webhook"

    def __init__(
        self,
        *,
        app_id: str,
        client_secret: str,
        on_dispatch: DispatchCallback | None = None,
        on_state_change: StateCallback | None = None,
        on_fatal: FatalCallback | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        path: str = "/",
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        dedupe_store: DedupeStore | str | os.PathLike[str] | None = None,
        dedupe_window_s: float = DEFAULT_DEDUPE_WINDOW_S,
        dedupe_max_ids: int = DEFAULT_DEDUPE_MAX_IDS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        state_file: str | os.PathLike[str] | None = None,
        state_refresh_s: float = 10.0,
        shutdown_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError("port", f"must be 0..65535, got {port!r}")
        if not isinstance(host, str) or not host:
            raise ConfigError("host", f"must be a host name or address, got {host!r}")
        if (certfile is None) != (keyfile is None):
            raise ConfigError("certfile", "certfile and keyfile go together")
        self.asgi = WebhookApp(
            app_id=app_id,
            client_secret=client_secret,
            on_dispatch=on_dispatch,
            path=path,
            max_body_bytes=max_body_bytes,
            dedupe_window_s=dedupe_window_s,
            dedupe_max_ids=dedupe_max_ids,
            dedupe_store=dedupe_store,
            clock=clock,
        )
        self.app_id = app_id
        self.host = host
        self.port = port
        self.path = path
        self.certfile = certfile
        self.keyfile = keyfile
        self.state_file = Path(state_file) if state_file is not None else None
        self.shutdown_timeout_s = shutdown_timeout_s
        self.state_refresh_s = state_refresh_s
        self._on_state_change = on_state_change
        self._on_fatal = on_fatal
        self._clock = clock
        self._log = get_logger("qqconn.webhook").bind(app_id=app_id)
        self._state = State.CONNECTING
        self._fatal: FatalError | None = None
        self._server: _Server | None = None
        self._socket: socket.socket | None = None
        self._bound_port: int | None = None
        self._started = False
        self._run_done = asyncio.Event()
        self._host_queue: asyncio.Queue[StateChange | FatalError] = asyncio.Queue()

    def __repr__(self) -> str:
        return f"<WebhookReceiver app_id={self.app_id!r} listen={self.listen} state={self._state.name}>"

    # -- reading --------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """CONNECTING (not listening yet), ALIVE (listening), STOPPED or FATAL."""
        return self._state

    @property
    def bound_port(self) -> int | None:
        """The port actually listened on (useful with ``port=0``), None before ``run()``."""
        return self._bound_port

    @property
    def listen(self) -> str:
        port = self.bound_port if self.bound_port is not None else self.port
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{port}"

    def snapshot(self) -> dict[str, Any]:
        """Which transport, its state, and whether events arrive (counts, last event, refusals)."""
        snap: dict[str, Any] = {
            "transport": self.transport,
            "state": self._state.value,
            "app_id": self.app_id,
            "listen": self.listen,
            "path": self.path,
            "tls": self.certfile is not None,
            # how often a running receiver rewrites its state file: `qqconn status` judges
            # freshness by it (a webhook has no heartbeat interval)
            "state_refresh_s": self.state_refresh_s,
        }
        snap.update(self.asgi.snapshot())
        now = time.time()
        snap["updated_at"] = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        snap["updated_at_unix"] = now
        fatal = self._fatal
        snap["fatal"] = (
            None
            if fatal is None
            else {"reason": fatal.reason, "close_code": None, "retryable": fatal.retryable}
        )
        return snap

    # -- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Listen and serve until ``stop()`` (returns) or a failure (raises :class:`FatalError`)."""
        if self._started:
            raise LocalProtocolError(
                "run() was already called", state=self._state.name, event="run"
            )
        self._started = True
        host_task = asyncio.get_running_loop().create_task(
            self._host_loop(), name="qqconn-webhook-host"
        )
        refresher = None
        if self.state_file is not None and self.state_refresh_s > 0:
            refresher = asyncio.get_running_loop().create_task(self._refresh_state_file())
        try:
            if is_terminal(self._state):  # stop() came before run()
                return
            await self._serve()
        finally:
            if refresher is not None:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
            self.write_state_file()
            await self._drain(host_task)
            self._close_socket()
            self._run_done.set()
        if self._fatal is not None:
            raise self._fatal

    async def stop(self) -> None:
        """Stop listening, let requests in progress finish (within ``shutdown_timeout_s``).

        Safe to call more than once, before ``run()``, and from a callback.
        """
        self._feed("stop", "stop requested")
        if self._server is not None:
            self._server.should_exit = True
        if not self._started or self._run_done.is_set():
            return
        current = asyncio.current_task()
        if in_callback.get() or (
            current is not None and current.get_name() == "qqconn-webhook-host"
        ):
            return  # the server waits for this very callback: waiting for it would deadlock
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.shutdown_timeout_s + 2):
                await self._run_done.wait()

    async def _serve(self) -> None:
        try:
            self._socket = self._bind()
            self._bound_port = int(self._socket.getsockname()[1])
        except OSError as exc:
            # A host name that does not resolve will not start resolving by itself either.
            retryable = (
                not isinstance(exc, socket.gaierror) and exc.errno not in _PERMANENT_BIND_ERRORS
            )
            self._fail(
                f"cannot listen on {self.listen}: {exc.strerror or exc}", retryable, "listen_failed"
            )
            return
        config = uvicorn.Config(
            self.asgi,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            ssl_certfile=self.certfile,
            ssl_keyfile=self.keyfile,
            timeout_graceful_shutdown=max(1, round(self.shutdown_timeout_s)),
        )
        try:
            config.load()
        except Exception as exc:  # a bad certificate or key file
            self._fail(
                f"cannot load TLS files: {type(exc).__name__}: {exc}"[:300], False, "listen_failed"
            )
            return
        self._server = _Server(config, self._listening)
        if is_terminal(self._state):  # stop() came while binding
            return
        try:
            await self._server.serve(sockets=[self._socket])
        except (Exception, SystemExit) as exc:  # uvicorn gave up (SystemExit: its startup)
            self._fail(f"the HTTP server failed: {type(exc).__name__}", True, "server_ended")
            return
        # It returns after stop() (the table ignores this then), or it ended by itself: FATAL.
        self._fail("the HTTP server ended by itself", True, "server_ended")

    def _bind(self) -> socket.socket:
        infos = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(2048)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _close_socket(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()

    def _listening(self) -> None:
        self._feed("listening", "listening")
        self._log.info(
            "qqconn.webhook.listening",
            listen=self.listen,
            path=self.path,
            tls=self.certfile is not None,
        )

    def _fail(self, reason: str, retryable: bool, trigger: str) -> None:
        """Feed a failure; when the table makes it FATAL, say so once (log, on_fatal, raise)."""
        if next_state(self._state, trigger) is not State.FATAL:
            return  # e.g. the server ending after stop(): nothing failed
        self._log.error("qqconn.webhook.fatal", reason=reason, retryable=retryable)
        self._fatal = FatalError(reason, close_code=None, retryable=retryable)
        self._feed(trigger, reason)
        if self._on_fatal is not None:
            self._host_queue.put_nowait(self._fatal)

    def _feed(self, trigger: str, why: str) -> None:
        previous = self._state
        new = next_state(previous, trigger)
        if new is None:
            return
        self._state = new
        self._log.info(
            "qqconn.webhook.transition", source=previous.value, dest=new.value, trigger=trigger
        )
        snap = self.snapshot()
        if self.state_file is not None:
            self._write_state_file(snap)
        if self._on_state_change is not None:
            from qqconn import StateChange

            self._host_queue.put_nowait(StateChange(new, previous, trigger, snap))

    async def _host_loop(self) -> None:
        while True:
            item = await self._host_queue.get()
            try:
                if isinstance(item, FatalError):
                    callback: Callable[[Any], Awaitable[None] | None] | None = self._on_fatal
                    name = "on_fatal"
                else:
                    callback, name = self._on_state_change, "on_state_change"
                if callback is not None:
                    result = callback(item)
                    if inspect.isawaitable(result):
                        await result
            except Exception:
                self._log.exception("qqconn.webhook.callback_failed", callback=name)
            finally:
                self._host_queue.task_done()

    async def _drain(self, host_task: asyncio.Task[None]) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.shutdown_timeout_s):
                await self._host_queue.join()
        host_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await host_task

    async def _refresh_state_file(self) -> None:
        """Keep ``updated_at`` fresh, so ``qqconn status --max-age`` can tell a hung process."""
        while True:
            await asyncio.sleep(self.state_refresh_s)
            self.write_state_file()

    def write_state_file(self) -> None:
        """Rewrite the state file now (atomically, mode 0600). No-op without a state file."""
        if self.state_file is not None:
            self._write_state_file(self.snapshot())

    def _write_state_file(self, snap: dict[str, Any]) -> None:
        # The same atomic, mode-0600 writer as the WebSocket manager's.
        assert self.state_file is not None
        StateFile(self.state_file, log=self._log).write(snap)


# -- one switch for both transports ---------------------------------------------------------------


def transport(
    config: Mapping[str, Any],
    *,
    on_dispatch: DispatchCallback | None = None,
    on_state_change: StateCallback | None = None,
    on_fatal: FatalCallback | None = None,
) -> ConnectionManager | WebhookReceiver:
    """Build the transport ``config["transport"]`` names (``"websocket"``, the default, or
    ``"webhook"``) with the same three callbacks.

    Every other key is a keyword of :class:`~qqconn.ConnectionManager` or of
    :class:`WebhookReceiver`. The other transport's keys are ignored, so one configuration can
    hold both and switch with ``transport`` alone; a key neither takes is a
    :class:`~qqconn.errors.ConfigError` naming it. ``intents`` may be a string
    (``"GUILDS|PUBLIC_GUILD_MESSAGES"``). Both results have ``run()``, ``stop()``, ``state`` and
    ``snapshot()``.
    """
    from qqconn import ConnectionManager, Intents

    options = dict(config)
    kind = options.pop("transport", "websocket")
    factories: dict[str, Callable[..., Any]] = {
        "websocket": ConnectionManager,
        "webhook": WebhookReceiver,
    }
    if kind not in factories:
        raise ConfigError("transport", f"must be 'websocket' or 'webhook', got {kind!r}")
    callbacks = {"on_dispatch", "on_state_change", "on_fatal"}
    takes = {
        name: set(inspect.signature(f).parameters) - callbacks for name, f in factories.items()
    }
    for key in options:
        if not any(key in keys for keys in takes.values()):
            raise ConfigError(key, "not an option of the websocket or the webhook transport")
    options = {key: value for key, value in options.items() if key in takes[kind]}
    factory = factories[kind]
    if kind == "websocket":
        if isinstance(options.get("intents"), str):
            try:
                options["intents"] = Intents.parse(options["intents"])
            except ValueError as exc:
                raise ConfigError("intents", str(exc)) from None
        if isinstance(options.get("shard"), list):
            options["shard"] = tuple(options["shard"])
    built: ConnectionManager | WebhookReceiver = factory(
        **options, on_dispatch=on_dispatch, on_state_change=on_state_change, on_fatal=on_fatal
    )
    return built
