"""Autotuning: the kernels' config spaces, their pruning, the JSON cache, the policy of when to
benchmark, and the untuned paths.

Never asserts on real timings. Under the interpreter (no GPU) the kernels must run with the default
tile heuristic and say that tuning is skipped; the GPU-only test checks that a tuned config is
persisted and read back by a fresh table. The tuner's GPU branch is tested on the CPU too, on a
simulated GPU (tests/fixtures/simulated_gpu.py: the kernels run in the interpreter, do_bench
returns a made-up time chosen by the test for each config): a launch benchmarks only where the
user asked (``tuning.benchmarking()``, the scope of ``tritattn.tune``, or TRITATTN_AUTOTUNE=1),
else takes the nearest tuned problem's config or the default; on first use it never benchmarks
under capture, on a side stream or with several distributed ranks; the fastest candidate wins, a
candidate that fails to build is skipped, TRITATTN_AUTOTUNE=0, deterministic mode and CUDA graph
capture use the default without benchmarking, the cache's precedence and its failure modes.
"""
import ast
import contextlib
import json
import logging

import pytest
import torch
import triton

import tritattn
from conftest import DEVICE, assert_close, reference_copy
from fixtures.process_group import SHARED_KEY, fake_process_group, share_decisions_rank
from fixtures.simulated_gpu import GPU, simulated_gpu  # noqa: F401
from tritattn import launch, tuning
from tritattn.backend import INTERPRETER
from tritattn.kernels import gated_scale, mean_max, tiling

SPACES = {
    "mean_max_fwd": mean_max.MEAN_MAX_FWD_CONFIGS,
    "mean_max_bwd": mean_max.MEAN_MAX_BWD_CONFIGS,
    "gated_scale_fwd": gated_scale.GATED_SCALE_FWD_CONFIGS,
    "gated_scale_bwd": gated_scale.GATED_SCALE_BWD_CONFIGS,
}
TUNERS = [launch.MEAN_MAX_FWD, launch.MEAN_MAX_BWD, launch.GATED_SCALE_FWD, launch.GATED_SCALE_BWD]
#: (R, K, rows_contiguous): SE-ResNet stages NCHW / channels_last, CBAM spatial, tiny and ragged,
#: EfficientNet-B0's first SE in NCHW (a row reduction's default tile past LONG_SIDE_MAX).
PROBLEMS = [(256, 3136, False), (256, 3136, True), (2048, 49, False), (2048, 49, True), (3136, 256, True),
            (37, 1, True), (1, 1, False), (130, 784, False), (32, 12544, False)]


@pytest.mark.parametrize("name", SPACES)
def test_config_spaces_are_real_triton_configs(name):
    space = SPACES[name]
    assert len(space) >= 20 and all(isinstance(c, triton.Config) for c in space)
    shapes = {(c.kwargs["BLOCK_R"], c.kwargs["BLOCK_K"]) for c in space}
    assert any(r > k for r, k in shapes) and any(k > r for r, k in shapes), "both tile orientations"
    assert len({c.num_warps for c in space}) > 1
    for r, k in shapes:
        assert r & (r - 1) == 0 and k & (k - 1) == 0, "block sizes are powers of two"


@pytest.mark.parametrize("tuner", TUNERS, ids=lambda t: t.name)
@pytest.mark.parametrize("R,K,rows_contiguous", PROBLEMS)
def test_pruning_keeps_a_few_layout_matching_configs(tuner, R, K, rows_contiguous):
    problem = tuning.Problem(B=32, R=R, K=K, rows_contiguous=rows_contiguous, dtype=torch.bfloat16)
    grid = lambda META: tiling.rows_grid(32, R, META["BLOCK_R"])  # noqa: E731
    configs = tuner.candidates(problem, grid, min_programs=264)
    default = tiling.default_config(R, K, rows_contiguous, tuner.num_stages)
    assert 1 <= len(configs) <= tuning.MAX_CONFIGS
    assert tuning.config_to_json(configs[0]) == tuning.config_to_json(default), "the untuned default comes first"
    signatures = [tuple(tuning.config_to_json(c).items()) for c in configs]
    assert len(set(signatures)) == len(signatures), "no config twice"
    r_cap, k_cap = triton.next_power_of_2(R), triton.next_power_of_2(K)
    for c in configs[1:]:
        r, k = c.kwargs["BLOCK_R"], c.kwargs["BLOCK_K"]
        assert r <= r_cap and k <= k_cap, "clamped to the problem"
        contig, other, cap = (r, k, r_cap) if rows_contiguous else (k, r, k_cap)
        assert contig >= other or contig == cap, "long side on the contiguous axis"
        assert 32 * c.num_warps <= r * k <= tiling.MAX_ELEMENTS_PER_THREAD * 32 * c.num_warps


