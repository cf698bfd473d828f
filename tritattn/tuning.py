"""Autotuning of tritattn's kernels per GPU and problem shape, with a persistent JSON cache.

Each kernel has a config space: a list of ``triton.Config`` over BLOCK_R, BLOCK_K, num_warps and
num_stages, defined next to the kernel (``kernels/mean_max.py``, ``kernels/gated_scale.py``).
A :class:`Tuner` picks one config per *problem key* — what changes the best config:

    R (C for channel ops, H×W for CBAM's spatial ops), K bucketed to the next power of two,
    B bucketed to the next power of two (the grid of the row-reduction kernels grows with B),
    the layout (whether rows are the contiguous axis), the dtype, and the constexpr flags that
    change the memory traffic (e.g. WANT_MAX, HAS_RESIDUAL, ACT).

**Tuning is kept off the training step.** A launch never benchmarks unless the user asked for
it. A config is taken from, first hit wins:

1. this process's decisions;
2. the user cache, ``$TRITATTN_CACHE_DIR/tuning.json`` (default ``$XDG_CACHE_HOME/tritattn`` or
   ``~/.cache/tritattn``), keyed by GPU name → triton version → ``kernel/problem key``; it is
   loaded at import, so a second process pays no tuning;
3. the table shipped in the package for known GPUs, ``tritattn/tuned/<gpu>.json`` (same format,
   written by ``perf/sweep.py --write-tuned-table``); an entry made with another triton version
   is used too when the current version has none (configs are only block sizes, warps, stages);
4. benchmarking now — only where it was asked for: inside :func:`benchmarking` (the scope
   ``tritattn.tune(model, example)`` runs its pass in), or on first use with
   ``TRITATTN_AUTOTUNE=1`` (:data:`ON_FIRST_USE`). The config space is pruned to a handful of
   candidates (``tiling.prune_configs``: layout-matching orientation, register budget,
   closeness to the heuristic default, occupancy), each timed with ``triton.testing.do_bench``
   (median) on the real arguments; the best one is kept in 1 and written to 2. The kernels
   store each output element once and leave their ticket counters at 0, so re-running them on
   the real arguments is safe (no reset_to_zero / restore_value);
5. otherwise the *nearest tuned problem*: the same kernel, GPU and problem key but for the batch
   bucket, the closest batch bucket (in powers of two; a tie goes to the larger batch), from the
   user cache, then the shipped table (:meth:`ConfigTable.nearest`) — the last, partial batch of
   an epoch runs the config tuned for the full batch, without a benchmark;
6. otherwise the default config, ``tiling.default_config``.

An INFO message on the ``tritattn`` logger says once why a problem was not benchmarked.
Benchmarking on first use (``TRITATTN_AUTOTUNE=1``) is also refused while a CUDA graph is
captured, on a side stream (where ``torch.compile(mode="reduce-overhead")`` and the
``torch.cuda.graph`` recipe run their warm-ups: do_bench's 256 MB L2-flush buffer would land in
the graph's memory pool) and under ``torch.distributed`` with more than one rank (each rank
would time its own winner, and different configs give different bits: :func:`tune` benchmarks
on rank 0 and broadcasts its choices instead, :func:`share_rank0_decisions`). With decisions
taken from the tables only, every rank takes the same config for the same problem when every
rank reads the same tables: the same package, and the same user cache (one shared
``TRITATTN_CACHE_DIR``, or ``tuning.json`` copied), or ``tritattn.tune`` called on every rank.

**Without a GPU nothing is tuned.** Under the Triton interpreter (``TRITON_INTERPRET=1``), with
``TRITATTN_AUTOTUNE=0``, or under ``torch.use_deterministic_algorithms(True)`` (the block size
sets the summation order, so results then do not depend on the tuning cache) the tables are not
read and the default config is used — ``tiling.default_config``, the tile heuristic with
TILE_ELEMENTS / LONG_SIDE_MAX read at call time — and an INFO message says so once.
:func:`decisions` tells which config each problem got and where it came from.

Why a small tuner of our own rather than ``@triton.autotune``: the autotuner fails under the
interpreter ("0 active drivers"), keeps its results in memory only (its optional disk cache,
``cache_results``, sits in triton's cache keyed by source hash, not by GPU, and cannot ship a
table), tunes on first use wherever that is, and its cache key and internals differ between
triton 3.6 and 3.9. This module uses only ``triton.Config``, ``triton.testing.do_bench`` and a
grid callable taking the config's META — the same pieces, stable across those versions — and
keeps the cache in a format we own.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import torch
import torch.distributed
import triton
import triton.testing
from triton.compiler.errors import CompileTimeAssertionFailure
from triton.runtime import errors as runtime_errors

from .backend import INTERPRETER
from .kernels import tiling
from .kernels.grid_math import next_power_of_2

log = logging.getLogger("tritattn")

#: A candidate config that fails to build is skipped. PTXASError is looked up by name: it is not
#: in every triton release the library supports.
CONFIG_BUILD_ERRORS: tuple[type[Exception], ...] = (CompileTimeAssertionFailure, runtime_errors.OutOfResources) + tuple(
    getattr(runtime_errors, name) for name in ("PTXASError",) if hasattr(runtime_errors, name)
)


def autotune_switches(value: str | None) -> tuple[bool, bool]:
    """(AUTOTUNE, ON_FIRST_USE) for a value of TRITATTN_AUTOTUNE: unset or empty → (True, False),
    the tables only; "0" → (False, False), the default config always; anything else → (True,
    True), and a problem no table holds is benchmarked where it is first met."""
    value = value or ""
    return value != "0", value not in ("", "0")


#: AUTOTUNE False (TRITATTN_AUTOTUNE=0): every kernel runs the default config, the tables unread.
#: ON_FIRST_USE (TRITATTN_AUTOTUNE=1): a problem that no table holds is benchmarked at the launch
#: that first meets it (not under capture, on a side stream, nor with several distributed ranks).
#: Neither set (the default): benchmarks run only inside :func:`benchmarking` (``tritattn.tune``).
AUTOTUNE, ON_FIRST_USE = autotune_switches(os.environ.get("TRITATTN_AUTOTUNE"))

#: At most this many configs are benchmarked for a new problem key.
MAX_CONFIGS = 5
#: do_bench's warm-up and measuring time per candidate config, in ms.
BENCH_WARMUP_MS, BENCH_REP_MS = 2, 10

FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).parent / "tuned"


def cache_dir() -> Path:
    """$TRITATTN_CACHE_DIR, else $XDG_CACHE_HOME/tritattn, else ~/.cache/tritattn."""
    if os.environ.get("TRITATTN_CACHE_DIR"):
        return Path(os.environ["TRITATTN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tritattn"


def cache_file() -> Path:
    return cache_dir() / "tuning.json"


def gpu_slug(gpu: str) -> str:
    """File-name form of a GPU name: ``"NVIDIA H100 80GB HBM3"`` → ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")


