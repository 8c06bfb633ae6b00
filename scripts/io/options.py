"""The true/false options of the workflows, parsed once.

``python -m monai.bundle run ... --learn2reg false`` hands the config the STRING "false" (the command line's parser
turns only ``True`` / ``False`` into booleans), and a non-empty string is true in Python. Every config therefore lists
its boolean options once, in its ``flags`` component (:class:`Flags`), and its components read them from there
(``"$@flags.learn2reg"``); a config merged later adds its own (``"flags#organ_pairs": "@organ_pairs"``). The values
are parsed when the workflow starts, and a value that is neither true nor false is one :class:`InputError` naming
the option and the accepted values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scripts.io.errors import InputError

__all__ = ["parse_flag", "Flags"]

TRUE, FALSE = "true", "false"


def parse_flag(value: Any, name: str, extra: Sequence[str] = ()) -> bool | str:
    """``value`` of the option ``name`` as a bool: True / False, or the words true / false in any case (as the
    command line gives them); a word of ``extra`` (e.g. "auto") is returned as that word, lower case.

    Raises:
        InputError: any other value, naming the option and the accepted values.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy's bool too
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in (TRUE, FALSE):
            return word == TRUE
        if word in extra:
            return word
    accepted = [TRUE, FALSE, *extra]
    listed = ", ".join(f"--{name} {word}" for word in accepted[:-1]) + f" or --{name} {accepted[-1]}"
    raise InputError(f"option --{name}: {value!r} is not one of {', '.join(accepted)}; give {listed}")


class Flags:
    """The boolean options of a workflow (the config's ``flags``): each keyword becomes an attribute holding its
    parsed value (:func:`parse_flag`).

    Args:
        auto: the options that also accept "auto" (``resume``).
        options: option name -> value as the config holds it (``"@learn2reg"``).
    """

    def __init__(self, auto: Sequence[str] = (), **options: Any):
        self._names = tuple(options)
        for name, value in options.items():
            setattr(self, name, parse_flag(value, name, ("auto",) if name in auto else ()))

    def check(self) -> None:
        """Nothing left to do: the values were parsed when the flags were built; a config calls it first (in
        ``initialize`` or ``run``) so that a bad value stops the workflow before anything else."""

    def __repr__(self) -> str:
        return "Flags(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self._names) + ")"
