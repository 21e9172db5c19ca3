"""qqconn.protocol: outbound payloads, inbound frame parsing, and the REST answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qqconn import protocol as proto
from qqconn.errors import CredentialsRefused, RemoteProtocolError
from qqconn.protocol import (
    Dispatch,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Intents,
    InvalidSession,
    OpCode,
    Ready,
    Reconnect,
    Resumed,
    heartbeat_payload,
    identify_payload,
    parse_frame,
    parse_gateway_response,
    parse_token_response,
    resume_payload,
    shorten,
)

TOKEN = "tok-SECRET-8f3a1c"
INBOUND_TYPES = (
    Hello,
    Ready,
    Resumed,
    Dispatch,
    HeartbeatAck,
    Heartbeat,
    Reconnect,
    InvalidSession,
)

# -- outbound -------------------------------------------------------------------------------------


def test_identify_carries_prefixed_token_intents_and_shard() -> None:
    """Cold start: Identify (op 2) carries 'QQBot <token>', the intents and the shard list."""
    intents = int(Intents.PUBLIC_GUILD_MESSAGES | Intents.GUILDS)
    msg = json.loads(identify_payload(TOKEN, intents, (0, 1)))
    assert msg["op"] == 2
    assert msg["d"]["token"] == f"QQBot {TOKEN}"
    assert msg["d"]["intents"] == intents
    assert msg["d"]["shard"] == [0, 1]
    assert isinstance(msg["d"]["properties"], dict)


def test_identify_custom_properties_and_shard() -> None:
    """Identify passes a shard other than [0, 1] and caller-given properties through."""
    msg = json.loads(identify_payload(TOKEN, 1, (2, 4), {"$os": "x"}))
    assert msg["d"]["shard"] == [2, 4]
    assert msg["d"]["properties"] == {"$os": "x"}


def test_resume_carries_prefixed_token_session_and_seq() -> None:
    """Resume (op 6) uses the prefixed token (docs/protocol.md §1.4), the session_id and the last s."""
    msg = json.loads(resume_payload(TOKEN, "sess-1", 42))
    assert msg == {"op": 6, "d": {"token": f"QQBot {TOKEN}", "session_id": "sess-1", "seq": 42}}


def test_resume_without_seq_sends_zero() -> None:
    """A Resume before any dispatch sends seq 0 (the server replays everything after it)."""
    assert json.loads(resume_payload(TOKEN, "s", None))["d"]["seq"] == 0


def test_heartbeat_d_is_null_before_any_seq_then_the_last_seq() -> None:
    """Rule 4: a heartbeat's d is null before any s was received, then the last s."""
    assert json.loads(heartbeat_payload(None)) == {"op": 1, "d": None}
    assert json.loads(heartbeat_payload(10)) == {"op": 1, "d": 10}


def test_intents_parse_names_numbers_and_refuses_garbage() -> None:
    """Intents.parse accepts names joined by | or , and a decimal mask; refuses the rest."""
    both = int(Intents.GUILDS | Intents.PUBLIC_GUILD_MESSAGES)
    assert Intents.parse("GUILDS|PUBLIC_GUILD_MESSAGES") == both
    assert Intents.parse(" guilds , public_guild_messages ") == both
    assert Intents.parse("1073741825") == both
    for bad in ("", "0", "NOPE", str(1 << 31)):
        with pytest.raises(ValueError):
            Intents.parse(bad)


# -- inbound: real frames (docs/protocol.md) -----------------------------------------------------


def test_parse_real_hello() -> None:
    """The real Hello frame gives its raw heartbeat_interval (ms)."""
    assert parse_frame('{"d":{"heartbeat_interval":41250},"op":10}') == Hello(interval_ms=41250)


@pytest.mark.parametrize(
    "frame", ['{"op":10}', '{"op":10,"d":null}', '{"op":10,"d":5}', '{"op":10,"d":{}}']
)
def test_parse_hello_without_interval_gives_none(frame: str) -> None:
    """A Hello without a usable d gives interval None (the machine then uses the default)."""
    assert parse_frame(frame) == Hello(interval_ms=None)


def test_parse_hello_keeps_odd_interval_raw() -> None:
    """A Hello interval of the wrong type is passed on raw: the machine validates it."""
    assert parse_frame('{"op":10,"d":{"heartbeat_interval":"x"}}') == Hello(interval_ms="x")


