"""The webhook transport's sans-I/O core: keys, request verdicts, the dedupe window, the lifecycle.

No sockets, no event loop, no clock: the ASGI layer (:mod:`qqconn.webhook.asgi`) reads the
request, asks this module what it is, and stamps every call with the time it read itself. The
facts come from ``docs/protocol.md`` §6 and ``docs/behaviour.md`` rule 23.

Theory of operation
===================

The signing key
    QQ derives one Ed25519 key pair from the bot's client secret: the secret's UTF-8 bytes,
    repeated until there are at least 32 of them and cut to 32, are the private seed. The
    platform signs every callback with the private half; the bot answers the address
    validation (op 13) by signing with it too. :class:`SigningKey` holds both halves and never
    shows the seed.

A request's verdict, in two steps
    :meth:`RequestVerifier.check_head` looks at what arrives before the body (path, method,
    ``X-Bot-Appid``, ``Content-Length``, the two signature headers) so that a request that can
    never be accepted is refused before a byte of its body is read.
    :meth:`RequestVerifier.check_body` then verifies the Ed25519 signature over
    ``X-Signature-Timestamp`` + the raw body *before* parsing a byte of JSON, and returns what
    the request is: a :class:`Validation`, an :class:`Event`, a :class:`HeartbeatProbe` or a
    :class:`Refused` carrying a :class:`RefusalKind` (each kind has exactly one HTTP status).

Why the validation request must be signed too
    The answer to op 13 is our signature over ``event_ts + plain_token``, both chosen by the
    sender. Answering an unsigned op 13 would be a signing oracle: anyone could have us sign
    ``timestamp + body`` of an event they made up, then post that event with our own valid
    signature. So op 13 is verified like everything else (the official Go SDK does the same).

Exactly once, within a window
    The platform retries a delivery it did not see acknowledged, with the same event ``id``.
    :class:`DedupeWindow` remembers the ids it has delivered, at most ``max_ids`` of them and
    none older than ``window_s``; an id it remembers is acknowledged and not delivered again.
    An id is recorded only after the host's callback has returned (see "when to acknowledge"
    in :mod:`qqconn.webhook.asgi`), and a second request for an id that is being delivered
    waits for the first instead of delivering it twice. With a :class:`DedupeStore` the
    window survives a restart.

Where each part lives
    :mod:`qqconn.webhook.keys` (the signing key), :mod:`qqconn.webhook.verify` (request
    verdicts and refusal kinds), :mod:`qqconn.webhook.dedupe` (the dedupe window) and
    :mod:`qqconn.webhook.lifecycle` (the receiver's lifecycle table). Every name is importable
    from this module too, and none of those modules does I/O.
"""

from __future__ import annotations

# `name as name`: importable from here, as before the split, though not in __all__.
from qqconn.webhook.dedupe import (
    DEFAULT_DEDUPE_MAX_IDS,
    DEFAULT_DEDUPE_WINDOW_S,
    Admission,
    DedupeStore,
    DedupeWindow,
)
from qqconn.webhook.keys import SEED_BYTES, SigningKey, signing_seed
from qqconn.webhook.lifecycle import LIFECYCLE, is_terminal, next_state
from qqconn.webhook.lifecycle import TERMINAL as TERMINAL
from qqconn.webhook.lifecycle import TRIGGERS as TRIGGERS
from qqconn.webhook.verify import (
    ACK_BODY,
    DEFAULT_MAX_BODY_BYTES,
    Event,
    HeartbeatProbe,
    RefusalKind,
    Refused,
    RequestVerifier,
    SignedHead,
    Validation,
    Verdict,
)
from qqconn.webhook.verify import SIGNATURE_BYTES as SIGNATURE_BYTES
from qqconn.webhook.verify import Headers as Headers
from qqconn.webhook.verify import snapshot_counts as snapshot_counts

__all__ = [
    "ACK_BODY",
    "DEFAULT_DEDUPE_MAX_IDS",
    "DEFAULT_DEDUPE_WINDOW_S",
    "DEFAULT_MAX_BODY_BYTES",
    "LIFECYCLE",
    "SEED_BYTES",
    "Admission",
    "DedupeStore",
    "DedupeWindow",
    "Event",
    "HeartbeatProbe",
    "RefusalKind",
    "Refused",
    "RequestVerifier",
    "SignedHead",
    "SigningKey",
    "Validation",
    "Verdict",
    "is_terminal",
    "next_state",
    "signing_seed",
]