def config_to_json(cfg: triton.Config) -> dict[str, int]:
    return {**cfg.kwargs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}


def config_from_json(d: dict[str, int]) -> triton.Config:
    kwargs = {k: v for k, v in d.items() if k not in ("num_warps", "num_stages")}
    return triton.Config(kwargs, num_warps=d["num_warps"], num_stages=d["num_stages"])


#: The batch bucket in a problem key (see :attr:`Problem.key`).
_BATCH_BUCKET = re.compile(r",B<=(\d+),")


class ConfigTable:
    """Tuned configs: GPU name → triton version → ``"kernel/problem key"`` → config (as JSON)."""

    def __init__(self, entries: dict[str, dict[str, dict[str, dict[str, int]]]] | None = None) -> None:
        self.entries = entries or {}

    @classmethod
    def load(cls, path: Path) -> "ConfigTable":
        """The table in ``path``; empty when the file is missing or unreadable (which is logged)."""
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT_VERSION}")
            return cls(data["configs"])
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, KeyError, AttributeError) as e:
            log.warning("ignoring tuning cache %s (%s)", path, e)
            return cls()

    def _versions(self, gpu: str, version: str, any_version: bool) -> list[dict[str, dict[str, int]]]:
        """``gpu``'s entries for ``version``, then (``any_version``) for the other versions, sorted."""
        by_version = self.entries.get(gpu, {})
        others = sorted(v for v in by_version if v != version) if any_version else []
        return [by_version.get(v, {}) for v in [version] + others]

    def get(self, gpu: str, version: str, key: str, any_version: bool = False) -> triton.Config | None:
        for keys in self._versions(gpu, version, any_version):
            if key in keys:
                return config_from_json(keys[key])
        return None

    def nearest(self, gpu: str, version: str, key: str, any_version: bool = False) -> tuple[triton.Config, str] | None:
        """(config, its key) of the tuned problem nearest to ``key`` = ``"kernel/problem key"``: the
        same kernel and problem key but for the batch bucket ``B<=n``, with the closest batch
        bucket (in powers of two; a tie goes to the larger batch); versions as :meth:`get`."""
        here = _BATCH_BUCKET.search(key)
        if here is None:
            return None
        rest, log_batch = (key[:here.start()], key[here.end():]), int(here.group(1)).bit_length()
        for keys in self._versions(gpu, version, any_version):
            ranked = []
            for other in keys:
                there = _BATCH_BUCKET.search(other)
                if there is not None and (other[:there.start()], other[there.end():]) == rest:
                    batch = int(there.group(1))  # a power of two: bit_length is its log2 + 1
                    ranked.append((abs(batch.bit_length() - log_batch), -batch, other))
            if ranked:
                other = min(ranked)[2]
                return config_from_json(keys[other]), other
        return None

    def put(self, gpu: str, version: str, key: str, cfg: triton.Config) -> None:
        self.entries.setdefault(gpu, {}).setdefault(version, {})[key] = config_to_json(cfg)

    def get_path(self, gpu: str, version: str, key: str, any_version: bool = False) -> str | None:
        """The measured winning path stored under ``key`` (:func:`path_key`), if any."""
        for keys in self._versions(gpu, version, any_version):
            if key in keys:
                return keys[key].get("path")
        return None

    def put_path(self, gpu: str, version: str, key: str, path: str) -> None:
        self.entries.setdefault(gpu, {}).setdefault(version, {})[key] = {"path": path}

    def merge(self, other: "ConfigTable") -> None:
        """Add ``other``'s entries; ``other`` wins where both have one."""
        for gpu, versions in other.entries.items():
            for version, keys in versions.items():
                self.entries.setdefault(gpu, {}).setdefault(version, {}).update(keys)

    def sizes(self) -> dict[str, dict[str, int]]:
        """GPU name → triton version → number of configs."""
        return {gpu: {version: len(keys) for version, keys in versions.items()} for gpu, versions in self.entries.items()}

    def only(self, gpu: str, version: str) -> "ConfigTable":
        return ConfigTable({gpu: {version: dict(self.entries.get(gpu, {}).get(version, {}))}})

    def save(self, path: Path) -> None:
        """Write to ``path``, merged over what the file holds now (other processes' entries), atomically."""
        on_disk = ConfigTable.load(path)
        on_disk.merge(self)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            json.dump({"format": FORMAT_VERSION, "configs": on_disk.entries}, f, indent=1, sort_keys=True)
        os.replace(f.name, path)


