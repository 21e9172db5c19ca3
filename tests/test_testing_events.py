"""qqconn.testing.events: one of every event type, and the payload-carrying builders."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest

from qqconn import events as ev
from qqconn.machine import ConnectionMachine
from qqconn.testing.events import EVENT_TYPES, dispatch_received, one_of_each, ready_received


def test_one_of_each_holds_every_event_type_once_in_union_order() -> None:
    """one_of_each() gives exactly one instance of each type of qqconn.events.Event."""
    events = one_of_each()
    assert tuple(type(e) for e in events) == get_args(ev.Event) == EVENT_TYPES
    assert len(set(EVENT_TYPES)) == len(EVENT_TYPES)


def test_one_of_each_stamps_attempt_time_and_session() -> None:
    """Every event carries the given time; attempt-bearing ones the given attempt; the
    session-bearing ones the given session and seq."""
    events = one_of_each(7, 12.5, session_id="s-7", seq=3)
    assert all(e.at == 12.5 for e in events)
    with_attempt = [e for e in events if hasattr(e, "attempt")]
    # Started, StopRequested, DispatchHandled and the two identify-permit answers
    assert len(with_attempt) == len(events) - 5
    assert all(e.attempt == 7 for e in with_attempt)
    (ready,) = [e for e in events if isinstance(e, ev.ReadyReceived)]
    assert (ready.session_id, ready.seq, ready.dispatch.seq) == ("s-7", 3, 3)
    (done,) = [e for e in events if isinstance(e, ev.DispatchHandled)]
    assert (done.session_id, done.seq) == ("s-7", 3)


def test_events_are_frozen() -> None:
    """Every event is a frozen dataclass: a test cannot change one after feeding it."""
    for event in one_of_each():
        with pytest.raises(dataclasses.FrozenInstanceError):
            event.at = 1.0  # type: ignore[misc]


def test_builders_give_well_formed_payloads() -> None:
    """ready_received carries a READY frame naming the session; dispatch_received an event id
    when it has an s, none without."""
    ready = ready_received(2, 1.0, "sess", 5)
    assert ready.dispatch.type == "READY"
    assert ready.dispatch.data["session_id"] == "sess" and ready.dispatch.seq == 5
    d = dispatch_received(2, 1.0, 9, "C2C_MESSAGE_CREATE")
    assert (d.dispatch.seq, d.dispatch.type, d.dispatch.event_id) == (
        9,
        "C2C_MESSAGE_CREATE",
        "C2C_MESSAGE_CREATE:9",
    )
    assert dispatch_received(2, 1.0, None).dispatch.event_id is None


def test_a_fresh_machine_takes_every_event() -> None:
    """Fed in order to a new machine, none of them raises, and StopRequested stops it."""
    m = ConnectionMachine()
    for event in one_of_each():
        m.handle(event)
    assert m.state.value == "stopped"  # StopRequested came second