def test_problem_key_buckets_k_and_b_and_names_what_matters():
    p = tuning.Problem(B=24, R=256, K=3136, rows_contiguous=True, dtype=torch.float16, flags=(("WANT_MAX", False), ("ACT", "relu")))
    assert p.key == "R=256,K<=4096,B<=32,contig=rows,float16,WANT_MAX=0,ACT=relu"
    assert tuning.Problem(B=32, R=256, K=4000, rows_contiguous=True, dtype=torch.float16,
                          flags=(("WANT_MAX", False), ("ACT", "relu"))).key == p.key


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TRITATTN_CACHE_DIR", str(tmp_path / "c"))
    assert tuning.cache_file() == tmp_path / "c" / "tuning.json"
    monkeypatch.delenv("TRITATTN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tuning.cache_file() == tmp_path / "xdg" / "tritattn" / "tuning.json"


def test_json_cache_round_trips_by_gpu_triton_version_and_key(tmp_path):
    path = tmp_path / "tuning.json"
    cfg = triton.Config({"BLOCK_R": 8, "BLOCK_K": 256}, num_warps=8, num_stages=2)
    table = tuning.ConfigTable()
    table.put("NVIDIA H100 80GB HBM3", "3.6.0", "mean_max_fwd/R=256,K<=4096", cfg)
    table.save(path)
    other = tuning.ConfigTable()
    other.put("NVIDIA H200", "3.6.0", "gated_scale_fwd/R=64,K<=64", cfg)
    other.save(path)  # merged with what the file holds

    loaded = tuning.ConfigTable.load(path)
    got = loaded.get("NVIDIA H100 80GB HBM3", "3.6.0", "mean_max_fwd/R=256,K<=4096")
    assert tuning.config_to_json(got) == {"BLOCK_R": 8, "BLOCK_K": 256, "num_warps": 8, "num_stages": 2}
    assert loaded.get("NVIDIA H200", "3.6.0", "gated_scale_fwd/R=64,K<=64") is not None
    assert loaded.get("NVIDIA H100 80GB HBM3", "3.9.0", "mean_max_fwd/R=256,K<=4096") is None, "keyed by triton version"
    assert loaded.get("NVIDIA H100 80GB HBM3", "3.9.0", "mean_max_fwd/R=256,K<=4096", any_version=True) is not None
    assert loaded.get("NVIDIA A100", "3.6.0", "mean_max_fwd/R=256,K<=4096") is None, "keyed by GPU"
    assert json.loads(path.read_text())["format"] == tuning.FORMAT_VERSION


def test_unreadable_cache_is_ignored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "tuning.json"
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="tritattn"):
        assert tuning.ConfigTable.load(path).entries == {}
    assert "ignoring tuning cache" in caplog.text
    assert tuning.ConfigTable.load(tmp_path / "missing.json").entries == {}


def test_shipped_table_name_is_the_gpu_slug():
    assert tuning.gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


