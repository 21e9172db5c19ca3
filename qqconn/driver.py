"""The driver: the one module that touches asyncio, websockets and HTTP.

It observes (frames, closes, timers, HTTP answers), stamps each observation with the time and
feeds it to the :class:`~qqconn.machine.ConnectionMachine` as an event, then carries out the
commands that come back. It decides nothing: no counters, no retries, no sleeps of its own.

Structure:

* ``run()`` owns one :class:`asyncio.TaskGroup`: the host task (delivers dispatches and state
  changes to the host's callbacks, in order, off the reader), and one task per attempt.
* An attempt's task fetches the token and the gateway URL, opens the socket, and reads it. Its
  heartbeat and deadline timers are loop timers owned by the attempt: CloseSocket cancels them
  together with the task, and the task's ``finally`` closes the socket within close_timeout_s.
  So nothing of a socket can outlive it, and a new socket starts with exactly one heartbeat
  timer (a timer of a name replaces the previous one).
* The fatal notify runs in a task of its own, outside the group, so a host that calls
  ``stop()`` from inside it does not cancel itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import random
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from qqconn import commands as cmd
from qqconn import events as ev
from qqconn import protocol as proto
from qqconn._log import QuietLogger
from qqconn.errors import (
    ConfigError,
    CredentialsRefused,
    FatalError,
    LocalProtocolError,
    RemoteProtocolError,
)
from qqconn.machine import ConnectionMachine, DispatchVerdict, State
from qqconn.policy import Policy

__all__ = ["DEFAULT_API_BASE", "DEFAULT_TOKEN_URL", "ConnectionManager", "Secret", "StateChange"]

DEFAULT_API_BASE = "https://api.sgroup.qq.com"
DEFAULT_TOKEN_URL = "https://bots.qq.com/app/getAppAccessToken"

#: Fetch a new token when the cached one has less than this left. The endpoint hands out a new
#: token only in the last 60 s of the old one's life (qq-protocol.md §3.1), so refresh inside it.
TOKEN_REFRESH_MARGIN_S = 50.0

_tls: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """The process's one verifying TLS context, shared by every manager.

    Building a context loads the CA bundle (about 0.8 MiB and 30 ms each); a thousand managers
    each building their own is what made a connection cost a megabyte. Certificate checks are
    always on: there is deliberately no way to pass an unverified context.
    """
    global _tls
    if _tls is None:
        _tls = httpx.create_ssl_context()
    return _tls


DispatchCallback = Callable[[proto.Dispatch], Awaitable[None] | None]
StateCallback = Callable[["StateChange"], Awaitable[None] | None]
FatalCallback = Callable[[FatalError], Awaitable[None] | None]


class Secret:
    """A string that never shows itself in a repr, a str() or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: only for the request that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class StateChange:
    """What ``on_state_change`` receives: the new state, the previous one, and why."""

    state: State
    previous: State
    trigger: str
    snapshot: dict[str, Any]


@dataclass(eq=False)
class _Attempt:
    """One connection attempt: its task, its socket, its token."""

    number: int
    refresh_token: bool
    task: asyncio.Task[None] | None = None
    ws: ClientConnection | None = None
    token: Secret | None = None
    close_code: int = 1000
    close_reason: str = ""
    closing: bool = False
    timers: dict[ev.Timer, asyncio.TimerHandle] = field(default_factory=dict)


