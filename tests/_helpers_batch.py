"""Helpers of tests/test_batch_inference.py, imported by the bundle runs it starts (this folder is on PYTHONPATH).

:class:`KillDuringRename` is a handler, appended to the inference workflow's ``handlers`` by an override file, that
SIGKILLs its own process (on one rank only) right after the n-th output image has been renamed into place: the pair
being written then has some outputs in place, the others still in temporary files of a dead writer, and no record.
"""

from __future__ import annotations

import os
import signal
import sys


class KillDuringRename:
    """SIGKILL the process of rank ``rank`` (``$RANK``, 0 without torchrun) after its ``renames``-th rename of a
    ``.nii.gz`` output (3 per pair without label maps: ddf, det J, warped image)."""

    def __init__(self, renames: int, rank: int = 0):
        self.renames = int(renames)
        self.rank = int(rank)

    def attach(self, engine) -> None:
        if int(os.environ.get("RANK", "0")) != self.rank:
            return
        real_replace = os.replace
        count = [0]

        def replace(src, dst, *args, **kwargs):
            real_replace(src, dst, *args, **kwargs)
            if str(dst).endswith(".nii.gz"):
                count[0] += 1
                if count[0] == self.renames:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os.kill(os.getpid(), signal.SIGKILL)

        os.replace = replace
