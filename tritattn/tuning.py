"""Autotuning of tritattn's kernels per GPU and problem shape, with a persistent JSON cache.

Each kernel has a config space: a list of ``triton.Config`` over BLOCK_R, BLOCK_K, num_warps and
num_stages, defined next to the kernel (``kernels/mean_max.py``, ``kernels/gated_scale.py``).
A :class:`Tuner` picks one config per *problem key* — what changes the best config:

    R (C for channel ops, H×W for CBAM's spatial ops), K bucketed to the next power of two,
    B bucketed to the next power of two (the grid of the row-reduction kernels grows with B),
    the layout (whether rows are the contiguous axis), the dtype, and the constexpr flags that
    change the memory traffic (e.g. WANT_MAX, HAS_RESIDUAL, ACT).

A config is taken from, first hit wins:

1. this process's memory;
2. the user cache, ``$TRITATTN_CACHE_DIR/tuning.json`` (default ``$XDG_CACHE_HOME/tritattn`` or
   ``~/.cache/tritattn``), keyed by GPU name → triton version → ``kernel/problem key``; it is
   loaded at import, so a second process pays no tuning;
3. the table shipped in the package for known GPUs, ``tritattn/tuned/<gpu>.json`` (same format,
   written by ``perf/sweep.py --write-tuned-table``); an entry made with another triton version
   is used too when the current version has none (configs are only block sizes, warps, stages);
4. tuning now: the config space pruned to a handful of candidates (``tiling.prune_configs``:
   layout-matching orientation, register budget, closeness to the heuristic default, occupancy),
   each timed with ``triton.testing.do_bench`` (median) on the real arguments; the best one is
   kept in 1 and written to 2. The kernels store each output element once and accumulate into
   nothing, so re-running them on the real arguments is safe (no reset_to_zero / restore_value).

**Without a GPU nothing is tuned.** Under the Triton interpreter (``TRITON_INTERPRET=1``), with
``TRITATTN_AUTOTUNE=0``, under ``torch.use_deterministic_algorithms(True)`` (the block size sets
the summation order, so results then do not depend on the tuning cache), or while a CUDA graph
is being captured (benchmarking would break the capture), the default config is used — ``tiling.default_config``, the tile heuristic with
TILE_ELEMENTS / LONG_SIDE_MAX read at call time — and an INFO message on the ``tritattn`` logger
says so once. :func:`decisions` tells which config each problem got and where it came from.

Why a small tuner of our own rather than ``@triton.autotune``: the autotuner fails under the
interpreter ("0 active drivers"), keeps its results in memory only (its optional disk cache,
``cache_results``, sits in triton's cache keyed by source hash, not by GPU, and cannot ship a
table), and its cache key and internals differ between triton 3.6 and 3.9. This module uses only
``triton.Config``, ``triton.testing.do_bench`` and a grid callable taking the config's META —
the same pieces, stable across those versions — and keeps the cache in a format we own.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import triton
import triton.testing
from triton.compiler.errors import CompileTimeAssertionFailure
from triton.runtime import errors as runtime_errors

from .backend import INTERPRETER
from .kernels import tiling

log = logging.getLogger("tritattn")

#: A candidate config that fails to build is skipped. PTXASError is looked up by name: it is not
#: in every triton release the library supports.
CONFIG_BUILD_ERRORS: tuple[type[Exception], ...] = (CompileTimeAssertionFailure, runtime_errors.OutOfResources) + tuple(
    getattr(runtime_errors, name) for name in ("PTXASError",) if hasattr(runtime_errors, name)
)

#: Set TRITATTN_AUTOTUNE=0 (or this to False) to always use the default config.
AUTOTUNE: bool = os.environ.get("TRITATTN_AUTOTUNE", "1") != "0"
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

    def get(self, gpu: str, version: str, key: str, any_version: bool = False) -> triton.Config | None:
        by_version = self.entries.get(gpu, {})
        versions = [version] + (sorted(v for v in by_version if v != version) if any_version else [])
        for v in versions:
            if key in by_version.get(v, {}):
                return config_from_json(by_version[v][key])
        return None

    def put(self, gpu: str, version: str, key: str, cfg: triton.Config) -> None:
        self.entries.setdefault(gpu, {}).setdefault(version, {})[key] = config_to_json(cfg)

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

    @property
    def key(self) -> str:
        flags = "".join(f",{name}={int(v) if isinstance(v, bool) else v}" for name, v in self.flags)
        layout = "rows" if self.rows_contiguous else "cols"
        bucket = triton.next_power_of_2
        return f"R={self.R},K<={bucket(self.K)},B<={bucket(self.B)},contig={layout},{str(self.dtype).removeprefix('torch.')}{flags}"


@dataclass(frozen=True)
class Decision:
    """Which config a kernel ran with for a problem key, and where it came from."""

    kernel: str
    key: str
    config: dict[str, int]
    source: str  # "tuned", "user cache", "shipped table", or "default: <why>"
    candidates: int  # configs benchmarked (tuned) or that would be (interpreter: the pruned list)


_decisions: dict[str, Decision] = {}  # "kernel/problem key" → decision, for reports
_NO_DECISION = Decision("", "", {}, "none", 0)
_chosen: dict[str, triton.Config] = {}  # the same keys → config, for the launch path
_tuning_seconds = 0.0
_said_skipped = False


_recorders: list[set[str]] = []  # the open recording() scopes


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


def gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device)


def _say_skipped_once(reason: str) -> None:
    global _said_skipped
    if not _said_skipped:
        log.info("%s", reason)
        _said_skipped = True


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
        """Run the kernel on ``args`` with the config chosen for ``problem``."""
        for keys in _recorders:
            keys.add(f"{self.name}/{problem.key}")
        cfg = self._config(problem, grid, args, constexprs, device)
        self._run(cfg, grid, args, constexprs)

    def _run(self, cfg: triton.Config, grid, args: tuple, constexprs: dict[str, Any]) -> None:
        self.kernel[grid](*args, **constexprs, **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    def _remember(self, problem: Problem, cfg: triton.Config, source: str, candidates: int) -> triton.Config:
        full_key = f"{self.name}/{problem.key}"
        _decisions[full_key] = Decision(self.name, problem.key, config_to_json(cfg), source, candidates)
        _chosen[full_key] = cfg
        return cfg

    def _config(self, problem: Problem, grid, args: tuple, constexprs: dict[str, Any], device: torch.device) -> triton.Config:
        full_key = f"{self.name}/{problem.key}"
        reason = skip_reason(device)
        if reason is not None:
            _say_skipped_once(reason)
            default = self._default(problem)  # read TILE_ELEMENTS now: tests change it between calls
            if not _decisions.get(full_key, _NO_DECISION).source.startswith("default"):
                # reported (also over an earlier tuned decision: the default is what runs now), not
                # remembered in _chosen: once tuning is on again (AUTOTUNE set back, deterministic
                # mode off) this problem takes its cached or tuned config again
                _decisions[full_key] = Decision(self.name, problem.key, config_to_json(default),
                                                "default: " + reason.split(":")[0], len(self.candidates(problem, grid)))
            return default

        if full_key in _chosen:
            return _chosen[full_key]
        gpu, version = gpu_name(device), triton.__version__
        for table, source, any_version in ((_user_table, "user cache", False), (_shipped_table, "shipped table", True)):
            cfg = table.get(gpu, version, full_key, any_version)
            if cfg is not None:
                log.debug("%s %s: %s from the %s", self.name, problem.key, config_to_json(cfg), source)
                return self._remember(problem, cfg, source, 0)
        if torch.cuda.is_current_stream_capturing():
            return self._default(problem)  # cannot benchmark inside a capture; tune on a later call
        sm_count = torch.cuda.get_device_properties(device).multi_processor_count
        candidates = self.candidates(problem, grid, min_programs=2 * sm_count)
        cfg = self._benchmark(candidates, grid, args, constexprs)
        if cfg is None:  # nothing built: run the default, which raises the build error; cache nothing
            log.warning("%s: no candidate config built for %s; using the default", self.name, problem.key)
            return self._default(problem)
        _user_table.put(gpu, version, full_key, cfg)
        try:
            _user_table.only(gpu, version).save(cache_file())
            log.debug("wrote %s %s to the tuning cache %s", self.name, problem.key, cache_file())
        except OSError as e:
            log.warning("could not write the tuning cache %s (%s)", cache_file(), e)
        return self._remember(problem, cfg, "tuned", len(candidates))

    def _default(self, problem: Problem) -> triton.Config:
        return tiling.default_config(problem.R, problem.K, problem.rows_contiguous, self.num_stages)

    def _benchmark(self, candidates: list[triton.Config], grid, args: tuple, constexprs: dict[str, Any]) -> triton.Config | None:
        """The fastest candidate by do_bench's median; None when none of them builds."""
        global _tuning_seconds
        start = time.perf_counter()
        timings = []
        for cfg in candidates:
            try:
                ms = triton.testing.do_bench(
                    lambda: self._run(cfg, grid, args, constexprs),
                    warmup=BENCH_WARMUP_MS, rep=BENCH_REP_MS, return_mode="median",
                )
            except CONFIG_BUILD_ERRORS as e:
                log.debug("%s config %s failed: %s", self.name, config_to_json(cfg), e)
                ms = math.inf
            timings.append(ms)
        _tuning_seconds += time.perf_counter() - start
        best = min(range(len(candidates)), key=timings.__getitem__)
        if math.isinf(timings[best]):
            return None
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


def write_shipped_table(device: torch.device, directory: Path = SHIPPED_DIR) -> Path:
    """Write this GPU's tuned configs for the current triton version (this process's and the
    user cache's) to ``directory/<gpu>.json``, the table shipped in the package; returns the path."""
    gpu = gpu_name(device)
    path = directory / f"{gpu_slug(gpu)}.json"
    _user_table.only(gpu, triton.__version__).save(path)
    return path
