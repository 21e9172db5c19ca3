"""Realistic QQ dispatch payloads for the benchmarks (stdlib only).

The shapes follow ``docs/protocol.md`` §1.4 and §4: group @-messages, C2C messages and
guild @-messages, with the fields the real gateway sends (author, openids, ids, timestamps,
mentions, member roles). Every event carries its sequence number in its content (``#<seq>``)
and in its message id, so any client (botpy included, whose handlers never see ``s``) can tell
which event it got.
"""

from __future__ import annotations

import json
import random
import re
import string

__all__ = ["SEQ_RE", "event_data", "frame_texts", "seq_of_content"]

_ALNUM = string.ascii_uppercase + string.digits
SEQ_RE = re.compile(r"#(\d+)")

# (event type, share of the traffic)
_MIX = (
    ("GROUP_AT_MESSAGE_CREATE", 70),
    ("C2C_MESSAGE_CREATE", 20),
    ("AT_MESSAGE_CREATE", 10),
)
_SENTENCES = (
    "帮我查一下明天的天气",
    "hello bot, what can you do?",
    "/roll 2d6",
    "今晚几点开会？",
    "请把这个链接总结一下 https://example.com/a/very/long/path?with=query",
    "ok",
    "签到",
    "give me a random quote please",
)


def _openid(rng: random.Random) -> str:
    return "".join(rng.choice(_ALNUM) for _ in range(32))


def _variants(rng: random.Random) -> list[tuple[str, str]]:
    """A pool of (event type, ``d`` JSON with ``@SEQ@`` placeholders), mixed by share."""
    out: list[tuple[str, str]] = []
    for t, share in _MIX:
        for i in range(share):
            content = f" {_SENTENCES[i % len(_SENTENCES)]} #@SEQ@"
            member = _openid(rng)
            msg_id = "ROBOT1.0_" + "".join(rng.choice(_ALNUM) for _ in range(22)) + "@SEQ@"
            stamp = f"2026-11-21T10:{i % 60:02d}:{(i * 7) % 60:02d}+08:00"
            if t == "GROUP_AT_MESSAGE_CREATE":
                d: dict[str, object] = {
                    "author": {"id": member, "member_openid": member, "union_openid": member},
                    "content": content,
                    "group_id": _openid(rng),
                    "group_openid": _openid(rng),
                    "id": msg_id,
                    "message_scene": {"source": "default"},
                    "message_type": 0,
                    "timestamp": stamp,
                }
            elif t == "C2C_MESSAGE_CREATE":
                d = {
                    "author": {"id": member, "union_openid": member, "user_openid": member},
                    "content": content,
                    "id": msg_id,
                    "message_scene": {"source": "default"},
                    "message_type": 0,
                    "timestamp": stamp,
                }
            else:
                uid = str(rng.randrange(10**17, 10**18))
                d = {
                    "author": {
                        "avatar": f"https://qqchannel-profile.example/{uid}/0",
                        "bot": False,
                        "id": uid,
                        "username": f"user{i}",
                    },
                    "channel_id": str(rng.randrange(10**6, 10**7)),
                    "content": f"<@!{rng.randrange(10**17, 10**18)}>{content}",
                    "guild_id": str(rng.randrange(10**17, 10**18)),
                    "id": msg_id,
                    "member": {"joined_at": "2025-03-01T12:00:00+08:00", "roles": ["1", "4"]},
                    "mentions": [{"bot": True, "id": "144115218676900000", "username": "bot"}],
                    "seq": 1,
                    "seq_in_channel": "1",
                    "timestamp": stamp,
                }
            out.append((t, json.dumps(d, separators=(",", ":"), ensure_ascii=False)))
    rng.shuffle(out)
    return out


class _Pool:
    def __init__(self, seed: int = 20261121) -> None:
        rng = random.Random(seed)
        self.variants = _variants(rng)
        self.ids = ["".join(rng.choice(_ALNUM.lower()) for _ in range(24)) for _ in range(256)]


_POOL: _Pool | None = None


def _pool() -> _Pool:
    global _POOL
    if _POOL is None:
        _POOL = _Pool()
    return _POOL


def event_data(seq: int) -> tuple[str, object]:
    """``(t, d)`` of the event that will carry ``s = seq`` (for ``FakeGateway.dispatch``)."""
    t, d = _pool().variants[seq % 100]
    return t, json.loads(d.replace("@SEQ@", str(seq)))


def frame_texts(first_seq: int, n: int) -> list[str]:
    """``n`` complete op 0 frames, ``s`` = first_seq … first_seq + n − 1, as the fake sends them
    (compact JSON, keys op, s, t, id, d)."""
    pool = _pool()
    variants, ids = pool.variants, pool.ids
    out = []
    for seq in range(first_seq, first_seq + n):
        t, d = variants[seq % 100]
        s = str(seq)
        out.append(
            '{"op":0,"s":'
            + s
            + ',"t":"'
            + t
            + '","id":"'
            + t
            + ":"
            + ids[seq % 256]
            + s
            + '","d":'
            + d.replace("@SEQ@", s)
            + "}"
        )
    return out


def seq_of_content(content: str) -> int | None:
    """The sequence number a realistic event carries in its content."""
    m = SEQ_RE.search(content or "")
    return int(m.group(1)) if m else None
