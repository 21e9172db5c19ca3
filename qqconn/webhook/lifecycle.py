"""The webhook receiver's lifecycle, as data: which trigger takes which state where.

:class:`~qqconn.webhook.receiver.WebhookReceiver` asks :func:`next_state` what each trigger
does; the table uses the connection machine's states so one handler serves both transports.
"""

from __future__ import annotations

from collections.abc import Mapping

from qqconn.machine import State

__all__ = ["LIFECYCLE", "TERMINAL", "TRIGGERS", "is_terminal", "next_state"]

#: The webhook receiver's whole lifecycle, as data: ``(state, trigger) -> next state``. It
#: uses the connection machine's :class:`~qqconn.machine.State` so one ``on_state_change``
#: handler serves both transports: CONNECTING (binding the listening socket), ALIVE
#: (listening; events may arrive), STOPPED (asked to stop), FATAL (could not listen, or the
#: server ended by itself). A pair not in the table changes nothing.
LIFECYCLE: Mapping[tuple[State, str], State] = {
    (State.CONNECTING, "listening"): State.ALIVE,
    (State.CONNECTING, "listen_failed"): State.FATAL,
    (State.CONNECTING, "stop"): State.STOPPED,
    (State.CONNECTING, "server_ended"): State.FATAL,
    (State.ALIVE, "stop"): State.STOPPED,
    (State.ALIVE, "server_ended"): State.FATAL,
}

#: The triggers the receiver feeds :func:`next_state`.
TRIGGERS = ("listening", "listen_failed", "stop", "server_ended")
assert {trigger for _, trigger in LIFECYCLE} == set(TRIGGERS)


#: The states nothing leaves.
TERMINAL = frozenset({State.STOPPED, State.FATAL})


def is_terminal(state: State) -> bool:
    """Is ``state`` one that no trigger leaves (STOPPED, FATAL)?"""
    return state in TERMINAL


def next_state(state: State, trigger: str) -> State | None:
    """The state after ``trigger`` in ``state``, or None when the trigger changes nothing."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown receiver trigger {trigger!r}")
    return LIFECYCLE.get((state, trigger))
