"""What the fake gateway writes: gateway frames, realistic dispatch data, REST answer bodies.

Pure: no sockets, no asyncio, no clock. Randomness comes from the ``random.Random`` the caller
passes (the gateway's seeded one), timestamps from the ``now_unix`` it passes, so a seeded fake
produces the same bytes run after run.

The shapes follow docs/protocol.md: READY (§1.4), the dispatch envelope (§1.2, §7 item 5), and
the event data of the message events of §4 — what adapters read: ``id`` (needed to reply),
``author``, ``content``, ``timestamp``, the group / guild / channel ids.
"""

from __future__ import annotations

import datetime
import json
import random
import string
from typing import Any, Final

__all__ = [
    "DEFAULT_DATA_TYPES",
    "channel_message_answer",
    "compact",
    "default_data",
    "error_body",
    "v2_message_answer",
]

_ALNUM: Final = string.ascii_uppercase + string.digits
_TOKEN_ALPHABET: Final = string.ascii_letters + string.digits + "-_"
#: The platform's timestamps are Beijing time with an explicit offset.
_CST: Final = datetime.timezone(datetime.timedelta(hours=8))


def compact(obj: object) -> str:
    """JSON as the gateway writes it: no spaces, UTF-8 text kept as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def random_token(rng: random.Random, length: int = 43) -> str:
    """An access-token-shaped string (also used for event ids)."""
    return "".join(rng.choice(_TOKEN_ALPHABET) for _ in range(length))


def _openid(rng: random.Random) -> str:
    return "".join(rng.choice(_ALNUM) for _ in range(32))


def _snowflake(rng: random.Random) -> str:
    return str(rng.randrange(10**17, 10**18))


def _message_id(rng: random.Random) -> str:
    return "ROBOT1.0_" + "".join(
        rng.choice(string.ascii_letters + string.digits) for _ in range(22)
    )


def _timestamp(now_unix: float) -> str:
    return datetime.datetime.fromtimestamp(now_unix, _CST).isoformat(timespec="seconds")


def _group_message(rng: random.Random, now_unix: float, bot_user_id: str) -> dict[str, Any]:
    member = _openid(rng)
    group = _openid(rng)
    return {
        "author": {"id": member, "member_openid": member, "union_openid": member},
        "content": " hello",
        "group_id": group,
        "group_openid": group,
        "id": _message_id(rng),
        "message_scene": {"source": "default"},
        "message_type": 0,
        "timestamp": _timestamp(now_unix),
    }


def _c2c_message(rng: random.Random, now_unix: float, bot_user_id: str) -> dict[str, Any]:
    user = _openid(rng)
    return {
        "author": {"id": user, "union_openid": user, "user_openid": user},
        "content": "hello",
        "id": _message_id(rng),
        "message_scene": {"source": "default"},
        "message_type": 0,
        "timestamp": _timestamp(now_unix),
    }


def _guild_message(
    rng: random.Random, now_unix: float, bot_user_id: str, *, at_bot: bool, direct: bool = False
) -> dict[str, Any]:
    uid = _snowflake(rng)
    d: dict[str, Any] = {
        "author": {"avatar": "", "bot": False, "id": uid, "username": f"user{uid[-4:]}"},
        "channel_id": str(rng.randrange(10**6, 10**7)),
        "content": f"<@!{bot_user_id}> hello" if at_bot else "hello",
        "guild_id": _snowflake(rng),
        "id": _message_id(rng),
        "member": {"joined_at": _timestamp(now_unix - 86_400), "roles": ["1"]},
        "seq": 1,
        "seq_in_channel": "1",
        "timestamp": _timestamp(now_unix),
    }
    if at_bot:
        d["mentions"] = [{"bot": True, "id": bot_user_id, "username": "bot"}]
    if direct:
        d["direct_message"] = True
        d["src_guild_id"] = _snowflake(rng)
    return d


def _group_robot(rng: random.Random, now_unix: float, bot_user_id: str) -> dict[str, Any]:
    return {
        "group_openid": _openid(rng),
        "op_member_openid": _openid(rng),
        "timestamp": int(now_unix),
        "id": _message_id(rng),
    }


def _friend(rng: random.Random, now_unix: float, bot_user_id: str) -> dict[str, Any]:
    return {"openid": _openid(rng), "timestamp": int(now_unix), "id": _message_id(rng)}


def _generic(rng: random.Random, now_unix: float, bot_user_id: str) -> dict[str, Any]:
    return {"id": _message_id(rng), "timestamp": _timestamp(now_unix)}


_BUILDERS: Final = {
    "GROUP_AT_MESSAGE_CREATE": _group_message,
    "GROUP_MESSAGE_CREATE": _group_message,
    "C2C_MESSAGE_CREATE": _c2c_message,
    "AT_MESSAGE_CREATE": lambda rng, now, bot: _guild_message(rng, now, bot, at_bot=True),
    "MESSAGE_CREATE": lambda rng, now, bot: _guild_message(rng, now, bot, at_bot=False),
    "DIRECT_MESSAGE_CREATE": lambda rng, now, bot: _guild_message(
        rng, now, bot, at_bot=False, direct=True
    ),
    "GROUP_ADD_ROBOT": _group_robot,
    "GROUP_DEL_ROBOT": _group_robot,
    "FRIEND_ADD": _friend,
    "FRIEND_DEL": _friend,
}

#: Event types with a type-specific default ``d``; any other type gets ``{"id", "timestamp"}``.
DEFAULT_DATA_TYPES: Final[frozenset[str]] = frozenset(_BUILDERS)


def default_data(
    t: str, rng: random.Random, *, now_unix: float, bot_user_id: str, **overrides: Any
) -> dict[str, Any]:
    """A realistic ``d`` for event type ``t``; ``overrides`` replace top-level keys.

    Every result has an ``id`` (what an adapter replies to) and a ``timestamp``. Message events
    carry ``author``, ``content`` and their scene's ids (``group_openid``; ``guild_id`` and
    ``channel_id``); AT_MESSAGE_CREATE mentions the bot.
    """
    d = _BUILDERS.get(t, _generic)(rng, now_unix, bot_user_id)
    d.update(overrides)
    return d


# -- REST answers --------------------------------------------------------------------------


def v2_message_answer(rng: random.Random, *, now_unix: float) -> dict[str, Any]:
    """Success body of the group and C2C send APIs (``/v2/...``): the new message's id and time."""
    return {"id": _message_id(rng), "timestamp": _timestamp(now_unix)}


