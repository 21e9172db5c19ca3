"""The bot's Ed25519 signing key, derived from its client secret (docs/protocol.md §6).

QQ derives one key pair from the client secret: the secret's UTF-8 bytes, repeated until there
are at least 32 of them and cut to 32, are the private seed. The platform signs every callback
with the private half; the bot answers the address validation (op 13) by signing with it too.
Sans-I/O, like the rest of :mod:`qqconn.webhook.core`.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from qqconn.errors import ConfigError

__all__ = ["SEED_BYTES", "SigningKey", "signing_seed"]

#: Ed25519 seeds are 32 bytes.
SEED_BYTES = 32


def signing_seed(client_secret: str) -> bytes:
    """The 32-byte Ed25519 seed QQ derives from ``client_secret`` (repeated, then cut to 32).

    Raises :class:`~qqconn.errors.ConfigError` for an empty secret (it has no seed).
    """
    raw = client_secret.encode("utf-8") if isinstance(client_secret, str) else b""
    if not raw:
        raise ConfigError("client_secret", "must be a non-empty string")
    repeats = -(-SEED_BYTES // len(raw))  # ceiling division
    return (raw * repeats)[:SEED_BYTES]


class SigningKey:
    """The bot's Ed25519 key pair, derived from its client secret. Never shows the seed."""

    __slots__ = ("_private", "_public", "public_bytes")

    def __init__(self, client_secret: str) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(signing_seed(client_secret))
        self._public = self._private.public_key()
        #: The 32-byte public key (safe to show: it only verifies).
        self.public_bytes = self._public.public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte signature of ``message``."""
        return self._private.sign(message)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Does ``signature`` sign ``message`` under this key's public half?"""
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public_bytes.hex()})"
