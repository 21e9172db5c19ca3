"""The REST side of the fake gateway: token endpoint, ``/gateway[/bot]``, and the message APIs.

Routes:

* ``POST /app/getAppAccessToken`` (docs/protocol.md §3.1) — ``{"appId", "clientSecret"}`` as JSON → ``access_token`` and
  ``expires_in`` (a string); errors as HTTP 200 with ``code``/``message``.
* ``GET /gateway`` and ``GET /gateway/bot`` — the WebSocket URL (and ``session_start_limit``,
  §3.2).
* The message APIs adapters call to reply — group ``POST /v2/groups/{group_openid}/messages``,
  C2C ``POST /v2/users/{openid}/messages``, channel ``POST /channels/{channel_id}/messages``,
  DM ``POST /dms/{guild_id}/messages``. Each call is recorded as an
  :class:`~qqconn.testing.records.ApiCall` (tokens masked) and answered with what the test
  programmed (:class:`ApiAnswer`, per route or for all), else a realistic success body:
  ``{"id", "timestamp"}`` for group and C2C, the created message object for channel and DM.
  These shapes follow the platform's public OpenAPI reference; docs/protocol.md covers only the
  REST facts the connection itself needs (§3).

Every authenticated route wants ``Authorization: QQBot <token>`` with a token the fake issued
and still honours; anything else gets 401 ``{"code": 11244, "message": "token not exist or
expire"}``. Bodies of the token endpoint are never recorded: they carry the secret.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, get_args

from qqconn.testing import payloads
from qqconn.testing._http import HttpReply, HttpRequest
from qqconn.testing.records import ApiCall, HttpRecord, MessageRoute

if TYPE_CHECKING:
    from qqconn.testing.gateway import FakeGateway

__all__ = ["MESSAGE_ROUTES", "TOKEN_PATH", "ApiAnswer", "RestSide"]

TOKEN_PATH: Final = "/app/getAppAccessToken"

#: The message routes by name, with the pattern of their path.
MESSAGE_ROUTES: Final[dict[MessageRoute, re.Pattern[str]]] = {
    "group": re.compile(r"/v2/groups/([^/]+)/messages"),
    "c2c": re.compile(r"/v2/users/([^/]+)/messages"),
    "channel": re.compile(r"/channels/([^/]+)/messages"),
    "dm": re.compile(r"/dms/([^/]+)/messages"),
}
_TRACE_HEADER: Final = "X-Tps-trace-ID"
_UNAUTHORIZED: Final = {"message": "token not exist or expire", "code": 11244}


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    """How the fake answers a message API call; build one with the class methods.

    ``body`` None on a 2xx status means the realistic success body of the route.
    """

    status: int = 200
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def ok(cls, body: Any = None) -> ApiAnswer:
        """Success: the route's realistic body, or ``body`` as given."""
        return cls(200, body)

    @classmethod
    def qq_error(cls, code: int, message: str, *, status: int = 400) -> ApiAnswer:
        """An OpenAPI error: ``{"message", "code", "err_code", "trace_id"}`` with ``status``
        (e.g. ``qq_error(40034006, "...")``, or ``status=200`` like the token endpoint)."""
        return cls(status, {"code": code, "message": message})

    @classmethod
    def rate_limited(
        cls, retry_after_s: int = 1, *, code: int = 22009, message: str = "msg limit exceed"
    ) -> ApiAnswer:
        """HTTP 429 with ``Retry-After: <retry_after_s>`` (whole seconds) and an error body."""
        if isinstance(retry_after_s, bool) or not isinstance(retry_after_s, int):
            raise ValueError(f"retry_after_s must be whole seconds, got {retry_after_s!r}")
        return cls(429, {"code": code, "message": message}, (("Retry-After", str(retry_after_s)),))

    @classmethod
    def server_error(cls, status: int = 500, message: str = "internal server error") -> ApiAnswer:
        """A 5xx with an error body (``status`` 500, 502, 503, 504, ...)."""
        if not 500 <= status <= 599:
            raise ValueError(f"server_error: status must be 5xx, got {status}")
        return cls(status, {"code": status, "message": message})