def test_parse_ready() -> None:
    """READY (op 0, t READY) gives the session_id to keep and its s."""
    frame = json.dumps(
        {
            "op": 0,
            "s": 1,
            "t": "READY",
            "d": {
                "version": 1,
                "session_id": "082ee18c-0be3-491b-9d8b-fbd95c51673a",
                "user": {"id": "6158788878435714165", "username": "bot", "bot": True},
                "shard": [0, 1],
            },
        }
    )
    got = parse_frame(frame)
    assert isinstance(got, Ready)
    assert got.session_id == "082ee18c-0be3-491b-9d8b-fbd95c51673a"
    assert got.seq == 1
    assert got.data["user"]["username"] == "bot"


def test_parse_resumed_with_empty_string_d() -> None:
    """RESUMED carries d "" (not an object) and the latest s."""
    assert parse_frame('{"op":0,"s":57,"t":"RESUMED","d":""}') == Resumed(seq=57)


def test_parse_dispatch_with_event_id() -> None:
    """A dispatch gives its s, its type, its data and the outer event id."""
    frame = json.dumps(
        {
            "op": 0,
            "s": 12,
            "t": "GROUP_AT_MESSAGE_CREATE",
            "id": "GROUP_AT_MESSAGE_CREATE:yit7abc",
            "d": {"id": "msg-1", "content": "hi"},
        }
    )
    got = parse_frame(frame)
    assert got == Dispatch(
        seq=12,
        type="GROUP_AT_MESSAGE_CREATE",
        data={"id": "msg-1", "content": "hi"},
        event_id="GROUP_AT_MESSAGE_CREATE:yit7abc",
    )


def test_parse_dispatch_non_string_id_is_dropped() -> None:
    """An event id that is not a string is ignored, the dispatch kept."""
    got = parse_frame('{"op":0,"s":3,"t":"X","id":5,"d":{}}')
    assert isinstance(got, Dispatch)
    assert got.event_id is None


def test_parse_reconnect_op7() -> None:
    """Op 7 (no d) is Reconnect."""
    assert parse_frame('{"op":7}') == Reconnect()
    assert parse_frame('{"op":7,"d":null}') == Reconnect()


@pytest.mark.parametrize(
    ("frame", "resumable"),
    [
        ('{"op":9,"d":false}', False),
        ('{"op":9,"d":true}', True),
        ('{"op":9}', False),
        ('{"op":9,"d":null}', False),
        ('{"op":9,"d":1}', False),
        ('{"op":9,"d":"true"}', False),
    ],
)
def test_parse_invalid_session_op9(frame: str, resumable: bool) -> None:
    """Op 9: only a literal true means resumable; false, missing or anything else means no."""
    assert parse_frame(frame) == InvalidSession(resumable=resumable)


def test_parse_heartbeat_ack_op11() -> None:
    """Op 11 is HeartbeatAck."""
    assert parse_frame('{"op":11}') == HeartbeatAck()


def test_parse_server_heartbeat_op1() -> None:
    """Op 1 from the server asks for a heartbeat now."""
    assert parse_frame('{"op":1,"d":null}') == Heartbeat()


def test_parse_tolerates_unknown_top_level_keys() -> None:
    """Unknown top-level keys (botgo's "Session":null) are ignored."""
    assert parse_frame('{"op":11,"Session":null,"x":[1]}') == HeartbeatAck()


# -- inbound: hostile input (rule 15) --------------------------------------------------------------

