"""Run the bundle's real commands (`python -m monai.bundle run ...`) from the tests."""

import os
import re
import subprocess
import sys
from pathlib import Path

BUNDLE_ROOT = Path(__file__).resolve().parents[1]


def bundle(run_id: str, configs: list[str], *overrides: str, cwd: Path = BUNDLE_ROOT) -> str:
    """Run `python -m monai.bundle run RUN_ID` with the bundle's config files; return the log, fail with it on error."""
    config_file = str([str(BUNDLE_ROOT / "configs" / c) for c in configs]).replace(" ", "")
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config_file, *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    return log


def epoch_metric(log: str, name: str) -> list[float]:
    """Every value logged as `NAME: value` (the StatsHandler epoch lines), in order."""
    return [float(v) for v in re.findall(rf"{name}: ([0-9.eE+-]+|nan)", log)]
