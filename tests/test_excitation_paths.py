"""The channel-attention block's paths (tritattn/paths.py, tritattn/excitation_cost.py): each of
"one-launch", "split", "per-op" and "eager" against the float64 reference module, forced; the
choice by the critical-path model (and what it records); the §2 targets of issue 23 on the paths
the model chooses; the measured winner kept in and read from the tuning tables (on the simulated
GPU), and ``tritattn.tune`` timing the paths on a real GPU.
"""
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import tritattn
from tritattn import cost_model, excitation_block, excitation_cost, launch, paths, tuning
from conftest import DEVICE, assert_close, make_input
from fixtures.model_runs import exact_hardsigmoid_backward
from fixtures.simulated_gpu import GPU, simulated_gpu  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
import census  # noqa: E402

#: (twin class, constructor arguments): one of each channel-attention kind
MODULES = [
    ("SEModule", (20,), {"rd_ratio": 0.25}),
    ("SEModule", (20,), {"rd_ratio": 0.25, "add_maxpool": True}),
    ("EffectiveSEModule", (20,), {}),
    ("EcaModule", (20,), {}),
    ("CecaModule", (20,), {}),
    ("SqueezeExcite", (20,), {"rd_ratio": 0.25}),
]
MODULE_IDS = ["se", "se_maxpool", "ese", "eca", "ceca", "efficientnet_se"]


def took(path: str, ops: list[str]) -> bool:
    """Whether the tritattn ops a training step called are ``path``'s: the pipeline's two ops, the
    per-op path's squeeze and excite_scale (and their backward ops; mean pooling's backward is
    aten), none for eager."""
    if path in excitation_cost.KERNEL_PATHS:
        return ops == ["excitation_block", "excitation_block_backward"]
    if path == "per-op":
        return ops[:3] == ["squeeze", "excite_scale", "excite_scale_backward"] and set(ops) <= {
            "squeeze", "excite_scale", "excite_scale_backward", "squeeze_backward"}
    return ops == []


@pytest.fixture(autouse=True)
def no_path_memory():
    """Every test chooses afresh (and leaves no decision behind)."""
    paths.forget()
    yield
    paths.forget()


def twins(name: str, args: tuple, kwargs: dict) -> tuple[nn.Module, nn.Module]:
    """(the fast module, its float64 reference) with the same fresh weights."""
    ref = getattr(tritattn.reference, name)(*args, **kwargs)
    for p in ref.parameters():
        nn.init.normal_(p, std=0.3)
    fast = getattr(tritattn, name)(*args, **kwargs)
    fast.load_state_dict(ref.state_dict(), strict=True)
    return fast.to(DEVICE, torch.float64), ref.to(DEVICE, torch.float64)


