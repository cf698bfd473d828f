"""Which path a block takes for a shape: the fastest of its candidates, measured or estimated.

A block op has several ways to run one call — e.g. the channel-attention block's MLP in the
squeeze kernel's last program ("one-launch"), as GEMMs between two launches ("split"), the per-op
path, or the reference module's eager forward ("eager"). :func:`choose` picks one per block and
problem key, first hit wins:

1. a forced path (:func:`forced`, or ``TRITATTN_PATH=<name>`` in the environment), where it is
   one of the candidates — for tests and comparisons;
2. this process's earlier decision for the same block, key and candidates — except an estimate
   inside ``tritattn.tune``'s pass (a :func:`recording` scope), which is made again, so a model
   called before it is tuned gets its measured winners;
3. a **measured** winner from the tuning tables (:func:`tritattn.tuning.path_winner`: the user
   cache, then the shipped table), where it is one of the candidates;
4. a measurement now, on a GPU where benchmarking is allowed (inside
   ``tritattn.tune(model, example)``'s pass, or with TRITATTN_AUTOTUNE=1:
   :func:`tritattn.tuning.may_benchmark`) and the caller can run each candidate (``measure``):
   each is timed with ``triton.testing.do_bench`` (median; the block's reference forward among
   them, so a tuned block is never slower than what the user had) and the winner is stored in
   the user cache (:func:`tritattn.tuning.store_path_winner`); not under torch.distributed with
   several ranks, where every rank must take the same path;
5. otherwise the **estimate** of the critical-path model (:func:`tritattn.cost_model.path_seconds`
   on the GPU's constants, :func:`cost_model.gpu_model`; the H100's off a GPU): the candidate
   with the smallest estimated time (ties to the earlier candidate).

Each decision is recorded with its reason (:func:`decisions`), e.g. ``estimate (H100 model):
one-launch 12.3 µs, split 8.1 µs, per-op 9.0 µs, eager 14.0 µs`` or ``measured (user cache)``.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from . import cost_model
from .cost_model import Launch

log = logging.getLogger("tritattn")

#: The path every choice takes where it is a candidate (None: choose): ``TRITATTN_PATH``, or :func:`forced`.
forced_path: str | None = os.environ.get("TRITATTN_PATH") or None

#: do_bench's warm-up and measuring time per candidate path, in ms.
BENCH_WARMUP_MS, BENCH_REP_MS = 5, 25


@dataclass(frozen=True)
class PathDecision:
    """The path a block took for a problem key, and why."""

    block: str
    key: str
    path: str
    reason: str  # "estimate (<GPU> model): <path> <µs> µs, …", "measured (<table>)", "measured now: …", "forced"


_decisions: dict[tuple[str, str], PathDecision] = {}  # (block, key) → the latest decision, for reports
#: (block, key, candidates) → (path, measured: from the tables or timed, not estimated), for the call path
_chosen: dict[tuple[str, str, tuple[str, ...]], tuple[str, bool]] = {}
_recorders: list[set[tuple[str, str]]] = []  # the open recording() scopes
_epoch = 0  # counts decisions made and forget(): a caller that keeps a choice (call_state) keeps it within one epoch


@contextlib.contextmanager
def forced(path: str | None) -> Iterator[None]:
    """Within the scope every choice takes ``path`` where it is a candidate (None: choose)."""
    global forced_path
    before, forced_path = forced_path, path
    try:
        yield
    finally:
        forced_path = before


@contextlib.contextmanager
def recording() -> Iterator[set[tuple[str, str]]]:
    """Collects the (block, problem key) of every choice made in the scope (tritattn.tune's report)."""
    keys: set[tuple[str, str]] = set()
    _recorders.append(keys)
    try:
        yield keys
    finally:
        _recorders.remove(keys)


def decision(block: str, key: str) -> PathDecision | None:
    """The decision for ``block`` and ``key``, if this process has made one."""
    return _decisions.get((block, key))


def decisions() -> list[PathDecision]:
    """Every (block, problem key) this process decided, with its path and the reason."""
    return list(_decisions.values())


def forget() -> None:
    """Drop this process's decisions (a table changed; tests)."""
    global _epoch
    _decisions.clear()
    _chosen.clear()
    _epoch += 1


def call_state() -> tuple | None:
    """What :func:`choose` answers from besides its arguments, for a caller that keeps its answer
    per call signature (tritattn/excitation_step.py): the forced path and the decisions' epoch
    (a decision stands until one is made again — an estimate, in tune's pass — or :func:`forget`);
    None while a :func:`recording` scope is open, whose choices must each be made (and recorded) anew."""
    return None if _recorders else (forced_path, _epoch)


def estimate_reason(estimates: Mapping[str, float], gpu: cost_model.GpuModel) -> str:
    """"estimate (H100 model): one-launch 12.3 µs, split 8.1 µs" for {path: seconds}."""
    return f"estimate ({gpu.name} model): " + ", ".join(f"{name} {t * 1e6:.1f} µs" for name, t in estimates.items())


def estimated(candidates: Mapping[str, Sequence[Launch]], gpu: cost_model.GpuModel) -> tuple[str, str]:
    """(the candidate with the smallest estimated time, the reason naming every estimate)."""
    estimates = {name: cost_model.path_seconds(launches, gpu) for name, launches in candidates.items()}
    return min(estimates, key=estimates.__getitem__), estimate_reason(estimates, gpu)


def model_for(device: torch.device) -> cost_model.GpuModel:
    """The model's constants for ``device``: its GPU's, or the H100's off a GPU (meta, CPU)."""
    if device.type == "cuda":
        return cost_model.gpu_model(torch.cuda.get_device_name(device))
    return cost_model.H100


def choose(
    block: str, key: str, names: Sequence[str], candidates: Callable[[], Mapping[str, Sequence[Launch]]],
    device: torch.device, measure: Callable[[str], Callable[[], object]] | None = None,
) -> str:
    """The path ``block`` takes for problem ``key`` among ``names`` (see the module docstring).
    ``candidates()`` gives the predicted launches of each name (called only for an estimate);
    ``measure(name)``, if given, a callable that runs one call of the block on that path (a
    forward, or a training step; with the path forced, :func:`forced`), for timing on a GPU."""
    if forced_path is not None and forced_path in names:
        return forced_path
    for keys in _recorders:
        keys.add((block, key))
    names = tuple(names)
    memo = (block, key, names)
    chosen = _chosen.get(memo)
    if chosen is not None and (chosen[1] or not _recorders):  # an estimate is made again in tune's pass
        return chosen[0]
    from . import tuning

    stored = tuning.path_winner(device, block, key)
    if stored is not None and stored[0] in names:
        path, reason = stored[0], f"measured ({stored[1]})"
    elif measure is not None and _may_measure(device):
        path, reason = _measure(names, measure)
        tuning.store_path_winner(device, block, key, path)
    else:
        path, reason = estimated(candidates(), model_for(device))
    global _epoch
    _chosen[memo] = (path, not reason.startswith("estimate"))
    _epoch += 1
    _decisions[(block, key)] = PathDecision(block, key, path, reason)
    log.debug("%s %s: path %s (%s)", block, key, path, reason)
    return path


def op_path(
    block: str, path: str, names: Sequence[str], shape_of: Callable[[], Any], key_of: Callable[[Any], str],
    predict: Callable[[Any], Mapping[str, Sequence[Launch]]], device: torch.device,
    measure: Callable[[str], Callable[[], object]] | None = None,
) -> str:
    """The path a block op with a ``path`` argument takes: ``path`` itself when it names one of
    ``names`` (its caller chose it), else :func:`choose`'s for the call's shape ``shape_of()``
    (built only then: the op's host path is short) under the problem key ``key_of(shape)``, with
    ``predict(shape)`` the predicted launches of each name."""
    if path in names:
        return path
    shape = shape_of()
    return choose(block, key_of(shape), names, lambda: predict(shape), device, measure)


def op_measure(call: Callable[..., object]) -> Callable[[str], Callable[[], object]]:
    """``measure`` for :func:`choose` on behalf of a custom op that takes a ``path`` argument:
    candidate ``name`` is timed as ``call(path=name)`` (the op's own arguments bound in ``call``)."""
    return lambda name: functools.partial(call, path=name)


def _may_measure(device: torch.device) -> bool:
    """Whether candidate paths are timed now: on a GPU, where benchmarking is allowed, in a
    single process — ranks timing their own winners could take different paths (different bits),
    so under torch.distributed every rank takes the tables' winner or the estimate, alike."""
    from . import tuning

    return device.type == "cuda" and tuning.may_benchmark(device) and tuning.distributed_world_size() == 1


def _time_ms(run: Callable[[], object]) -> float:
    """do_bench's median time of ``run`` in ms (the L2 flushed between runs)."""
    import triton.testing

    return triton.testing.do_bench(run, warmup=BENCH_WARMUP_MS, rep=BENCH_REP_MS, return_mode="median")


def _measure(names: Sequence[str], measure: Callable[[str], Callable[[], object]]) -> tuple[str, str]:
    """(the fastest path by do_bench's median, the reason with every timing)."""
    timings = {name: _time_ms(measure(name)) for name in names}
    best = min(timings, key=timings.__getitem__)
    return best, "measured now: " + ", ".join(f"{name} {ms * 1e3:.1f} µs" for name, ms in timings.items())

