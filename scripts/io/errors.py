"""User errors: one class, and one line on the command line instead of MONAI's chain of wrapped tracebacks.

A :class:`InputError` message names the file (or option), says why it cannot be used and what to do. MONAI's config
parser wraps every error raised while a component is built or an expression runs in ``RuntimeError``s;
:func:`find_input_error` digs the user error out of that chain and :func:`install_error_hook` prints it as
``error: <message>`` (exit status 1). Set ``BIOMECH_DEBUG=1`` to see the full traceback instead.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["InputError", "find_input_error", "install_error_hook", "write_error", "run_cli"]

# OSError numbers a user causes (and can fix) when writing: reported as one line naming the file, not a traceback
USER_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR,
                     errno.EISDIR)  # fmt: skip


class InputError(ValueError):
    """An input that cannot be used; the message names the file and the reason."""


def write_error(path: Any, err: OSError, what: str = "output") -> InputError | None:
    """An :class:`InputError` for an ``OSError`` a user can fix while writing ``path`` (disk full, read-only file
    system, no permission, a file where a folder is expected), or None for any other error."""
    if not isinstance(err, OSError) or err.errno not in USER_WRITE_ERRNOS:
        return None
    hint = {
        errno.ENOSPC: "free disk space or choose another folder",
        errno.EDQUOT: "free space in your quota or choose another folder",
        errno.EROFS: "the file system is read-only: choose a writable folder",
    }.get(err.errno, "choose a folder you can write in")
    return InputError(f"{what} {path}: cannot write ({err.strerror or err}); {hint}")


def _unwrap_worker_error(err: InputError) -> InputError:
    """The user's message of an :class:`InputError` raised in a DataLoader worker: torch re-raises it in the main
    process with the worker's traceback as its message ("Caught InputError in DataLoader worker process 0. Original
    Traceback ... scripts.io.errors.InputError: <message>")."""
    text = str(err)
    if "DataLoader worker process" not in text or "InputError: " not in text:
        return err
    return InputError(text.rsplit("InputError: ", 1)[-1].strip())


def find_input_error(exc: BaseException | None) -> InputError | None:
    """The :class:`InputError` in an exception's cause/context chain (a write that failed for a reason the user can
    fix, e.g. a full disk, counts: :func:`write_error`), or None. One raised in a DataLoader worker comes back
    with the worker's traceback stripped from its message."""
    seen = 0
    while exc is not None and seen < 32:
        if isinstance(exc, InputError):
            return _unwrap_worker_error(exc)
        if isinstance(exc, OSError) and exc.errno in USER_WRITE_ERRNOS:
            return write_error(exc.filename or "", exc, "file")
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def install_error_hook() -> None:
    """Make an uncaught :class:`InputError` print one line, ``error: <message>``, on stderr (exit status 1).
    Other exceptions, and every exception with ``BIOMECH_DEBUG=1``, keep the usual traceback."""
    previous = sys.excepthook
    if getattr(previous, "_biomech_input_errors", False):
        return

    def hook(exc_type, exc, tb):
        err = find_input_error(exc)
        if err is None or os.environ.get("BIOMECH_DEBUG"):
            return previous(exc_type, exc, tb)
        sys.stderr.write(f"error: {err}\n")

    hook._biomech_input_errors = True
    sys.excepthook = hook


def run_cli(command: Callable[[], Any]) -> Any:
    """Run a command-line entry point (e.g. ``lambda: fire.Fire(main)``): a user error (:class:`InputError`, a missing
    file, a bad value, a failed write) prints one ``error: <message>`` line and exits with status 1; with
    ``BIOMECH_DEBUG=1`` the traceback is shown instead."""
    install_error_hook()
    try:
        return command()
    except (InputError, FileNotFoundError, ValueError, OSError) as err:
        if os.environ.get("BIOMECH_DEBUG"):
            raise
        user = find_input_error(err) or write_error(getattr(err, "filename", None) or "", err, "file")
        if user is None and isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
            raise
        raise SystemExit(f"error: {user or err}") from None
