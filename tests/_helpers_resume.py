"""Helpers of tests/test_multi_gpu_resume.py, imported by the bundle runs it starts (this folder is on PYTHONPATH).

- :class:`KillAtIteration`: an Ignite handler that SIGKILLs its own process after a given iteration (a crash
  at a reproducible point of the run, mid-epoch);
- ``python _helpers_resume.py kill_during_save DIR``: saves one checkpoint through
  ``scripts.io.checkpoints.AtomicDiskSaver`` and Ignite's ``Checkpoint(n_saved=1)``, then SIGKILLs itself in the middle
  of writing the second one (after half of the bytes).
"""

from __future__ import annotations

import os
import signal
import sys

from ignite.engine import Engine, Events


class KillAtIteration:
    """SIGKILL the current process once ``engine.state.iteration == iteration`` has completed."""

    def __init__(self, iteration: int):
        self.iteration = int(iteration)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=self.iteration), self._kill)

    def _kill(self, engine: Engine) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def kill_during_save(folder: str) -> None:
    """Checkpoint epoch 1 completely, then die half-way through writing epoch 2."""
    import io

    import torch
    from ignite.handlers import Checkpoint

    from scripts.io.checkpoints import AtomicDiskSaver

    engine = Engine(lambda e, b: None)
    weights = {"w": torch.arange(200_000, dtype=torch.float32)}

    class Model:
        def state_dict(self):
            return weights

        def load_state_dict(self, state):
            weights.update(state)

    saver = Checkpoint(
        {"model": Model(), "trainer": engine},
        AtomicDiskSaver(folder),
        filename_prefix="last",
        score_function=lambda e: e.state.epoch,
        score_name="epoch",
        n_saved=1,
    )
    engine.state.epoch = 1
    saver(engine)

    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        handle = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f  # a path: non-atomic savers
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = dying_save
    engine.state.epoch = 2
    saver(engine)  # never returns


if __name__ == "__main__":
    if sys.argv[1] == "kill_during_save":
        kill_during_save(sys.argv[2])
