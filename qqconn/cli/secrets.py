"""Where the client secret may come from, and where it may never go.

The secret comes from ``$QQ_CLIENT_SECRET`` or ``--secret-file``, never from the command line
(it would show in ``ps`` and in shell history); an option that tries is refused before argparse
could echo its value back in an "unrecognized argument" message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from qqconn.cli.options import UsageError

__all__ = ["ENV_SECRET", "MIN_REDACT_LEN", "SECRET_FLAGS", "read_secret", "refuse_secret_flags"]

ENV_SECRET = "QQ_CLIENT_SECRET"
#: Shorter strings are not redacted from log lines (QQ AppSecrets are 32 characters).
MIN_REDACT_LEN = 8
#: Options that would put the secret on the command line (visible in ps, shell history).
SECRET_FLAGS = ("--secret", "--client-secret", "--client_secret", "--app-secret")


def refuse_secret_flags(argv: Sequence[str]) -> None:
    """Refuse ``--secret VALUE`` before argparse echoes VALUE in an "unrecognized" message."""
    for arg in argv:
        if arg == "--":
            return
        name = arg.split("=", 1)[0]
        if name in SECRET_FLAGS:
            raise UsageError(
                f"the client secret is never taken on the command line ({name} refused); "
                f"set {ENV_SECRET} or use --secret-file FILE"
            )


def read_secret(secret_file: str | None, env: Mapping[str, str]) -> str:
    """The client secret from ``secret_file`` (stripped) or ``env``; UsageError if neither."""
    if secret_file is not None:
        try:
            secret = Path(secret_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise UsageError(
                f"--secret-file {secret_file}: cannot read: {reason} "
                "(give a readable file holding only the secret)"
            ) from None
        if not secret:
            raise UsageError(
                f"--secret-file {secret_file}: the file is empty (put the client secret in it)"
            )
        return secret
    secret = env.get(ENV_SECRET, "").strip()
    if not secret:
        raise UsageError(
            f"no client secret: set {ENV_SECRET} or use --secret-file FILE "
            "(it is never taken on the command line)"
        )
    return secret
