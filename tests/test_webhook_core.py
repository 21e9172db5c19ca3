"""The webhook core, without I/O: keys, verdicts, refusal kinds, the dedupe window, the lifecycle."""

from __future__ import annotations

import json
from pathlib import Path

import nacl.signing
import pytest

from qqconn.errors import ConfigError
from qqconn.machine import State
from qqconn.webhook.core import (
    LIFECYCLE,
    Admission,
    DedupeWindow,
    Event,
    HeartbeatProbe,
    RefusalKind,
    Refused,
    RequestVerifier,
    SigningKey,
    Validation,
    next_state,
    signing_seed,
)
from qqconn.webhook.store import FileDedupeStore

APP_ID = "102030405"
SECRET = "naOC0ocQE3shWLAfffVLB1rhYPG7"


def nacl_key(secret: str) -> nacl.signing.SigningKey:
    """The key as an independent implementation (libsodium) derives it from the secret."""
    seed = secret.encode()
    while len(seed) < 32:
        seed += seed
    return nacl.signing.SigningKey(seed[:32])


def signed_headers(
    body: bytes, *, ts: str = "1725442341", secret: str = SECRET
) -> list[tuple[bytes, bytes]]:
    sig = nacl_key(secret).sign(ts.encode() + body).signature.hex()
    return [
        (b"x-bot-appid", APP_ID.encode()),
        (b"x-signature-ed25519", sig.encode()),
        (b"x-signature-timestamp", ts.encode()),
        (b"content-length", str(len(body)).encode()),
    ]


@pytest.fixture
def verifier() -> RequestVerifier:
    """A verifier for the docs' example secret on path /qq."""
    return RequestVerifier(app_id=APP_ID, client_secret=SECRET, path="/qq", max_body_bytes=4096)


# -- the key ------------------------------------------------------------------------------------


def test_seed_repeats_a_short_secret_and_cuts_a_long_one() -> None:
    """The seed is the secret's bytes repeated to ≥ 32 and cut to 32, whatever its length."""
    assert signing_seed("abc") == (b"abc" * 11)[:32]
    assert signing_seed("x" * 40) == b"x" * 32
    assert signing_seed("0123456789abcdef0123456789abcdef") == b"0123456789abcdef0123456789abcdef"
    assert signing_seed("é") == ("é".encode() * 16)[:32]  # bytes, not characters
    with pytest.raises(ConfigError):
        signing_seed("")


def test_public_key_matches_the_documented_example() -> None:
    """The docs' example secret gives the docs' public key (sign.md DEMO output)."""
    documented = bytes.fromhex(
        "d7c362fe78aef81ff23287b493628b5db02a3c4fe30b215e4d19609b5d76673a"
    )  # [215 195 98 254 120 174 248 31 242 50 ... 93 118 103 58]
    assert SigningKey(SECRET).public_bytes == documented
    assert bytes(nacl_key(SECRET).verify_key) == documented


def test_validation_answer_matches_the_documented_example() -> None:
    """The docs' op 13 example (secret DG5g3B4j9X2KOErG) gets exactly the documented signature."""
    answer = json.loads(
        Validation("Arq0D5A61EgUu4OxUvOp", "1725442341").answer(SigningKey("DG5g3B4j9X2KOErG"))
    )
    assert answer == {
        "plain_token": "Arq0D5A61EgUu4OxUvOp",
        "signature": "87befc99c42c651b3aac0278e71ada338433ae26fcb24307bdc5ad38c1adc2d0"
        "1bcfcadc0842edac85e85205028a1132afe09280305f13aa6909ffc2d652c706",
    }


def test_key_repr_shows_no_secret() -> None:
    """A SigningKey's repr holds the public key only, never the secret or the seed."""
    text = repr(SigningKey(SECRET)) + repr(RequestVerifier(app_id=APP_ID, client_secret=SECRET))
    assert SECRET not in text and signing_seed(SECRET).hex() not in text
    assert SigningKey(SECRET).public_bytes.hex() in text


# -- verdicts -----------------------------------------------------------------------------------