def _load_shipped() -> ConfigTable:
    table = ConfigTable()
    for path in sorted(SHIPPED_DIR.glob("*.json")):
        table.merge(ConfigTable.load(path))
    return table


_user_table = ConfigTable.load(cache_file())  # loaded at import: a second process pays no tuning
_shipped_table = _load_shipped()


def _tables() -> tuple[tuple[ConfigTable, str, bool], ...]:
    """The tables in the order they are read: (table, its name, any triton version's entries)."""
    return ((_user_table, "user cache", False), (_shipped_table, "shipped table", True))


def shipped_table() -> ConfigTable:
    """The tuned tables shipped in the package (``tritattn/tuned/*.json``), merged."""
    return _shipped_table


@dataclass(frozen=True)
class Problem:
    """One launch's shape, as far as the choice of config is concerned."""

    B: int
    R: int
    K: int
    rows_contiguous: bool
    dtype: torch.dtype
    flags: tuple[tuple[str, Any], ...] = ()

    @functools.cached_property
    def key(self) -> str:
        """The problem key of the tables, formatted once per problem (:func:`problem_key`) and kept
        on this object: launch plans (tritattn/launch.py) hold their problem, so a launch reads it
        without hashing the problem again."""
        return problem_key(self)


#: Distinct problems (and default configs) whose key is kept: a process meets a few per shape it runs.
KEY_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def problem_key(p: Problem) -> str:
    """``p.key``: a pure function of the problem, cached — a launch looks its config up by it,
    so a shape met before costs one dict lookup, not the formatting."""
    flags = "".join(f",{name}={int(v) if isinstance(v, bool) else v}" for name, v in p.flags)
    layout = "rows" if p.rows_contiguous else "cols"
    bucket = next_power_of_2
    return f"R={p.R},K<={bucket(p.K)},B<={bucket(p.B)},contig={layout},{str(p.dtype).removeprefix('torch.')}{flags}"


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _default_config(R: int, K: int, rows_contiguous: bool, num_stages: int, tile_elements: int,
                    long_side_max: int, loop_steps_max: int) -> triton.Config:
    """``tiling.default_config``, cached; ``tile_elements``, ``long_side_max`` and ``loop_steps_max``
    are the values of ``tiling.TILE_ELEMENTS`` / ``LONG_SIDE_MAX`` / ``LOOP_STEPS_MAX`` it reads, so
    a changed heuristic is a new entry."""
    return tiling.default_config(R, K, rows_contiguous, num_stages)