@pytest.mark.parametrize("path", excitation_cost.PATHS)
@pytest.mark.parametrize("module", MODULES, ids=MODULE_IDS)
@pytest.mark.parametrize("shape", [(1, 20, 7, 7), (3, 20, 3, 5)], ids=["1x20x7x7", "3x20x3x5"])
def test_every_path_matches_the_float64_reference_module(module, path, shape, channels_last):
    fast, ref = twins(*module)
    x = make_input(shape, torch.float64, channels_last, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    cot = torch.randn(shape, dtype=torch.float64, device=DEVICE)
    with exact_hardsigmoid_backward():  # torch's is float32-exact only, even in float64 (eager path, reference)
        with paths.forced(path), census.LaunchCensus() as c:
            y = fast(x)
            y.backward(cot)
        y_ref = ref(x_ref)
        y_ref.backward(cot)
    assert took(path, [op for op, _ in c.tritattn_calls]), (path, c.tritattn_calls)
    assert_close(y, y_ref, what=f"{path} output")
    assert_close(x.grad, x_ref.grad, what=f"{path} grad x")
    group = max(p.grad.abs().max().item() for p in ref.parameters())
    for (name, p), p_ref in zip(fast.named_parameters(), ref.parameters()):
        assert_close(p.grad, p_ref.grad, what=f"{path} grad {name}", scale=group)


@pytest.mark.parametrize("path", excitation_cost.PATHS)
def test_every_path_of_a_fused_tail_is_bitwise_repeatable(path):
    """relu(SE(x) + residual) (an SE-ResNet block's tail, ``excite``) twice: the same bits, on each path."""
    fast, _ = twins("SEModule", (24,), {"rd_ratio": 0.25})
    fast = fast.float()
    x = make_input((2, 24, 5, 3), torch.float32, True, requires_grad=True)
    residual = make_input((2, 24, 5, 3), torch.float32, True, requires_grad=True)
    cot = torch.randn(x.shape, device=DEVICE)
    runs = []
    with paths.forced(path):
        for _ in range(2):
            y = fast.excite(x, residual, "relu")
            runs.append([y, *torch.autograd.grad(y, [x, residual, *fast.parameters()], cot)])
    for a, b in zip(*runs):
        assert torch.equal(a, b), path


def se_on_meta(C: int, rd: int, B: int, hw: int, grad: bool) -> None:
    """One call of an SE block of C channels (hidden width rd) on a meta [B, C, hw, hw] input."""
    block = tritattn.SEModule(C, rd_channels=rd).to("meta")
    x = torch.empty(B, C, hw, hw, device="meta", requires_grad=grad)
    with torch.set_grad_enabled(grad):
        block(x)


def test_the_model_splits_a_long_mlp_tail_and_keeps_a_short_one():
    """SE-ResNet-50 stage 4 (2048@7×7, RD 128): the last program's MLP re-reads 2·C·RD weights
    (325 memory instructions), so the MLP goes to GEMMs; a small SE keeps its one launch (3
    launches against the per-op path's 5: in inference it wins; in the training step its backward's
    torch GEMMs for the weight gradients make it 52.8 µs against the per-op path's 49.8). Each
    decision is recorded with every candidate's estimate."""
    se_on_meta(2048, 128, 8, 7, grad=False)
    se_on_meta(64, 8, 8, 7, grad=False)
    (big, small) = paths.decisions()
    assert (big.block, big.path, small.path) == ("excitation_block", "split", "one-launch")
    assert "train=0" in big.key and "train=0" in small.key
    for d in (big, small):
        assert d.reason.startswith("estimate (H100 model): one-launch "), d.reason
        assert all(f" {name} " in d.reason for name in excitation_cost.PATHS), d.reason
    shape = excitation_cost.BlockShape(8, 2048, 49, 4, False, "mean", "fc_act_fc", "relu", 128, has_b1=True, has_b2=True)
    estimates = {name: cost_model.path_seconds(launches) for name, launches in excitation_cost.paths(shape, False).items()}
    assert paths.estimate_reason(estimates, cost_model.H100) == big.reason


#: census blocks (issue 23 §1): (C, RD or None, H = W, pool, mlp)
CENSUS_BLOCKS = {
    "seresnet50 stage 1": (256, 16, 56, "mean", "fc_act_fc"),
    "seresnet50 stage 4": (2048, 128, 7, "mean", "fc_act_fc"),
    "efficientnet_b0 first se": (32, 8, 112, "mean", "fc_act_fc"),
    "efficientnet_b0 last se": (1152, 48, 7, "mean", "fc_act_fc"),
    "mobilenetv3 largest se": (960, 240, 7, "mean", "fc_act_fc"),
    "regnety_016 last se": (888, 222, 7, "mean", "fc_act_fc"),
    "ese 1024@14": (1024, None, 14, "mean", "fc"),
    "eca-resnet stage 4": (2048, None, 7, "mean", "taps_zero"),
    "cbam stage 1 channel branch": (256, 16, 56, "mean_max_both", "fc_act_fc"),
}


@pytest.mark.parametrize("block, training", [
    pytest.param(name, training, id=f"{name}-{'training' if training else 'inference'}")
    for name in CENSUS_BLOCKS for training in (False, True)])
def test_the_chosen_path_meets_the_critical_path_targets(block, training):
    """On the path the model chooses, at B = 1 … 256: no Triton launch has a tail (longest ≤ 2 ×
    median + 32, and its serial time within the launch's byte budget: cost_model.tail_violations),
    no longest program grows with the batch, and the path's estimate is ≤ the per-op path's and
    eager's (it is their minimum). EfficientNet-B0's first SE (32@112×112, NCHW) is where a row
    reduction's loop over K would be long at the 4 × 1024 tile (13 steps, 40 memory instructions ×
    0.4 µs > 12 µs at B ≤ 8): its default tile grows along K (tiling.loop_tile_shape)."""
    C, rd, hw, pool, mlp = CENSUS_BLOCKS[block]
    RD = rd if mlp == "fc_act_fc" else (C if mlp == "fc" else 1)
    chosen = {}
    for B in (1, 8, 32, 128, 256):
        shape = excitation_cost.BlockShape(B, C, hw * hw, 2, False, pool, mlp, "relu" if rd else "identity", RD,
                                           taps=5 if mlp.startswith("taps") else 1, has_b1=bool(rd), has_b2=True)
        candidates = excitation_cost.paths(shape, training)
        path, _ = paths.estimated(candidates, cost_model.H100)
        chosen[B] = candidates[path]
        triton_launches = [launch for launch in candidates[path] if launch.programs]
        assert not [v for launch in triton_launches for v in cost_model.tail_violations(launch)], (block, B, path)
        times = {name: cost_model.path_seconds(launches) for name, launches in candidates.items()}
        assert times[path] <= min(times["per-op"], times["eager"]), (block, B, times)
    small, large = ([launch for launch in chosen[B] if launch.programs] for B in (8, 256))
    if [launch.kernel for launch in small] == [launch.kernel for launch in large]:
        assert not cost_model.growth_violations(small, large, 8, 256), block


# --- the measured winner: tuning tables and tritattn.tune -------------------------------------------


def test_a_path_winner_round_trips_through_the_tuning_cache(tmp_path):
    """ConfigTable keeps a path winner under "path:<block>/<key>" beside the configs, on disk too,
    and no config lookup mistakes it for a config."""
    table = tuning.ConfigTable()
    key = tuning.path_key("excitation_block", "C=8,K=4")
    table.put_path(GPU, "3.9", key, "split")
    table.save(tmp_path / "t.json")
    loaded = tuning.ConfigTable.load(tmp_path / "t.json")
    assert loaded.get_path(GPU, "3.9", key) == "split"
    assert loaded.get_path(GPU, "3.6", key) is None and loaded.get_path(GPU, "3.6", key, any_version=True) == "split"
    assert json.loads((tmp_path / "t.json").read_text())["configs"][GPU]["3.9"][key] == {"path": "split"}
    assert loaded.nearest(GPU, "3.9", "squeeze_excite_fwd/R=8,K<=4,B<=2,contig=rows,float32") is None


def test_choose_reads_a_stored_winner_and_measures_only_where_allowed(simulated_gpu, monkeypatch):
    """On the simulated GPU: a winner in the user cache is taken ("measured (user cache)") over the
    estimate; with none, inside tuning.benchmarking() the candidates are timed (here with made-up
    times) and the fastest is stored in the user cache on disk; outside, the estimate decides."""
    candidates = {"one-launch": [cost_model.Launch("k", 4, 1, 1, 0)], "split": [cost_model.Launch("k", 4, 1, 500, 0)]}
    device = torch.device(DEVICE)
    times = {"one-launch": 2.0, "split": 1.0}
    ran = []

    def measure(name):
        return lambda: ran.append(name)

    monkeypatch.setattr(paths, "_may_measure", tuning.may_benchmark)  # the simulated GPU's device is the CPU
    monkeypatch.setattr(paths, "_time_ms", lambda run: (run(), times[ran[-1]])[1])
    assert paths.choose("blk", "k1", list(candidates), lambda: candidates, device, measure) == "one-launch"
    assert paths.decision("blk", "k1").reason.startswith("estimate") and not ran, "not benchmarking outside tune"

    with tuning.benchmarking():
        assert paths.choose("blk", "k2", list(candidates), lambda: candidates, device, measure) == "split"
    assert ran == ["one-launch", "split"]
    assert paths.decision("blk", "k2").reason == "measured now: one-launch 2000.0 µs, split 1000.0 µs"
    on_disk = tuning.ConfigTable.load(tuning.cache_file())
    assert on_disk.get_path(GPU, tuning.triton.__version__, tuning.path_key("blk", "k2")) == "split"

    simulated_gpu.new_process()
    paths.forget()
    assert paths.choose("blk", "k2", list(candidates), lambda: candidates, device) == "split"
    assert paths.decision("blk", "k2").reason == "measured (user cache)"
    assert paths.choose("blk", "k2", ["one-launch"], lambda: candidates, device) == "one-launch", \
        "a stored winner that is not a candidate is not taken"


def test_an_estimate_made_before_tune_is_measured_in_its_pass(simulated_gpu, monkeypatch):
    """A model called before tritattn.tune decided its paths by the estimate; tune's pass (a
    recording scope, benchmarking on) times them all the same and its winner then stands: the
    estimate is not final, a measured winner is."""
    candidates = {"one-launch": [cost_model.Launch("k", 4, 1, 1, 0)], "split": [cost_model.Launch("k", 4, 1, 500, 0)]}
    device = torch.device(DEVICE)
    times = {"one-launch": 2.0, "split": 1.0}
    ran = []
    monkeypatch.setattr(paths, "_may_measure", tuning.may_benchmark)  # the simulated GPU's device is the CPU
    monkeypatch.setattr(paths, "_time_ms", lambda run: (run(), times[ran[-1]])[1])

    def choose():
        return paths.choose("blk", "k3", list(candidates), lambda: candidates, device, lambda name: lambda: ran.append(name))

    assert choose() == "one-launch" and not ran  # the estimate, outside tune
    state = paths.call_state()
    with paths.recording(), tuning.benchmarking():
        assert choose() == "split"
        assert ran == ["one-launch", "split"]
        assert choose() == "split" and len(ran) == 2, "a measured winner is not measured again"
    assert paths.call_state() != state, "a decision made again starts a new epoch for the kept calls"
    assert choose() == "split"
    assert paths.decision("blk", "k3").reason.startswith("measured now")


def test_a_blocks_kept_calls_follow_a_decision_made_again(monkeypatch):
    """A twin's kept call (modules.KnownCall) holds the path decided for its signature; a new
    decision for the same problem (here a stored winner read in a tune pass) reaches it."""
    fast, _ = twins("SEModule", (16,), {"rd_ratio": 0.25})
    x = make_input((2, 16, 3, 5), torch.float64)
    with torch.no_grad():
        fast(x)
        (first,) = [d for d in paths.decisions() if d.block == "excitation_block"]
        other = "split" if first.path != "split" else "one-launch"
        monkeypatch.setattr(tuning, "path_winner", lambda device, block, key: (other, "user cache"))
        with paths.recording():
            fast(x)
        assert paths.decision("excitation_block", first.key).path == other
        ran = []
        squeeze = launch.squeeze_excite_fwd
        monkeypatch.setattr(launch, "squeeze_excite_fwd", lambda *args, **kwargs: (
            ran.append(kwargs.get("mlp_tail", True)) or squeeze(*args, **kwargs)))
        fast(x)
    assert ran == [other == "one-launch"]  # the squeeze launch runs each sample's MLP on the one-launch path only


def test_a_block_whose_stored_winner_is_eager_runs_its_reference_forward(simulated_gpu):
    """The winner read from the tables decides the module's path: "eager" runs the reference
    module's forward (no tritattn op), with the reference's result."""
    fast, ref = twins("SEModule", (16,), {"rd_ratio": 0.25})
    x = make_input((2, 16, 3, 5), torch.float64)
    with torch.no_grad():
        spec = fast.block_spec()
        key = excitation_block.block_shape(x, spec, spec.w1, spec.b1, spec.b2, False, False, "identity").key(False)
        tuning._user_table.put_path(GPU, tuning.triton.__version__, tuning.path_key("excitation_block", key), "eager")
        with census.LaunchCensus() as c:
            y = fast(x)
    assert not c.tritattn_calls and c.aten > 0
    assert paths.decision("excitation_block", key).path == "eager"
    assert torch.equal(y, ref(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="SKIPPED LOUDLY: timing the paths needs a GPU "
                    "(the CPU tests above check the choice, the storing and the reading)")
def test_tune_times_the_paths_on_a_gpu_and_stores_the_winner(tmp_path, monkeypatch):
    """tritattn.tune on an SE block (SE-ResNet-50 stage 4) times its four paths, the reference
    forward among them, reports and stores the winner; a later call reads it from the user cache."""
    monkeypatch.setenv("TRITATTN_CACHE_DIR", str(tmp_path))
    block = tritattn.SEModule(2048, rd_channels=128).cuda().eval()
    x = torch.randn(8, 2048, 7, 7, device="cuda")
    report = tritattn.tune(block, x, backward=False)
    (d,) = report.paths
    assert d.reason.startswith("measured now: ") and all(f"{name} " in d.reason for name in excitation_cost.PATHS), str(report)
    table = tuning.ConfigTable.load(tuning.cache_file())
    assert table.get_path(tuning.gpu_name(x.device), tuning.triton.__version__, tuning.path_key(d.block, d.key)) == d.path
    paths.forget()
    with torch.no_grad():
        block(x)
    assert paths.decision(d.block, d.key).reason == "measured (user cache)"
