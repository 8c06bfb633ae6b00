"""A small cache for the regions' pure functions of whole arrays (the closed cavity, the body mask).

The refinement asks :func:`scripts.regions.cavity.cavity_regions` for several walls of the same labels: the first
pass's regions, each candidate of the wall search (three shifts and a closing radius, per region twice more for the
chosen map: :mod:`scripts.refinement.wall_search`), the second pass's. Each call closed the same content with the same
radius (two Euclidean distance transforms of the padded volume, 0.4-0.7 s at the 97 x 81 x 129 working grid) and
filled the same body's holes slice by slice (0.1 s): in a ``cProfile`` of ``benchmarks/benchmark_refine.py`` with
``configs/refine_wall_search.json``'s options, eight closings and six body masks took 6.3 of ``cavity_regions``' 10.7
s; with this cache two closings and one body mask, 1.0 of 3.8 s (docs/benchmark_results/refine_speed_0919/).
WHY a cache keyed by the arrays' contents, not an object handed from call to call: every caller (the wall search,
the second pass, the inferer, the benchmarks) gets it without a new argument, and a caller that changed its labels
gets a new entry, never a stale one.

The key of an array is its shape, dtype and a BLAKE2 digest of its bytes (about 4 ms for 4 MB); a tensor, list or tuple
is keyed as the array it makes (a list of label ids by its digest too); anything else (a number, a string) by its
value. Each function keeps its last :data:`MAX_ENTRIES` results; a result comes back as a copy, so a caller that
writes into it cannot change what the next caller gets.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["MAX_ENTRIES", "array_memo"]

# results kept per function: the wall search's labels at two closing radii, and room for a second grid
MAX_ENTRIES = 4


def _key(value: Any) -> Any:
    """A hashable stand-in for an argument: arrays, tensors, lists and tuples by shape, dtype and digest (a sequence
    of other objects item by item), others by value."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, (np.ndarray, list, tuple)):
        arr = np.ascontiguousarray(value)
        if arr.dtype == object:
            return tuple(_key(v) for v in value)
        digest = hashlib.blake2b(arr.view(np.uint8).reshape(-1), digest_size=16).digest()
        return ("array", arr.shape, arr.dtype.str, digest)
    return value


def array_memo(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """``fn`` (a pure function returning one array) with its last :data:`MAX_ENTRIES` results kept, keyed by its
    arguments' contents. The wrapper's ``hits`` and ``misses`` count the calls served from the cache and computed;
    ``cache_clear()`` empties it."""
    cache: OrderedDict[Any, np.ndarray] = OrderedDict()
    signature, lock = inspect.signature(fn), threading.Lock()  # the cache's order and size, from any thread

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> np.ndarray:
        bound = signature.bind(*args, **kwargs)  # one key however the arguments are passed, defaults included
        bound.apply_defaults()
        key = tuple((name, _key(value)) for name, value in bound.arguments.items())
        with lock:
            if key in cache:
                cache.move_to_end(key)
                call.hits += 1
                return cache[key].copy()
        out = fn(*args, **kwargs)  # outside the lock: two threads may compute the same entry, never a wrong one
        with lock:
            call.misses += 1
            cache[key] = out.copy()
            while len(cache) > MAX_ENTRIES:
                cache.popitem(last=False)
        return out

    def cache_clear() -> None:
        with lock:
            cache.clear()
            call.hits = call.misses = 0

    call.hits = call.misses = 0
    call.cache_clear = cache_clear
    return call