class RecordingKernel:
    """Stands in for a @triton.jit kernel: records the launch instead of running it."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((grid(kwargs), kwargs))


@pytest.mark.skipif(not INTERPRETER, reason="the untuned path: Triton interpreter only (not on a GPU, nor with TRITATTN_TEST_BACKEND=torch)")
def test_interpreter_skips_tuning_uses_default_config_and_says_so(monkeypatch, caplog):
    recorder = RecordingKernel()
    monkeypatch.setattr(launch.MEAN_MAX_FWD, "kernel", recorder)
    monkeypatch.setattr(tuning, "_said", set())
    monkeypatch.setattr(tuning, "_decisions", {})
    monkeypatch.setattr(tuning, "_chosen", {})
    x = torch.randn(3, 40, 5, 7)
    with caplog.at_level(logging.INFO, logger="tritattn"):
        tritattn.squeeze(x)
        tritattn.squeeze(x)
    assert caplog.text.count("autotuning skipped") == 1, "said once"
    assert tuning.skip_reason(x.device) is not None

    (grid, kwargs), _ = recorder.launches
    default = tiling.default_config(40, 35, rows_contiguous=False, num_stages=3)
    assert {k: kwargs[k] for k in ("BLOCK_R", "BLOCK_K", "num_warps", "num_stages")} == tuning.config_to_json(default)
    assert grid == tiling.rows_grid(3, 40, default.kwargs["BLOCK_R"]), "grid computed from the config's META"
    (decision,) = tuning.decisions()
    assert decision.kernel == "mean_max_fwd" and decision.source.startswith("default: Triton interpreter")
    assert 1 <= decision.candidates <= tuning.MAX_CONFIGS


@pytest.mark.skipif(not INTERPRETER, reason="the untuned path: Triton interpreter only (not on a GPU, nor with TRITATTN_TEST_BACKEND=torch)")
def test_interpreter_reads_tile_sizes_at_call_time(monkeypatch):
    recorder = RecordingKernel()
    monkeypatch.setattr(launch.GATED_SCALE_FWD, "kernel", recorder)
    monkeypatch.setattr(tiling, "TILE_ELEMENTS", 32)
    monkeypatch.setattr(tiling, "LONG_SIDE_MAX", 8)
    tritattn.excite_scale(torch.randn(2, 40, 6, 6), torch.randn(2, 40))
    (_, kwargs), = recorder.launches
    assert (kwargs["BLOCK_R"], kwargs["BLOCK_K"]) == tiling.tile_shape(40, 36, rows_contiguous=False, tile_elements=32)
    assert kwargs["BLOCK_R"] * kwargs["BLOCK_K"] <= 32


@pytest.mark.skipif(DEVICE != "cuda", reason="tuning needs a GPU")
def test_gpu_tunes_once_then_reads_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TRITATTN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "AUTOTUNE", True)
    monkeypatch.setattr(tuning, "_user_table", tuning.ConfigTable())
    monkeypatch.setattr(tuning, "_shipped_table", tuning.ConfigTable())
    monkeypatch.setattr(tuning, "_decisions", {})
    monkeypatch.setattr(tuning, "_chosen", {})
    x = torch.randn(4, 96, 14, 14, device="cuda")
    ref = x.mean((2, 3))
    with tuning.benchmarking():
        torch.testing.assert_close(tritattn.squeeze(x), ref)
    (tuned,) = tuning.decisions()
    assert tuned.source == "tuned" and 1 <= tuned.candidates <= tuning.MAX_CONFIGS
    assert tuning.cache_file().exists()

    monkeypatch.setattr(tuning, "_user_table", tuning.ConfigTable.load(tuning.cache_file()))  # a second process
    monkeypatch.setattr(tuning, "_decisions", {})
    monkeypatch.setattr(tuning, "_chosen", {})
    torch.testing.assert_close(tritattn.squeeze(x), ref)
    (cached,) = tuning.decisions()
    assert cached.source == "user cache" and cached.config == tuned.config


# --- the GPU branch on a simulated GPU (tests/fixtures/simulated_gpu.py) --------------------------

#: squeeze's problem on the simulated GPU: mean_max_fwd with R = 24 channels, K = 30 = 6×5, NCHW.
SIM_SHAPE = (2, 24, 6, 5)


def signature(cfg: dict[str, int]) -> tuple:
    return tuple(sorted(cfg.items()))


def checked_squeeze(x: torch.Tensor) -> torch.Tensor:
    """tritattn.squeeze(x) (the mean), checked against the float64 reference."""
    out = tritattn.squeeze(x)
    assert_close(out, reference_copy(x).mean((2, 3)), what="squeeze on the simulated GPU")
    return out


def tuned_squeeze(x: torch.Tensor) -> torch.Tensor:
    """checked_squeeze(x) where benchmarking was asked for: in tuning.benchmarking(), the scope
    tritattn.tune runs its pass in."""
    with tuning.benchmarking():
        return checked_squeeze(x)


def learn_candidates(gpu, x: torch.Tensor) -> tuple[str, list[dict[str, int]]]:
    """The "kernel/problem key" of squeeze(x) and the configs its tuning benchmarks, in order,
    learned from one tuning; then the cache file is deleted and a new process starts."""
    tuned_squeeze(x)
    (decision,) = tuning.decisions()
    candidates = [cfg for kernel, cfg in gpu.timed]
    assert all(kernel == "mean_max_fwd" for kernel, _ in gpu.timed)
    tuning.cache_file().unlink()
    gpu.new_process()
    return f"{decision.kernel}/{decision.key}", candidates


def squeeze_default(x: torch.Tensor) -> dict[str, int]:
    B, C, H, W = x.shape
    return tuning.config_to_json(tiling.default_config(C, H * W, rows_contiguous=False, num_stages=launch.MEAN_MAX_FWD.num_stages))


@pytest.mark.parametrize("asked", ["tuning.benchmarking()", "TRITATTN_AUTOTUNE=1"])
def test_tuning_logic_on_a_simulated_gpu(simulated_gpu, monkeypatch, tmp_path, asked):
    """The GPU branch with the interpreter underneath, where the user asked for benchmarks (the
    scope of tritattn.tune, or on first use): every candidate is benchmarked once (the made-up
    times are all equal here: which one wins is test_the_fastest_candidate_wins's business);
    the choice is persisted, read back by a second process, and shipped."""
    gpu = simulated_gpu
    x = torch.randn(SIM_SHAPE)
    if asked == "TRITATTN_AUTOTUNE=1":
        monkeypatch.setattr(tuning, "ON_FIRST_USE", True)
        checked_squeeze(x)
    else:
        tuned_squeeze(x)
    (tuned,) = tuning.decisions()
    assert tuned.source == "tuned" and 2 <= len(gpu.timed) == tuned.candidates <= tuning.MAX_CONFIGS
    on_disk = json.loads(tuning.cache_file().read_text())["configs"][GPU][triton.__version__]
    assert on_disk == {f"mean_max_fwd/{tuned.key}": tuned.config}

    shipped = tuning.write_shipped_table(x.device, directory=tmp_path / "tuned")
    assert shipped.name == "fake-gpu-80gb.json"

    gpu.new_process()  # a second process: the user cache answers
    checked_squeeze(x)
    assert [(d.source, d.config) for d in tuning.decisions()] == [("user cache", tuned.config)] and not gpu.timed
    assert gpu.launched == [("mean_max_fwd", tuned.config)]

    gpu.new_process(user=tuning.ConfigTable(), shipped=tuning.ConfigTable.load(shipped))  # a fresh machine
    checked_squeeze(x)
    assert [(d.source, d.config) for d in tuning.decisions()] == [("shipped table", tuned.config)] and not gpu.timed


@pytest.mark.parametrize("fastest", ["later_candidate", "default"])
def test_the_fastest_candidate_wins(simulated_gpu, fastest):
    """Each candidate gets a made-up time according to the config it launched; the tuner must
    pick the one with the smallest time — a later candidate (neither the first nor the last
    benchmarked), or the default — run the op with it, and persist it."""
    gpu = simulated_gpu
    x = torch.randn(SIM_SHAPE)
    _, candidates = learn_candidates(gpu, x)
    assert candidates[0] == squeeze_default(x), "the default is benchmarked first"
    assert len(candidates) >= 3, "enough candidates that first, last and fastest can differ"
    winner = candidates[1] if fastest == "later_candidate" else candidates[0]
    times = {signature(cfg): 2.0 + i for i, cfg in enumerate(candidates)}  # slowest: the last
    times[signature(winner)] = 1.0
    gpu.time_of = lambda kernel, cfg: times[signature(cfg)]

    tuned_squeeze(x)
    (decision,) = tuning.decisions()
    assert decision.source == "tuned" and decision.candidates == len(candidates)
    assert [cfg for _, cfg in gpu.timed] == candidates, "every candidate benchmarked, once"
    assert decision.config == winner, f"the fastest config {winner} wins, not {decision.config}"
    assert gpu.launched[-1] == ("mean_max_fwd", winner), "the op ran with the winner"
    on_disk = json.loads(tuning.cache_file().read_text())["configs"][GPU][triton.__version__]
    assert on_disk[f"mean_max_fwd/{decision.key}"] == winner


@pytest.mark.parametrize("switch", ["TRITATTN_AUTOTUNE=0", "torch.use_deterministic_algorithms(True)"])
def test_tuning_switched_off_uses_the_default_without_benchmarking(simulated_gpu, monkeypatch, caplog, switch):
    """On a GPU, TRITATTN_AUTOTUNE=0 or deterministic mode: no candidate is benchmarked (though a
    non-default one would be fastest), every kernel runs tiling.default_config, the decision
    names the switch, nothing is cached, and it is said once. Switched back on, the same
    problems are tuned: the default used meanwhile was not remembered as their choice."""
    gpu = simulated_gpu
    gpu.time_of = lambda kernel, cfg: 1.0 if cfg["num_warps"] != 4 else 9.0  # the default (4 warps) is slowest
    if switch == "TRITATTN_AUTOTUNE=0":
        monkeypatch.setattr(tuning, "AUTOTUNE", False)
    else:
        torch.use_deterministic_algorithms(True)  # the simulated_gpu fixture restores the setting
    x = torch.randn(SIM_SHAPE, requires_grad=True)
    B, C, H, W = x.shape
    with caplog.at_level(logging.INFO, logger="tritattn"):
        for _ in range(2):
            mean, maximum = tritattn.squeeze(x, "mean_max")
            (mean.sum() + maximum.sum()).backward()
    assert_close(mean, reference_copy(x).mean((2, 3)))
    assert not gpu.timed, "nothing benchmarked"
    assert caplog.text.count(switch) == 1, "said once"
    defaults = {t.name: tuning.config_to_json(tiling.default_config(C, H * W, False, t.num_stages)) for t in TUNERS}
    decisions = tuning.decisions()
    assert sorted(d.kernel for d in decisions) == ["mean_max_bwd", "mean_max_fwd"]
    for d in decisions:
        assert d.source == f"default: {switch}" and d.config == defaults[d.kernel]
    assert {kernel for kernel, _ in gpu.launched} == {"mean_max_fwd", "mean_max_bwd"}
    assert all(cfg == defaults[kernel] for kernel, cfg in gpu.launched), "every launch used the default"
    assert not tuning.cache_file().exists()

    monkeypatch.setattr(tuning, "AUTOTUNE", True)
    torch.use_deterministic_algorithms(False)
    gpu.launched.clear()
    with tuning.benchmarking():
        mean, maximum = tritattn.squeeze(x.detach(), "mean_max")
    assert_close(maximum, reference_copy(x).amax((2, 3)))
    (fwd,) = [d for d in tuning.decisions() if d.kernel == "mean_max_fwd"]
    assert fwd.source == "tuned" and gpu.timed and fwd.config["num_warps"] != 4
    assert gpu.launched[-1] == ("mean_max_fwd", fwd.config)


def build_error(error: type[Exception]) -> Exception:
    """An instance of one of tuning.CONFIG_BUILD_ERRORS, as triton raises it."""
    if issubclass(error, triton.runtime.errors.OutOfResources):
        return error(300_000, 232_448, "shared memory")
    if error.__name__ == "CompileTimeAssertionFailure":
        return error(None, ast.parse("pass").body[0], "BLOCK_R * BLOCK_K too large")
    return error("ptxas: too many resources requested")


@pytest.mark.parametrize("error", tuning.CONFIG_BUILD_ERRORS, ids=lambda e: e.__name__)
def test_a_candidate_that_fails_to_build_is_skipped(simulated_gpu, error):
    """A candidate raising a build error (it would be the fastest) is skipped; the fastest of the
    others wins and the result is right."""
    gpu = simulated_gpu
    x = torch.randn(SIM_SHAPE)
    _, candidates = learn_candidates(gpu, x)
    broken, winner = candidates[1], candidates[2]
    times = {signature(cfg): 2.0 + i for i, cfg in enumerate(candidates)}
    times[signature(broken)], times[signature(winner)] = 0.5, 1.0
    gpu.time_of = lambda kernel, cfg: times[signature(cfg)]
    gpu.fail = lambda kernel, cfg: build_error(error) if cfg == broken else None

    tuned_squeeze(x)
    (decision,) = tuning.decisions()
    assert ("mean_max_fwd", broken) in gpu.launched, "the broken candidate was tried"
    assert [cfg for _, cfg in gpu.timed] == [c for c in candidates if c != broken]
    assert decision.source == "tuned" and decision.config == winner
    assert gpu.launched[-1] == ("mean_max_fwd", winner)


def test_when_no_candidate_builds_the_build_error_surfaces_and_nothing_is_cached(simulated_gpu, caplog):
    """Every candidate fails to build: the default is launched (raising the build error to the
    caller), a warning names the problem, and no config is cached or remembered as tuned."""
    gpu = simulated_gpu
    gpu.fail = lambda kernel, cfg: build_error(triton.runtime.errors.OutOfResources)
    with (caplog.at_level(logging.WARNING, logger="tritattn"), pytest.raises(triton.runtime.errors.OutOfResources),
          tuning.benchmarking()):
        tritattn.squeeze(torch.randn(SIM_SHAPE))
    assert "no candidate config built" in caplog.text
    assert len(gpu.launched) > 2, "every candidate was tried, then the default launched"
    assert not tuning.decisions() and not tuning.cache_file().exists()


def test_deterministic_mode_after_tuning_reports_the_default_it_runs(simulated_gpu):
    """A problem tuned first, then run under torch.use_deterministic_algorithms(True): the
    default runs and decisions() says so; with the mode off again, the tuned config is back."""
    gpu = simulated_gpu
    x = torch.randn(SIM_SHAPE)
    _, candidates = learn_candidates(gpu, x)
    gpu.time_of = lambda kernel, cfg: 0.5 if cfg == candidates[-1] else 1.0
    tuned_squeeze(x)
    (tuned,) = tuning.decisions()
    assert tuned.source == "tuned" and tuned.config == candidates[-1] != candidates[0]
    torch.use_deterministic_algorithms(True)
    checked_squeeze(x)
    (now,) = tuning.decisions()
    assert now.source.startswith("default") and now.config == candidates[0] == gpu.launched[-1][1]
    torch.use_deterministic_algorithms(False)
    checked_squeeze(x)
    assert gpu.launched[-1] == ("mean_max_fwd", tuned.config)


def test_an_error_that_is_not_a_build_error_is_not_swallowed(simulated_gpu):
    """Only build errors disqualify a candidate: any other error in a benchmark run propagates."""
    gpu = simulated_gpu
    gpu.fail = lambda kernel, cfg: RuntimeError("illegal memory access") if cfg["num_warps"] != 4 else None
    with pytest.raises(RuntimeError, match="illegal memory access"), tuning.benchmarking():
        tritattn.squeeze(torch.randn(SIM_SHAPE))


def test_a_cache_that_cannot_be_written_is_warned_about(simulated_gpu, monkeypatch, tmp_path, caplog):
    """The cache directory cannot be created (a regular file is in the way): a warning, and the
    op still runs, tuned, with the right result; the choice is kept for this process."""
    gpu = simulated_gpu
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TRITATTN_CACHE_DIR", str(blocker / "tritattn"))
    x = torch.randn(SIM_SHAPE)
    with caplog.at_level(logging.WARNING, logger="tritattn"):
        tuned_squeeze(x)
    assert "could not write the tuning cache" in caplog.text
    (decision,) = tuning.decisions()
    assert decision.source == "tuned" and gpu.timed
    benchmarked = len(gpu.timed)
    tuned_squeeze(x)
    assert len(gpu.timed) == benchmarked, "not tuned again in this process"
    assert gpu.launched[-1] == ("mean_max_fwd", decision.config)


def test_a_cache_of_another_format_is_ignored_with_a_warning(tmp_path, caplog):
    """A cache file written in another format version is not read (warning), and saving over it
    writes the current format."""
    path = tmp_path / "tuning.json"
    entry = {"BLOCK_R": 8, "BLOCK_K": 32, "num_warps": 2, "num_stages": 1}
    path.write_text(json.dumps({"format": tuning.FORMAT_VERSION + 1, "configs": {GPU: {triton.__version__: {"k/p": entry}}}}))
    with caplog.at_level(logging.WARNING, logger="tritattn"):
        assert tuning.ConfigTable.load(path).entries == {}
    assert "ignoring tuning cache" in caplog.text and f"expected {tuning.FORMAT_VERSION}" in caplog.text

    table = tuning.ConfigTable()
    table.put(GPU, triton.__version__, "k/q", tuning.config_from_json(entry))
    table.save(path)
    data = json.loads(path.read_text())
    assert data == {"format": tuning.FORMAT_VERSION, "configs": {GPU: {triton.__version__: {"k/q": entry}}}}


def test_a_shipped_table_file_is_used_on_its_gpu_only(simulated_gpu, tmp_path, monkeypatch):
    """A file in the package's tuned/ folder (read as at import) holding the problem's config
    for this GPU's name is used on a fresh machine; the same file for another GPU is ignored
    and the problem is tuned."""
    gpu = simulated_gpu
    x = torch.randn(SIM_SHAPE)
    key, candidates = learn_candidates(gpu, x)
    shipped_cfg = candidates[1]
    for name, expected in ((GPU, ("shipped table", shipped_cfg)), ("Another GPU 141GB", ("tuned", None))):
        table = tuning.ConfigTable()
        table.put(name, triton.__version__, key, tuning.config_from_json(shipped_cfg))
        monkeypatch.setattr(tuning, "SHIPPED_DIR", tmp_path / tuning.gpu_slug(name))
        table.save(tuning.SHIPPED_DIR / f"{tuning.gpu_slug(name)}.json")
        gpu.new_process(user=tuning.ConfigTable(), shipped=tuning._load_shipped())
        assert tuning.shipped_table().sizes() == {name: {triton.__version__: 1}}
        tuned_squeeze(x)
        (decision,) = tuning.decisions()
        assert decision.source == expected[0], name
        if expected[1] is not None:
            assert decision.config == expected[1] and not gpu.timed
        else:
            assert len(gpu.timed) == len(candidates)


def test_the_user_cache_beats_the_shipped_table(simulated_gpu):
    """User cache and shipped table both have the problem, with different configs: the user
    cache wins. The user cache is read for this triton version only; the shipped table's entry
    for another version is used when nothing else has one."""
    gpu = simulated_gpu
    x = torch.randn(SIM_SHAPE)
    key, candidates = learn_candidates(gpu, x)
    mine, shipped_cfg = candidates[1], candidates[2]
    here, other = triton.__version__, "0.0.0-elsewhere"

    def table(version, cfg):
        t = tuning.ConfigTable()
        t.put(GPU, version, key, tuning.config_from_json(cfg))
        return t

    cases = [  # (user cache, shipped table) → (source, config)
        ((here, mine), (here, shipped_cfg), ("user cache", mine)),
        ((other, mine), (here, shipped_cfg), ("shipped table", shipped_cfg)),
        ((other, mine), (other, shipped_cfg), ("shipped table", shipped_cfg)),
    ]
    for user, shipped, expected in cases:
        gpu.new_process(user=table(*user), shipped=table(*shipped))
        checked_squeeze(x)
        assert [(d.source, d.config) for d in tuning.decisions()] == [expected], (user, shipped)
        assert not gpu.timed and gpu.launched == [("mean_max_fwd", expected[1])]


def ask_for_benchmarks(asked: str, monkeypatch) -> contextlib.AbstractContextManager:
    """The scope in which benchmarks were asked for: tuning.benchmarking() (tritattn.tune's), or
    none with TRITATTN_AUTOTUNE=1 (tuning.ON_FIRST_USE) set."""
    if asked == "TRITATTN_AUTOTUNE=1":
        monkeypatch.setattr(tuning, "ON_FIRST_USE", True)
        return contextlib.nullcontext()
    return tuning.benchmarking()


ASKED = ["tuning.benchmarking()", "TRITATTN_AUTOTUNE=1"]


@pytest.mark.parametrize("asked", ASKED)
def test_no_tuning_while_a_cuda_graph_is_captured(simulated_gpu, monkeypatch, caplog, asked):
    """While a CUDA graph is being captured nothing is benchmarked (it would break the capture,
    and do_bench's 256 MB flush buffer would land in the graph's pool), even where benchmarks
    were asked for: the default config runs, nothing is remembered or cached as tuned, it is
    said, and the first call after the capture tunes (the fastest candidate, not the default)."""
    gpu = simulated_gpu
    gpu.time_of = lambda kernel, cfg: 1.0 if cfg["num_warps"] != 4 else 9.0  # the default (4 warps) is slowest
    x = torch.randn(SIM_SHAPE)
    with ask_for_benchmarks(asked, monkeypatch):
        gpu.capturing = True
        with caplog.at_level(logging.INFO, logger="tritattn"):
            checked_squeeze(x)
            checked_squeeze(x)
        assert not gpu.timed and caplog.text.count("CUDA graph is being captured") == 1
        assert gpu.launched == [("mean_max_fwd", squeeze_default(x))] * 2
        assert not [d for d in tuning.decisions() if d.source == "tuned"] and not tuning.cache_file().exists()

        gpu.capturing = False
        checked_squeeze(x)
    (decision,) = tuning.decisions()
    assert decision.source == "tuned" and gpu.timed and decision.config["num_warps"] != 4
    assert gpu.launched[-1] == ("mean_max_fwd", decision.config)


# --- when to benchmark: never in the middle of a run unless asked ---------------------------------


def test_autotune_switches_follow_the_environment():
    """TRITATTN_AUTOTUNE unset: the tables only; 0: the default config always; 1: on first use."""
    assert tuning.autotune_switches(None) == tuning.autotune_switches("") == (True, False)
    assert tuning.autotune_switches("0") == (False, False)
    assert tuning.autotune_switches("1") == (True, True)


def test_a_problem_no_table_holds_is_not_benchmarked_during_a_run(simulated_gpu, caplog):
    """By default (TRITATTN_AUTOTUNE unset, outside tritattn.tune) a problem that no table holds
    and no tuned problem is near runs the default config, though another would be fastest:
    nothing benchmarked or cached, the decision says so, and an INFO message says once why and
    what to do. Benchmarks asked for later (tritattn.tune's scope) still tune the problem."""
    gpu = simulated_gpu
    gpu.time_of = lambda kernel, cfg: 1.0 if cfg["num_warps"] != 4 else 9.0  # the default (4 warps) is slowest
    x = torch.randn(SIM_SHAPE)
    with caplog.at_level(logging.INFO, logger="tritattn"):
        checked_squeeze(x)
        checked_squeeze(x)
    assert not gpu.timed and gpu.launched == [("mean_max_fwd", squeeze_default(x))] * 2
    (decision,) = tuning.decisions()
    assert decision.source == "default: not tuned" and decision.config == squeeze_default(x)
    assert caplog.text.count("not benchmarking during a run") == 1 and "tritattn.tune(model, example)" in caplog.text
    assert not tuning.cache_file().exists()

    tuned_squeeze(x)
    (decision,) = tuning.decisions()
    assert decision.source == "tuned" and gpu.timed and gpu.launched[-1] == ("mean_max_fwd", decision.config) != gpu.launched[0]


def key_at_batch(full_key: str, bucket: int) -> str:
    """The same "kernel/problem key" with the batch bucket B<=bucket."""
    before, after = full_key.split(",B<=")
    return f"{before},B<={bucket},{after.split(',', 1)[1]}"


@pytest.mark.parametrize("table", ["user cache", "shipped table"])
def test_an_unseen_batch_runs_the_nearest_tuned_problem(simulated_gpu, table):
    """A table holds squeeze's problem tuned at batch buckets 2 and 32 (different configs): a
    batch it has not seen runs, without a benchmark, the config of the nearest bucket (in powers
    of two; a tie goes to the larger batch), and the decision names it; a problem that differs
    in more than its batch (another C) does not take it."""
    gpu = simulated_gpu
    key, candidates = learn_candidates(gpu, torch.randn(SIM_SHAPE))
    assert ",B<=2," in key
    near2, near32 = candidates[1], candidates[2]
    tuned = tuning.ConfigTable()
    tuned.put(GPU, triton.__version__, key, tuning.config_from_json(near2))
    tuned.put(GPU, triton.__version__, key_at_batch(key, 32), tuning.config_from_json(near32))
    if table == "user cache":
        gpu.new_process(user=tuned)
    else:
        gpu.new_process(user=tuning.ConfigTable(), shipped=tuned)
    for batch, (bucket, expected) in {3: (2, near2), 8: (32, near32), 64: (32, near32), 1: (2, near2)}.items():
        checked_squeeze(torch.randn(batch, *SIM_SHAPE[1:]))
        assert gpu.launched[-1] == ("mean_max_fwd", expected), batch
        d = tuning.decision(key_at_batch(key, triton.next_power_of_2(batch)))
        assert d.source == f"{table}, nearest batch (B<={bucket})" and d.config == expected, (batch, d)
    assert not gpu.timed
    other = torch.randn(SIM_SHAPE[0], SIM_SHAPE[1] + 1, *SIM_SHAPE[2:])
    checked_squeeze(other)
    assert gpu.launched[-1] == ("mean_max_fwd", squeeze_default(other)) and not gpu.timed


@pytest.mark.parametrize("where", ["a side stream", "torch.distributed with 2 ranks"])
def test_first_use_tuning_is_refused_on_a_side_stream_and_with_several_ranks(simulated_gpu, monkeypatch, caplog, where):
    """TRITATTN_AUTOTUNE=1 benchmarks a new problem where it is first met, except on a side
    stream (where CUDA-graph warm-ups run, and do_bench's flush buffer would stay in the graph's
    pool) and under torch.distributed with several ranks (each would time its own winner): there
    the default runs and an INFO message says why, once. tuning.benchmarking() (tritattn.tune's
    scope, which runs on rank 0 only) still benchmarks there."""
    gpu = simulated_gpu
    monkeypatch.setattr(tuning, "ON_FIRST_USE", True)
    if where == "a side stream":
        gpu.side_stream, said = True, "not benchmarking on a side stream"
    else:
        fake_process_group(monkeypatch, rank=0)
        said = "TRITATTN_AUTOTUNE=1 not followed under torch.distributed (2 ranks)"
    x = torch.randn(SIM_SHAPE)
    with caplog.at_level(logging.INFO, logger="tritattn"):
        checked_squeeze(x)
        checked_squeeze(x)
    assert not gpu.timed and gpu.launched == [("mean_max_fwd", squeeze_default(x))] * 2
    assert caplog.text.count(said) == 1
    tuned_squeeze(x)
    assert gpu.timed and tuning.decisions()[0].source == "tuned"


@pytest.mark.parametrize("rank", [0, 1])
def test_share_rank0_decisions_gives_every_rank_rank0s_configs(simulated_gpu, monkeypatch, rank):
    """Under torch.distributed, share_rank0_decisions broadcasts rank 0's decisions; another
    rank, which ran the problem with another config, takes rank 0's (and keeps the one rank 0
    benchmarked in its user cache); rank 0 keeps its own."""
    gpu = simulated_gpu
    x = torch.randn(SIM_SHAPE)
    key, candidates = learn_candidates(gpu, x)
    rank0 = tuning.Decision("mean_max_fwd", key.split("/", 1)[1], candidates[2], "tuned", len(candidates))
    sent = fake_process_group(monkeypatch, rank, rank0_payload=[{key: rank0}])
    with tuning.recording() as keys:
        if rank == 0:
            tuned_squeeze(x)
        else:
            checked_squeeze(x)  # not asked to benchmark: the default
    own = tuning.decision(key)
    tuning.share_rank0_decisions(keys, x.device)
    if rank == 0:
        assert sent == [[{key: own}]] and tuning.decision(key) == own and own.source == "tuned"
    else:
        assert not sent and own.source == "default: not tuned" and own.config != rank0.config
        assert tuning.decision(key) == rank0
        checked_squeeze(x)
        assert gpu.launched[-1] == ("mean_max_fwd", rank0.config) and not gpu.timed
        on_disk = json.loads(tuning.cache_file().read_text())["configs"][GPU][triton.__version__]
        assert on_disk == {key: rank0.config}


def test_share_rank0_decisions_across_two_real_ranks(tmp_path):
    """Two processes in a gloo group, each having decided one problem with its own config: after
    share_rank0_decisions both run rank 0's, and rank 1's user cache holds it."""
    torch.multiprocessing.spawn(share_decisions_rank, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2,
                                join=True)
    ended = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    rank0 = {"BLOCK_R": 8, "BLOCK_K": 32, "num_warps": 4, "num_stages": 1}
    for r in range(2):
        assert ended[r]["decision"]["config"] == ended[r]["launch"] == rank0, (r, ended[r])
    cache = tuning.ConfigTable.load(tmp_path / "cache1" / "tuning.json")
    assert tuning.config_to_json(cache.get("Fake GPU", triton.__version__, SHARED_KEY)) == rank0
