"""Determinism: forward and backward give bitwise identical results run to run for the same input.

No kernel uses atomics: every reduction (mean / max over K, grad_s / grad_t over K) is a private
per-program accumulator summed in a fixed order, and every output element is stored once. So
there is a single path, deterministic with or without ``torch.use_deterministic_algorithms(True)``
(which must not make any op raise).

What can make two runs differ, and what is tested where:

- the scheduling of programs on a GPU (which atomics would expose): each case runs forward +
  backward twice, with tiles small enough that every reduction loops over several blocks, and
  compares every output bit for bit. That test runs on CUDA only: under the Triton interpreter
  the programs run one after another on the CPU, so run-to-run equality holds by construction
  and the comparison could not fail;
- the tile config, which sets the summation order (how K is split into blocks): under
  ``torch.use_deterministic_algorithms(True)`` the tuner must ignore tuned and cached configs and
  run the default. Tested on every machine on a simulated GPU (tests/fixtures/simulated_gpu.py),
  where the user cache holds non-default configs;
- and on every device, every op's forward and backward runs under deterministic mode without
  raising and matches the float64 reference.
"""
import pytest
import torch
import torch.nn.functional as F
import triton

import tritattn
from conftest import DEVICE, assert_close, make_input, reference_copy, residual_away_from_relu_kink, use_small_tiles
from fixtures.simulated_gpu import GPU, simulated_gpu  # noqa: F401
from tritattn import tuning

SHAPE = (2, 11, 3, 7)  # with small tiles (≤ 8 along K) every reduction loops over 2-3 blocks
#: the per-op ops, and the block pipeline (CBAM's channel branch with the SE-ResNet tail: squeeze
#: and MLP, scale; the backward's two kernels with the per-sample MLP backward)
OPS = ["squeeze", "spatial_pool", "excite_scale", "spatial_scale", "excitation_block"]
DETERMINISTIC = "default: torch.use_deterministic_algorithms(True)"


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """Same shape, dtype and bits (so NaN == NaN, and 0.0 != -0.0)."""
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
    as_int = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[a.element_size()]
    differ = a.detach().view(as_int) != b.detach().view(as_int)
    assert not differ.any(), f"{what}: {int(differ.sum())} elements differ in their bits, first at {differ.nonzero()[0].tolist()}"


def assert_runs_bitwise_equal(first, second, op: str) -> None:
    for what, a, b in zip(("outputs", "gradients"), first, second):
        assert len(a) == len(b)
        for i, (u, v) in enumerate(zip(a, b)):
            assert_bitwise_equal(u, v, f"{op} {what}[{i}]")


@pytest.fixture(params=[False, True], ids=["default", "use_deterministic_algorithms"])
def deterministic(request):
    before, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(request.param)
    yield request.param
    torch.use_deterministic_algorithms(before, warn_only=warn_only)


def make_inputs(op: str, dtype: torch.dtype, channels_last: bool) -> dict[str, torch.Tensor]:
    B, C, H, W = SHAPE
    inputs = {"x": make_input(SHAPE, dtype, channels_last, requires_grad=True, scale=3.0)}
    if op == "excite_scale":
        inputs["s"] = make_input((B, C), dtype, requires_grad=True)
        inputs["residual"] = make_input(SHAPE, dtype, channels_last, requires_grad=True)
        # the epilogue ReLU's input x · gate + residual kept out of rounding's reach of 0
        residual_away_from_relu_kink(inputs["x"], torch.sigmoid(inputs["s"].double())[:, :, None, None], inputs["residual"])
    elif op == "spatial_scale":
        inputs["t"] = make_input((B, 1, H, W), dtype, channels_last, requires_grad=True)
    elif op == "excitation_block":
        inputs["residual"] = make_input(SHAPE, dtype, channels_last, requires_grad=True)
        for name, shape in (("w1", (3, C)), ("b1", (3,)), ("w2", (C, 3)), ("b2", (C,))):
            inputs[name] = make_input(shape, torch.float32, requires_grad=True)  # float32, as under AMP
        with torch.no_grad():
            gate = torch.sigmoid(block_logits({name: t.double() for name, t in inputs.items()}))
        residual_away_from_relu_kink(inputs["x"], gate[:, :, None, None], inputs["residual"])
    return inputs