@dataclass(frozen=True)
class Decision:
    """Which config a kernel ran with for a problem key, and where it came from."""

    kernel: str
    key: str
    config: dict[str, int]
    source: str  # "tuned", "user cache", "shipped table", "<table>, nearest batch (B<=n)", or "default: <why>"
    candidates: int  # configs benchmarked (tuned) or that would be (interpreter: the pruned list)


class Choice(NamedTuple):
    """A problem's config on the launch path. ``final``: tuned, or read from a table for this very
    problem; else a fallback (the nearest tuned problem's config, or the default: ``config`` None,
    computed at each call), kept until benchmarking is allowed or the tables change."""

    config: triton.Config | None
    final: bool


_decisions: dict[str, Decision] = {}  # "kernel/problem key" → decision, for reports
_NO_DECISION = Decision("", "", {}, "none", 0)
_chosen: dict[str, Choice] = {}  # the same keys → config, for the launch path
_tuning_seconds = 0.0
_said: set[str] = set()  # the INFO messages said (once each)
_benchmark_scopes = 0  # the open benchmarking() scopes


_recorders: list[set[str]] = []  # the open recording() scopes


@contextlib.contextmanager
def benchmarking() -> Iterator[None]:
    """Within the scope, a problem that no table holds is benchmarked where it is met (never
    while a CUDA graph is captured). ``tritattn.tune`` runs its pass in it; keep it outside
    CUDA-graph warm-ups (do_bench allocates a 256 MB L2-flush buffer) and, under
    torch.distributed, to rank 0 (:func:`share_rank0_decisions`)."""
    global _benchmark_scopes
    _benchmark_scopes += 1
    try:
        yield
    finally:
        _benchmark_scopes -= 1


@contextlib.contextmanager
def recording() -> Iterator[set[str]]:
    """Collects the ``"kernel/problem key"`` of every launch made in the scope."""
    keys: set[str] = set()
    _recorders.append(keys)
    try:
        yield keys
    finally:
        _recorders.remove(keys)