def test_every_refusal_kind_has_one_4xx_status() -> None:
    """Each kind maps to the status the brief names: 401/403/413/400/405/404."""
    statuses = {kind.value: kind.status for kind in RefusalKind}
    assert statuses == {
        "wrong_path": 404,
        "wrong_method": 405,
        "app_id_missing": 403,
        "app_id_foreign": 403,
        "too_large": 413,
        "unsigned": 401,
        "signature_malformed": 401,
        "signature_invalid": 401,
        "body_incomplete": 400,
        "not_json": 400,
        "bad_payload": 400,
        "unknown_op": 400,
    }


def test_a_signed_event_becomes_a_dispatch(verifier: RequestVerifier) -> None:
    """A correctly signed op 0 becomes Dispatch(seq, type, data, event_id)."""
    body = b'{"op":0,"id":"ev-1","s":7,"t":"C2C_MESSAGE_CREATE","d":{"content":"hi"}}'
    verdict = verifier.check("POST", "/qq", signed_headers(body), body)
    assert isinstance(verdict, Event)
    assert verdict.dispatch.seq == 7 and verdict.dispatch.type == "C2C_MESSAGE_CREATE"
    assert verdict.dispatch.data == {"content": "hi"} and verdict.dispatch.event_id == "ev-1"


def test_validation_and_heartbeat_are_recognised(verifier: RequestVerifier) -> None:
    """A signed op 13 is a Validation, a signed op 1 a HeartbeatProbe answered with op 11."""
    body = b'{"d":{"plain_token":"tok","event_ts":"123"},"op":13}'
    assert verifier.check("POST", "/qq", signed_headers(body), body) == Validation("tok", "123")
    body = b'{"op":1,"d":5}'
    probe = verifier.check("POST", "/qq", signed_headers(body), body)
    assert probe == HeartbeatProbe(5) and json.loads(probe.answer()) == {"op": 11, "d": 5}


def _kind(verdict: object) -> RefusalKind:
    assert isinstance(verdict, Refused), verdict
    return verdict.kind


def test_head_refusals(verifier: RequestVerifier) -> None:
    """Path, method, app id, size and signature headers are judged before the body."""
    body = b'{"op":0,"id":"a","t":"X","d":{}}'
    good = signed_headers(body)
    K = RefusalKind
    assert _kind(verifier.check_head("POST", "/other", good)) is K.WRONG_PATH
    assert _kind(verifier.check_head("GET", "/qq", good)) is K.WRONG_METHOD
    no_app = [h for h in good if h[0] != b"x-bot-appid"]
    assert _kind(verifier.check_head("POST", "/qq", no_app)) is K.APP_ID_MISSING
    foreign = [*no_app, (b"x-bot-appid", b"999")]
    assert _kind(verifier.check_head("POST", "/qq", foreign)) is K.APP_ID_FOREIGN
    twice = [*good, (b"x-bot-appid", APP_ID.encode())]
    assert _kind(verifier.check_head("POST", "/qq", twice)) is K.APP_ID_FOREIGN
    big = [h for h in good if h[0] != b"content-length"] + [(b"content-length", b"4097")]
    assert _kind(verifier.check_head("POST", "/qq", big)) is K.TOO_LARGE
    for name in (b"x-signature-ed25519", b"x-signature-timestamp"):
        missing = [h for h in good if h[0] != name]
        assert _kind(verifier.check_head("POST", "/qq", missing)) is K.UNSIGNED

    def with_sig(value: bytes) -> list[tuple[bytes, bytes]]:
        return [h for h in good if h[0] != b"x-signature-ed25519"] + [
            (b"x-signature-ed25519", value)
        ]

    for bad in (b"zz" * 64, b"ab" * 63, b"ab" * 65, b"00" * 63 + b"e0"):
        assert _kind(verifier.check_head("POST", "/qq", with_sig(bad))) is K.SIGNATURE_MALFORMED
    repeated = [*good, (b"x-signature-timestamp", b"1")]
    assert _kind(verifier.check_head("POST", "/qq", repeated)) is K.SIGNATURE_MALFORMED


