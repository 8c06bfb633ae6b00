"""Threads chosen from the free cores (scripts/io/options.py: --torch_threads auto, the inference default)."""

import json
import logging
from pathlib import Path

import pytest
import torch

from scripts.io import options
from scripts.io.errors import InputError

BUNDLE_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(options, "usable_cores", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


def test_auto_uses_the_free_cores_not_every_core(two_cores):
    # the defect: torch's default of one thread per core, on a machine where another job holds a core, made every
    # parallel op wait for a descheduled thread (25.5 s against 10.7 s with one thread, docs/README.md *Threads*)
    assert options.choose_threads("auto", free=0.9) == 1
    assert options.choose_threads("auto", free=0.0) == 1  # at least one
    assert options.choose_threads("auto", free=1.6) == 2  # an idle machine: every core, as before
    assert options.choose_threads(" AUTO ", free=2.0) == 2
    assert options.choose_threads(3) == 3 and options.choose_threads("1") == 1
    assert options.choose_threads(0) == torch.get_num_threads()  # torch's own default


def test_the_processes_of_one_torchrun_share_the_free_cores(two_cores, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert options.choose_threads("auto", free=2.0) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert options.choose_threads("auto", free=2.0) == 1


def test_free_cores_from_proc_stat(monkeypatch):
    samples = iter([(100.0, 400.0), (250.0, 600.0)])  # 150 of 200 jiffies busy over the interval: 0.75 busy
    monkeypatch.setattr(options, "_cpu_times", lambda cpus: next(samples))
    monkeypatch.setattr(options, "usable_cores", lambda: 2)
    monkeypatch.setattr(options.os, "sched_getaffinity", lambda pid: {0, 1})
    assert options.free_cores(interval=0.0) == pytest.approx(0.5)
    monkeypatch.setattr(options, "_cpu_times", lambda cpus: None)  # no /proc/stat: every core counts as free
    assert options.free_cores(interval=0.0) == 2.0


def test_cpu_times_reads_this_machine():
    times = options._cpu_times(None)
    if times is None:
        pytest.skip("no /proc/stat here")
    busy, total = times
    assert 0 <= busy <= total and total > 0
    assert 0.0 <= options.free_cores(0.05) <= options.usable_cores()


def test_a_bad_thread_count_is_one_error_line():
    for bad in ("many", "-1", "2.5"):
        with pytest.raises(InputError, match="option --torch_threads: .* give --torch_threads auto or e.g. 2"):
            options.choose_threads(bad)


def test_inference_defaults_to_auto_and_logs_its_choice(two_cores, monkeypatch, caplog):
    config = json.loads((BUNDLE_ROOT / "configs" / "inference.json").read_text())
    assert config["torch_threads"] == "auto"
    assert "$@options_module.apply_threads(@torch_threads)" in config["initialize"]
    monkeypatch.setattr(options, "free_cores", lambda interval=0.25: 0.7)
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger="scripts.io.options"):
            assert options.apply_threads("auto") == 1 == torch.get_num_threads()
        assert "torch threads: 1 (--torch_threads auto: 0.7 of 2 cores free)" in caplog.text
    finally:
        torch.set_num_threads(before)