def decision(full_key: str) -> Decision | None:
    """The decision for one ``"kernel/problem key"``, if the process has seen it."""
    return _decisions.get(full_key)


def decisions() -> list[Decision]:
    """Every (kernel, problem key) seen by this process, with its config and its source."""
    return list(_decisions.values())


def tuning_seconds() -> float:
    """Wall time this process spent benchmarking candidate configs."""
    return _tuning_seconds


def skip_reason(device: torch.device) -> str | None:
    """Why configs are not tuned on ``device`` (None: they are)."""
    if INTERPRETER or device.type != "cuda":
        return "Triton interpreter, no GPU: autotuning skipped, default tile config used"
    if not AUTOTUNE:
        return "TRITATTN_AUTOTUNE=0: autotuning off, default tile config used"
    if torch.are_deterministic_algorithms_enabled():
        # a tuned block size changes the summation order from one GPU or cache to another
        return "torch.use_deterministic_algorithms(True): default tile config used, the same on every run"
    return None


#: :func:`why_not_benchmark` where nothing asks for benchmarks
_NOT_DURING_A_RUN = ("not benchmarking during a run: a kernel problem that no tuning table holds runs the config of "
                     "the nearest tuned problem (another batch size) or the default; tritattn.tune(model, example) "
                     "benchmarks (or TRITATTN_AUTOTUNE=1, on first use)")


def why_not_benchmark(device: torch.device) -> str | None:
    """Why a problem that no table holds is not benchmarked now on ``device`` (None: it is)."""
    if not ON_FIRST_USE and not _benchmark_scopes:  # the common case, asked at every untuned launch: no CUDA query
        return _NOT_DURING_A_RUN
    if torch.cuda.is_current_stream_capturing():
        return "a CUDA graph is being captured: not benchmarking; the nearest tuned problem's config or the default runs"
    if _benchmark_scopes:
        return None
    world = distributed_world_size()
    if world > 1:
        return (f"TRITATTN_AUTOTUNE=1 not followed under torch.distributed ({world} ranks): ranks timing their own "
                "winners could run different configs (different bits); tritattn.tune(model, example) benchmarks on "
                "rank 0 and gives every rank its choices")
    if on_side_stream(device):
        return ("TRITATTN_AUTOTUNE=1: not benchmarking on a side stream, where CUDA-graph warm-ups run (do_bench's "
                "256 MB flush buffer would stay in the graph's pool); call tritattn.tune(model, example) before capturing")
    return None


def on_side_stream(device: torch.device) -> bool:
    """Whether work on ``device`` goes to a stream other than its default stream."""
    return torch.cuda.current_stream(device) != torch.cuda.default_stream(device)


def distributed_world_size() -> int:
    """The number of torch.distributed ranks (1 when torch.distributed is not initialised)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def distributed_rank() -> int:
    """This process's torch.distributed rank (0 when torch.distributed is not initialised)."""
    return torch.distributed.get_rank() if distributed_world_size() > 1 else 0


def share_rank0_decisions(keys: set[str], device: torch.device) -> None:
    """Under torch.distributed with several ranks, every rank takes rank 0's decisions for
    ``keys`` (``"kernel/problem key"``): a collective, every rank calls it after the same run.
    Ranks that read different tables, or timed their own winners, would run different configs,
    and different configs give different bits. The configs rank 0 benchmarked go to every
    rank's user cache too. A no-op with one process."""
    if distributed_world_size() <= 1:
        return
    mine = {key: _decisions[key] for key in sorted(keys) if key in _decisions}
    payload = [mine]
    torch.distributed.broadcast_object_list(payload, src=0)
    if distributed_rank() == 0:
        return
    theirs: dict[str, Decision] = payload[0]
    if set(theirs) != set(mine):
        log.warning("rank %d decided kernel problems that rank 0 did not, or the reverse: %s", distributed_rank(),
                    sorted(set(theirs) ^ set(mine)))
    gpu, version = gpu_name(device), triton.__version__
    for key, d in theirs.items():
        cfg = config_from_json(d.config)
        _decisions[key], _chosen[key] = d, Choice(cfg, True)
        if d.source == "tuned":
            _user_table.put(gpu, version, key, cfg)
    if any(d.source == "tuned" for d in theirs.values()):
        _save_user_cache(gpu, version)
    _forget_fallbacks()


def gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device)


def _say_once(reason: str) -> None:
    if reason not in _said:
        log.info("%s", reason)
        _said.add(reason)


def _forget_fallbacks() -> None:
    """Drop the fallback choices: a table changed, the nearest tuned problem may be another."""
    for key in [key for key, choice in _chosen.items() if not choice.final]:
        del _chosen[key]


def _save_user_cache(gpu: str, version: str) -> None:
    try:
        _user_table.only(gpu, version).save(cache_file())
        log.debug("wrote the tuning cache %s", cache_file())
    except OSError as e:
        log.warning("could not write the tuning cache %s (%s)", cache_file(), e)


def fastest_without_spills(timings: list[float], spills: list[int]) -> int | None:
    """The index of the fastest candidate (``timings`` in ms, inf: it did not build) among those
    whose compiled kernel spills no registers (``spills``: its ``n_spills``) — where every one that
    builds spills, among those that spill the least; None when none builds."""
    built = [i for i, ms in enumerate(timings) if not math.isinf(ms)]
    if not built:
        return None
    least = min(spills[i] for i in built)
    return min((i for i in built if spills[i] == least), key=timings.__getitem__)


class Tuner:
    """Launches one kernel with the config tuned for each problem (see the module docstring).

    ``grid(META)`` gives the launch grid for a config's block sizes; ``num_stages`` is the
    default config's pipeline depth (3 for kernels that loop over K, 1 for those that do not).
    """

    def __init__(self, name: str, kernel: Any, configs: list[triton.Config], num_stages: int) -> None:
        self.name, self.kernel, self.configs, self.num_stages = name, kernel, configs, num_stages

    def candidates(self, problem: Problem, grid: Callable[[dict], tuple[int, ...]], min_programs: int = 0) -> list[triton.Config]:
        """The pruned configs a new problem would benchmark, the default first."""
        return tiling.prune_configs(
            self.configs, problem.R, problem.K, problem.rows_contiguous, self.num_stages,
            programs=lambda cfg: grid(cfg.kwargs)[0], min_programs=min_programs, max_configs=MAX_CONFIGS,
        )

    def launch(self, problem: Problem, grid: Callable[[dict], tuple[int, ...]], args: tuple, constexprs: dict[str, Any], device: torch.device) -> None:
        """Run the kernel on ``args`` (on ``device``) with the config chosen for ``problem``.
        Triton launches (and do_bench times) on the current device's stream: ``device`` is made
        the current device for the call where it is not already (a switch and back costs µs of
        host time, so only then)."""
        if device.type == "cuda" and device.index != torch.cuda.current_device():
            with torch.cuda.device(device):
                return self.launch(problem, grid, args, constexprs, device)
        for keys in _recorders:
            keys.add(f"{self.name}/{problem.key}")
        cfg = self._config(problem, grid, args, constexprs, device)
        self._run(cfg, grid, args, constexprs)

    def _run(self, cfg: triton.Config, grid, args: tuple, constexprs: dict[str, Any]) -> Any:
        """Launch with ``cfg``; returns what the launch returns (on a GPU the compiled kernel, whose
        ``n_spills`` :meth:`_benchmark` reads; None in the interpreter)."""
        return self.kernel[grid](*args, **constexprs, **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    def _remember(self, problem: Problem, cfg: triton.Config, source: str, candidates: int,
                  choice: Choice | None = None) -> triton.Config:
        """Record the decision (``cfg`` from ``source``) and the launch path's choice (default:
        ``cfg``, final)."""
        full_key = f"{self.name}/{problem.key}"
        _decisions[full_key] = Decision(self.name, problem.key, config_to_json(cfg), source, candidates)
        _chosen[full_key] = choice if choice is not None else Choice(cfg, True)
        return cfg

    def _config(self, problem: Problem, grid, args: tuple, constexprs: dict[str, Any], device: torch.device) -> triton.Config:
        full_key = f"{self.name}/{problem.key}"
        reason = skip_reason(device)
        if reason is not None:
            _say_once(reason)
            default = self._default(problem)  # read TILE_ELEMENTS now: tests change it between calls
            if not _decisions.get(full_key, _NO_DECISION).source.startswith("default"):
                # reported (also over an earlier tuned decision: the default is what runs now), not
                # remembered in _chosen: once tuning is on again (AUTOTUNE set back, deterministic
                # mode off) this problem takes its cached or tuned config again
                _decisions[full_key] = Decision(self.name, problem.key, config_to_json(default),
                                                "default: " + reason.split(":")[0], len(self.candidates(problem, grid)))
            return default

        chosen = _chosen.get(full_key)
        if chosen is not None and chosen.final:
            return chosen.config
        why_not = why_not_benchmark(device)
        if chosen is not None and why_not is not None:  # the fallback, until benchmarking is allowed
            return chosen.config if chosen.config is not None else self._default(problem)
        gpu, version = gpu_name(device), triton.__version__
        for table, source, any_version in _tables():
            cfg = table.get(gpu, version, full_key, any_version)
            if cfg is not None:
                log.debug("%s %s: %s from the %s", self.name, problem.key, config_to_json(cfg), source)
                return self._remember(problem, cfg, source, 0)
        if why_not is not None:
            _say_once(why_not)
            return self._fallback(problem, grid, gpu, version)
        sm_count = torch.cuda.get_device_properties(device).multi_processor_count
        candidates = self.candidates(problem, grid, min_programs=2 * sm_count)
        cfg = self._benchmark(candidates, grid, args, constexprs)
        if cfg is None:  # nothing built: run the default, which raises the build error; cache nothing
            log.warning("%s: no candidate config built for %s; using the default", self.name, problem.key)
            return self._default(problem)
        _user_table.put(gpu, version, full_key, cfg)
        _save_user_cache(gpu, version)
        _forget_fallbacks()
        return self._remember(problem, cfg, "tuned", len(candidates))

    def _fallback(self, problem: Problem, grid, gpu: str, version: str) -> triton.Config:
        """A problem no table holds, not benchmarked: the nearest tuned problem's config (user
        cache, then shipped table; :meth:`ConfigTable.nearest`), else the default."""
        full_key = f"{self.name}/{problem.key}"
        for table, source, any_version in _tables():
            near = table.nearest(gpu, version, full_key, any_version)
            if near is not None:
                cfg, other = near
                batch = _BATCH_BUCKET.search(other).group(1)
                log.debug("%s %s: %s, the nearest tuned problem's (%s)", self.name, problem.key, config_to_json(cfg), other)
                return self._remember(problem, cfg, f"{source}, nearest batch (B<={batch})", 0, Choice(cfg, False))
        return self._remember(problem, self._default(problem), "default: not tuned", len(self.candidates(problem, grid)),
                              Choice(None, False))

    def _default(self, problem: Problem) -> triton.Config:
        return _default_config(problem.R, problem.K, problem.rows_contiguous, self.num_stages, tiling.TILE_ELEMENTS,
                               tiling.LONG_SIDE_MAX, tiling.LOOP_STEPS_MAX)

    def _benchmark(self, candidates: list[triton.Config], grid, args: tuple, constexprs: dict[str, Any]) -> triton.Config | None:
        """The fastest candidate by do_bench's median among those whose compiled kernel spills no
        registers (:func:`fastest_without_spills`); None when none of them builds."""
        global _tuning_seconds
        start = time.perf_counter()
        timings, spills = [], []
        for cfg in candidates:
            launched: list[Any] = [None]  # what the last launch returned: the compiled kernel on a GPU

            def launch(cfg: triton.Config = cfg, launched: list[Any] = launched) -> None:
                launched[0] = self._run(cfg, grid, args, constexprs)

            try:
                ms = triton.testing.do_bench(launch, warmup=BENCH_WARMUP_MS, rep=BENCH_REP_MS, return_mode="median")
            except CONFIG_BUILD_ERRORS as e:
                log.debug("%s config %s failed: %s", self.name, config_to_json(cfg), e)
                ms = math.inf
            timings.append(ms)
            spills.append(int(getattr(launched[0], "n_spills", 0) or 0))
            if spills[-1]:
                log.debug("%s config %s spills registers (n_spills %d)", self.name, config_to_json(cfg), spills[-1])
        _tuning_seconds += time.perf_counter() - start
        best = fastest_without_spills(timings, spills)
        if best is None:
            return None
        if spills[best]:
            log.warning("%s: every candidate config that builds spills registers; %s spills the least (n_spills %d)",
                        self.name, config_to_json(candidates[best]), spills[best])
        log.info("tuned %s: %s (%.4f ms, %d configs)", self.name, config_to_json(candidates[best]), timings[best], len(candidates))
        return candidates[best]


class FixedConfig(Tuner):
    """A kernel launched with one config, never tuned: its tile is part of its algorithm (e.g. a
    workspace sized by the number of programs). Launched and recorded like a tuned kernel."""

    def __init__(self, name: str, kernel: Any, config: triton.Config) -> None:
        super().__init__(name, kernel, [config], config.num_stages)

    def candidates(self, problem: Problem, grid: Callable[[dict], tuple[int, ...]], min_programs: int = 0) -> list[triton.Config]:
        return list(self.configs)

    def _config(self, problem: Problem, grid, args: tuple, constexprs: dict[str, Any], device: torch.device) -> triton.Config:
        return self.configs[0]


# --- measured path winners (tritattn/paths.py) -------------------------------------------------------
#
# A block's measured fastest path is kept beside the configs, under the pseudo-kernel name
# "path:<block>" (:func:`path_key`) with the value {"path": <name>}: same tables, same files, same
# shipped-table writer; no Tuner has such a name, so no config lookup meets one.


def path_key(block: str, key: str) -> str:
    """The tables' key of ``block``'s path winner for a problem ``key``."""
    return f"path:{block}/{key}"


def path_winner(device: torch.device, block: str, key: str) -> tuple[str, str] | None:
    """(path, the table it came from) of ``block``'s measured winner for ``key`` on ``device``'s
    GPU: the user cache, then the shipped table; None where nothing is tuned (:func:`skip_reason`)."""
    if skip_reason(device) is not None:
        return None
    gpu, full_key = gpu_name(device), path_key(block, key)
    for table, source, any_version in _tables():
        path = table.get_path(gpu, triton.__version__, full_key, any_version)
        if path is not None:
            return path, source
    return None


def store_path_winner(device: torch.device, block: str, key: str, path: str) -> None:
    """Keep ``block``'s measured winner for ``key`` in the user cache (written to disk now)."""
    gpu, version = gpu_name(device), triton.__version__
    _user_table.put_path(gpu, version, path_key(block, key), path)
    _save_user_cache(gpu, version)


def may_benchmark(device: torch.device) -> bool:
    """Whether a launch on ``device`` may be benchmarked now (a GPU, tuning on, and inside
    :func:`benchmarking` or with TRITATTN_AUTOTUNE=1, not under capture)."""
    return skip_reason(device) is None and why_not_benchmark(device) is None


def write_shipped_table(device: torch.device, directory: Path = SHIPPED_DIR) -> Path:
    """Write this GPU's tuned configs for the current triton version (this process's and the
    user cache's) to ``directory/<gpu>.json``, the table shipped in the package; returns the path."""
    gpu = gpu_name(device)
    path = directory / f"{gpu_slug(gpu)}.json"
    _user_table.only(gpu, triton.__version__).save(path)
    return path