HOSTILE = [
    pytest.param(b'{"op":11}', id="binary"),
    pytest.param(b"\xff\xfe\x00", id="binary-garbage"),
    pytest.param("", id="empty"),
    pytest.param("not json", id="non-json"),
    pytest.param('{"op":11', id="truncated"),
    pytest.param("[1, 2]", id="array"),
    pytest.param('"op"', id="string"),
    pytest.param("null", id="null"),
    pytest.param("11", id="number"),
    pytest.param('{"d":{}}', id="missing-op"),
    pytest.param('{"op":"11"}', id="op-string"),
    pytest.param('{"op":true}', id="op-true"),
    pytest.param('{"op":false}', id="op-false"),
    pytest.param('{"op":11.0}', id="op-float"),
    pytest.param('{"op":0.0,"t":"X","s":1,"d":{}}', id="op-float-zero"),
    pytest.param('{"op":null}', id="op-null"),
    pytest.param('{"op":NaN}', id="op-nan"),
    pytest.param('{"op":1e400}', id="op-inf"),
    pytest.param('{"op":3}', id="unknown-op-3"),
    pytest.param('{"op":2,"d":{}}', id="client-op-identify"),
    pytest.param('{"op":99}', id="unknown-op-99"),
    pytest.param('{"op":-1}', id="negative-op"),
    pytest.param('{"op":1' + "0" * 5000 + "}", id="op-too-many-digits"),
    pytest.param('{"op":0,"s":1,"t":"READY","d":{}}', id="ready-no-session"),
    pytest.param('{"op":0,"s":1,"t":"READY","d":{"session_id":""}}', id="ready-empty-session"),
    pytest.param('{"op":0,"s":1,"t":"READY","d":{"session_id":5}}', id="ready-session-int"),
    pytest.param('{"op":0,"s":1,"t":"READY","d":""}', id="ready-d-string"),
    pytest.param('{"op":0,"s":1,"d":{}}', id="dispatch-no-type"),
    pytest.param('{"op":0,"s":1,"t":"","d":{}}', id="dispatch-empty-type"),
    pytest.param('{"op":0,"s":1,"t":7,"d":{}}', id="dispatch-type-int"),
    pytest.param("[" * 100_000 + "]" * 100_000, id="deep-array"),
    pytest.param('{"a":' * 50_000 + "1" + "}" * 50_000, id="deep-object"),
    pytest.param('{"op":11,"d":' + "[" * 100_000 + "}", id="deep-unclosed"),
]


@pytest.mark.parametrize("frame", HOSTILE)
def test_parse_hostile_frame_raises_remote_protocol_error(frame: str | bytes) -> None:
    """Rule 15: unusable input raises RemoteProtocolError with the frame shortened, nothing else."""
    with pytest.raises(RemoteProtocolError) as info:
        parse_frame(frame)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    "s", ["-1", "true", "false", '"5"', "1.5", "null", "[]", "{}", "1e400"]
)  # fmt: skip
def test_dispatch_with_unusable_s_keeps_the_data_with_seq_none(s: str) -> None:
    """A dispatch whose s is negative, bool, string, float or missing has seq None, data kept."""
    got = parse_frame('{"op":0,"s":' + s + ',"t":"MESSAGE_CREATE","d":{"k":1}}')
    assert isinstance(got, Dispatch)
    assert got.seq is None
    assert got.data == {"k": 1}


def test_dispatch_without_s_has_seq_none() -> None:
    """A dispatch without s has seq None (delivered, never compared)."""
    got = parse_frame('{"op":0,"t":"MESSAGE_CREATE","d":{}}')
    assert isinstance(got, Dispatch)
    assert got.seq is None


def test_resumed_and_ready_with_unusable_s_have_seq_none() -> None:
    """RESUMED / READY whose s is a bool or negative have seq None."""
    assert parse_frame('{"op":0,"s":true,"t":"RESUMED","d":""}') == Resumed(seq=None)
    ready = parse_frame('{"op":0,"s":-3,"t":"READY","d":{"session_id":"x"}}')
    assert isinstance(ready, Ready)
    assert ready.seq is None


def test_oversized_frame_error_is_shortened() -> None:
    """The error for a huge bad frame quotes only a short prefix of it."""
    frame = '{"op":99,"pad":"' + "x" * 1_000_000 + '"}'
    with pytest.raises(RemoteProtocolError) as info:
        parse_frame(frame)
    assert len(str(info.value)) < 400
    assert "chars)" in str(info.value)


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_parse_frame_fuzz_text_and_bytes(frame: str | bytes) -> None:
    """Arbitrary text or bytes: parse_frame returns an Inbound or raises RemoteProtocolError."""
    try:
        got = parse_frame(frame)
    except RemoteProtocolError:
        return
    assert isinstance(got, INBOUND_TYPES)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    op=st.one_of(st.sampled_from([0, 1, 7, 9, 10, 11]), _json_values),
    d=_json_values,
    s=_json_values,
    t=st.one_of(st.sampled_from(["READY", "RESUMED", "MESSAGE_CREATE"]), _json_values),
    keep=st.sets(st.sampled_from(["op", "d", "s", "t", "id"])),
    event_id=_json_values,
)
def test_parse_frame_fuzz_envelopes(
    op: Any, d: Any, s: Any, t: Any, keep: set[str], event_id: Any
) -> None:
    """Near-valid envelopes of any shape: an Inbound with sane fields, or RemoteProtocolError."""
    msg = {k: v for k, v in {"op": op, "d": d, "s": s, "t": t, "id": event_id}.items() if k in keep}
    try:
        got = parse_frame(json.dumps(msg))
    except RemoteProtocolError:
        return
    assert isinstance(got, INBOUND_TYPES)
    assert type(msg["op"]) is int  # only an integer op is ever accepted
    if isinstance(got, Ready | Resumed | Dispatch):
        assert got.seq is None or (type(got.seq) is int and got.seq >= 0)
    if isinstance(got, Ready):
        assert isinstance(got.session_id, str)
        assert got.session_id
    if isinstance(got, Dispatch):
        assert isinstance(got.type, str)
        assert got.type
        assert got.event_id is None or isinstance(got.event_id, str)


