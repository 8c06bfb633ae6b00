"""User errors: one class, and one line on the command line instead of MONAI's chain of wrapped tracebacks.

A :class:`InputError` message names the file (or option), says why it cannot be used and what to do. MONAI's config
parser wraps every error raised while a component is built or an expression runs in ``RuntimeError``s;
:func:`find_input_error` digs the user error out of that chain and :func:`install_error_hook` prints it as
``error: <message>`` (exit status 1). Set ``BIOMECH_DEBUG=1`` to see the full traceback instead.
"""

from __future__ import annotations

import os
import sys

__all__ = ["InputError", "find_input_error", "install_error_hook"]


class InputError(ValueError):
    """An input that cannot be used; the message names the file and the reason."""


def find_input_error(exc: BaseException | None) -> InputError | None:
    """The :class:`InputError` in an exception's cause/context chain, or None."""
    seen = 0
    while exc is not None and seen < 32:
        if isinstance(exc, InputError):
            return exc
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
