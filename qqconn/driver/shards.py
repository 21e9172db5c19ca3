"""Every shard of one bot in one process: :class:`BotShards`.

:class:`BotShards` reads ``GET /gateway/bot`` once (the recommended ``shards`` and the
``session_start_limit``, docs/protocol.md §3.2), starts one
:class:`~qqconn.driver.manager.ConnectionManager` per shard in shard order, and gives them one
HTTP client, one token source and one identify limiter (docs/behaviour.md rule 17): each shard
still runs its own machine, so one shard's troubles never change another's counters.

What a shard's FATAL does is the host's to decide: ``on_fatal(shard_id, error)`` is called
for it (once), and ``on_shard_fatal`` says what follows: ``"stop_all"`` (the default: a bot
that misses a shard's guilds is broken; every other shard stops and :meth:`BotShards.run`
raises that :class:`~qqconn.errors.FatalError`) or ``"keep_others"`` (the others carry on;
``run()`` raises the first FatalError only once every shard has ended).

Many bots in one process: one :class:`BotShards` (or ConnectionManager) per bot, run side by
side in one TaskGroup; limiters are per app, so bots never wait for one another (README,
"Shards").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import structlog

from qqconn import protocol as proto
from qqconn._log import QuietLogger
from qqconn.driver.apps import shared_app
from qqconn.driver.host import StateChange
from qqconn.driver.manager import DEFAULT_API_BASE, ConnectionManager
from qqconn.driver.permits import IdentifyLimiter, LocalIdentifyLimiter
from qqconn.driver.statefile import CheckpointStore
from qqconn.driver.tokens import DEFAULT_TOKEN_URL, Secret, TokenSource
from qqconn.errors import ConfigError, FatalError
from qqconn.machine import State
from qqconn.metrics import Metrics
from qqconn.policy import Policy
from qqconn.protocol import Dispatch

__all__ = ["MAX_SHARDS", "BotShards", "ShardFatalPolicy"]

#: More shards than this in one process is a configuration mistake, not a bot.
MAX_SHARDS = 4096

ShardFatalPolicy = Literal["stop_all", "keep_others"]

ShardDispatch = Callable[[int, Dispatch], Awaitable[None] | None]
ShardState = Callable[[int, StateChange], Awaitable[None] | None]
ShardFatal = Callable[[int, FatalError], Awaitable[None] | None]


class BotShards:
    """All shards of one bot, in this process.

    ``shards``: ``"auto"`` (what ``/gateway/bot`` recommends) or a count. ``shard_ids``: the
    ids this process runs (default all of ``range(count)``; give a subset to spread one bot's
    shards over processes, then share a Redis limiter, ``permits=``, and a checkpoint store,
    ``checkpoints=``: ``qqconn.redis``). Callbacks get the shard id first. ``state_dir``: one state file per shard, ``shard-<id>.json``.
    """

    def __init__(
        self,
        *,
        app_id: str,
        client_secret: str,
        intents: int,
        shards: int | Literal["auto"] = "auto",
        shard_ids: list[int] | None = None,
        policy: Policy | None = None,
        api_base: str = DEFAULT_API_BASE,
        token_url: str = DEFAULT_TOKEN_URL,
        on_dispatch: ShardDispatch | None = None,
        on_state_change: ShardState | None = None,
        on_fatal: ShardFatal | None = None,
        on_shard_fatal: ShardFatalPolicy = "stop_all",
        state_dir: str | os.PathLike[str] | None = None,
        permits: IdentifyLimiter | None = None,
        checkpoints: CheckpointStore | None = None,
        metrics: Metrics | None = None,
        resume_from: Mapping[int, tuple[str, int | None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if shards != "auto" and (
            isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS
        ):
            raise ConfigError("shards", f"must be 'auto' or 1..{MAX_SHARDS}, got {shards!r}")
        if on_shard_fatal not in ("stop_all", "keep_others"):
            raise ConfigError(
                "on_shard_fatal", f"must be 'stop_all' or 'keep_others', got {on_shard_fatal!r}"
            )
        if not isinstance(client_secret, str) or not client_secret:
            raise ConfigError("client_secret", "must be a non-empty string")
        self.app_id = app_id
        self._secret = Secret(client_secret)
        self.intents = intents
        self.requested = shards
        self._shard_ids = shard_ids
        self.policy = policy if policy is not None else Policy()
        self.api_base = api_base.rstrip("/")
        self.token_url = token_url
        self._on_dispatch = on_dispatch
        self._on_state_change = on_state_change
        self._on_fatal = on_fatal
        self.on_shard_fatal: ShardFatalPolicy = on_shard_fatal
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.permits: IdentifyLimiter = (
            permits
            if permits is not None
            else LocalIdentifyLimiter(window_s=self.policy.identify_window_s, clock=clock)
        )
        self.checkpoints = checkpoints
        self.metrics = metrics
        self._resume_from = dict(resume_from or {})
        self._clock = clock
        self._log = QuietLogger(structlog.get_logger("qqconn")).bind(app_id=app_id)
        #: The managers, by shard id, once :meth:`run` has read the shard count.
        self.managers: dict[int, ConnectionManager] = {}
        self.count: int | None = None
        self.fatal: dict[int, FatalError] = {}
        self._stopping = False
        self._ready = asyncio.Event()

    def __repr__(self) -> str:
        return f"<BotShards app_id={self.app_id!r} count={self.count} running={len(self.managers)}>"

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every shard's snapshot (``"shards"``, by id as a string) and the whole: ``state``
        is ``"alive"`` only when every shard is, else the least advanced shard's state."""
        snaps = {str(i): m.snapshot() for i, m in sorted(self.managers.items())}
        alive = sum(1 for m in self.managers.values() if m.state is State.ALIVE)
        return {
            "app_id": self.app_id,
            "shard_count": self.count,
            "alive": alive,
            "state": "alive" if self.managers and alive == len(self.managers) else "degraded",
            "shards": snaps,
        }

    def state_document(self) -> dict[str, Any]:
        """:meth:`snapshot` as a state file (``qqconn run --shards --state-file``): with
        ``updated_at`` / ``updated_at_unix``; ``qqconn status`` judges every shard in it."""
        doc = self.snapshot()
        now = time.time()
        doc["updated_at"] = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        doc["updated_at_unix"] = now
        if not self.managers:
            doc["state"] = "starting"
        return doc

    @property
    def all_alive(self) -> bool:
        """Is every shard of this process ALIVE?"""
        return bool(self.managers) and all(m.state is State.ALIVE for m in self.managers.values())

    async def started(self) -> None:
        """Wait until :meth:`run` has created its managers."""
        await self._ready.wait()

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Read ``/gateway/bot``, start every shard, run until :meth:`stop` or a FATAL that
        ends the whole (``on_shard_fatal``)."""
        async with shared_app(
            app_id=self.app_id,
            secret=self._secret,
            token_url=self.token_url,
            clock=self._clock,
            margin_s=self.policy.token_refresh_margin_s,
            timeout_s=self.policy.connect_timeout_s,
        ) as link:
            http, tokens = link.http, link.tokens
            count = await self._shard_count(http, tokens)
            self.count = count
            ids = self._shard_ids if self._shard_ids is not None else list(range(count))
            if not ids or any(not 0 <= i < count for i in ids):
                raise ConfigError("shard_ids", f"must be ids below the shard count {count}")
            for shard_id in sorted(ids):
                self.managers[shard_id] = self._manager(shard_id, count, http, tokens)
            self._ready.set()
            self._log.info("qqconn.shards_starting", count=count, here=sorted(ids))
            async with asyncio.TaskGroup() as tg:
                for shard_id, manager in self.managers.items():
                    tg.create_task(
                        self._run_one(shard_id, manager), name=f"qqconn-shard-{shard_id}"
                    )
        if self.fatal:
            raise next(iter(self.fatal.values()))

    async def stop(self) -> None:
        """Stop every shard (each within ``Policy.stop_bound_s``, all at once)."""
        self._stopping = True
        await asyncio.gather(*(m.stop() for m in self.managers.values()))

    async def _shard_count(self, http: httpx.AsyncClient, tokens: TokenSource) -> int:
        if self.requested != "auto" and self._shard_ids is not None:
            return self.requested
        token = await tokens.get()
        response = await http.get(
            f"{self.api_base}/gateway/bot",
            headers={"Authorization": f"QQBot {token.reveal()}", "X-Union-Appid": self.app_id},
        )
        gateway = proto.parse_gateway_bot(response.status_code, response.content)
        if gateway.limit is not None:
            self.permits.observe(gateway.limit)
            if gateway.limit.remaining < (gateway.shards or 1):
                self._log.warning(
                    "qqconn.session_starts_short",
                    remaining=gateway.limit.remaining,
                    reset_after_ms=gateway.limit.reset_after_ms,
                )
        if self.requested != "auto":
            return self.requested
        return gateway.shards or 1

    def _manager(
        self, shard_id: int, count: int, http: httpx.AsyncClient, tokens: TokenSource
    ) -> ConnectionManager:
        def bind(callback: Callable[..., Any] | None) -> Callable[[Any], Any] | None:
            if callback is None:
                return None
            return lambda x: callback(shard_id, x)

        def fatal(error: FatalError) -> Any:
            self.fatal.setdefault(shard_id, error)
            self._log.error("qqconn.shard_fatal", shard=shard_id, reason=error.reason)
            return None if self._on_fatal is None else self._on_fatal(shard_id, error)

        state_file = None if self.state_dir is None else self.state_dir / f"shard-{shard_id}.json"
        return ConnectionManager(
            app_id=self.app_id,
            client_secret=self._secret.reveal(),
            intents=self.intents,
            shard=(shard_id, count),
            policy=self.policy,
            api_base=self.api_base,
            token_url=self.token_url,
            on_dispatch=bind(self._on_dispatch),
            on_state_change=bind(self._on_state_change),
            on_fatal=fatal,
            state_file=state_file,
            clock=self._clock,
            permits=self.permits,
            checkpoints=self.checkpoints,
            metrics=self.metrics,
            resume_from=self._resume_from.get(shard_id),
            http=http,
            tokens=tokens,
        )

    async def _run_one(self, shard_id: int, manager: ConnectionManager) -> None:
        try:
            await manager.run()
        except FatalError as error:
            self.fatal.setdefault(shard_id, error)
            if self.on_shard_fatal == "stop_all" and not self._stopping:
                self._stopping = True
                with contextlib.suppress(Exception):
                    await asyncio.gather(
                        *(m.stop() for i, m in self.managers.items() if i != shard_id)
                    )