def test_opcodes_match_the_protocol() -> None:
    """The opcode numbers are docs/protocol.md's table."""
    assert [int(o) for o in OpCode] == [0, 1, 2, 6, 7, 9, 10, 11]


# -- shorten --------------------------------------------------------------------------------------


def test_shorten_keeps_short_text() -> None:
    """Text within the limit is returned unchanged."""
    assert shorten("abc") == "abc"
    assert shorten("x" * 200) == "x" * 200


def test_shorten_cuts_long_text_and_says_how_much() -> None:
    """Longer text is cut to the limit and says how many characters were left out."""
    got = shorten("y" * 1000, 10)
    assert got.startswith("y" * 10)
    assert not got.startswith("y" * 11)
    assert "990" in got


def test_shorten_bytes_never_fails() -> None:
    """Bytes (even invalid UTF-8) are decoded with replacement, never raising."""
    assert shorten(b"\xff\xfeab") == "\ufffd\ufffdab"
    assert len(shorten(b"\x80" * 10_000, 50)) < 80


# -- the token endpoint ---------------------------------------------------------------------------


def _token_body(**doc: Any) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize("expires", ["7200", 7200, 7200.0, " 3261 ", 60])
def test_token_response_accepts_string_and_number_expires_in(expires: object) -> None:
    """expires_in may be a string (the docs' example) or a number."""
    token, expires_in = parse_token_response(
        200, _token_body(access_token=TOKEN, expires_in=expires)
    )
    assert token == TOKEN
    assert expires_in == float(str(expires).strip())


def _assert_refused_without_token(status: int, body: bytes) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        parse_token_response(status, body)
    text = str(info.value)
    assert TOKEN not in text
    assert "SECRET" not in text
    return text


def test_token_http_200_error_body_names_code_and_message() -> None:
    """An HTTP 200 error body (code/message, no token) is refused, naming code and message."""
    text = _assert_refused_without_token(200, _token_body(code=100007, message="appid invalid"))
    assert "100007" in text
    assert "appid invalid" in text


@pytest.mark.parametrize(
    "doc",
    [
        {"expires_in": "7200"},
        {"access_token": "", "expires_in": "7200"},
        {"access_token": None, "expires_in": "7200"},
        {"access_token": 12345, "expires_in": "7200"},
        {},
    ],
)
def test_token_missing_is_refused(doc: dict[str, Any]) -> None:
    """A body without a usable access_token is refused."""
    _assert_refused_without_token(200, _token_body(**doc))


@pytest.mark.parametrize(
    "expires",
    ["0", 0, -5, "-1", "abc", "", None, True, False, "nan", "inf", 1e400, 10 * 86400 + 1,
     "1e9", [7200], {"s": 7200}, 10**400, "9" * 5000],
)  # fmt: skip
def test_token_absurd_expires_in_is_refused_without_the_token(expires: object) -> None:
    """An absurd expires_in is refused with RemoteProtocolError, and the token is not quoted."""
    body = json.dumps({"access_token": TOKEN, "expires_in": expires}).encode()
    _assert_refused_without_token(200, body)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502</html>",
        b"",
        b"[1]",
        b"\xff\xfe",
        b'{"access_token":"' + TOKEN.encode() + b'","expires_in":"72',  # cut mid-body
        b"[" * 100_000,
    ],
)
def test_token_unusable_body_is_refused_without_the_token(body: bytes) -> None:
    """Non-JSON, non-object or truncated bodies are refused; a truncated token is never quoted."""
    _assert_refused_without_token(200, body)


