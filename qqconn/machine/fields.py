"""What one connection's machine knows: its counters, its session and the resume checkpoint.

:class:`MachineFields` holds the state of one :class:`~qqconn.machine.ConnectionMachine`
(the counters of docs/behaviour.md, the current attempt, heartbeats, rule 19's poison-frame
bookkeeping); the guards, actions and outcomes are mixins on it. Nothing here decides.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from transitions import Machine

from qqconn import commands as cmd
from qqconn._log import QuietLogger, get_logger
from qqconn.checkpoint import Resumable
from qqconn.endings import Ending
from qqconn.errors import ConfigError
from qqconn.machine.constants import _NEVER, QUICK_GRACE_S
from qqconn.machine.table import State
from qqconn.policy import Policy


@dataclass(frozen=True, slots=True)
class Fatal:
    """Why the machine gave up."""

    reason: str
    close_code: int | None
    retryable: bool


#: The jitter source of every machine not given one of its own: one per process, since a
#: ``random.Random`` holds 2.5 KiB of state and nothing needs a machine's draws apart.
_SHARED_RNG = random.Random()


def _check_restored(restored: object) -> Resumable | None:
    if restored is None:
        return None
    if (
        not isinstance(restored, Resumable)
        or not isinstance(restored.session_id, str)
        or not restored.session_id
        or not (
            restored.last_seq is None or (type(restored.last_seq) is int and restored.last_seq >= 0)
        )
    ):
        raise ConfigError(
            "restored", f"must be a Resumable(session_id, last_seq), got {restored!r}"
        )
    return restored


class MachineFields:
    """The fields of one connection's machine, set as the constructor leaves them."""

    # Slots, not a __dict__: a machine has some fifty fields, past the 30 keys CPython's
    # shared-key instance dicts hold, so each machine paid for a dict of its own (issue 10,
    # the per-connection cost). :func:`machine_fields` lists them for code that copies a machine.
    __slots__ = (
        "__weakref__",  # 8 bytes: a host (or a test) may hold a machine weakly
        "_checkpoint_at",
        "_checkpoint_interval_s",
        "_counted",
        "_handled_seq",
        "_handled_session",
        "_last_seq",
        "_log",
        "_machine",
        "_out",
        "_oversized_at",
        "_progress_at",
        "_progress_interval_s",
        "_queue",
        "_rng",
        "_session_id",
        "_skip_pending",
        "_skipped_at",
        "acks",
        "attempt",
        "attempt_open",
        "auth_failures",
        "awaiting_ack",
        "beat_sent_at",
        "connect_stage",
        "connect_url",
        "failed_attempts",
        "fatal",
        "heartbeat_interval_s",
        "identify_refusals",
        "identify_wait",
        "last_ack_latency_s",
        "last_ending",
        "last_frame_at",
        "next_delay_s",
        "now",
        "opened_at",
        "permit_deferrals",
        "policy",
        "quick_drops",
        "reached_session",
        "refresh_token",
        "resume_failures",
        "send_failures",
        "sent_resume",
        "sessions_given_up",
        "skipped_seqs",
        "stall_excused",
        "state",
    )

    # Set by the engine (transitions) on the model.
    state: State
    #: The engine this machine's rows run on: the process's shared one unless a test gave one.
    _machine: Machine

    def __init__(
        self,
        policy: Policy | None,
        rng: random.Random | None,
        logger: Any,
        restored: Resumable | None,
    ) -> None:
        self.policy = policy if policy is not None else Policy()
        self._rng = rng if rng is not None else _SHARED_RNG
        self._log = QuietLogger(logger) if logger is not None else get_logger("qqconn")
        restored = _check_restored(restored)
        # The session, and the last s received on it (what Resume and heartbeats carry).
        self._session_id: str | None = restored.session_id if restored else None
        self._last_seq: int | None = restored.last_seq if restored else None
        # The resume checkpoint: the session and the last s the host finished with.
        self._handled_session: str | None = self._session_id
        self._handled_seq: int | None = self._last_seq
        self._checkpoint_at = _NEVER
        self._checkpoint_interval_s = self.policy.checkpoint_interval_s
        self._progress_interval_s = self.policy.progress_log_interval_s
        # The counters of docs/behaviour.md.
        self.quick_drops = 0
        self.failed_attempts = 0
        self._counted: tuple[Ending | None, bool, bool] = (None, False, False)
        self.resume_failures = 0
        self.auth_failures = 0
        self.identify_refusals = 0
        # Identify permits (rule 17): deferrals in a row, and the last one's wait and reason.
        self.permit_deferrals = 0
        self.identify_wait: dict[str, Any] | None = None
        # The current attempt (one socket each).
        self.attempt = 0
        self.attempt_open = False
        self.opened_at: float | None = None
        self.reached_session = False
        self.sent_resume = False
        self.refresh_token = False
        # Heartbeats on the current socket.
        self.heartbeat_interval_s: float | None = None
        self.awaiting_ack = False
        self.beat_sent_at: float | None = None
        self.acks = 0
        self.last_ack_latency_s: float | None = None
        self.send_failures = 0
        self.last_frame_at: float | None = None
        self.stall_excused = False  # a stalled loop excused since the last heartbeat
        # Rule 19 (poison frames): where the last oversized ending happened (session, last s
        # received), the point the last skip left, an s to fold into the checkpoint once the
        # host finished the one before it, and what was given up so far.
        self._oversized_at: tuple[str, int | None] | None = None
        self._skipped_at: tuple[str, int] | None = None
        self._skip_pending = -1
        self.skipped_seqs: tuple[int, ...] = ()
        self.sessions_given_up = 0
        # Where the current attempt is (ConnectProgressed, then the socket's own steps), and
        # the URL that stage asked: a deadline that passes names them.
        self.connect_stage: str | None = None
        self.connect_url: str | None = None
        # When qqconn.retrying was last logged (at most once per progress_log_interval_s).
        self._progress_at = _NEVER
        # Bookkeeping for the next wait and the end.
        self.last_ending: Ending | None = None
        self.fatal: Fatal | None = None
        self.next_delay_s: float | None = None
        self.now = 0.0
        self._out: list[cmd.Command] = []
        self._queue: list[str] = []  # triggers queued by a callback (this machine's only)

    def _lived_less_than_threshold(self) -> bool:
        """Did the socket of this attempt (opened) live less than the quick threshold?"""
        assert self.opened_at is not None
        lived = self.now - self.opened_at
        return lived + QUICK_GRACE_S < self.policy.quick_disconnect_threshold_s


def machine_fields(machine: MachineFields) -> dict[str, Any]:
    """Every field a machine has set, by name (its slots, from every class that declares some)."""
    out: dict[str, Any] = {}
    for klass in type(machine).__mro__:
        for name in klass.__dict__.get("__slots__", ()):
            if not name.startswith("__") and hasattr(machine, name):
                out[name] = getattr(machine, name)
    return out
