"""The block pipeline (``tritattn::excitation_block`` and its backward) against a float64 torch
reference written here from the math: every pooling × excitation kind, both epilogues, odd C and
H×W, batch 1, hidden width 1, NCHW and channels_last, three dtypes of x (float32 weights, as
under AMP), default and tiny tiles (many programs per sample: the per-sample counters and the
last program's MLP), both kernel paths (the MLP in the squeeze kernel's last program,
"one-launch"; the MLP as GEMMs between the launches, "split"), and the properties the pipeline
promises: bitwise repeatable, counters left at zero, 2 kernels forward and 2 backward, nothing
x-sized saved beyond eager's.
"""
import functools
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import tritattn
from tritattn import excitation_block, paths, tuning
from conftest import DEVICE, assert_close, assert_same_layout, make_input, relu_kink_near, use_small_tiles
from fixtures.workspaces import counters_reset, launched_counters  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
import census  # noqa: E402

#: (pool, mlp, hidden act): every combination a module uses
KINDS = [
    ("mean", "fc_act_fc", "relu"), ("mean_max_avg", "fc_act_fc", "silu"), ("mean_max_both", "fc_act_fc", "relu"),
    ("mean", "fc_act_fc", "identity"), ("mean", "fc", "identity"), ("mean_max_avg", "fc", "identity"),
    ("mean", "taps_zero", "identity"), ("mean", "taps_circular", "identity"),
]
KIND_IDS = ["-".join(k) for k in KINDS]
SHAPES = [(2, 37, 7, 7), (1, 130, 1, 1), (3, 6, 3, 5)]
#: the op's two paths (excitation_block's ``path`` argument)
KERNEL_PATHS = ["one-launch", "split"]
ACTS = {"relu": F.relu, "silu": F.silu, "identity": lambda t: t}
#: hard-sigmoid as relu6(s + 3) / 6, timm's form: torch's own hardsigmoid backward multiplies by a
#: float32 1/6 even in float64 (fixtures.model_runs.exact_hardsigmoid_backward)
GATES = {"sigmoid": torch.sigmoid, "hard_sigmoid": lambda s: F.relu6(s + 3) / 6}


def make_weights(mlp: str, C: int, rd: int, taps: int = 5, bias: bool = True) -> tuple:
    """(w1, b1, w2, b2) in float32, fresh, the shapes excitation_block takes."""
    def w(*shape):
        return (torch.randn(shape, dtype=torch.float64) * 0.5).float().to(DEVICE).requires_grad_()
    if mlp == "fc_act_fc":
        return w(rd, C), w(rd) if bias else None, w(C, rd), w(C) if bias else None
    if mlp == "fc":
        return None, None, w(C, C), w(C) if bias else None
    return w(taps), None, None, w(1) if bias else None


def pre_activations(x, weights, pool, mlp):
    """float64 (pooled input v, hidden pre-activations h and their term magnitudes, logits s)."""
    w1, b1, w2, b2 = (t.double() if t is not None else None for t in weights)
    mean, maximum = x.mean((2, 3)), x.amax((2, 3))
    v = 0.5 * mean + 0.5 * maximum if pool == "mean_max_avg" else mean
    return mean, maximum, v, w1, b1, w2, b2


