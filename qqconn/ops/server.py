"""The ops server: the ops endpoints served by uvicorn, as a task on the managers' own loop.

Serving from the same loop is the point: ``/livez`` answering at all says the loop runs, and
the lag probe says how promptly. uvicorn is driven as a library (``Server.serve`` on a socket
bound here, so a busy port is a :class:`~qqconn.ConfigError`, not uvicorn's ``sys.exit``); it
installs no signal handlers (the host's SIGINT/SIGTERM handling stays the host's), configures
no logging and writes no access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import Generator, Iterable
from types import TracebackType
from typing import Any, Self

from qqconn.errors import ConfigError
from qqconn.metrics import Metrics
from qqconn.ops.app import OpsApp
from qqconn.ops.page import statechart_svg
from qqconn.ops.status import DEFAULT_RING_SIZE, Board

__all__ = ["LoopProbe", "OpsServer", "parse_address", "serve_ops"]

#: How long ``start()`` waits for uvicorn to listen, and ``stop()`` for it to finish.
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class LoopProbe:
    """Measures event-loop lag: sleeps ``interval_s`` again and again and records how late it
    woke. Live while the last wake-up was recent and no recent lag exceeded ``max_lag_s``."""

    def __init__(
        self, *, interval_s: float = 0.25, max_lag_s: float = 5.0, window: int = 20
    ) -> None:
        if interval_s <= 0 or max_lag_s <= 0:
            raise ConfigError("max_loop_lag_s", "the probe interval and lag bound must be > 0")
        self.interval_s = interval_s
        self.max_lag_s = max_lag_s
        self.lags: deque[float] = deque(maxlen=window)
        self.last_tick: float | None = None
        self.metrics: Metrics | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self.last_tick = asyncio.get_running_loop().time()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="qqconn-ops-probe"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval_s)
            now = loop.time()
            lag = max(0.0, now - before - self.interval_s)
            self.lags.append(lag)
            self.last_tick = now
            if self.metrics is not None:
                self.metrics.loop_lag(lag)

    def verdict(self) -> tuple[bool, dict[str, Any]]:
        """``(live, details)`` for ``/livez``."""
        loop = asyncio.get_running_loop()
        running = self._task is not None and not self._task.done()
        since = None if self.last_tick is None else loop.time() - self.last_tick
        worst = max(self.lags, default=0.0)
        live = (
            running
            and since is not None
            and since <= self.interval_s + self.max_lag_s
            and worst <= self.max_lag_s
        )
        return live, {
            "probe_running": running,
            "loop_lag_s": round(self.lags[-1], 4) if self.lags else None,
            "max_recent_lag_s": round(worst, 4),
            "since_last_probe_s": None if since is None else round(since, 4),
            "max_lag_s": self.max_lag_s,
        }


class _Uvicorn:
    """uvicorn's Server, made a well-behaved guest: no signal handlers of its own."""

    def __init__(self, app: OpsApp) -> None:
        try:
            import uvicorn
        except ImportError as exc:
            raise ImportError("the ops server needs uvicorn: pip install 'qqconn[ops]'") from exc

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                yield  # the host owns SIGINT and SIGTERM

        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            http="h11",
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        self.server = Server(config)


