"""The manager: configuration and lifecycle of one gateway connection (one shard).

:class:`ConnectionManager` checks its configuration, builds the parts (the machine, the
:class:`~.feed.Feeder`, the :class:`~.host.HostLane`, the :class:`~.statefile.StateFile`) and
runs them: ``run()`` owns one :class:`asyncio.TaskGroup` holding the host task and one task per
attempt; ``stop()`` asks the machine to stop and waits, bounded, for ``run()`` to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from qqconn import checkpoint
from qqconn import commands as cmd
from qqconn import events as ev
from qqconn._log import get_logger
from qqconn.checkpoint import Resumable
from qqconn.driver.apps import shared_limiter
from qqconn.driver.attempt import RunContext
from qqconn.driver.config import check_config, resume_point
from qqconn.driver.feed import Feeder, observe_change
from qqconn.driver.flag import Flag
from qqconn.driver.host import (
    DispatchCallback,
    FatalCallback,
    HostLane,
    StateCallback,
)
from qqconn.driver.link import AppLinkUse, app_link
from qqconn.driver.permits import IdentifyLimiter, LocalIdentifyLimiter
from qqconn.driver.statefile import (
    CheckpointStore,
    StateFile,
    flush_store,
    judge_stored,
    load_stored,
)
from qqconn.driver.tokens import DEFAULT_TOKEN_URL, Secret, TokenSource
from qqconn.errors import FatalError, LocalProtocolError
from qqconn.machine import ConnectionMachine, State
from qqconn.metrics import NO_METRICS, ConnectionObserver, Metrics
from qqconn.policy import Policy

__all__ = ["DEFAULT_API_BASE", "ConnectionManager"]

DEFAULT_API_BASE = "https://api.sgroup.qq.com"

# Managers not given a policy share this one (a Policy is frozen: nothing can change it).
_DEFAULT_POLICY = Policy()


class ConnectionManager:
    """Keeps one QQ gateway connection (one shard) alive, and says when it cannot.

    ``on_dispatch(dispatch)`` gets each event once, in ``s`` order (READY included, RESUMED
    not); ``on_state_change(change)`` gets every state change, in order with the dispatches;
    both run off the socket's reader (a plain function in loop callbacks, a coroutine function
    on a task; docs/behaviour.md rule 22), so a slow or raising callback never delays reading.
    ``on_fatal(error)`` is called exactly once if the manager gives up, from a task of its own.
    Callbacks may be plain functions or coroutine functions; their exceptions are logged.

    ``await run()`` returns after ``stop()``, or raises :class:`FatalError` when the manager
    gives up. ``state_file``, if given, is rewritten atomically (mode 0600) on every state
    change with a JSON snapshot that never holds a secret.

    Managers of one app on one event loop share one HTTP client and one token source
    (:mod:`qqconn.driver.apps`) unless given ``http=`` / ``tokens=``; the shards of one bot
    (``shard`` count above one) also share one identify limiter unless given ``permits=``.
    ``checkpoints``: a :class:`~qqconn.driver.statefile.CheckpointStore` that keeps the
    resume checkpoint besides the state file (``qqconn.redis.RedisCheckpoints``): a run with
    no session of its own asks it first, and every checkpoint is saved to it too.
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
        permits: IdentifyLimiter | None = None,
        http: httpx.AsyncClient | None = None,
        tokens: TokenSource | None = None,
        metrics: Metrics | None = None,
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        check_config(app_id, client_secret, intents, shard, api_base, token_url)
        self.app_id = app_id
        self._secret = Secret(client_secret)
        self.intents = intents
        self.shard = shard
        self.policy = policy if policy is not None else _DEFAULT_POLICY
        self.api_base = api_base.rstrip("/")
        self.token_url = token_url
        self.state_file = Path(state_file) if state_file is not None else None
        self._clock = clock
        #: The :class:`~qqconn.metrics.Metrics` this manager feeds itself (None: none).
        self.metrics = metrics
        self._obs: ConnectionObserver = (
            metrics.for_connection(app_id, shard) if metrics is not None else NO_METRICS
        )
        self._log = get_logger("qqconn").bind(app_id=app_id, shard=f"{shard[0]}/{shard[1]}")
        self._file = None if self.state_file is None else StateFile(self.state_file, log=self._log)
        #: Where else the resume checkpoint is kept (None: only the state file).
        self.checkpoints = checkpoints
        self._resume_given = resume_from is not None
        self._rng = rng
        restored = resume_point(
            self._file,
            resume_from,
            app_id=self.app_id,
            shard=self.shard,
            resume_window_s=self.policy.resume_window_s,
            log=self._log,
        )
        self._machine = ConnectionMachine(self.policy, rng=rng, logger=self._log, restored=restored)
        self._host = HostLane(
            on_dispatch=on_dispatch,
            on_state_change=on_state_change,
            on_fatal=on_fatal,
            handled=self._handled,
            log=self._log,
        )
        self._host.ready = restored.ready if restored is not None else None
        # Set by the machine's Finish: the run winds down. (Flags, not Events: see flag.py.)
        self._finished = Flag()
        self._feeder = self._new_feeder()
        #: The identify limiter (docs/behaviour.md rule 17): the host's shared one, else this
        #: manager's own (right for a bot with one shard in one process).
        self.permits: IdentifyLimiter = (
            permits
            if permits is not None
            else LocalIdentifyLimiter(window_s=self.policy.identify_window_s, clock=clock)
        )
        self._permits_given = permits is not None
        self._shared_http = http
        self._given_tokens = tokens
        self._tokens: TokenSource | None = tokens
        self._started = False
        self._running = False
        self._task: asyncio.Task[None] | None = None
        # Set (and replaced) at every state change and when a run ends: what
        # wait_until_alive() and stop() sleep on.
        self._changed = Flag()

    def _new_feeder(self) -> Feeder:
        return Feeder(
            self._machine,
            clock=self._clock,
            log=self._log,
            host=self._host,
            announce=self._announce,
            checkpoint=self.write_state_file,
            finish=self._finished.set,
            obs=self._obs,
        )

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

    @property
    def dispatches_delivered(self) -> int:
        """Dispatches the host's ``on_dispatch`` has finished with."""
        return self._host.delivered

    @property
    def dispatches_dropped(self) -> int:
        """Dispatches not handed to the host because it already had their ``s`` (replays)."""
        return self._feeder.dropped

    @property
    def ready(self) -> dict[str, Any] | None:
        """The ``d`` of the last READY (the bot's own ``user``, ``session_id``, ``shard``), or
        None before the first one. It stays after a Resume, and after a restart that Resumed
        a session from the state file (which keeps it)."""
        return self._host.ready

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able picture of the connection: state, session, counters, fatal. No secrets.

        ``session_id`` and ``last_seq`` are the resume checkpoint: the session, and the last
        ``s`` the host's ``on_dispatch`` has finished with. ``received_seq`` is the last ``s``
        read from the socket. The keys are :data:`qqconn.checkpoint.SCHEMA_KEYS`.
        """
        return checkpoint.state_document(
            self._machine.snapshot_fields(),
            app_id=self.app_id,
            shard=self.shard,
            now_unix=time.time(),
            ready=self._host.ready,
        )

    async def access_token(self) -> str:
        """A current access token, for the host's own REST calls (cached, refreshed in time)."""
        if self._tokens is None:
            raise LocalProtocolError(
                "access_token() needs a running manager",
                state=self.state.name,
                event="access_token",
            )
        return (await self._tokens.get()).reveal()

    def write_state_file(self) -> None:
        """Rewrite the state file now (atomically, mode 0600). No-op without a state file.

        The manager already does this on every state change, on exit, and whenever the machine
        says so (a new session handled; at most once per ``Policy.checkpoint_interval_s`` while
        events are handled or heartbeats acknowledged).
        """
        if self._file is not None or self.checkpoints is not None:
            self._keep(self.snapshot())

    def _keep(self, snap: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(snap)
        if self.checkpoints is not None:
            self.checkpoints.save(snap)

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and keep the connection alive until ``stop()`` or FATAL.

        Returns after ``stop()``; raises :class:`FatalError` when the manager gives up, once
        ``on_fatal`` has finished. A manager whose run ended (stopped, or FATAL retryable) may
        ``run()`` again: fresh budgets (a new machine), the same session if it can be resumed.
        After a non-retryable FATAL, or while a run is going on, ``run()`` raises
        :class:`LocalProtocolError`.
        """
        self._begin()
        await self._run()

    def _begin(self) -> None:
        """Claim the manager for one run (a new machine if an earlier run ended)."""
        if self._running:
            raise LocalProtocolError("run() is already running", state=self.state.name, event="run")
        if self._started:
            self._restart()
        self._started = self._running = True

    async def _run(self) -> None:
        try:
            if self._machine.is_terminal:  # stop() came before run()
                return
            await self._restore_from_store()
            if self._machine.is_terminal:
                return
            if not self._permits_given and self.shard[1] > 1:
                self.permits = shared_limiter(
                    app_id=self.app_id,
                    shard_count=self.shard[1],
                    window_s=self.policy.identify_window_s,
                    clock=self._clock,
                )
            async with self._app() as (http, tokens), asyncio.TaskGroup() as tg:
                self._tokens = tokens
                self._feeder.start(
                    RunContext(
                        self.app_id,
                        self.intents,
                        self.shard,
                        self.api_base,
                        self.policy,
                        http,
                        tokens,
                        tg,
                        self.permits,
                    )
                )
                self._host.start(tg)
                self._feeder.feed(ev.Started(self._clock()))
                # Whatever an earlier process left (perhaps "alive") is not true now.
                self.write_state_file()
                await self._finished.wait()
                await self._host.drain(self.policy.close_timeout_s)
                self._host.cancel()
                self.write_state_file()
                if self.checkpoints is not None:
                    await flush_store(self.checkpoints, self.policy.close_timeout_s, self._log)
        finally:
            self._feeder.timers.cancel_all()
            self._host.cancel()  # no lane runs a callback after run() (inline runs included)
            self.permits.withdraw(self.shard[0])
            self._running = False
            self._wake()
        await self._host.fatal_notified()  # on_fatal finishes before run() raises
        fatal = self._machine.fatal
        if fatal is not None:
            raise FatalError(fatal.reason, close_code=fatal.close_code, retryable=fatal.retryable)

    def _app(self) -> AppLinkUse:
        """The HTTP client and token source of this run (:func:`~qqconn.driver.link.app_link`)."""
        if self._shared_http is not None and self._given_tokens is None:
            self._given_tokens = TokenSource(
                self._shared_http,
                self.token_url,
                self.app_id,
                self._secret,
                self._clock,
                self.policy.token_refresh_margin_s,
            )
        return app_link(
            self._shared_http,
            self._given_tokens,
            app_id=self.app_id,
            secret=self._secret,
            token_url=self.token_url,
            clock=self._clock,
            policy=self.policy,
        )

    async def _restore_from_store(self) -> None:
        """A run with no session of its own asks the checkpoint store for one (a shard
        restarted on another machine). A store that cannot answer is logged, never fatal:
        the run then Identifies."""
        store = self.checkpoints
        if store is None or self._resume_given or self._machine.checkpoint is not None:
            return
        answered, doc = await load_stored(
            store, self.app_id, self.shard, self.policy.connect_timeout_s, self._log
        )
        if not answered:
            return
        if self._machine.is_terminal:  # stop() came while the store answered
            return
        restored = judge_stored(
            doc,
            app_id=self.app_id,
            shard=self.shard,
            resume_window_s=self.policy.resume_window_s,
            log=self._log,
        )
        if restored is None:
            return
        self._machine = ConnectionMachine(
            self.policy, rng=self._rng, logger=self._log, restored=restored
        )
        self._host.ready = restored.ready
        self._feeder = self._new_feeder()

    async def stop(self) -> None:
        """Stop from any state: close the socket, cancel every task and timer, open nothing more.

        Returns within ``Policy.stop_bound_s``. Safe to call more than once, before ``run()``,
        from a callback, and from ``on_fatal``.
        """
        self._feeder.feed(ev.StopRequested(self._clock()))
        if not self._running or asyncio.current_task() in self._host.tasks:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.policy.stop_bound_s):
                while self._running:  # run()'s finally clears it, then wakes us
                    await self._changed.wait()

    def start(self) -> asyncio.Task[None]:
        """Run in the background: ``run()`` on a task of its own, returned.

        The task's exception is always retrieved (so asyncio never logs "Task exception was
        never retrieved"); ``await`` the task, or :meth:`wait`, to see it.
        """
        self._begin()  # at once: wait_until_alive() right after sees the new run's machine
        task = self._task = asyncio.get_running_loop().create_task(self._run(), name="qqconn-run")
        task.add_done_callback(_retrieve)
        return task

    async def wait(self) -> None:
        """Wait for the background run (:meth:`start`, ``async with``) to end; raise what
        ``run()`` raised (:class:`FatalError`)."""
        if self._task is None:
            raise LocalProtocolError("wait() needs start()", state=self.state.name, event="wait")
        await asyncio.shield(self._task)

    async def wait_until_alive(self, timeout: float | None = None) -> None:
        """Return once the connection is ALIVE (at once if it is).

        Raises :class:`TimeoutError` after ``timeout`` seconds (None: no limit),
        :class:`FatalError` if the manager gives up first, :class:`LocalProtocolError` if it
        stopped first. It may be called before the run has begun (right after ``start()``).
        """
        async with asyncio.timeout(timeout):
            while True:
                if self._machine.state is State.ALIVE:
                    return
                fatal = self._machine.fatal
                if fatal is not None:
                    raise FatalError(
                        fatal.reason, close_code=fatal.close_code, retryable=fatal.retryable
                    )
                if self._machine.state is State.STOPPED:
                    raise LocalProtocolError(
                        "the manager stopped before the connection was alive",
                        state=self.state.name,
                        event="wait_until_alive",
                    )
                await self._changed.wait()

    async def __aenter__(self) -> ConnectionManager:
        """``async with manager:`` runs it in the background (:meth:`start`)."""
        self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Stop, and wait for the run to end. A :class:`FatalError` the run ended with is
        raised here, unless the block is already raising."""
        await self.stop()
        task = self._task
        if task is None:
            return
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(self.policy.stop_bound_s):
                await asyncio.wait({task})
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            return
        if exc_type is None and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    # -- what the parts report -------------------------------------------------------------

    def _announce(self, change: cmd.AnnounceState) -> None:
        snap = self.snapshot()
        self._keep(snap)
        observe_change(self._obs, self._machine, change)
        self._host.announce(change, snap)
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, Flag()
        changed.set()

    def _restart(self) -> None:
        """A new machine for a new run: fresh budgets, the old run's resumable session."""
        old = self._machine
        if old.fatal is not None and not old.fatal.retryable:
            raise LocalProtocolError(
                f"the manager gave up for good: {old.fatal.reason}",
                state=old.state.name,
                event="run",
            )
        restored = old.checkpoint
        if restored is not None:
            restored = Resumable(restored.session_id, restored.last_seq, self._host.ready)
            self._log.info("qqconn.session_restored", last_seq=restored.last_seq, source="rerun")
        self._machine = ConnectionMachine(
            self.policy, rng=self._rng, logger=self._log, restored=restored
        )
        self._finished.clear()
        self._feeder = self._new_feeder()
        self._host.reset_fatal()

    def _handled(self, delivery: cmd.DeliverDispatch) -> None:
        # DispatchHandled, through the machine's fast path for it (one call, no event object).
        seq = delivery.dispatch.seq
        self._obs.dispatch_delivered()
        command = self._machine.handle_dispatch_handled(self._clock(), delivery.session_id, seq)
        if command is not None:
            self._feeder.execute(command)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a background run's outcome as seen (the machine already logged a FATAL)."""
    if not task.cancelled():
        task.exception()