def test_body_refusals(verifier: RequestVerifier) -> None:
    """Forged, altered, incomplete, oversized and malformed bodies are refused by kind."""
    K = RefusalKind
    body = b'{"op":0,"id":"a","t":"X","d":{}}'
    forged = signed_headers(body, secret="someone-else-entirely-1234567890")
    assert _kind(verifier.check("POST", "/qq", forged, body)) is K.SIGNATURE_INVALID
    other_ts = [h for h in signed_headers(body) if h[0] != b"x-signature-timestamp"]
    other_ts.append((b"x-signature-timestamp", b"1725442342"))
    assert _kind(verifier.check("POST", "/qq", other_ts, body)) is K.SIGNATURE_INVALID
    head = verifier.check_head("POST", "/qq", signed_headers(body))
    assert not isinstance(head, Refused)
    assert _kind(verifier.check_body(head, body[:-1])) is K.BODY_INCOMPLETE
    assert _kind(verifier.check_body(head, body + b" ")) is K.BODY_INCOMPLETE
    assert verifier.body_too_large(4096) is None
    assert _kind(verifier.body_too_large(4097)) is K.TOO_LARGE
    cases = {
        b"not json": K.NOT_JSON,
        b"\xff\xfe": K.NOT_JSON,
        b"[1,2]": K.NOT_JSON,
        b'{"d":{}}': K.BAD_PAYLOAD,
        b'{"op":true}': K.BAD_PAYLOAD,
        b'{"op":0,"id":"a","d":{}}': K.BAD_PAYLOAD,
        b'{"op":13,"d":{"plain_token":1,"event_ts":"1"}}': K.BAD_PAYLOAD,
        b'{"op":13,"d":"x"}': K.BAD_PAYLOAD,
        b'{"op":99,"d":{}}': K.UNKNOWN_OP,
        b'{"op":12,"d":0}': K.UNKNOWN_OP,
    }
    for raw, kind in cases.items():
        assert _kind(verifier.check("POST", "/qq", signed_headers(raw), raw)) is kind, raw


def test_verifier_refuses_bad_configuration() -> None:
    """An empty app id or secret, a relative path or a tiny body bound is a ConfigError."""
    for kwargs in (
        {"app_id": "", "client_secret": SECRET},
        {"app_id": APP_ID, "client_secret": ""},
        {"app_id": APP_ID, "client_secret": SECRET, "path": "qq"},
        {"app_id": APP_ID, "client_secret": SECRET, "max_body_bytes": 10},
    ):
        with pytest.raises(ConfigError):
            RequestVerifier(**kwargs)  # type: ignore[arg-type]


def test_any_path_when_no_path_is_set() -> None:
    """path=None leaves routing to whoever mounted the app."""
    v = RequestVerifier(app_id=APP_ID, client_secret=SECRET)
    body = b'{"op":0,"id":"a","t":"X","d":{}}'
    assert isinstance(v.check("POST", "/anything/at/all", signed_headers(body), body), Event)


# -- the dedupe window --------------------------------------------------------------------------


def test_an_id_is_new_then_in_flight_then_delivered() -> None:
    """admit() says NEW once, IN_FLIGHT until finish(), DELIVERED after; abandon() reopens it."""
    w = DedupeWindow(window_s=60, max_ids=10)
    assert w.admit("a", 0.0) is Admission.NEW
    assert w.admit("a", 0.1) is Admission.IN_FLIGHT
    w.finish("a", 0.2)
    assert w.admit("a", 0.3) is Admission.DELIVERED
    assert w.admit("b", 0.4) is Admission.NEW
    w.abandon("b")
    assert w.admit("b", 0.5) is Admission.NEW


def test_the_window_forgets_by_time_at_its_bound() -> None:
    """An id is remembered for exactly window_s after its delivery, then forgotten."""
    w = DedupeWindow(window_s=60, max_ids=10)
    w.admit("a", 100.0)
    w.finish("a", 100.0)
    assert w.admit("a", 160.0) is Admission.DELIVERED  # 60 s: still inside
    assert w.admit("a", 160.001) is Admission.NEW  # just past it