class OpsServer:
    """Serves ``/``, ``/status.json``, ``/metrics``, ``/livez`` and ``/readyz`` for some managers.

    ``managers`` are watched from the start (more with :meth:`watch`). For the list of
    transitions with their reasons, give each manager ``on_state_change=ops.on_state_change``
    (call your own callback from there if you have one); without it the page, ``/readyz`` and
    the counters still work, read from ``manager.state`` and ``manager.snapshot()``.
    ``metrics``: a :class:`~qqconn.metrics.Metrics` to serve at ``/metrics`` and to feed from
    the managers that do not feed it themselves (``ConnectionManager(metrics=...)``).

    ``port=0`` picks a free port (read :attr:`port` after :meth:`start`). Use ``async with``
    or ``await start()`` / ``await stop()``; both are bounded in time.
    """

    def __init__(
        self,
        managers: Iterable[Any] = (),
        metrics: Metrics | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        refresh_s: float = 1.0,
        max_loop_lag_s: float = 5.0,
        ring_size: int = DEFAULT_RING_SIZE,
        title: str = "qqconn",
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError("http", f"port must be 0–65535, got {port!r}")
        if not isinstance(host, str) or not host:
            raise ConfigError("http", f"host must be a non-empty string, got {host!r}")
        if not refresh_s > 0:
            raise ConfigError("http", f"refresh_s must be > 0, got {refresh_s!r}")
        self.host = host
        self._requested_port = port
        self.metrics = metrics
        self.board = Board(metrics=metrics, ring_size=ring_size)
        self.probe = LoopProbe(max_lag_s=max_loop_lag_s)
        self.probe.metrics = metrics
        self.app = OpsApp(
            self.board,
            metrics=metrics,
            liveness=self.probe.verdict,
            title=title,
            refresh_s=refresh_s,
        )
        self._sock: socket.socket | None = None
        self._uvicorn: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._poll_task: asyncio.Task[None] | None = None
        for manager in managers:
            self.watch(manager)

    def __repr__(self) -> str:
        where = self.url if self._sock is not None else "not started"
        return f"<OpsServer {where} connections={len(self.board.watches)}>"

    def watch(self, manager: Any, *, feed_metrics: bool | None = None) -> None:
        """Report on ``manager`` too (its app id and shard name it on every endpoint).

        The server's metrics are fed from the manager's surface unless the manager feeds
        them itself (built with ``metrics=`` this server's :class:`~qqconn.metrics.Metrics`):
        then only its own hooks count. ``feed_metrics`` True/False forces either."""
        self.board.watch(manager, feed_metrics=feed_metrics)

    def on_state_change(self, change: Any) -> None:
        """Give this to each manager as its ``on_state_change`` (it never raises)."""
        self.board.on_state_change(change)

    @property
    def port(self) -> int:
        """The port listened on (the one picked, when asked for port 0)."""
        if self._sock is None:
            return self._requested_port
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> Self:
        """Listen and serve; returns once uvicorn accepts connections (ConfigError if the
        address cannot be used)."""
        if self._task is not None:
            return self
        await asyncio.to_thread(statechart_svg)  # Graphviz runs once, off the loop
        self._sock = _bind(self.host, self._requested_port)
        self._uvicorn = _Uvicorn(self.app)
        server = self._uvicorn.server
        self.probe.start()
        self._task = asyncio.get_running_loop().create_task(
            server.serve(sockets=[self._sock]), name="qqconn-ops-http"
        )
        self._poll_task = asyncio.get_running_loop().create_task(
            self._poll(), name="qqconn-ops-poll"
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if self._task.done() or time.monotonic() > deadline:
                failure = self._task.exception() if self._task.done() else None
                await self.stop()
                raise ConfigError(
                    "http", f"the ops server did not start on {self.host}:{self.port}: {failure}"
                )
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        """Stop serving (bounded: about 1 s for open requests, then they are cut)."""
        task, self._task = self._task, None
        if task is not None and self._uvicorn is not None:
            self._uvicorn.server.should_exit = True
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await asyncio.shield(task)
            except TimeoutError:
                self._uvicorn.server.force_exit = True
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            except (Exception, SystemExit):  # uvicorn's own failure: it is stopped either way
                pass
        poll, self._poll_task = self._poll_task, None
        if poll is not None:
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll
        await self.probe.stop()
        if self._sock is not None:
            self._sock.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _poll(self) -> None:
        """Feed the counters even when nobody scrapes (once a second)."""
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                self.board.poll()


def parse_address(text: str, *, option: str = "--http") -> tuple[str, int]:
    """``"HOST:PORT"`` → ``(host, port)``; ``"[::1]:9100"`` for IPv6, ``":9100"`` for every
    IPv4 interface. Anything else is a :class:`~qqconn.ConfigError` naming ``option``."""
    usage = f"expected HOST:PORT (127.0.0.1:9100, [::1]:9100 or :9100), got {text!r}"
    if not isinstance(text, str):
        raise ConfigError(option, usage)
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(option, usage)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # a bare IPv6 address: its port cannot be told apart
        raise ConfigError(option, usage)
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(option, f"port must be 0–65535, got {port}")
    return host or "0.0.0.0", port


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError("http", f"cannot listen on {host}:{port}: {reason}") from None
    return sock


async def serve_ops(
    host: str,
    port: int,
    managers: Iterable[Any],
    metrics: Metrics | None = None,
    **options: Any,
) -> OpsServer:
    """Start an :class:`OpsServer` for ``managers`` on ``host:port`` and return it (started).

    ``options`` go to :class:`OpsServer` (``refresh_s``, ``max_loop_lag_s``, ``title``, …).
    Stop it with ``await server.stop()``. To see every transition with its reason, build the
    server first and pass ``on_state_change=server.on_state_change`` to the managers.
    """
    server = OpsServer(managers, metrics, host=host, port=port, **options)
    return await server.start()
