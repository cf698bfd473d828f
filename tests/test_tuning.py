"""Autotuning: the kernels' config spaces, their pruning, the JSON cache, and the untuned paths.

Never asserts on timings. Under the interpreter (no GPU) the kernels must run with the default
tile heuristic and say that tuning is skipped; the GPU-only test checks that a tuned config is
persisted and read back by a fresh table.
"""
import json
import logging

import pytest
import torch
import triton

import tritattn
from conftest import DEVICE
from tritattn import launch, tuning
from tritattn.kernels import gated_scale, mean_max, tiling

SPACES = {
    "mean_max_fwd": mean_max.MEAN_MAX_FWD_CONFIGS,
    "mean_max_bwd": mean_max.MEAN_MAX_BWD_CONFIGS,
    "gated_scale_fwd": gated_scale.GATED_SCALE_FWD_CONFIGS,
    "gated_scale_bwd": gated_scale.GATED_SCALE_BWD_CONFIGS,
}
TUNERS = [launch.MEAN_MAX_FWD, launch.MEAN_MAX_BWD, launch.GATED_SCALE_FWD, launch.GATED_SCALE_BWD]
#: (R, K, rows_contiguous): SE-ResNet stages NCHW / channels_last, CBAM spatial, tiny and ragged.
PROBLEMS = [(256, 3136, False), (256, 3136, True), (2048, 49, False), (2048, 49, True), (3136, 256, True),
            (37, 1, True), (1, 1, False), (130, 784, False)]


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


@pytest.mark.skipif(DEVICE == "cuda", reason="the untuned path: interpreter only")
def test_interpreter_skips_tuning_uses_default_config_and_says_so(monkeypatch, caplog):
    recorder = RecordingKernel()
    monkeypatch.setattr(launch.MEAN_MAX_FWD, "kernel", recorder)
    monkeypatch.setattr(tuning, "_said_skipped", False)
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


@pytest.mark.skipif(DEVICE == "cuda", reason="the untuned path: interpreter only")
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


@pytest.mark.skipif(DEVICE == "cuda", reason="a GPU runs the real thing (test_gpu_tunes_once_then_reads_the_cache)")
def test_tuning_logic_on_a_simulated_gpu(monkeypatch, tmp_path):
    """The GPU branch with the interpreter underneath: do_bench runs the kernel once and returns a
    made-up time (fewest warps wins); the choice is persisted, read back, and shipped."""
    benchmarked = []

    def fake_do_bench(fn, warmup, rep, return_mode):
        fn()
        benchmarked.append(1)
        return float(len(benchmarked) % 3 + 1)

    monkeypatch.setenv("TRITATTN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tuning, "skip_reason", lambda device: None)
    monkeypatch.setattr(tuning, "gpu_name", lambda device: "Fake GPU 80GB")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: type("P", (), {"multi_processor_count": 4}))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(triton.testing, "do_bench", fake_do_bench)
    for name in ("_decisions", "_chosen"):
        monkeypatch.setattr(tuning, name, {})
    monkeypatch.setattr(tuning, "_user_table", tuning.ConfigTable())
    monkeypatch.setattr(tuning, "_shipped_table", tuning.ConfigTable())

    x = torch.randn(2, 24, 6, 5)
    torch.testing.assert_close(tritattn.squeeze(x), x.mean((2, 3)))
    (tuned,) = tuning.decisions()
    assert tuned.source == "tuned" and len(benchmarked) == tuned.candidates <= tuning.MAX_CONFIGS
    on_disk = json.loads(tuning.cache_file().read_text())["configs"]["Fake GPU 80GB"][triton.__version__]
    assert on_disk == {f"mean_max_fwd/{tuned.key}": tuned.config}

    shipped = tuning.write_shipped_table(x.device, directory=tmp_path / "tuned")
    assert shipped.name == "fake-gpu-80gb.json"

    benchmarked.clear()  # a second process: the user cache answers
    for name in ("_decisions", "_chosen"):
        monkeypatch.setattr(tuning, name, {})
    monkeypatch.setattr(tuning, "_user_table", tuning.ConfigTable.load(tuning.cache_file()))
    torch.testing.assert_close(tritattn.squeeze(x), x.mean((2, 3)))
    assert [d.source for d in tuning.decisions()] == ["user cache"] and not benchmarked

    for name in ("_decisions", "_chosen"):  # a fresh machine with the shipped table only
        monkeypatch.setattr(tuning, name, {})
    monkeypatch.setattr(tuning, "_user_table", tuning.ConfigTable())
    monkeypatch.setattr(tuning, "_shipped_table", tuning.ConfigTable.load(shipped))
    torch.testing.assert_close(tritattn.squeeze(x), x.mean((2, 3)))
    assert [(d.source, d.config) for d in tuning.decisions()] == [("shipped table", tuned.config)] and not benchmarked