def test_the_window_forgets_by_count() -> None:
    """Only the max_ids most recent ids are remembered."""
    w = DedupeWindow(window_s=3600, max_ids=3)
    for i in range(4):
        w.admit(str(i), float(i))
        w.finish(str(i), float(i))
    assert len(w) == 3 and "0" not in w
    assert w.admit("0", 5.0) is Admission.NEW
    assert w.admit("3", 5.0) is Admission.DELIVERED


def test_window_refuses_bad_bounds() -> None:
    """A non-positive window or count is a ConfigError."""
    for kwargs in ({"window_s": 0}, {"window_s": -1.0}, {"max_ids": 0}, {"max_ids": True}):
        with pytest.raises(ConfigError):
            DedupeWindow(**kwargs)  # type: ignore[arg-type]


def test_a_file_store_survives_a_restart(tmp_path: Path) -> None:
    """Ids finished in one window are DELIVERED in a new window loaded from the same file."""
    path = tmp_path / "dedupe.jsonl"
    with FileDedupeStore(path) as store:
        w = DedupeWindow(window_s=60, max_ids=100, store=store, now=0.0)
        for i in range(5):
            w.admit(f"e{i}", 1.0)
            w.finish(f"e{i}", 1.0)
    with FileDedupeStore(path) as store:
        again = DedupeWindow(window_s=60, max_ids=100, store=store, now=2.0)
    assert again.loaded == 5
    assert all(again.admit(f"e{i}", 3.0) is Admission.DELIVERED for i in range(5))
    assert path.stat().st_mode & 0o777 == 0o600
    with FileDedupeStore(path) as store:
        later = DedupeWindow(window_s=60, max_ids=100, store=store, now=100.0)
    assert later.loaded == 0  # all older than the window


def test_a_torn_last_line_is_ignored_and_cut(tmp_path: Path) -> None:
    """A line half-written by a crash is skipped on load and removed from the file."""
    path = tmp_path / "dedupe.jsonl"
    path.write_text('{"id": "a", "at": 1.0}\nnot json\n{"id": "b", "at": 2.0}\n{"id": "c", "a')
    store = FileDedupeStore(path)
    assert store.load() == [("a", 1.0), ("b", 2.0)]
    assert path.read_text().endswith('"at": 2.0}\n')
    store.add("d", 3.0)
    store.close()
    assert FileDedupeStore(path).load() == [("a", 1.0), ("b", 2.0), ("d", 3.0)]


def test_the_store_is_compacted_at_twice_the_window(tmp_path: Path) -> None:
    """The file is rewritten with only the remembered ids when it reaches 2 × max_ids lines."""
    path = tmp_path / "dedupe.jsonl"
    with FileDedupeStore(path) as store:
        w = DedupeWindow(window_s=3600, max_ids=10, store=store, now=0.0)
        for i in range(25):
            w.admit(f"e{i}", float(i))
            w.finish(f"e{i}", float(i))
    lines = path.read_text().splitlines()
    assert len(lines) < 20  # compacted at the 20th, then 5 more appended
    assert [json.loads(x)["id"] for x in lines][-10:] == [f"e{i}" for i in range(15, 25)]


def test_an_unwritable_store_does_not_stop_deliveries(tmp_path: Path) -> None:
    """A store whose directory vanished logs and counts the failure; the window still works."""
    store = FileDedupeStore(tmp_path / "gone" / "dedupe.jsonl")
    w = DedupeWindow(window_s=60, max_ids=10, store=store, now=0.0)
    w.admit("a", 0.0)
    w.finish("a", 0.0)
    assert store.failed_writes == 1 and w.admit("a", 1.0) is Admission.DELIVERED


# -- the lifecycle ------------------------------------------------------------------------------