class _TokenSource:
    """Access tokens from ``getAppAccessToken``: cached, one request in flight at a time."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        app_id: str,
        secret: Secret,
        clock: Callable[[], float],
    ) -> None:
        self._http = http
        self._url = url
        self._app_id = app_id
        self._secret = secret
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: Secret | None = None
        self._expires_at = 0.0

    @property
    def current(self) -> Secret | None:
        """The cached token, if any (for scrubbing messages)."""
        return self._token

    async def get(self, *, refresh: bool = False) -> Secret:
        async with self._lock:
            fresh_enough = self._clock() < self._expires_at - TOKEN_REFRESH_MARGIN_S
            if self._token is not None and fresh_enough and not refresh:
                return self._token
            body = {"appId": self._app_id, "clientSecret": self._secret.reveal()}
            response = await self._http.post(self._url, json=body)
            token, expires_in = proto.parse_token_response(response.status_code, response.content)
            self._token = Secret(token)
            self._expires_at = self._clock() + expires_in
            return self._token


class ConnectionManager:
    """Keeps one QQ gateway connection (one shard) alive, and says when it cannot.

    ``on_dispatch(dispatch)`` gets each event once, in ``s`` order (READY included, RESUMED
    not); ``on_state_change(change)`` gets every state change, in order with the dispatches;
    both run on a task of their own, so a slow or raising callback never delays heartbeats.
    ``on_fatal(error)`` is called exactly once if the manager gives up, from a task of its own.
    Callbacks may be plain functions or coroutine functions; their exceptions are logged.

    ``await run()`` returns after ``stop()``, or raises :class:`FatalError` when the manager
    gives up. ``state_file``, if given, is rewritten atomically (mode 0600) on every state
    change with a JSON snapshot that never holds a secret.
    """

    def __init__(
        self,
        *,
        app_id: str,
        client_secret: str,
        intents: int,
        shard: tuple[int, int] = (0, 1),
        policy: Policy | None = None,
        api_base: str = DEFAULT_API_BASE,
        token_url: str = DEFAULT_TOKEN_URL,
        on_dispatch: DispatchCallback | None = None,
        on_state_change: StateCallback | None = None,
        on_fatal: FatalCallback | None = None,
        state_file: str | os.PathLike[str] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        resume_from: tuple[str, int | None] | None = None,
    ) -> None:
        if not isinstance(app_id, str) or not app_id.strip():
            raise ConfigError("app_id", "must be a non-empty string")
        if not isinstance(client_secret, str) or not client_secret:
            raise ConfigError("client_secret", "must be a non-empty string")
        if isinstance(intents, bool) or not isinstance(intents, int) or not 0 < intents < 1 << 31:
            raise ConfigError("intents", f"must be a positive intent mask, got {intents!r}")
        if (
            not isinstance(shard, tuple)
            or len(shard) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in shard)
            or not 0 <= shard[0] < shard[1]
        ):
            raise ConfigError(
                "shard", f"must be (shard_id, shard_count) with 0 ≤ id < count, got {shard!r}"
            )
        for name, url in (("api_base", api_base), ("token_url", token_url)):
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ConfigError(name, f"must be an http(s) URL, got {url!r}")
        self.app_id = app_id
        self._secret = Secret(client_secret)
        self.intents = intents
        self.shard = shard
        self.policy = policy if policy is not None else Policy()
        self.api_base = api_base.rstrip("/")
        self.token_url = token_url
        self._on_dispatch = on_dispatch
        self._on_state_change = on_state_change
        self._on_fatal = on_fatal
        self.state_file = Path(state_file) if state_file is not None else None
        self._clock = clock
        self._log = QuietLogger(structlog.get_logger("qqconn")).bind(
            app_id=app_id, shard=f"{shard[0]}/{shard[1]}"
        )
        self._machine = ConnectionMachine(self.policy, rng=rng, logger=self._log)
        self._attempts: dict[int, _Attempt] = {}
        self._timers: dict[ev.Timer, tuple[int, asyncio.TimerHandle]] = {}
        self._host_queue: asyncio.Queue[proto.Dispatch | StateChange] = asyncio.Queue()
        self._tg: asyncio.TaskGroup | None = None
        self._tokens: _TokenSource | None = None
        self._http: httpx.AsyncClient | None = None
        self._host_task: asyncio.Task[None] | None = None
        self._fatal_task: asyncio.Task[None] | None = None
        self._finished = asyncio.Event()
        self._run_done = asyncio.Event()
        self._started = False
        self._feeding = False
        self._pending: list[ev.Event] = []
        self._ready: proto.Dispatch | None = None  # the READY frame being fed, if any
        self.dispatches_delivered = 0
        self.dispatches_dropped = 0
        # The checkpoint a restarted process resumes from: the session, and the last seq the
        # host's callback finished with (never merely received), so no event can be skipped.
        self._host_session: str | None = None
        self._host_seq: int | None = None
        self._last_write = float("-inf")
        if self.state_file is not None:
            self._load_state_file()
        if resume_from is not None:
            self._resume_from_host(resume_from)

    def __repr__(self) -> str:
        return (
            f"<ConnectionManager app_id={self.app_id!r} shard={self.shard} "
            f"state={self._machine.state.name}>"
        )

    # -- reading ---------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The machine's current state."""
        return self._machine.state

    @property
    def machine(self) -> ConnectionMachine:
        """The machine (read it; feeding it is the driver's job)."""
        return self._machine

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able picture of the connection: state, session, counters, fatal. No secrets.

        ``session_id`` and ``last_seq`` are the resume checkpoint: the session, and the last
        ``s`` the host's ``on_dispatch`` has finished with. ``received_seq`` is the last ``s``
        read from the socket.
        """
        snap = self._machine.counters()
        snap["received_seq"] = snap["last_seq"]
        snap["session_id"] = self._host_session
        snap["last_seq"] = self._host_seq
        snap["app_id"] = self.app_id
        snap["shard"] = list(self.shard)
        now = time.time()
        snap["updated_at"] = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        snap["updated_at_unix"] = now
        fatal = self._machine.fatal
        snap["fatal"] = (
            None
            if fatal is None
            else {
                "reason": fatal.reason,
                "close_code": fatal.close_code,
                "retryable": fatal.retryable,
            }
        )
        return snap

    async def access_token(self) -> str:
        """A current access token, for the host's own REST calls (cached, refreshed in time)."""
        if self._tokens is None:
            raise LocalProtocolError(
                "access_token() needs a running manager",
                state=self.state.name,
                event="access_token",
            )
        return (await self._tokens.get()).reveal()

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and keep the connection alive until ``stop()`` or FATAL.

        Returns after ``stop()``; raises :class:`FatalError` when the manager gives up.
        """
        if self._started:
            raise LocalProtocolError("run() was already called", state=self.state.name, event="run")
        self._started = True
        try:
            if self._machine.is_terminal:  # stop() came before run()
                return
            timeout = httpx.Timeout(self.policy.connect_timeout_s)
            client = httpx.AsyncClient(timeout=timeout, verify=tls_context())
            async with client as http, asyncio.TaskGroup() as tg:
                self._http = http
                self._tg = tg
                self._tokens = _TokenSource(
                    http, self.token_url, self.app_id, self._secret, self._clock
                )
                self._host_task = tg.create_task(self._host_loop(), name="qqconn-host")
                self._feed(ev.Started(self._clock()))
                # Whatever an earlier process left (perhaps "alive") is not true now.
                self.write_state_file()
                await self._finished.wait()
                await self._drain_host_queue()
                self._host_task.cancel()
                self.write_state_file()
        finally:
            for _, handle in self._timers.values():
                handle.cancel()
            self._timers.clear()
            self._run_done.set()
        fatal = self._machine.fatal
        if fatal is not None:
            raise FatalError(fatal.reason, close_code=fatal.close_code, retryable=fatal.retryable)

    async def stop(self) -> None:
        """Stop from any state: close the socket, cancel every task and timer, open nothing more.

        Returns within a bounded time (about close_timeout_s). Safe to call more than once,
        before ``run()``, from a callback, and from ``on_fatal``.
        """
        self._feed(ev.StopRequested(self._clock()))
        if not self._started or asyncio.current_task() is self._host_task:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.policy.close_timeout_s * 2 + 1):
                await self._run_done.wait()

    async def _drain_host_queue(self) -> None:
        """Let the host see what it was already given, within close_timeout_s."""
        if self._host_queue.empty():
            return
        try:
            async with asyncio.timeout(self.policy.close_timeout_s):
                await self._host_queue.join()
        except TimeoutError:
            self._log.warning("qqconn.undelivered_on_exit", pending=self._host_queue.qsize())

    # -- feeding the machine -----------------------------------------------------------------

    def _feed(self, event: ev.Event) -> None:
        if self._feeding:  # a command's effect fed an event: keep order, no re-entrancy
            self._pending.append(event)
            return
        self._feeding = True
        try:
            self._execute_all(self._machine.handle(event))
            while self._pending:
                self._execute_all(self._machine.handle(self._pending.pop(0)))
        finally:
            self._feeding = False

    def _execute_all(self, commands: list[cmd.Command]) -> None:
        for command in commands:
            self._execute(command)

    def _execute(self, command: cmd.Command) -> None:
        match command:
            case cmd.OpenSocket(attempt=n, refresh_token=refresh):
                assert self._tg is not None
                att = _Attempt(n, refresh)
                self._attempts[n] = att
                att.task = self._tg.create_task(self._attempt_main(att), name=f"qqconn-attempt-{n}")
            case cmd.SendIdentify(attempt=n):
                self._send_on(
                    n,
                    "identify",
                    lambda a: proto.identify_payload(self._token_of(a), self.intents, self.shard),
                )
            case cmd.SendResume(attempt=n, session_id=sid, seq=seq):
                self._send_on(
                    n, "resume", lambda a: proto.resume_payload(self._token_of(a), sid, seq)
                )
            case cmd.SendHeartbeat(attempt=n, seq=seq):
                self._send_on(n, "heartbeat", lambda a: proto.heartbeat_payload(seq), report=True)
            case cmd.StartTimer(timer=timer, delay_s=delay, attempt=n):
                self._cancel_timer(timer)
                loop = asyncio.get_running_loop()
                handle = loop.call_later(delay, self._timer_fired, timer, n)
                self._timers[timer] = (n, handle)
            case cmd.CancelTimer(timer=timer):
                self._cancel_timer(timer)
            case cmd.CloseSocket(attempt=n, code=code, reason=reason):
                self._close_attempt(n, code, reason)
            case cmd.AnnounceState(state=state, previous=previous, trigger=trigger):
                self._announce(State(state), State[previous], trigger)
            case cmd.NotifyFatal(reason=reason, close_code=code, retryable=retryable):
                error = FatalError(reason, close_code=code, retryable=retryable)
                self._fatal_task = asyncio.get_running_loop().create_task(
                    self._notify_fatal(error), name="qqconn-fatal-notify"
                )
            case cmd.Finish():
                self._finished.set()
            case cmd.DeliverDispatch():  # the READY being handled was adopted
                if self._ready is not None:
                    self._host_queue.put_nowait(self._ready)
                    self._ready = None
            case cmd.DropDispatch():  # pragma: no cover - the fast path decides without commands
                raise AssertionError("dispatch drops are handled by the reader")

    def _timer_fired(self, timer: ev.Timer, attempt: int) -> None:
        current = self._timers.get(timer)
        if current is not None and current[0] == attempt:
            del self._timers[timer]
        try:
            self._feed(ev.TimerFired(timer, attempt, self._clock()))
        except Exception:  # a bug here ends this connection, never the host
            self._internal_error(attempt)

    def _internal_error(self, attempt: int) -> None:
        """A bug in qqconn itself: log it and treat the connection as broken (it resumes)."""
        self._log.exception("qqconn.internal_error", attempt=attempt)
        self._feed(ev.SocketClosed(attempt, self._clock(), None, "internal error"))

    def _cancel_timer(self, timer: ev.Timer) -> None:
        entry = self._timers.pop(timer, None)
        if entry is not None:
            entry[1].cancel()

    def _token_of(self, att: _Attempt) -> str:
        assert att.token is not None
        return att.token.reveal()

    def _send_on(
        self, n: int, what: str, build: Callable[[_Attempt], str], *, report: bool = False
    ) -> None:
        att = self._attempts.get(n)
        if att is None or att.ws is None or att.closing or self._tg is None:
            return
        try:
            payload = build(att)
        except Exception:  # a bug here ends this connection, never the host
            self._internal_error(n)
            return
        self._tg.create_task(self._send(att, what, payload, report), name=f"qqconn-send-{what}")

    async def _send(self, att: _Attempt, what: str, payload: str, report: bool) -> None:
        assert att.ws is not None
        try:
            await att.ws.send(payload)
        except Exception as exc:
            self._log.warning(
                "qqconn.send_failed", what=what, error=f"{type(exc).__name__}: {exc}"[:200]
            )
            if report:
                self._feed(
                    ev.HeartbeatSendFailed(att.number, self._clock(), f"{type(exc).__name__}")
                )
            return
        if report:
            self._feed(ev.HeartbeatSent(att.number, self._clock()))

    def _close_attempt(self, n: int, code: int, reason: str) -> None:
        att = self._attempts.get(n)
        for timer, (owner, handle) in list(self._timers.items()):
            if owner == n:
                handle.cancel()
                del self._timers[timer]
        if att is None or att.closing:
            return
        att.closing = True
        att.close_code = code
        att.close_reason = reason
        # The reader feeds its own SocketClosed; it is already on its way out.
        if att.task is not None and att.task is not asyncio.current_task():
            att.task.cancel()

    def _announce(self, state: State, previous: State, trigger: str) -> None:
        snap = self.snapshot()
        if self.state_file is not None:
            self._write_state_file(snap)
        if self._on_state_change is not None:
            self._host_queue.put_nowait(StateChange(state, previous, trigger, snap))

    def write_state_file(self) -> None:
        """Rewrite the state file now (atomically, mode 0600). No-op without a state file.

        The manager already does this on every state change, on a new session, at most once a
        second while events or heartbeat ACKs arrive, and on exit.
        """
        if self.state_file is not None:
            self._write_state_file(self.snapshot())

    def _state_file_due(self) -> bool:
        return self.state_file is not None and self._clock() - self._last_write >= 1.0

    def _write_state_file(self, snap: dict[str, Any]) -> None:
        assert self.state_file is not None
        directory = self.state_file.parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=".qqconn-", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(snap, fh, sort_keys=True)
                    fh.write("\n")
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.state_file)
                self._last_write = self._clock()
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            self._log.warning(
                "qqconn.state_file_failed", path=str(self.state_file), error=str(exc)[:200]
            )

    async def _notify_fatal(self, error: FatalError) -> None:
        if self._on_fatal is None:
            return
        try:
            result = self._on_fatal(error)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self._log.exception("qqconn.callback_failed", callback="on_fatal")

    async def _host_loop(self) -> None:
        queue = self._host_queue
        while True:
            item = await queue.get()
            try:
                if isinstance(item, proto.Dispatch):
                    await self._deliver(item)
                elif self._on_state_change is not None:
                    result = self._on_state_change(item)
                    if inspect.isawaitable(result):
                        await result
            except Exception:  # a host callback's failure is logged, never raised
                self._log.exception("qqconn.callback_failed", callback="on_state_change")
            finally:
                queue.task_done()

    async def _deliver(self, dispatch: proto.Dispatch) -> None:
        try:
            if self._on_dispatch is not None:
                result = self._on_dispatch(dispatch)
                if inspect.isawaitable(result):
                    await result
        except Exception:  # the host had the event; its own bug is no reason to replay it
            self._log.exception(
                "qqconn.callback_failed", callback="on_dispatch", seq=dispatch.seq, t=dispatch.type
            )
        self.dispatches_delivered += 1
        new_session = dispatch.type == "READY" and isinstance(dispatch.data, dict)
        if new_session:
            self._host_session = dispatch.data.get("session_id")
        if dispatch.seq is not None:
            self._host_seq = dispatch.seq
        if new_session or self._state_file_due():
            self.write_state_file()

    def _resume_from_host(self, checkpoint: tuple[str, int | None]) -> None:
        """A checkpoint the host keeps itself (atomically with its own output) wins over the
        state file's: with it, a restart neither skips nor repeats an event."""
        sid, seq = (
            checkpoint if isinstance(checkpoint, tuple) and len(checkpoint) == 2 else ("", None)
        )
        if (
            not isinstance(sid, str)
            or not sid
            or not (seq is None or (type(seq) is int and seq >= 0))
        ):
            raise ConfigError("resume_from", f"must be (session_id, seq), got {checkpoint!r}")
        self._machine.restore_session(sid, seq)
        self._host_session, self._host_seq = sid, seq
        self._log.info("qqconn.session_restored", last_seq=seq, source="host")

    def _load_state_file(self) -> None:
        """Resume the session an earlier process saved, if the file is recent and ours."""
        assert self.state_file is not None
        try:
            doc = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self._log.warning(
                "qqconn.state_file_ignored", reason=f"unreadable: {type(exc).__name__}"
            )
            return
        reason = None
        age = time.time() - doc.get("updated_at_unix", 0) if isinstance(doc, dict) else None
        if not isinstance(doc, dict):
            reason = "not a JSON object"
        elif doc.get("app_id") != self.app_id or doc.get("shard") != list(self.shard):
            reason = "written for another app id or shard"
        elif not isinstance(doc.get("session_id"), str) or not doc["session_id"]:
            reason = "no session to resume"
        elif not isinstance(age, float) or not 0 <= age <= self.policy.resume_window_s:
            reason = f"older than resume_window_s ({self.policy.resume_window_s:g} s)"
        elif doc.get("state") == State.FATAL.value:
            reason = "the earlier process ended in FATAL"
        seq = doc.get("last_seq") if isinstance(doc, dict) else None
        if (
            reason is None
            and seq is not None
            and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 0)
        ):
            reason = "last_seq is not a sequence number"
        if reason is not None:
            self._log.info("qqconn.state_file_ignored", reason=reason, path=str(self.state_file))
            return
        self._machine.restore_session(doc["session_id"], seq)
        self._host_session, self._host_seq = doc["session_id"], seq
        self._log.info("qqconn.session_restored", last_seq=seq, age_s=round(age or 0.0, 1))

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt_main(self, att: _Attempt) -> None:
        n = att.number
        try:
            ws = await self._open(att)
            if ws is None:
                return
            att.ws = ws
            self._feed(ev.SocketOpened(n, self._clock()))
            await self._read(att, ws)
        except Exception:  # a bug here ends this connection, never the host
            self._internal_error(n)
        finally:
            if att.ws is not None:
                await self._close_ws(att.ws, att.close_code, att.close_reason)
            self._attempts.pop(n, None)

    async def _open(self, att: _Attempt) -> ClientConnection | None:
        """Token, gateway URL, WebSocket. Reports ConnectFailed and returns None on failure."""
        assert self._tokens is not None and self._http is not None
        stage = "token"
        try:
            att.token = await self._tokens.get(refresh=att.refresh_token)
            stage = "gateway"
            response = await self._http.get(
                f"{self.api_base}/gateway/bot",
                headers={
                    "Authorization": f"QQBot {att.token.reveal()}",
                    "X-Union-Appid": self.app_id,
                },
            )
            url = proto.parse_gateway_response(response.status_code, response.content)
            stage = "handshake"
            return await websockets.connect(
                url,
                ssl=tls_context() if url.startswith("wss://") else None,
                open_timeout=self.policy.connect_timeout_s,
                close_timeout=self.policy.close_timeout_s,
                ping_interval=None,  # liveness is the machine's: heartbeats and ACKs
                max_size=self.policy.max_frame_bytes,
                compression=None,
                user_agent_header="qqconn/0.1",
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            detail = self._scrub(f"{type(exc).__name__}: {exc}")
            self._log.warning("qqconn.connect_failed", stage=stage, error=detail[:200])
            auth = isinstance(exc, CredentialsRefused)
            self._feed(ev.ConnectFailed(att.number, self._clock(), stage, detail[:200], auth=auth))
            return None

    def _scrub(self, text: str) -> str:
        """Remove secrets from a message that may echo a request."""
        secrets = [self._secret.reveal()]
        if self._tokens is not None and self._tokens.current is not None:
            secrets.append(self._tokens.current.reveal())
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    async def _read(self, att: _Attempt, ws: ClientConnection) -> None:
        n = att.number
        machine = self._machine
        clock = self._clock
        put = self._host_queue.put_nowait
        accept = machine.accept_dispatch
        deliver, replayed = DispatchVerdict.DELIVER, DispatchVerdict.REPLAYED
        code: int | None = None
        reason = ""
        try:
            while True:
                message = await ws.recv()
                now = clock()
                try:
                    frame = proto.parse_frame(message)
                except RemoteProtocolError as exc:
                    self._log.warning("qqconn.bad_frame", error=str(exc))
                    self._feed(ev.FrameRejected(n, now, str(exc)[:200]))
                    if att.closing:
                        return
                    continue
                if type(frame) is proto.Dispatch:
                    verdict = accept(n, now, frame.seq)
                    if verdict is deliver:
                        put(frame)
                        if frame.seq is None:
                            self._log.warning("qqconn.dispatch_without_seq", t=frame.type)
                    elif verdict is replayed:
                        self.dispatches_dropped += 1
                        self._log.debug("qqconn.dispatch_replayed", seq=frame.seq)
                    continue
                if type(frame) is proto.Ready:
                    self._ready = proto.Dispatch(frame.seq, "READY", frame.data, frame.event_id)
                self._feed(self._event_for(frame, n, now))
                self._ready = None
                if att.closing:  # the machine ended this attempt (op 7, op 9, ...): leave now
                    return
                if type(frame) is proto.HeartbeatAck and self._state_file_due():
                    self.write_state_file()  # keeps updated_at fresh on a quiet connection
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                code, reason = exc.rcvd.code, exc.rcvd.reason
            if exc.sent is not None and exc.sent.code == 1009:
                self._log.warning("qqconn.frame_too_large", max_bytes=self.policy.max_frame_bytes)
                code, reason = 1009, "frame too large"
        except OSError as exc:
            reason = type(exc).__name__
        self._feed(ev.SocketClosed(n, clock(), code, reason))

    @staticmethod
    def _event_for(frame: proto.Inbound, n: int, now: float) -> ev.Event:
        match frame:
            case proto.HeartbeatAck():
                return ev.HeartbeatAcked(n, now)
            case proto.Hello(interval_ms=raw):
                return ev.HelloReceived(n, now, raw)
            case proto.Ready(session_id=sid, seq=seq):
                return ev.ReadyReceived(n, now, sid, seq)
            case proto.Resumed(seq=seq):
                return ev.ResumedReceived(n, now, seq)
            case proto.Reconnect():
                return ev.ReconnectRequested(n, now)
            case proto.InvalidSession(resumable=resumable):
                return ev.InvalidSessionReceived(n, now, resumable)
            case proto.Heartbeat():
                return ev.HeartbeatRequested(n, now)
        raise AssertionError(f"unhandled frame {frame!r}")  # pragma: no cover

    async def _close_ws(self, ws: ClientConnection, code: int, reason: str) -> None:
        """Close within close_timeout_s, whatever the peer does."""
        try:
            async with asyncio.timeout(self.policy.close_timeout_s + 0.5):
                await ws.close(code, reason)
        except (TimeoutError, OSError, ConnectionClosed):
            pass
        except asyncio.CancelledError:
            ws.transport.abort()
            raise
        finally:
            if ws.transport is not None and not ws.transport.is_closing():
                ws.transport.abort()