@dataclass(slots=True)
class _Programmed:
    """What one scope (a route, or every route) answers."""

    #: ``[answer, calls left]`` queued by ``times=n``, answered first, in order.
    counted: list[list[Any]] = field(default_factory=list)
    #: Answered when nothing counted is left (``times=None``); None = fall through.
    standing: ApiAnswer | None = None


def _json_reply(status: int, doc: object, headers: tuple[tuple[str, str], ...] = ()) -> HttpReply:
    return HttpReply(status, payloads.compact(doc).encode("utf-8"), headers=headers)


def _method_not_allowed() -> HttpReply:
    return _json_reply(405, {"code": 405, "message": "method not allowed"})


class RestSide:
    """The gateway's HTTP routes; state shared with the façade lives on ``gw``."""

    def __init__(self, gw: FakeGateway) -> None:
        self.gw = gw
        self.http_requests: list[HttpRecord] = []
        self.api_calls: list[ApiCall] = []
        self._answers: dict[MessageRoute | None, _Programmed] = {}

    # -- programming -------------------------------------------------------------------------

    def set_answer(self, answer: ApiAnswer, route: MessageRoute | None, times: int | None) -> None:
        if route is not None and route not in MESSAGE_ROUTES:
            raise ValueError(f"route {route!r} is not one of {', '.join(get_args(MessageRoute))}")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int)):
            raise ValueError(f"times must be a whole number or None, got {times!r}")
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        scope = self._answers.setdefault(route, _Programmed())
        if times is None:
            scope.standing = answer
        else:
            scope.counted.append([answer, times])

    def clear_answers(self) -> None:
        self._answers.clear()

    def _programmed(self, route: MessageRoute) -> ApiAnswer | None:
        for key in (route, None):
            scope = self._answers.get(key)
            if scope is None:
                continue
            if scope.counted:
                head = scope.counted[0]
                head[1] -= 1
                if head[1] <= 0:
                    scope.counted.pop(0)
                answer: ApiAnswer = head[0]
                return answer
            if scope.standing is not None:
                return scope.standing
        return None

    # -- serving -----------------------------------------------------------------------------

    async def route(self, request: HttpRequest) -> HttpReply | None:
        """The H11 server's handler: answer (through the overridable façade) and record."""
        reply = self.gw._answer_http(request)
        self.http_requests.append(
            HttpRecord(
                at=time.monotonic(),
                method=request.method,
                path=request.path,
                status=None if reply is None else reply.status,
            )
        )
        return reply

    def answer(self, request: HttpRequest) -> HttpReply | None:
        if request.path == TOKEN_PATH:
            if request.method != "POST":
                return _method_not_allowed()
            return self._answer_token(request)
        if request.path in ("/gateway", "/gateway/bot"):
            if request.method != "GET":
                return _method_not_allowed()
            return self._answer_gateway(request)
        for name, pattern in MESSAGE_ROUTES.items():
            match = pattern.fullmatch(request.path)
            if match is not None:
                if request.method != "POST":
                    return _method_not_allowed()
                return self._answer_message(request, name, match.group(1))
        return _json_reply(404, {"code": 404, "message": "not found"})

    def authorizes(self, header: str) -> bool:
        return self.gw._token_book.authorizes(header, time.monotonic())

    def _answer_token(self, request: HttpRequest) -> HttpReply | None:
        gw = self.gw
        mode = gw.faults.token_endpoint
        if mode == "hang":
            return None
        if mode == "http500":
            return _json_reply(500, {"code": 500, "message": "internal server error"})
        if mode == "error_body":
            return _json_reply(200, {"code": 100017, "message": "接口调用超过频率限制"})
        invalid = _json_reply(200, {"code": 100007, "message": "appid invalid"})
        if "application/json" not in request.headers.get("content-type", ""):
            return invalid
        try:
            doc = json.loads(request.body)
        except ValueError:
            return invalid
        if (
            not isinstance(doc, dict)
            or doc.get("appId") != gw.app_id
            or doc.get("clientSecret") != gw.client_secret
        ):
            return invalid
        token, remaining_s = gw._token_book.for_request(time.monotonic())
        return _json_reply(200, {"access_token": token, "expires_in": str(int(remaining_s))})

    def _answer_gateway(self, request: HttpRequest) -> HttpReply | None:
        gw = self.gw
        mode = gw.faults.gateway_endpoint
        if mode == "hang":
            return None
        if mode == "http500":
            return _json_reply(500, {"code": 500, "message": "internal server error"})
        if not gw._auth_ok_http(request.headers.get("authorization", "")):
            return _json_reply(401, _UNAUTHORIZED)
        if request.path == "/gateway":
            return _json_reply(200, {"url": gw.ws_url})
        book = gw._book
        return _json_reply(
            200,
            {
                "url": gw.ws_url,
                "shards": gw.recommended_shards,
                "session_start_limit": {
                    "total": book.session_start_total,
                    "remaining": book.session_start_remaining,
                    "reset_after": book.reset_after_ms,
                    "max_concurrency": book.max_concurrency,
                },
            },
        )

    # -- message APIs ------------------------------------------------------------------------

    def _mask(self, text: str) -> str:
        text = self.gw._token_book.mask(text)
        secret = self.gw.client_secret
        return text.replace(secret, "***") if secret else text

    def _masked_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        out = {}
        for name, value in headers.items():
            if name == "authorization":
                scheme = value.split(" ", 1)[0] if " " in value else ""
                out[name] = f"{scheme} ***".strip()
            else:
                out[name] = self._mask(value)
        return out

    def _answer_message(self, request: HttpRequest, route: MessageRoute, target: str) -> HttpReply:
        gw = self.gw
        now = time.monotonic()
        authorized = gw._auth_ok_http(request.headers.get("authorization", ""))
        text = self._mask(request.body.decode("utf-8", "replace"))
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = None
        trace_id = payloads.random_token(gw._rng, 32)
        headers: tuple[tuple[str, str], ...] = ((_TRACE_HEADER, trace_id),)
        status: int
        doc: Any
        if not authorized:
            status, doc = 401, {**_UNAUTHORIZED, "trace_id": trace_id}
        elif not isinstance(body, dict):
            # The fake's own code: the platform's answer to a non-JSON body is not documented.
            status, doc = (
                400,
                payloads.error_body(400, "request body is not a JSON object", trace_id),
            )
        else:
            programmed = self._programmed(route)
            if programmed is None or (programmed.body is None and 200 <= programmed.status < 300):
                status = 200 if programmed is None else programmed.status
                doc = self._success(route, target, body)
            else:
                status, doc = programmed.status, programmed.body
                if isinstance(doc, dict) and "code" in doc and "trace_id" not in doc:
                    base = payloads.error_body(doc["code"], str(doc.get("message", "")), trace_id)
                    doc = {**base, **doc}
                headers += programmed.headers
        self.api_calls.append(
            ApiCall(
                at=now,
                route=route,
                method=request.method,
                path=request.path,
                target=target,
                headers=self._masked_headers(request.headers),
                body=body,
                authorized=authorized,
                status=status,
                answer=doc,
            )
        )
        return _json_reply(status, doc, headers)

    def _success(self, route: MessageRoute, target: str, body: dict[str, Any]) -> dict[str, Any]:
        gw = self.gw
        if route in ("group", "c2c"):
            return payloads.v2_message_answer(gw._rng, now_unix=time.time())
        return payloads.channel_message_answer(
            gw._rng,
            now_unix=time.time(),
            request=body,
            bot_user_id=gw.bot_user_id,
            bot_username=gw.bot_username,
            channel_id=target if route == "channel" else None,
            guild_id=target if route == "dm" else None,
        )