def test_lifecycle_table() -> None:
    """Listening makes the receiver ALIVE; stop ends it; terminal states ignore everything."""
    assert next_state(State.CONNECTING, "listening") is State.ALIVE
    assert next_state(State.CONNECTING, "listen_failed") is State.FATAL
    assert next_state(State.ALIVE, "stop") is State.STOPPED
    assert next_state(State.ALIVE, "server_ended") is State.FATAL
    assert next_state(State.CONNECTING, "server_ended") is State.FATAL
    assert next_state(State.ALIVE, "listening") is None
    for terminal in (State.STOPPED, State.FATAL):
        for trigger in ("listening", "listen_failed", "stop", "server_ended"):
            assert next_state(terminal, trigger) is None
    assert all(dest in (State.ALIVE, State.STOPPED, State.FATAL) for dest in LIFECYCLE.values())
    with pytest.raises(ValueError):
        next_state(State.ALIVE, "explode")


# -- properties ---------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(min_size=1, max_size=300),
    ts=st.text("0123456789", min_size=1, max_size=12),
    flip=st.integers(0, 10_000),
)
def test_a_body_changed_in_any_bit_never_verifies(body: bytes, ts: str, flip: int) -> None:
    """Signed bodies pass the signature check; the same body with any one bit flipped never does."""
    v = RequestVerifier(app_id=APP_ID, client_secret=SECRET)
    headers = [h for h in signed_headers(body, ts=ts) if h[0] != b"content-length"]
    verdict = v.check("POST", "/", headers, body)
    assert not (isinstance(verdict, Refused) and verdict.status == 401)
    i = flip % (len(body) * 8)
    altered = bytearray(body)
    altered[i // 8] ^= 1 << (i % 8)
    assert _kind(v.check("POST", "/", headers, bytes(altered))) is RefusalKind.SIGNATURE_INVALID


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 15), st.floats(0, 40)), max_size=80),
    window_s=st.floats(1, 100),
    max_ids=st.integers(1, 8),
)
def test_the_window_keeps_its_bounds(
    steps: list[tuple[int, float]], window_s: float, max_ids: int
) -> None:
    """Never more than max_ids ids; DELIVERED only inside the window; forgotten early only by count."""
    w = DedupeWindow(window_s=window_s, max_ids=max_ids)
    finished: list[tuple[str, float]] = []  # every finish, in order
    now = 0.0
    for n, dt in steps:
        now += dt
        event_id = f"e{n}"
        admission = w.admit(event_id, now)
        last = max((t for i, t in finished if i == event_id), default=None)
        if admission is Admission.DELIVERED:
            assert last is not None and last >= now - window_s
        elif last is not None and last >= now - window_s:
            later = {i for i, t in finished if t >= last and i != event_id}
            assert len(later) >= max_ids  # pushed out by the count bound, not by mistake
        if admission is Admission.NEW:
            w.finish(event_id, now)
            finished.append((event_id, now))
        assert len(w) <= max_ids


def test_the_core_imports_no_io() -> None:
    """webhook.core and every module it is made of (keys, verify, dedupe, lifecycle) are
    sans-I/O: no asyncio, no clock, no sockets, no server among their imports."""
    import ast
    import importlib

    import qqconn.webhook.core as core

    todo, checked, imported = ["qqconn.webhook.core"], set(), {}
    while todo and len(checked) < 20:  # the core's own modules, followed through its imports
        name = todo.pop()
        checked.add(name)
        path = Path(importlib.import_module(name).__file__ or "")
        found = imported.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
        todo += [m for m in found if m.startswith("qqconn.webhook.") and m not in checked]
    # Every public class and function of the core is defined in a module that was checked.
    homes = {getattr(core, n).__module__ for n in core.__all__ if callable(getattr(core, n))}
    assert homes <= checked and len(checked) >= 5, (homes, checked)
    io = {"asyncio", "time", "socket", "uvicorn", "httpx", "os", "random"}
    for name, found in imported.items():
        assert {m.split(".")[0] for m in found}.isdisjoint(io), (name, found)


def test_the_readme_refusal_table_is_the_code() -> None:
    """The README's refusal matrix lists every kind with the status the code answers."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("| refusal kind | status | request |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = int(cells[1])
    assert rows == {kind.value: kind.status for kind in RefusalKind}
