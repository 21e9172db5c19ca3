"""The fake gateway's pure parts: token and session books, realistic payloads, fast_policy."""

from __future__ import annotations

import json
import random

import pytest
from websockets.asyncio.client import ClientConnection

import qqconn
from qqconn.errors import ConfigError
from qqconn.testing import FAST_POLICY_VALUES, FakeGateway, fast_policy
from qqconn.testing.payloads import DEFAULT_DATA_TYPES, default_data
from qqconn.testing.sessions import CONCURRENCY_WINDOW_S, SessionBook, TokenBook
from tests.test_fake_gateway import Frame, ready_ws, recv

__all__ = ["ready_ws"]  # the fixture of tests/test_fake_gateway.py, used here too

# -- tokens ----------------------------------------------------------------------------------


def test_token_book_keeps_one_token_until_the_refresh_window() -> None:
    """Same token until its last refresh_window_s; then a new one, the old valid until expiry."""
    book = TokenBook(random.Random(1), ttl_s=100.0, refresh_window_s=10.0)
    first, left = book.for_request(0.0)
    assert left == 100.0 and book.for_request(89.0)[0] == first
    second, left = book.for_request(91.0)
    assert second != first and left == 100.0
    assert book.is_valid(first, 99.0) and not book.is_valid(first, 100.0)
    assert book.is_valid(second, 190.0)


def test_token_book_auth_forms_and_masking() -> None:
    """HTTP wants "QQBot <t>"; legacy gateway forms only when allowed; mask hides every token."""
    book = TokenBook(random.Random(2), ttl_s=100.0, refresh_window_s=10.0)
    token = book.issue(0.0)
    assert book.authorizes(f"QQBot {token}", 1.0)
    assert not book.authorizes(token, 1.0) and not book.authorizes(f"Bot 1.{token}", 1.0)
    assert not book.gateway_auth(f"Bot 7.{token}", 1.0, app_id="7", legacy=False)
    assert book.gateway_auth(f"Bot 7.{token}", 1.0, app_id="7", legacy=True)
    assert book.gateway_auth(token, 1.0, app_id="7", legacy=True)
    assert not book.gateway_auth(None, 1.0, app_id="7", legacy=True)
    book.revoke_all()
    assert not book.authorizes(f"QQBot {token}", 1.0)
    assert book.mask(f'{{"a":"{token}","b":"QQBot {token}"}}') == '{"a":"***","b":"QQBot ***"}'


# -- sessions --------------------------------------------------------------------------------


def test_session_book_numbers_buffers_and_judges_resumes() -> None:
    """READY is s=1, dispatches 2, 3...; Resume: 4006 unknown, 4002 bad seq, 4007 ahead, replay."""
    book: SessionBook[str] = SessionBook(
        random.Random(3), session_start_total=10, max_concurrency=1
    )
    s = book.create(0.0, shard=[0, 1], intents=1)
    assert s.seq == 1 and book.current is s and book.session_start_remaining == 9
    assert [book.accept(s, "X", {"n": n})[0] for n in (1, 2, 3)] == [2, 3, 4]
    seq, text = book.accept(s, "Y", None)
    frame = json.loads(text)
    assert frame["s"] == seq == 5 and frame["t"] == "Y" and frame["d"] is None
    assert frame["id"].startswith("Y:")
    assert book.judge_resume({"session_id": "nope", "seq": 1}) == 4006
    assert book.judge_resume({"session_id": s.session_id, "seq": "3"}) == 4002
    assert book.judge_resume({"session_id": s.session_id, "seq": True}) == 4002
    assert book.judge_resume({"session_id": s.session_id, "seq": 6}) == 4007
    verdict = book.judge_resume({"session_id": s.session_id, "seq": 3})
    assert not isinstance(verdict, int) and verdict == (s, 3)
    assert [json.loads(t)["s"] for t in s.missed(3)] == [4, 5]
    book.expire(None)
    assert book.judge_resume({"session_id": s.session_id, "seq": 3}) == 4006
    with pytest.raises(LookupError):
        book.get(None)


def test_session_book_start_limits_use_the_callers_clock() -> None:
    """max_concurrency counts starts per 5 s window; remaining 0 refuses every start."""
    book: SessionBook[str] = SessionBook(random.Random(4), session_start_total=2, max_concurrency=1)
    assert not book.start_refused(0.0)
    book.create(0.0, shard=[0, 1], intents=1)
    assert book.start_refused(CONCURRENCY_WINDOW_S - 0.1)
    assert not book.start_refused(CONCURRENCY_WINDOW_S)
    book.create(CONCURRENCY_WINDOW_S, shard=[0, 1], intents=1)
    assert book.session_start_remaining == 0 and book.start_refused(100.0)


def test_attach_reports_the_socket_left_behind() -> None:
    """Attaching a session elsewhere names the socket it leaves; re-attaching the same, none."""
    book: SessionBook[str] = SessionBook(random.Random(5), session_start_total=5, max_concurrency=5)
    s = book.create(0.0, shard=[0, 1], intents=1)
    assert book.attach(s, "sock-a") is None
    assert book.attach(s, "sock-a") is None
    assert book.attach(s, "sock-b") == "sock-a" and s.sock == "sock-b"