def reference(x, residual, weights, pool, mlp, act, gate, act_out):
    """The block in float64 torch ops (x, residual, weights float64 leaves)."""
    mean, maximum, v, w1, b1, w2, b2 = pre_activations(x, weights, pool, mlp)
    if mlp == "fc_act_fc":
        def m(u):
            return F.linear(ACTS[act](F.linear(u, w1, b1)), w2, b2)
        s = m(mean) + m(maximum) if pool == "mean_max_both" else m(v)
    elif mlp == "fc":
        s = F.linear(v, w2, b2)
    else:
        k = w1.shape[0]
        u = v[:, None, :]
        if mlp == "taps_circular":
            s = F.conv1d(F.pad(u, ((k - 1) // 2,) * 2, mode="circular"), w1.view(1, 1, k), b2)[:, 0]
        else:
            s = F.conv1d(u, w1.view(1, 1, k), b2, padding=(k - 1) // 2)[:, 0]
    y = x * GATES[gate](s)[:, :, None, None]
    if residual is not None:
        y = y + residual
    return (F.relu(y) if act_out == "relu" else y), s


def kinks_within_reach(x, residual, weights, pool, mlp, act, gate, act_out) -> bool:
    """Whether an input of a kinked function (hidden ReLU, hard-sigmoid's ±3, epilogue ReLU) is
    within float32 rounding of its kink: then the kernel's branch is luck (conftest.relu_kink_near)."""
    with torch.no_grad():
        mean, maximum, v, w1, b1, *_ = pre_activations(x.double(), weights, pool, mlp)
        if mlp == "fc_act_fc" and act == "relu":
            for u in (mean, maximum) if pool == "mean_max_both" else (v,):
                h = F.linear(u, w1, b1)
                if relu_kink_near(h, F.linear(u.abs(), w1.abs(), b1.abs() if b1 is not None else None)).any():
                    return True
        y, s = reference(x.double(), residual.double() if residual is not None else None,
                         weights, pool, mlp, act, gate, "identity")
        if gate == "hard_sigmoid" and (relu_kink_near(s - 3, s.abs() + 3) | relu_kink_near(s + 3, s.abs() + 3)).any():
            return True
        return act_out == "relu" and bool(relu_kink_near(y, y.abs() + x.double().abs()).any())


def draw(shape, dtype, channels_last, pool, mlp, act, gate, act_out, rd=5, bias=True):
    """Inputs, residual and weights with no kink within reach."""
    B, C, H, W = shape
    for _ in range(50):
        x = make_input(shape, dtype, channels_last, requires_grad=True)
        residual = make_input(shape, dtype, channels_last, requires_grad=True) if act_out == "relu" else None
        weights = make_weights(mlp, C, rd, bias=bias)
        if not kinks_within_reach(x, residual, weights, pool, mlp, act, gate, act_out):
            return x, residual, weights
    raise AssertionError("no draw kept every kink out of reach")


def run_block(x, residual, weights, pool, mlp, act, gate, act_out, path="one-launch"):
    return torch.ops.tritattn.excitation_block(x, residual, *weights, pool, mlp, act, gate, act_out, path=path)[0]


def check_block(shape, dtype, channels_last, pool, mlp, act, gate="sigmoid", act_out="identity", rd=5, bias=True,
                path="one-launch"):
    x, residual, weights = draw(shape, dtype, channels_last, pool, mlp, act, gate, act_out, rd, bias)
    leaves = [t for t in (x, residual, *weights) if t is not None]
    refs = [t.detach().double().requires_grad_() for t in leaves]
    it = iter(refs)
    x64 = next(it)
    res64 = next(it) if residual is not None else None
    w64 = tuple(next(it) if t is not None else None for t in weights)

    y = run_block(x, residual, weights, pool, mlp, act, gate, act_out, path)
    y_ref, _ = reference(x64, res64, w64, pool, mlp, act, gate, act_out)
    what = f"{pool}/{mlp}/{act} {gate} {act_out} {tuple(shape)} {dtype} {path}"
    assert y.dtype == dtype
    assert_same_layout(y, x)
    assert_close(y, y_ref, what=what + " output")

    cot = torch.randn(shape, dtype=torch.float64, device=DEVICE).to(dtype)
    grads = torch.autograd.grad(y, leaves, cot)
    grads_ref = torch.autograd.grad(y_ref, refs, cot.double())
    names = ["x"] + ["residual"] * (residual is not None) + [n for n, t in zip(("w1", "b1", "w2", "b2"), weights) if t is not None]
    # A parameter gradient is a sum over the batch (and channels) that can cancel to far below its
    # terms (ECA's bias: Σ_b Σ_c grad_s): parameter gradients are measured against the largest
    # gradient of the block, as tests/test_modules.py does; x's and the residual's on their own.
    group = max(g.abs().max().item() for g in grads_ref)
    for name, g, g_ref, leaf in zip(names, grads, grads_ref, leaves):
        assert g.dtype == leaf.dtype, name
        assert_close(g, g_ref, what=f"{what} grad {name}", scale=None if name in ("x", "residual") else group)


@pytest.mark.parametrize("pool, mlp, act", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("tiles, path", [("default_tiles", "one-launch"), ("small_tiles", "one-launch"),
                                         ("small_tiles", "split")])
def test_block_matches_float64_reference(pool, mlp, act, shape, tiles, path, channels_last, monkeypatch):
    if tiles == "small_tiles":
        use_small_tiles(monkeypatch)
    check_block(shape, torch.float64, channels_last, pool, mlp, act, act_out="relu" if shape[0] == 2 else "identity",
                path=path)


@pytest.mark.parametrize("path", KERNEL_PATHS)
@pytest.mark.parametrize("pool, mlp, act", KINDS, ids=KIND_IDS)
def test_block_in_each_dtype_with_float32_weights(pool, mlp, act, path, dtype, channels_last):
    check_block((2, 37, 5, 3), dtype, channels_last, pool, mlp, act, act_out="relu", path=path)


@pytest.mark.parametrize("path", KERNEL_PATHS)
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("act_out", ["identity", "relu"])
def test_block_gates_epilogues_hidden_width_one_and_no_bias(gate, act_out, path, monkeypatch):
    use_small_tiles(monkeypatch)
    check_block((3, 6, 4, 4), torch.float64, True, "mean", "fc_act_fc", "relu", gate, act_out, rd=1, bias=False, path=path)
    check_block((1, 9, 2, 3), torch.float64, False, "mean", "taps_zero", "identity", gate, act_out, bias=False, path=path)


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_block_is_bitwise_repeatable_and_leaves_the_counters_at_zero(path, monkeypatch, launched_counters):
    use_small_tiles(monkeypatch)  # several programs per sample: which one runs the MLP is not fixed on a GPU
    x, residual, weights = draw((2, 37, 5, 5), torch.float32, True, "mean_max_both", "fc_act_fc", "relu", "sigmoid", "relu")
    cot = torch.randn(x.shape, device=DEVICE)
    runs = []
    for _ in range(2):
        y = run_block(x, residual, weights, "mean_max_both", "fc_act_fc", "relu", "sigmoid", "relu", path)
        leaves = [x, residual, *weights]
        runs.append([y] + list(torch.autograd.grad(y, leaves, cot)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    if path == "one-launch":  # the split path takes no counters
        assert counters_reset(launched_counters)
    else:
        assert not launched_counters


@pytest.mark.parametrize("mlp", ["taps_zero", "taps_circular"])
def test_the_taps_give_the_same_bits_on_both_paths(mlp, channels_last, monkeypatch):
    """ECA's taps run in one device helper on both paths (kernels/channel_taps.channel_conv: a
    sample's last program on the one-launch path, every program of the scale and apply launches
    on the split path): in the interpreter the output and every gradient are the same bits."""
    use_small_tiles(monkeypatch)
    x, residual, weights = draw((2, 37, 5, 5), torch.float32, channels_last, "mean", mlp, "identity", "sigmoid", "relu")
    cot = torch.randn(x.shape, device=DEVICE)
    leaves = [t for t in (x, residual, *weights) if t is not None]
    runs = []
    for path in KERNEL_PATHS:
        y = run_block(x, residual, weights, "mean", mlp, "identity", "sigmoid", "relu", path)
        runs.append([y, *torch.autograd.grad(y, leaves, cot)])
    for name, a, b in zip(["y", "x", "residual", "w", "b"], *runs):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_the_backward_takes_the_forwards_path(path):
    """The path argument reaches the backward op (saved with the forward): the split path's
    squeeze and reduce kernels run without their MLP tail (their problem keys say MLP_TAIL=0),
    the one-launch path's with it; and the op with no path chooses one (paths.choose)."""
    x, residual, weights = draw((2, 37, 5, 5), torch.float32, False, "mean", "fc_act_fc", "relu", "sigmoid", "relu")
    with tuning.recording() as keys:
        y = run_block(x, residual, weights, "mean", "fc_act_fc", "relu", "sigmoid", "relu", path)
        torch.autograd.grad(y, [x, *weights], torch.randn_like(y))
    tails = {key.split("/")[0]: "MLP_TAIL=0" not in key for key in keys}
    assert tails == {"squeeze_excite_fwd": path == "one-launch", "gated_scale_fwd": True,
                     "excitation_bwd_reduce": path == "one-launch", "excitation_bwd_apply": True}, sorted(keys)
    with paths.forced(path), tuning.recording() as keys:
        y = run_block(x, residual, weights, "mean", "fc_act_fc", "relu", "sigmoid", "relu", "")
        torch.autograd.grad(y, [x, *weights], torch.randn_like(y))
    assert {key.split("/")[0]: "MLP_TAIL=0" not in key for key in keys} == tails


@pytest.mark.parametrize("name, args, kwargs, step_max", [
    ("SEModule", (40,), {}, 6), ("SqueezeExcite", (40,), {"rd_ratio": 0.25}, 6), ("SqueezeExcitation", (40, 10), {}, 6),
    ("EffectiveSEModule", (40,), {}, 5), ("EcaModule", (40,), {}, 5), ("CecaModule", (40,), {}, 5),
])
def test_channel_blocks_run_two_kernels_forward_and_save_no_more_than_eager(name, args, kwargs, step_max):
    """The block pipeline's one-launch path (forced: at this small shape the model prefers the
    per-op path for the training step, whose backward has fewer serial tails)."""
    fast = getattr(tritattn, name)(*args, **kwargs)
    eager = getattr(tritattn.reference, name)(*args, **kwargs)
    x = torch.randn(2, 40, 6, 6)
    with paths.forced("one-launch"):
        c = census.take_census(fast, x)
    e = census.take_census(eager, x)
    assert (c.fwd.triton, c.fwd.aten) == (2, 0), [op for op, _ in c.fwd.tritattn_calls]
    assert c.inference.total == 2
    assert c.fwd.total + c.bwd.total <= step_max
    assert c.saved_bytes <= e.saved_bytes
    # x-sized tensor passes: squeeze reads x, scale reads x and writes y; backward reads dy and x,
    # then reads dy and writes dx
    assert (c.inference.passes, c.fwd.passes + c.bwd.passes) == (3, 7)
    assert e.fwd.passes + e.bwd.passes > 7


def test_switching_the_pipeline_off_gives_the_per_op_path(monkeypatch):
    block = tritattn.SEModule(24)
    x = torch.randn(2, 24, 5, 5, device=DEVICE, dtype=torch.float64)
    block = block.to(DEVICE, torch.float64)
    assert block.uses_block_pipeline(x)
    monkeypatch.setattr(excitation_block, "enabled", False)
    assert not block.uses_block_pipeline(x)
    with census.LaunchCensus() as c:
        block(x)
    assert [op for op, _ in c.tritattn_calls] == ["squeeze", "excite_scale"]


@pytest.mark.parametrize("add_maxpool", [False, True], ids=["mean", "mean_max_avg"])
@pytest.mark.parametrize("tiles, path", [("default_tiles", "one-launch"), ("small_tiles", "one-launch"),
                                         ("default_tiles", "split")])
def test_se_with_a_batchnorm_in_its_mlp_runs_it_inside_the_pipeline_in_eval(add_maxpool, tiles, path, channels_last,
                                                                             monkeypatch):
    """timm SEModule(norm_layer=BatchNorm2d) (ReXNet's SE) in eval against the float64 reference
    module, on each kernel path: output, input and every parameter gradient (the BatchNorm's
    weight and bias included); in training it keeps the per-op path (batch statistics)."""
    if tiles == "small_tiles":
        use_small_tiles(monkeypatch)
    ref = tritattn.reference.SEModule(20, rd_ratio=0.25, norm_layer=torch.nn.BatchNorm2d, add_maxpool=add_maxpool)
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ref.bn.running_mean.normal_()
    ref.bn.running_var.uniform_(0.5, 2.0)
    fast = tritattn.SEModule(20, rd_ratio=0.25, norm_layer=torch.nn.BatchNorm2d, add_maxpool=add_maxpool)
    fast.load_state_dict(ref.state_dict(), strict=True)
    ref, fast = ref.to(DEVICE, torch.float64).eval(), fast.to(DEVICE, torch.float64).eval()
    x = make_input((3, 20, 5, 7), torch.float64, channels_last, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    cot = torch.randn(x.shape, dtype=torch.float64, device=DEVICE)
    with paths.forced(path), census.LaunchCensus() as c:
        y = fast(x)
        y.backward(cot)
    assert [op for op, _ in c.tritattn_calls] == ["excitation_block", "excitation_block_backward"] and c.total == 4
    assert [a["path"] for _, a in c.tritattn_calls] == [path, path]
    y_ref = ref(x_ref)
    y_ref.backward(cot)
    assert_close(y, y_ref, what="output")
    assert_close(x.grad, x_ref.grad, what="grad x")
    group = max(p.grad.abs().max().item() for p in ref.parameters())
    for (name, p), p_ref in zip(fast.named_parameters(), ref.parameters()):
        assert_close(p.grad, p_ref.grad, what=f"grad {name}", scale=group)
    fast.train()
    assert "training mode" in fast.block_refusal() and not fast.uses_block_pipeline(x)


def test_block_refusals_say_why():
    assert "training mode" in tritattn.SEModule(16, norm_layer=torch.nn.BatchNorm2d).block_refusal()
    assert tritattn.SEModule(16, norm_layer=torch.nn.BatchNorm2d).eval().block_refusal() is None
    no_stats = tritattn.SEModule(16, norm_layer=functools.partial(torch.nn.BatchNorm2d, track_running_stats=False)).eval()
    assert "running statistics" in no_stats.block_refusal()
    assert "GELU" in tritattn.SEModule(16, act_layer=torch.nn.GELU).block_refusal()
    assert "use_mlp" in tritattn.EcaModule(16, use_mlp=True).block_refusal()
    assert tritattn.SEModule(16).block_refusal() is None


@pytest.mark.parametrize("step", [1, 2])
def test_forward_over_chunks_of_samples_equals_one_launch_pair(step, monkeypatch):
    """The L2 chunking (TRITATTN_L2_CHUNK) runs the same kernels over slices of the batch: the
    result is bitwise that of one launch pair over the whole batch."""
    x, residual, weights = draw((3, 37, 5, 5), torch.float32, True, "mean_max_both", "fc_act_fc", "relu", "sigmoid", "relu")
    args = (x, residual, weights, "mean_max_both", "fc_act_fc", "relu", "sigmoid", "relu")
    whole = run_block(*args)
    monkeypatch.setattr(excitation_block, "samples_per_launch", lambda t: step)
    with census.LaunchCensus():
        chunked = run_block(*args)
    assert torch.equal(chunked, whole)


def test_chunking_is_off_unless_asked_and_sized_from_the_l2_cache(monkeypatch):
    x = torch.empty(64, 256, 56, 56, dtype=torch.bfloat16, device="meta")
    monkeypatch.setattr(excitation_block, "l2_fraction", None)
    assert excitation_block.samples_per_launch(x) == 64
    monkeypatch.setattr(excitation_block, "l2_fraction", 0.5)
    assert excitation_block.samples_per_launch(x) == 64, "only CUDA tensors are chunked"
    sample = 256 * 56 * 56 * 2  # 1.5 MiB of bfloat16
    assert excitation_block.chunk_samples(64, sample, 50 << 20, 0.5) == 16  # 25 MiB of a 50 MiB L2
    assert excitation_block.chunk_samples(64, 40 << 20, 50 << 20, 0.5) == 1  # a sample larger than the share
    assert excitation_block.chunk_samples(4, sample, 50 << 20, 0.5) == 4


def test_the_taps_convolution_makes_cudnn_exact_for_the_call_and_gives_the_flags_back(monkeypatch):
    """On a GPU the split path's taps backward (ECA's conv over the channels) runs its
    convolution_backward with cuDNN's TF32 off (float32, as the workspaces' GEMMs) and its
    deterministic algorithms only (excitation_mlp._exact_cudnn); the user's flags come back
    afterwards, also when the convolution raises. Off a GPU the flags are not touched."""
    from types import SimpleNamespace

    from tritattn import excitation_mlp

    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "allow_tf32", True)
    monkeypatch.setattr(cudnn, "deterministic", False)
    assert excitation_mlp._exact_cudnn(torch.zeros(1)) is None and (cudnn.allow_tf32, cudnn.deterministic) == (True, False)
    gpu = SimpleNamespace(is_cuda=True)
    state = excitation_mlp._exact_cudnn(gpu)
    assert (cudnn.allow_tf32, cudnn.deterministic) == (False, True)
    excitation_mlp._restore_cudnn(state)
    assert (cudnn.allow_tf32, cudnn.deterministic) == (True, False)

    seen = []

    def failing_conv(*args, **kwargs):
        seen.append((cudnn.allow_tf32, cudnn.deterministic))
        raise RuntimeError("the convolution failed")

    real_exact = excitation_mlp._exact_cudnn
    monkeypatch.setattr(excitation_mlp, "_exact_cudnn", lambda t: real_exact(gpu))  # as on a GPU
    monkeypatch.setattr(excitation_mlp, "_CONVOLUTION_BACKWARD", failing_conv)
    v, w = torch.randn(2, 7, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    for circular in (False, True):
        with pytest.raises(RuntimeError, match="the convolution failed"):
            excitation_mlp.taps_grads(v, v, excitation_mlp.taps_filter(w, circular), (True, True, False))
        assert (cudnn.allow_tf32, cudnn.deterministic) == (True, False)
    assert seen == [(False, True)] * 2
