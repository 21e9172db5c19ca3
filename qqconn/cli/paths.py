"""Up-front checks of the files ``qqconn run`` will write, so a bad path is exit 2, not a surprise.

Each check runs before anything connects and raises :class:`~qqconn.cli.options.UsageError`
with one line naming the option, the path, what is wrong and what to do about it. Checking
is trying: a probe file is created (and removed) where the real file will be written, so what
is tested is exactly what the run will need (permissions, read-only mounts, a missing
directory, a name that is a directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path

from qqconn.cli.options import UsageError

__all__ = ["check_distinct", "check_output", "check_state_file"]

#: A state file larger than this is certainly not one of ours (ours are well under 1 KiB).
_MAX_STATE_FILE_BYTES = 1 << 20


def _directory(option: str, path: Path) -> Path:
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory (name a file, e.g. {path / 'x'})")
    directory = path.parent
    if not directory.is_dir():
        raise UsageError(
            f"{option} {path}: directory {directory} does not exist "
            "(create it first, or choose another path)"
        )
    return directory


def _regular(option: str, path: Path, mode: int) -> None:
    # A pipe would block the checkpoint read; a device would be replaced by a file (as root).
    if not stat.S_ISREG(mode):
        raise UsageError(
            f"{option} {path}: not a regular file (a pipe or device cannot hold a checkpoint; "
            "name a file)"
        )


def _cannot(option: str, path: Path, what: str, exc: OSError) -> UsageError:
    return UsageError(
        f"{option} {path}: cannot {what}: {exc.strerror or exc} "
        "(give this user write access there, or choose another path)"
    )


def check_state_file(path: Path) -> None:
    """The state file is replaced atomically (a temporary file in its directory, renamed over
    it), so its directory must be writable. A file already there must be a qqconn snapshot (or
    empty): replacing some other file would destroy it."""
    option = "--state-file"
    directory = _directory(option, path)
    try:
        fd, probe = tempfile.mkstemp(prefix=".qqconn-", suffix=".probe", dir=directory)
    except OSError as exc:
        raise _cannot(option, path, f"create files in {directory}", exc) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _cannot(option, path, "inspect it", exc) from None
    _regular(option, path, info.st_mode)
    if info.st_size == 0:
        return
    ours = False
    if info.st_size <= _MAX_STATE_FILE_BYTES:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise _cannot(option, path, "read it", exc) from None
        with contextlib.suppress(ValueError):
            doc = json.loads(raw)
            ours = isinstance(doc, dict) and isinstance(doc.get("state"), str)
    if not ours:
        raise UsageError(
            f"{option} {path}: exists and is not a qqconn state file; refusing to replace it "
            "(remove it, or choose another path)"
        )


def check_output(path: Path) -> None:
    """``--output`` is appended to, read back as the resume checkpoint, and a torn last line is
    cut off: the file (or, if it does not exist yet, its directory) must allow all of that."""
    option = "--output"
    _directory(option, path)
    exists = path.exists()
    if exists:
        _regular(option, path, path.stat().st_mode)
    try:
        # r+b on an existing file needs exactly what the run needs: read, write, truncate.
        with open(path, "r+b" if exists else "ab"):
            pass
    except OSError as exc:
        raise _cannot(option, path, "open it for reading and appending", exc) from None
    if not exists:
        # The probe created an empty file; leave none behind if the run never starts.
        with contextlib.suppress(OSError):
            path.unlink()


def check_distinct(state_file: Path | None, output: Path | None) -> None:
    """``--state-file`` is replaced on every write, which would wipe an ``--output`` there."""
    if state_file is None or output is None:
        return
    same = state_file.resolve() == output.resolve()
    if not same and state_file.exists() and output.exists():
        same = os.path.samefile(state_file, output)
    if same:
        raise UsageError(
            f"--output {output}: is also the --state-file; the state file is replaced on "
            "every write (give them different paths)"
        )