def test_intents_must_be_a_whole_number() -> None:
    """Identify intents: an int >= 0; bools, negatives, strings and a missing key are refused."""
    assert SessionBook.intents_of({"intents": 513}) == 513
    for bad in ({"intents": True}, {"intents": -1}, {"intents": "1"}, {}):
        assert SessionBook.intents_of(bad) is None


# -- realistic event data --------------------------------------------------------------------


@pytest.mark.parametrize("t", sorted(DEFAULT_DATA_TYPES | {"SOME_FUTURE_EVENT"}))
def test_every_default_data_has_an_id_and_a_timestamp(t: str) -> None:
    """default_data(t): every event type gets an id and a timestamp; overrides replace keys."""
    d = default_data(t, random.Random(6), now_unix=1_764_000_000.0, bot_user_id="42")
    assert isinstance(d["id"], str) and d["id"]
    assert d["timestamp"]
    again = default_data(t, random.Random(6), now_unix=1_764_000_000.0, bot_user_id="42", id="x")
    assert again["id"] == "x"


def test_message_defaults_carry_what_adapters_read() -> None:
    """Group, C2C and guild messages carry author, content and their scene's ids."""
    rng = random.Random(7)
    group = default_data("GROUP_AT_MESSAGE_CREATE", rng, now_unix=0.0, bot_user_id="42")
    assert group["group_openid"] and group["author"]["member_openid"] and group["content"]
    c2c = default_data("C2C_MESSAGE_CREATE", rng, now_unix=0.0, bot_user_id="42")
    assert c2c["author"]["user_openid"] and c2c["content"]
    guild = default_data("AT_MESSAGE_CREATE", rng, now_unix=0.0, bot_user_id="42")
    assert guild["guild_id"] and guild["channel_id"] and guild["author"]["username"]
    assert guild["mentions"][0]["id"] == "42" and "<@!42>" in guild["content"]
    dm = default_data("DIRECT_MESSAGE_CREATE", rng, now_unix=0.0, bot_user_id="42")
    assert dm["direct_message"] is True and dm["src_guild_id"]
    assert group["timestamp"] == "1970-01-01T08:00:00+08:00"


async def test_dispatch_without_d_sends_realistic_data(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """Over a real socket: dispatch(t) sends a d with an id; d=None still sends null."""
    gw, ws, _, _ = ready_ws
    await gw.dispatch("GROUP_AT_MESSAGE_CREATE")
    await gw.dispatch("C2C_MESSAGE_CREATE", None)
    await gw.dispatch("C2C_MESSAGE_CREATE", gw.event_data("C2C_MESSAGE_CREATE", content="hi"))
    first, second, third = [await recv(ws) for _ in range(3)]
    assert first["d"]["id"].startswith("ROBOT1.0_") and first["d"]["group_openid"]
    assert second["d"] is None
    assert third["d"]["content"] == "hi" and third["d"]["id"]


# -- fast_policy -----------------------------------------------------------------------------


def test_fast_policy_scales_timings_and_takes_overrides() -> None:
    """fast_policy(): the documented scaled values; overrides win; bad values raise ConfigError."""
    p = fast_policy()
    assert isinstance(p, qqconn.Policy)
    for name, value in FAST_POLICY_VALUES.items():
        assert getattr(p, name) == value
    default = qqconn.Policy()
    assert p.connect_timeout_s < default.connect_timeout_s
    assert p.backoff_s[-1] < default.backoff_s[0]
    assert p.resume_window_s == default.resume_window_s  # untouched fields keep production values
    assert fast_policy(max_reconnect_attempts=2).max_reconnect_attempts == 2
    with pytest.raises(ConfigError):
        fast_policy(backoff_jitter=1.5)


def test_gateway_exposes_credentials_without_leaking_them() -> None:
    """gw.client_secret / gw.app_id name the credentials; repr shows neither the secret nor tokens."""
    gw = FakeGateway(client_secret="a-fake-secret-value")
    assert gw.client_secret == "a-fake-secret-value"
    assert "a-fake-secret-value" not in repr(gw)
    assert gw.fast_policy == fast_policy()
    with pytest.raises(ValueError, match="loopback"):
        FakeGateway(host="0.0.0.0")


@pytest.mark.parametrize("module", ["sessions", "payloads", "defaults", "faults", "records"])
def test_the_fakes_books_do_no_io(module: str) -> None:
    """The bookkeeping modules import no asyncio, sockets, HTTP/WebSocket library or clock."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(f"qqconn.testing.{module}")
    assert spec is not None and spec.origin is not None
    with open(spec.origin, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    forbidden = {"asyncio", "socket", "time", "websockets", "h11", "httpx"}
    local = {"qqconn.testing.ws", "qqconn.testing.sockets", "qqconn.testing.rest"}
    assert not imported & (forbidden | local | {"qqconn.testing._http", "qqconn.driver"})