@pytest.mark.parametrize("status", [400, 401, 429, 500, 502])
def test_token_http_error_is_refused_without_the_body(status: int) -> None:
    """A non-200 answer is refused, naming the status and never quoting the body."""
    text = _assert_refused_without_token(status, _token_body(access_token=TOKEN, expires_in="7200"))
    assert str(status) in text


@pytest.mark.parametrize("status", [401, 403])
def test_token_endpoint_401_and_403_are_refused_credentials(status: int) -> None:
    """Rule 20: HTTP 401 or 403 from the token endpoint refuses the credentials (a refresh,
    then FATAL like close 4004), whatever the body says, and never quotes it."""
    body = _token_body(access_token=TOKEN, expires_in="7200")
    with pytest.raises(CredentialsRefused) as info:
        parse_token_response(status, body)
    assert str(status) in str(info.value) and TOKEN not in str(info.value)


@pytest.mark.parametrize("status", [400, 404, 429, 500, 502])
def test_token_endpoint_other_http_errors_are_not_refusals(status: int) -> None:
    """Any other non-200 answer from the token endpoint is a plain failure (retried with
    backoff), not refused credentials."""
    with pytest.raises(RemoteProtocolError) as info:
        parse_token_response(status, b"{}")
    assert not isinstance(info.value, CredentialsRefused)


@given(status=st.sampled_from([200, 200, 200, 500]), body=st.binary(max_size=200))
def test_token_response_fuzz(status: int, body: bytes) -> None:
    """Arbitrary bytes: a (token, expires) pair or RemoteProtocolError, nothing else."""
    try:
        token, expires_in = parse_token_response(status, body)
    except RemoteProtocolError:
        return
    assert isinstance(token, str)
    assert 0 < expires_in <= 10 * 86400


# -- the gateway endpoint -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["wss://api.sgroup.qq.com/websocket/", "wss://api.sgroup.qq.com/websocket", "ws://x"]
)
def test_gateway_response_gives_the_ws_url(url: str) -> None:
    """GET /gateway(/bot) gives the WebSocket URL (extra fields ignored)."""
    body = json.dumps({"url": url, "shards": 1, "session_start_limit": {"total": 1000}}).encode()
    assert parse_gateway_response(200, body) == url


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b'{"url":"https://x"}'),
        (200, b'{"url":5}'),
        (200, b"{}"),
        (200, b'["wss://x"]'),
        (200, b"not json"),
        (200, b"[" * 100_000),
        (401, b'{"code":11244,"message":"token not exist or expire"}'),
        (500, b""),
    ],
)
def test_gateway_unusable_answer_is_refused(status: int, body: bytes) -> None:
    """A gateway answer without a ws(s) URL raises RemoteProtocolError (shortened)."""
    with pytest.raises(RemoteProtocolError) as info:
        parse_gateway_response(status, body)
    assert len(str(info.value)) < 400


@given(status=st.sampled_from([200, 200, 404]), body=st.binary(max_size=200))
def test_gateway_response_fuzz(status: int, body: bytes) -> None:
    """Arbitrary bytes: a ws(s) URL or RemoteProtocolError, nothing else."""
    try:
        url = parse_gateway_response(status, body)
    except RemoteProtocolError:
        return
    assert url.startswith(("ws://", "wss://"))


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, b'{"message":"token not exist or expire","code":11244}'),
        (403, b"forbidden"),
        (200, b'{"message":"token not exist or expire","code":11244}'),
    ],
)
def test_gateway_endpoint_refusing_the_token_is_credentials_refused(
    status: int, body: bytes
) -> None:
    """/gateway/bot answering 401/403 or QQ's token error body refuses the credentials."""
    with pytest.raises(CredentialsRefused):
        proto.parse_gateway_response(status, body)


@pytest.mark.parametrize(("status", "body"), [(500, b"{}"), (200, b'{"code": 11253}')])
def test_gateway_endpoint_other_failures_are_not_refusals(status: int, body: bytes) -> None:
    """A 5xx or an unrelated error body from /gateway/bot is a plain failure, not a refusal."""
    with pytest.raises(RemoteProtocolError) as info:
        proto.parse_gateway_response(status, body)
    assert not isinstance(info.value, CredentialsRefused)