def block_logits(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The excitation_block case's logits: CBAM's shared SiLU MLP of the mean and of the max."""
    def mlp(v):
        return F.linear(F.silu(F.linear(v, inputs["w1"], inputs["b1"])), inputs["w2"], inputs["b2"])
    x = inputs["x"]
    return mlp(x.mean((2, 3))) + mlp(x.amax((2, 3)))


def forward(op: str, inputs: dict[str, torch.Tensor], reference: bool = False) -> tuple[torch.Tensor, ...]:
    """The op's outputs, or (reference=True) the float64 reference's on float64 copies of ``inputs``."""
    if not reference:
        x = inputs["x"]
        if op == "squeeze":
            return tritattn.squeeze(x, "mean_max")
        if op == "spatial_pool":
            return (tritattn.spatial_pool(x),)
        if op == "excite_scale":
            return (tritattn.excite_scale(x, inputs["s"], "sigmoid", inputs["residual"], "relu"),)
        if op == "excitation_block":
            weights = [inputs[k] for k in ("w1", "b1", "w2", "b2")]
            return (torch.ops.tritattn.excitation_block(
                x, inputs["residual"], *weights, "mean_max_both", "fc_act_fc", "silu", "sigmoid", "relu")[0],)
        return (tritattn.spatial_scale(x, inputs["t"], "hard_sigmoid"),)
    x = inputs["x"]
    if op == "squeeze":
        return x.mean((2, 3)), x.amax((2, 3))
    if op == "spatial_pool":
        return (torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1),)
    if op == "excite_scale":
        return (torch.relu(x * torch.sigmoid(inputs["s"])[:, :, None, None] + inputs["residual"]),)
    if op == "excitation_block":
        return (torch.relu(x * torch.sigmoid(block_logits(inputs))[:, :, None, None] + inputs["residual"]),)
    return (x * F.hardsigmoid(inputs["t"]),)


def cotangents(outs, seed: int) -> list[torch.Tensor]:
    g = torch.Generator(device=outs[0].device).manual_seed(seed)
    return [torch.randn(o.shape, generator=g, device=o.device, dtype=torch.float32).to(o.dtype) for o in outs]


def run(op: str, inputs: dict[str, torch.Tensor], cotangent_seed: int):
    """(outputs, gradients) of one forward + backward of ``op``."""
    outs = forward(op, inputs)
    grads = torch.autograd.grad(outs, list(inputs.values()), cotangents(outs, cotangent_seed))
    return [o.detach() for o in outs], list(grads)


def assert_matches_reference(op: str, inputs: dict[str, torch.Tensor], result, cotangent_seed: int) -> None:
    """``result`` (from :func:`run` with the same seed) against the float64 reference."""
    refs = {name: reference_copy(t) for name, t in inputs.items()}
    ref_outs = forward(op, refs, reference=True)
    cots = [c.double() for c in cotangents(result[0], cotangent_seed)]
    ref_grads = torch.autograd.grad(ref_outs, list(refs.values()), cots)
    outs, grads = result
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert_close(o, r, what=f"{op} output {i}")
    for name, g, r in zip(inputs, grads, ref_grads):
        assert_close(g, r, what=f"{op} grad_{name}")


@pytest.mark.skipif(
    DEVICE != "cuda",
    reason="meaningful on a GPU only: under the Triton interpreter the programs run one after another, "
    "so two runs are bitwise equal by construction",
)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_twice_bitwise_identical(op, dtype, channels_last, deterministic, monkeypatch):
    """Forward + backward twice on the GPU, every output and gradient bit for bit the same."""
    use_small_tiles(monkeypatch)
    inputs = make_inputs(op, dtype, channels_last)
    assert_runs_bitwise_equal(run(op, inputs, 1), run(op, inputs, 1), op)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_every_op_runs_under_deterministic_algorithms(op, dtype, channels_last, monkeypatch):
    """Under torch.use_deterministic_algorithms(True) every op's forward and backward runs (no
    op raises for lack of a deterministic implementation) and matches the float64 reference."""
    use_small_tiles(monkeypatch)
    before, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        inputs = make_inputs(op, dtype, channels_last)
        result = run(op, inputs, 1)
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
    assert_matches_reference(op, inputs, result, 1)


def other_config(cfg: dict[str, int]) -> dict[str, int]:
    """A config unlike ``cfg``: half the block along K (along R when BLOCK_K is 1), 2 warps —
    so a reduction over K takes another summation order."""
    r, k = cfg["BLOCK_R"], cfg["BLOCK_K"]
    r, k = (r, k // 2) if k > 1 else (r // 2, k)
    return {**cfg, "BLOCK_R": r, "BLOCK_K": k, "num_warps": 2}


def cache_with(configs: dict[str, dict[str, int]]) -> tuning.ConfigTable:
    """A user cache for the simulated GPU holding ``configs`` ("kernel/problem key" → config)."""
    table = tuning.ConfigTable()
    for full_key, cfg in configs.items():
        table.put(GPU, triton.__version__, full_key, tuning.config_from_json(cfg))
    return table


@pytest.mark.parametrize("op", OPS)
def test_deterministic_mode_ignores_a_cached_config(simulated_gpu, monkeypatch, op):
    """On a (simulated) GPU whose user cache holds a non-default config for each of the op's
    kernel problems: under deterministic mode the tuner ignores it — every decision is the
    default, nothing is benchmarked, and outputs and gradients are bitwise those of a run with
    the default configs (TRITATTN_AUTOTUNE=0). Without deterministic mode the cached configs,
    which differ from the defaults, are used (and the results are still right)."""
    gpu = simulated_gpu
    inputs = make_inputs(op, torch.float32, channels_last=False)

    monkeypatch.setattr(tuning, "AUTOTUNE", False)  # the run with the default configs
    with_defaults = run(op, inputs, 1)
    monkeypatch.setattr(tuning, "AUTOTUNE", True)
    defaults = {f"{d.kernel}/{d.key}": d.config for d in tuning.decisions()}
    assert len(defaults) >= 2 and all(d.source == "default: TRITATTN_AUTOTUNE=0" for d in tuning.decisions())
    cached = {full_key: other_config(cfg) for full_key, cfg in defaults.items()}
    assert all(cached[k] != defaults[k] for k in defaults), "the cached configs really differ from the defaults"

    gpu.new_process(user=cache_with(cached))
    torch.use_deterministic_algorithms(True)  # the simulated_gpu fixture restores the setting
    deterministic = run(op, inputs, 1)
    assert {f"{d.kernel}/{d.key}": (d.source, d.config) for d in tuning.decisions()} == {
        k: (DETERMINISTIC, cfg) for k, cfg in defaults.items()
    }
    assert not gpu.timed and all(cfg in defaults.values() for _, cfg in gpu.launched)
    assert_runs_bitwise_equal(with_defaults, deterministic, op)

    gpu.new_process(user=cache_with(cached))
    torch.use_deterministic_algorithms(False)
    result = run(op, inputs, 1)
    assert {f"{d.kernel}/{d.key}": (d.source, d.config) for d in tuning.decisions()} == {
        k: ("user cache", cfg) for k, cfg in cached.items()
    }
    assert not gpu.timed and all(cfg in cached.values() for _, cfg in gpu.launched)
    assert_matches_reference(op, inputs, result, 1)


def test_the_tile_config_sets_the_summation_order(simulated_gpu, monkeypatch):
    """Why deterministic mode must not use a cached config: the float32 mean of
    [2^24, 1, 1, -2^24] is 0 summed in one block of 4 (the default tile: 2^24 + 1 rounds to
    2^24, twice) and 0.25 in blocks of 2 (2^24 + (1 - 2^24) = 1 is exact). With a cache holding
    BLOCK_K = 2 the bits change; under deterministic mode they are the default's."""
    gpu = simulated_gpu
    x = torch.randn(1, 4, 2, 2)
    x[0, 0] = torch.tensor([[2.0**24, 1.0], [1.0, -(2.0**24)]])

    monkeypatch.setattr(tuning, "AUTOTUNE", False)
    with_default = tritattn.squeeze(x)
    monkeypatch.setattr(tuning, "AUTOTUNE", True)
    ((full_key, default),) = [(f"{d.kernel}/{d.key}", d.config) for d in tuning.decisions()]
    assert default["BLOCK_K"] == 4 and with_default[0, 0].item() == 0.0
    cache = cache_with({full_key: {**default, "BLOCK_K": 2}})

    gpu.new_process(user=cache)
    with_cached = tritattn.squeeze(x)
    assert [d.source for d in tuning.decisions()] == ["user cache"]
    assert with_cached[0, 0].item() == 0.25, "another tile, another sum"

    gpu.new_process(user=cache)
    torch.use_deterministic_algorithms(True)  # the simulated_gpu fixture restores the setting
    deterministic = tritattn.squeeze(x)
    assert [d.source for d in tuning.decisions()] == [DETERMINISTIC]
    assert_bitwise_equal(deterministic, with_default, "squeeze under deterministic mode")