def channel_message_answer(
    rng: random.Random,
    *,
    now_unix: float,
    request: object,
    bot_user_id: str,
    bot_username: str,
    channel_id: str | None = None,
    guild_id: str | None = None,
) -> dict[str, Any]:
    """Success body of the channel and DM send APIs: the created message object."""
    body = request if isinstance(request, dict) else {}
    answer: dict[str, Any] = {
        "id": _message_id(rng),
        "channel_id": channel_id if channel_id is not None else str(rng.randrange(10**6, 10**7)),
        "guild_id": guild_id if guild_id is not None else _snowflake(rng),
        "content": body.get("content", ""),
        "timestamp": _timestamp(now_unix),
        "tts": False,
        "mention_everyone": False,
        "author": {"id": bot_user_id, "username": bot_username, "avatar": "", "bot": True},
        "pinned": False,
        "type": 0,
        "flags": 0,
        "seq_in_channel": "1",
    }
    if isinstance(body.get("msg_id"), str):
        answer["message_reference"] = {"message_id": body["msg_id"]}
    return answer


def error_body(code: int, message: str, trace_id: str) -> dict[str, Any]:
    """An OpenAPI error body: ``code`` and ``err_code`` are the platform's number."""
    return {"message": message, "code": code, "err_code": code, "trace_id": trace_id}
