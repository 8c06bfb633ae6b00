"""Files and folders to write into: temporary names that record their writer, atomic text writes, output folders.

Every file of the bundle is written to a temporary name in its target's folder and renamed once complete, so a
failed or killed run leaves no partial file. The temporary name (:func:`temp_prefix`) records the writing process and
host, so that a later run can tell the leftovers of a dead writer (:func:`remove_stale_temporaries`, run by
:func:`check_output_dir`) from a file another live process is still writing.

Every failure is a :class:`scripts.io.errors.InputError` that names the folder or file.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from scripts.io.errors import InputError, write_error

__all__ = ["temp_prefix", "remove_stale_temporaries", "check_output_dir", "check_free_space", "atomic_write_text"]

logger = logging.getLogger(__name__)

_HOST = socket.gethostname().split(".")[0].replace("@", "_") or "host"
# our temporary files: ".<target name>.<pid>@<host>.<random>.tmp" (pid and host tell whether the writer is alive)
_OURS = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[^.@/]*)\.[A-Za-z0-9_]+\.tmp(\.nrrd|\.mha)?$")
# left by earlier versions: ".<name>.<random>.tmp" (writer), ".<name>.<random>" (text) and Ignite's "tmpXXXXXXXX"
_LEGACY = re.compile(r"^(\..+\.(nii|nii\.gz|nrrd|mha|json|pt)\.[A-Za-z0-9_]{8}(\.tmp)?|tmp[A-Za-z0-9_]{8})$")
LEGACY_AGE_S = 600.0  # a legacy temporary (no pid in its name) untouched for this long is stale


def temp_prefix(name: str) -> str:
    """``mkstemp`` prefix of a temporary file for the target ``name`` (use ``suffix=".tmp"``): it records this process
    so that a later run can tell a stale file (its writer is dead) from one being written."""
    return f".{name}.{os.getpid()}@{_HOST}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files that killed runs of this bundle left in ``folder``: ours whose writing process (on
    this host) is gone, and legacy ones (no pid in the name) untouched for ``LEGACY_AGE_S``. Returns their names."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in os.scandir(folder):
        if not entry.is_file(follow_symlinks=False):
            continue
        ours = _OURS.match(entry.name)
        if ours:
            stale = ours["host"] == _HOST and int(ours["pid"]) != os.getpid() and not _alive(int(ours["pid"]))
        else:
            stale = bool(_LEGACY.match(entry.name)) and now - entry.stat().st_mtime > LEGACY_AGE_S
        if stale:
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except OSError:
                pass
    if removed:
        logger.warning("removed %d stale temporary file(s) of an interrupted run in %s", len(removed), folder)
    return removed


def check_output_dir(path: str | os.PathLike, what: str = "output folder", clean: bool = True) -> Path:
    """Check that ``path`` is a folder, or can be created, and that files can be written in it (nothing is left
    behind: a probe file is created and removed); with ``clean``, remove stale temporaries of killed runs.

    Raises:
        InputError: ``path`` (or a parent) is a file, or the folder is not writable (permissions, read-only file
            system).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path}: exists and is not a folder; give another folder or remove the file")
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{what} {path}: {probe} is a file, not a folder; give another folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=temp_prefix("write-check"), suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise InputError(
            f"{what} {path}: cannot write in {probe} ({err.strerror or err}); choose a writable folder"
        ) from None
    if clean:
        remove_stale_temporaries(path)
    return path


def check_free_space(path: str | os.PathLike, needed_bytes: float, what: str = "output folder") -> None:
    """Raise when the file system of ``path`` (or its nearest existing parent) has less than ``needed_bytes`` free."""
    probe = Path(path)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise InputError(
            f"{what} {path}: {free / 2**20:.0f} MiB free, the outputs need at least {needed_bytes / 2**20:.0f} MiB; "
            "free disk space or choose another folder"
        )


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file through a temporary file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    except OSError as err:
        raise write_error(path, err) or err from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600: give the report the permissions of an ordinary file
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and write_error(path, err) is not None:
            raise write_error(path, err) from None
        raise
