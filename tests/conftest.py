"""Shared pytest set-up: the bundle root on sys.path, single-threaded determinism, data paths."""

import sys
from pathlib import Path

import pytest

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = BUNDLE_ROOT.parent / "shared" / "data"
if str(BUNDLE_ROOT) not in sys.path:
    sys.path.insert(0, str(BUNDLE_ROOT))


@pytest.fixture(scope="session")
def bundle_root() -> Path:
    return BUNDLE_ROOT


@pytest.fixture(scope="session")
def ct_example_dir() -> Path:
    """The real CT examples in ../shared/data (absent in a user's clone: skip then)."""
    path = SHARED_DATA / "totalsegmentator_example"
    if not path.is_dir():
        pytest.skip(f"real CT test data not found at {path} (only present beside the project's CI checkout)")
    return path


@pytest.fixture
def one_torch_thread():
    """Small volumes: one torch thread is as fast, and much faster when other processes share the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
