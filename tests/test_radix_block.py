"""Radix (split) attention: the ops ``radix_pool`` / ``radix_combine`` (and its backward) against
float64 references written from the math, and the fast SplitAttn / SelectiveKernel /
SelectiveKernelAttn against timm's own classes.

Ops: R ∈ {1, 2, 3, 4} (3: SelectiveKernel with three paths, a radix that is not a power of two),
SplitAttn's [B, R·C, H, W] viewed as branches in NCHW and channels_last, SelectiveKernel's stack
of channels_last paths, an H/W-transposed map (copied once), H×W ∈ {1, 3×5, 7×7}, C not a power
of two, batch 1 and 0, float32 / float16 / bfloat16 (and float64), default and tiny tiles;
outputs NaN-poisoned before the kernels write them (conftest).
Modules: timm's weights copied in with strict=True both ways, BatchNorm running statistics and
affine randomized, output, input gradient, every parameter gradient and every buffer compared in
float64 in training and eval (float64: the ReLUs' inputs differ between the two by ~1e-16, so no
kink is within reach), re-classed timm instances, determinism, and the errors.
"""
import copy

import pytest
import torch
from torch import nn
from fixtures.aten_ops import AtenOps
from fixtures.simulated_gpu import simulated_gpu, split_measured_and_kept  # noqa: F401
from fixtures.workspaces import counters_reset, launched_counters  # noqa: F401

from conftest import (
    DEVICE, assert_close, expected_backend, assert_same_layout, make_input, reference_copy, relu_kink_near, use_small_tiles,
)
from tritattn import eager_ops, radix_block, reference, split_attention
from tritattn.radix_block import radix_combine, radix_pool
from fixtures.model_runs import training_step

# --- the ops -------------------------------------------------------------------------------------

#: (B, C, H, W) of one branch; SplitAttn views [B, R·C, H, W] as [B, R, C, H, W]
OP_SHAPES = {1: (2, 6, 3, 5), 2: (1, 12, 7, 7), 3: (2, 5, 3, 5), 4: (2, 5, 1, 1)}


def branches(R: int, shape, dtype, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(leaf, x5): the leaf that requires grad and the [B, R, C, H, W] branches made from it —
    "split_*": SplitAttn's [B, R·C, H, W] viewed; "stacked_channels_last": SelectiveKernel's
    torch.stack of channels_last paths (channels innermost, branch stride C)."""
    B, C, H, W = shape
    if layout == "stacked_channels_last":
        leaf = make_input((B, R, C, H, W), dtype, requires_grad=True)
        paths = [leaf[:, r].contiguous(memory_format=torch.channels_last) for r in range(R)]
        return leaf, torch.stack(paths, dim=1)
    leaf = make_input((B, R * C, H, W), dtype, channels_last=layout == "split_channels_last", requires_grad=True)
    return leaf, leaf.view(B, R, C, H, W)


def reference_ops(x5: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled, out) in float64 from the math."""
    return x5.sum(1).mean((2, 3)), (x5 * a[:, :, :, None, None]).sum(1)


def dot_scale(g: torch.Tensor, x5: torch.Tensor) -> float:
    """The size of grad_a = Σ_hw g · x5: its terms', max Σ_hw |g · x5| (the sum may cancel)."""
    return (g.double()[:, None].abs() * x5.detach().double().abs()).sum((3, 4)).max().item()


@pytest.mark.parametrize("R", [1, 2, 3, 4])
@pytest.mark.parametrize("layout", ["split_nchw", "split_channels_last", "stacked_channels_last"])
def test_radix_ops_match_float64(R, layout, dtype):
    shape = OP_SHAPES[R]
    B, C, H, W = shape
    leaf, x5 = branches(R, shape, dtype, layout)
    a = make_input((B, R, C), dtype, requires_grad=True)
    leaf_r = reference_copy(leaf)
    x5_r = leaf_r.view(B, R, C, H, W) if layout != "stacked_channels_last" else leaf_r
    a_r = reference_copy(a)

    pooled, out = radix_pool(x5), radix_combine(x5, a)
    pooled_r, out_r = reference_ops(x5_r, a_r)
    assert pooled.dtype == out.dtype == dtype
    assert_close(pooled, pooled_r, what="radix_pool forward")
    assert_close(out, out_r, what="radix_combine forward")
    if C > 1 and H * W > 1:
        expect_cl = layout != "split_nchw"
        assert out.is_contiguous(memory_format=torch.channels_last if expect_cl else torch.contiguous_format)

    g_pool = torch.randn(pooled.shape, dtype=torch.float64, device=DEVICE).to(dtype)
    (grad,) = torch.autograd.grad(pooled, leaf, g_pool)
    (grad_r,) = torch.autograd.grad(pooled_r, leaf_r, g_pool.double())
    assert_close(grad, grad_r, what="radix_pool grad_x")

    g = torch.randn(out.shape, dtype=torch.float64, device=DEVICE).to(dtype)
    grad_x, grad_a = torch.autograd.grad(out, (leaf, a), g)
    grad_x_r, grad_a_r = torch.autograd.grad(out_r, (leaf_r, a_r), g.double())
    assert_close(grad_x, grad_x_r, what="radix_combine grad_x")
    assert_close(grad_a, grad_a_r, what="radix_combine grad_a", scale=dot_scale(g, x5))


@pytest.mark.parametrize("layout", ["split_nchw", "split_channels_last"])
def test_radix_ops_with_tiny_tiles(layout, monkeypatch):
    """Tiles of at most 8 along an axis: several channel blocks, K blocks and ragged edges."""
    use_small_tiles(monkeypatch)
    test_radix_ops_match_float64(4, layout, torch.float32)
    test_radix_ops_match_float64(3, layout, torch.float64)


def test_radix_ops_on_a_map_whose_pixels_do_not_flatten():
    """H and W transposed (no single pixel stride): copied once, then the same numbers."""
    base = make_input((2, 3, 4, 5, 3), torch.float32)
    x5 = base.transpose(3, 4).requires_grad_()  # [2, 3, 4, 3, 5], stride_h = 1
    a = make_input((2, 3, 4), torch.float32, requires_grad=True)
    x5_r, a_r = reference_copy(x5), reference_copy(a)
    pooled_r, out_r = reference_ops(x5_r, a_r)
    assert_close(radix_pool(x5), pooled_r, what="pooled")
    out = radix_combine(x5, a)
    assert_close(out, out_r, what="out")
    g = torch.randn(out.shape, device=DEVICE)
    out.backward(g)
    out_r.backward(g.double())
    assert_close(x5.grad, x5_r.grad, what="grad_x")
    assert_close(a.grad, a_r.grad, what="grad_a", scale=dot_scale(g, x5))


def test_pool_gradient_is_a_broadcast_view_and_backward_keeps_the_layout():
    x5 = torch.stack([make_input((2, 6, 3, 5), torch.float32, channels_last=True) for _ in range(2)], 1)
    x5.requires_grad_()
    pooled = radix_pool(x5)
    (grad,) = torch.autograd.grad(pooled, x5, torch.ones_like(pooled))
    assert grad.stride(1) == grad.stride(3) == grad.stride(4) == 0, "an expanded view, no plane written"
    assert torch.equal(grad, torch.full_like(x5, 1 / 15))
    a = make_input((2, 2, 6), torch.float32)
    g = make_input((2, 6, 3, 5), torch.float32, channels_last=True)
    grad_x5, grad_a = torch.ops.tritattn.radix_combine_backward(g, x5.detach(), a)
    assert_same_layout(grad_x5, x5)
    assert grad_a.shape == a.shape and grad_a.is_contiguous()


def test_empty_batch():
    x5 = make_input((0, 2, 3, 4, 5), torch.float32, requires_grad=True)
    a = make_input((0, 2, 3), torch.float32, requires_grad=True)
    assert radix_pool(x5).shape == (0, 3)
    out = radix_combine(x5, a)
    assert out.shape == (0, 3, 4, 5)
    out.sum().backward()
    assert x5.grad.shape == x5.shape and a.grad.shape == a.shape


def test_ops_are_deterministic(monkeypatch):
    use_small_tiles(monkeypatch)  # several programs and K blocks per row
    x5 = make_input((2, 3, 9, 5, 5), torch.float32, requires_grad=True)
    a = make_input((2, 3, 9), torch.float32, requires_grad=True)
    g = make_input((2, 9, 5, 5), torch.float32)
    runs = []
    for _ in range(2):
        pooled, out = radix_pool(x5), radix_combine(x5, a)
        runs.append((pooled, out, *torch.autograd.grad(out, (x5, a), g)))
    for first, second in zip(*runs):
        assert torch.equal(first, second)


def test_op_errors_are_clear():
    x5 = make_input((2, 2, 3, 4, 5), torch.float32)
    a = make_input((2, 2, 3), torch.float32)
    with pytest.raises(ValueError, match=r"x5 must be 5-D \[B, R, C, H, W\]"):
        radix_pool(x5[:, 0])
    with pytest.raises(ValueError, match="R, C, H, W > 0"):
        radix_combine(x5[:, :0], a[:, :0])
    with pytest.raises(TypeError, match="floating dtype"):
        radix_pool(x5.to(torch.int32))
    with pytest.raises(ValueError, match=r"a must have shape \(2, 2, 3\)"):
        radix_combine(x5, a[:, :1])
    with pytest.raises(ValueError, match=r"a must be 3-D \[B, R, C\]"):
        radix_combine(x5, a.flatten(1))
    with pytest.raises(ValueError, match="a is on meta"):
        radix_combine(x5, a.to("meta"))
    with pytest.raises(TypeError, match="x5 must be a torch.Tensor"):
        radix_pool(x5.numpy())


# --- the modules against timm ----------------------------------------------------------------------

def timm_layers():
    from fixtures.peers import timm

    return timm.layers


#: (timm class path, constructor args, kwargs, input [B, C, H, W] shape in training)
MODULE_CASES = {
    "splat-r2-bn": ("split_attn.SplitAttn", (12,), dict(radix=2, norm_layer=nn.BatchNorm2d), (4, 12, 3, 5)),
    "splat-r1-g4-bn": ("split_attn.SplitAttn", (12,), dict(radix=1, groups=4, norm_layer=nn.BatchNorm2d), (4, 12, 3, 5)),
    # batch 5: its attention MLP's training BatchNorm normalises each hidden channel over the batch,
    # and over 3 samples two near-equal values (a tiny variance) amplified the float64 rounding
    # past the tolerance in ~1 run of 1000 (3 of 3000 seeds); 0 of 3000 over 5
    "splat-r4-g2-bn": ("split_attn.SplitAttn", (8,), dict(radix=4, groups=2, norm_layer=nn.BatchNorm2d), (5, 8, 7, 7)),
    "splat-r2-plain-rd": ("split_attn.SplitAttn", (6, 10), dict(rd_channels=4, bias=True), (2, 6, 3, 5)),
    "sk-default": ("selective_kernel.SelectiveKernel", (12,), {}, (4, 12, 3, 5)),
    "sk-3paths-nosplit": ("selective_kernel.SelectiveKernel", (6, 10),
                          dict(kernel_size=[3, 5, 7], split_input=False, groups=2, rd_channels=8), (3, 6, 3, 5)),
}
TWINS = {"SplitAttn": split_attention.SplitAttn, "SelectiveKernel": split_attention.SelectiveKernel,
         "SelectiveKernelAttn": split_attention.SelectiveKernelAttn}


def randomize(module: nn.Module) -> nn.Module:
    """Fresh weights (std 0.3) and BatchNorm statistics, in float64."""
    module = module.to(DEVICE, torch.float64)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.add_(1.0)
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return module


def build_peer_and_twin(case: str) -> tuple[nn.Module, nn.Module]:
    """(timm's module, the twin), the same random weights loaded with strict=True both ways."""
    path, args, kwargs, _ = MODULE_CASES[case]
    module_name, class_name = path.split(".")
    peer = randomize(getattr(getattr(timm_layers(), module_name), class_name)(*args, **kwargs))
    twin = TWINS[class_name](*args, **kwargs).to(DEVICE, torch.float64)
    assert twin.load_state_dict(peer.state_dict(), strict=True)
    assert peer.load_state_dict(twin.state_dict(), strict=True)
    return peer, twin


def output_shape(module: nn.Module, x: torch.Tensor) -> torch.Size:
    """The shape of module(x), from a copy (a training forward would move the BatchNorms' statistics)."""
    with torch.no_grad():
        return copy.deepcopy(module)(x).shape


def assert_steps_close(got: dict, ref: dict, what: str) -> None:
    """Float64 comparison; every parameter gradient is measured against the largest one at least
    (one that cancels to ~0 as a whole — a bias feeding a BatchNorm in training — keeps the
    rounding error of its terms, which are of that size)."""
    assert got.keys() == ref.keys(), what
    grads = [ref[k].abs().max().item() for k in ref if k.startswith("grad ") and ref[k].numel()]
    floor = max(grads, default=0.0)
    for key in ref:
        if key.startswith("buffer") and not ref[key].is_floating_point():
            assert torch.equal(got[key].cpu(), ref[key].cpu()), f"{what}: {key}"
        else:
            scale = ref[key].abs().max().item() if ref[key].numel() else None
            if key.startswith("grad ") and scale is not None:
                scale = max(scale, floor)
            assert_close(got[key], ref[key], torch.float64, what=f"{what}: {key}", scale=scale)


@pytest.mark.parametrize("case", list(MODULE_CASES))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_twin_matches_timm(case, mode, channels_last):
    peer, twin = build_peer_and_twin(case)
    peer.train(mode == "train"), twin.train(mode == "train")
    shape = MODULE_CASES[case][3]
    if mode == "eval":
        shape = (1, *shape[1:])  # batch 1 (a BatchNorm in training needs more than one value)
    x = make_input(shape, torch.float64, channels_last)
    cotangent = torch.randn(output_shape(peer, x), dtype=torch.float64, device=DEVICE)
    got = training_step(twin, x, cotangent)
    assert_steps_close(got, training_step(peer, x, cotangent), f"{case} {mode}")
    assert_same_layout(got["grad_x"], x)


def test_selective_kernel_attn_matches_timm(channels_last):
    peer = randomize(timm_layers().selective_kernel.SelectiveKernelAttn(10, num_paths=3, attn_channels=8))
    twin = split_attention.SelectiveKernelAttn(10, num_paths=3, attn_channels=8).to(DEVICE, torch.float64)
    twin.load_state_dict(peer.state_dict(), strict=True)
    paths = [make_input((3, 10, 3, 5), torch.float64, channels_last) for _ in range(3)]
    x5 = torch.stack(paths, dim=1)
    cotangent = torch.randn(3, 3, 10, 1, 1, dtype=torch.float64, device=DEVICE)
    for mode in (True, False):
        peer.train(mode), twin.train(mode)
        got, ref = training_step(twin, x5, cotangent), training_step(peer, x5, cotangent)
        assert got["y"].shape == (3, 3, 10, 1, 1)
        assert_steps_close(got, ref, f"SelectiveKernelAttn train={mode}")


@pytest.mark.parametrize("case, reclass_attn", [("splat-r4-g2-bn", False), ("sk-default", False), ("sk-default", True)],
                         ids=["splat", "sk", "sk-and-attn"])
def test_reclassed_timm_module_gives_timms_results(case, reclass_attn):
    peer, _ = build_peer_and_twin(case)
    original = copy.deepcopy(peer)
    peer.__class__ = TWINS[type(peer).__name__]
    if reclass_attn:
        peer.attn.__class__ = split_attention.SelectiveKernelAttn
    shape = MODULE_CASES[case][3]
    x = make_input(shape, torch.float64, channels_last=True)
    cotangent = torch.randn(output_shape(original, x), dtype=torch.float64, device=DEVICE)
    peer.train(), original.train()
    assert_steps_close(training_step(peer, x, cotangent), training_step(original, x, cotangent), f"re-classed {case}")
    peer.eval(), original.eval()
    with torch.no_grad():
        assert_close(peer(x), original(x), torch.float64, what=f"re-classed {case} in eval")


@pytest.mark.parametrize("case", ["splat-r2-bn", "sk-3paths-nosplit"])
def test_reference_matches_timm(case):
    """The reference classes themselves: timm's keys, shapes and numbers (pure torch)."""
    path, args, kwargs, shape = MODULE_CASES[case]
    peer, _ = build_peer_and_twin(case)
    ref = getattr(reference, path.split(".")[1])(*args, **kwargs).to(DEVICE, torch.float64)
    ref.load_state_dict(peer.state_dict(), strict=True)
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in peer.state_dict().items()}
    x = make_input(shape, torch.float64)
    cotangent = torch.randn(output_shape(peer, x), dtype=torch.float64, device=DEVICE)
    for mode in (True, False):
        peer.train(mode), ref.train(mode)
        assert_steps_close(training_step(ref, x, cotangent), training_step(peer, x, cotangent), f"reference {case}")


def test_twin_training_step_is_deterministic():
    _, twin = build_peer_and_twin("sk-3paths-nosplit")
    twin = twin.float().train()
    x = make_input((3, 6, 7, 7), torch.float32, channels_last=True)
    cotangent = torch.randn(3, 10, 7, 7, device=DEVICE)
    runs = [training_step(copy.deepcopy(twin), x, cotangent) for _ in range(2)]
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key


def test_twin_in_low_precision_is_close_to_float64():
    """float32 SplitAttn in eval against its float64 self (its MLP is torch in both)."""
    peer, twin = build_peer_and_twin("splat-r2-bn")
    twin.eval()
    x = make_input((2, 12, 7, 7), torch.float32, channels_last=True)
    with torch.no_grad():
        y32, y64 = copy.deepcopy(twin).float()(x), twin(x.double())
    assert_close(y32, y64, torch.float32, what="float32 SplitAttn", scale=y64.abs().max().item() * 10)


def test_module_errors_are_clear():
    splat = split_attention.SplitAttn(12, radix=2)
    with pytest.raises(ValueError, match="SplitAttn was built for 12 channels but x has 8"):
        splat(torch.randn(2, 8, 3, 3))
    with pytest.raises(ValueError, match=r"x must be 4-D \[B, C, H, W\]"):
        splat(torch.randn(12, 3, 3))
    sk = split_attention.SelectiveKernel(12)
    with pytest.raises(ValueError, match="SelectiveKernel was built for 12 channels but x has 6"):
        sk(torch.randn(2, 6, 3, 3))
    attn = split_attention.SelectiveKernelAttn(12, num_paths=2, attn_channels=8)
    with pytest.raises(ValueError, match="built for 2 paths but x has 3"):
        attn(torch.randn(2, 3, 12, 3, 3))
    with pytest.raises(ValueError, match="built for 12 channels but x has 10"):
        attn(torch.randn(2, 2, 10, 3, 3))
    with pytest.raises(ValueError, match=r"x must be 5-D"):
        attn(torch.randn(2, 12, 3, 3))
    with pytest.raises(ValueError, match="aa_layer"):
        reference.SelectiveKernel(12, stride=2, aa_layer=nn.AvgPool2d)
    with pytest.raises(ValueError, match="norm_layer"):
        reference.SelectiveKernel(12, norm_layer=nn.GroupNorm)
    # at stride 1 timm ignores aa_layer: so does the reference
    assert reference.SelectiveKernel(12, aa_layer=nn.AvgPool2d).state_dict().keys() == reference.SelectiveKernel(12).state_dict().keys()


def test_eager_fallback_matches_the_kernels(monkeypatch):
    """Under tritattn.disabled() the ops run their eager torch fallback: the same numbers."""
    import tritattn

    x5 = make_input((2, 2, 6, 3, 5), torch.float32, requires_grad=True)
    a = make_input((2, 2, 6), torch.float32, requires_grad=True)
    g = make_input((2, 6, 3, 5), torch.float32)

    def run():
        pooled, out = radix_pool(x5), radix_combine(x5, a)
        return (pooled, out, *torch.autograd.grad(out, (x5, a), g))

    assert (radix_block._impl(x5) is eager_ops) == (expected_backend() == "torch")
    kernels = run()
    with tritattn.disabled():
        assert radix_block._impl(x5) is eager_ops
        eager = run()
    for k, e, what in zip(kernels, eager, ("pooled", "out", "grad_x", "grad_a")):
        assert_close(k, e.double(), torch.float32, what=what, scale=dot_scale(g, x5) if what == "grad_a" else None)


# --- inference: the squeeze and the attention MLP in one kernel (radix_attention) ------------------

#: the kernels of the inference pass, and of the per-op path's SplitAttn (SelectiveKernel's
#: reference attn pools in torch: radix_combine_fwd alone)
FUSED = ["radix_squeeze_attend_fwd", "radix_combine_fwd"]
PER_OP = ["radix_pool_fwd", "radix_combine_fwd"]


def on_kernels() -> bool:
    return expected_backend() != "torch"


@pytest.fixture
def launched(monkeypatch):
    """The names of the kernels launched through tritattn's tuners, in order."""
    from tritattn import tuning

    names = []
    real_launch = tuning.Tuner.launch

    def recording_launch(self, *args, **kwargs):
        names.append(self.name)
        return real_launch(self, *args, **kwargs)

    monkeypatch.setattr(tuning.Tuner, "launch", recording_launch)
    return names


def inference_input(case: str, channels_last: bool, batch: int = 2) -> torch.Tensor:
    return make_input((batch, *MODULE_CASES[case][3][1:]), torch.float64, channels_last)


@pytest.mark.parametrize("case", list(MODULE_CASES))
def test_inference_is_two_kernels_and_matches_timm(case, channels_last, launched, launched_counters):
    """Eval, no grad: radix_squeeze_attend_fwd + radix_combine_fwd, timm's numbers in float64, the
    branches' layout, the counters left at 0 (a second run gives the same bits)."""
    peer, twin = build_peer_and_twin(case)
    peer.eval(), twin.eval()
    x = inference_input(case, channels_last)
    with torch.no_grad():
        ref = peer(x)
        launched.clear()
        y = twin(x)
        assert launched == (FUSED if on_kernels() else [])
        again = twin(x)
        refusal = twin.attention_refusal(x)
    assert refusal is None if on_kernels() else "no Triton kernels" in refusal
    assert twin.attention_refusal() is None
    assert_close(y, ref, torch.float64, what=f"{case} inference")
    assert torch.equal(y, again) and counters_reset(launched_counters)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def reference_attention(peer: nn.Module, x5: torch.Tensor) -> torch.Tensor:
    """Σ_r a · x5 with a from timm's own attention layers (float64 x5 and peer)."""
    B, R, C = x5.shape[:3]
    if hasattr(peer, "rsoftmax"):
        v = x5.sum(1).mean((2, 3), keepdim=True)
        a = peer.rsoftmax(peer.fc2(peer.act1(peer.bn1(peer.fc1(v)))))
    else:
        a = peer.attn(x5)
    return (x5 * a.reshape(B, R, C)[..., None, None]).sum(1)


@pytest.mark.parametrize("case", ["splat-r4-g2-bn", "splat-r1-g4-bn", "sk-3paths-nosplit"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_radix_attention_op_in_low_precision(case, dtype):
    """The op on branches and weights in float32 / bfloat16 against timm's layers in float64 on the
    same (rounded) values: one rounding of the output (the attention stays in float32)."""
    peer, twin = build_peer_and_twin(case)
    peer.eval(), twin.eval()
    twin.to(dtype)
    peer.to(dtype).double()  # the rounded weights and statistics, in float64
    R = twin.radix if hasattr(twin, "radix") else twin.attn.num_paths
    C = twin.fc1.in_channels if hasattr(twin, "fc1") else twin.attn.fc_reduce.in_channels
    layout = "stacked_channels_last" if case.startswith("sk") else "split_channels_last"
    x5 = branches(R, (2, C, 3, 5), dtype, layout)[1].detach()
    with torch.no_grad():
        out = radix_block.radix_attention(x5, *twin.attention_weights())
        ref = reference_attention(peer, x5.double())
    assert out.dtype == dtype
    assert_close(out, ref, what=f"{case} radix_attention {dtype}")


def test_inference_with_tiny_tiles(monkeypatch, launched, launched_counters):
    """Several channel blocks per sample (the ticket), ragged K and MLP tiles, one channel per MLP step."""
    from tritattn.kernels import excitation

    use_small_tiles(monkeypatch)
    monkeypatch.setattr(excitation, "MLP_TILE_ELEMENTS", 8)
    for case in ("splat-r4-g2-bn", "sk-3paths-nosplit"):
        peer, twin = build_peer_and_twin(case)
        peer.eval(), twin.eval()
        x = inference_input(case, channels_last=True, batch=3)
        with torch.no_grad():
            launched.clear()
            y = twin(x)
            assert launched == (FUSED if on_kernels() else [])
            assert_close(y, peer(x), torch.float64, what=f"{case} tiny tiles")
            assert torch.equal(twin(x), y) and counters_reset(launched_counters)


def _gelu(peer, twin):
    for m in (peer, twin):
        m.act1 = nn.GELU()


def _hook(peer, twin):
    calls = []
    for m in (peer, twin):
        m.attn.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    return calls


#: refusal → (case, training mode, grad mode, module edit, what attention_refusal says)
REFUSALS = {
    "training": ("splat-r2-bn", True, False, None, "training mode"),
    "grad-enabled": ("sk-default", False, True, None, "a gradient is needed"),
    "hooked-sk-attn": ("sk-3paths-nosplit", False, False, _hook, "hooks on attn"),
    "gelu": ("splat-r4-g2-bn", False, False, _gelu, "GELU has no kernel"),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_refused_blocks_take_the_per_op_path(refusal, launched):
    case, training, grad, edit, reason = REFUSALS[refusal]
    peer, twin = build_peer_and_twin(case)
    peer.train(training), twin.train(training)
    calls = edit(peer, twin) if edit is not None else None
    x = inference_input(case, channels_last=True)
    with torch.set_grad_enabled(grad):
        ref = peer(x)
        launched.clear()
        y = twin(x)
    if on_kernels():
        assert "radix_squeeze_attend_fwd" not in launched and launched[-1] == "radix_combine_fwd"
        assert launched == PER_OP or case.startswith("sk")
    with torch.set_grad_enabled(grad):
        said = twin.attention_refusal(x)
    assert reason in said or (not on_kernels() and "no Triton kernels" in said), said
    assert_close(y, ref, torch.float64, what=f"{case} refused ({refusal})")
    if calls is not None:
        assert len(calls) == 2  # the hook ran in both modules


def test_refusal_reasons():
    from tritattn import excitation_block

    splat = split_attention.SplitAttn(8, radix=2, norm_layer=nn.BatchNorm2d).eval()
    assert splat.attention_refusal() is None
    splat.bn1 = nn.BatchNorm2d(splat.fc1.out_channels, track_running_stats=False).eval()
    assert "running statistics" in splat.attention_refusal()
    splat.bn1 = nn.LayerNorm(1)
    assert "LayerNorm" in splat.attention_refusal()
    plain = split_attention.SplitAttn(8, radix=2)
    assert plain.attention_refusal() is None  # bn1 is an Identity
    limit = excitation_block.MAX_HIDDEN
    try:
        excitation_block.MAX_HIDDEN = plain.fc1.out_channels - 1
        assert "hidden width" in plain.attention_refusal()
    finally:
        excitation_block.MAX_HIDDEN = limit
    sk = split_attention.SelectiveKernel(12).eval()
    assert sk.attention_refusal() is None
    sk.attn.act = nn.SiLU()
    assert sk.attention_refusal() is None
    sk.attn.fc_select.register_forward_pre_hook(lambda module, args: None)
    assert "hooks on the attention MLP" in sk.attention_refusal()
    sk.attn = nn.Identity()
    assert "not timm's SelectiveKernelAttn" in sk.attention_refusal()
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    assert "gradient" in plain.attention_refusal(x) or not on_kernels()
    with torch.no_grad():
        assert (plain.attention_refusal(x) is None) == on_kernels()


def test_radix_attention_is_inference_only_and_checks_its_inputs():
    _, twin = build_peer_and_twin("splat-r2-bn")
    twin.eval()
    w1, b1, norm, w2, b2, act = twin.attention_weights()
    x5 = make_input((2, 2, 12, 3, 3), torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference-only"):
        radix_block.radix_attention(x5, w1, b1, norm, w2, b2, act)
    out = torch.ops.tritattn.radix_attention(x5, w1, b1, *norm, w2, b2, act)
    with pytest.raises(RuntimeError, match="inference-only"):
        out.sum().backward()
    with torch.no_grad():
        assert radix_block.radix_attention(x5, w1, b1, norm, w2, b2, act).shape == (2, 12, 3, 3)
        empty = radix_block.radix_attention(x5[:0], w1, b1, norm, w2, b2, act)
        assert empty.shape == (0, 12, 3, 3)
        with pytest.raises(ValueError, match="act must be one of"):
            radix_block.radix_attention(x5, w1, b1, norm, w2, b2, "gelu")
        with pytest.raises(ValueError, match=r"w2 must have shape \(24, 32\)"):
            radix_block.radix_attention(x5, w1, b1, norm, w2[:12], b2, act)
        with pytest.raises(ValueError, match=r"norm\[2\] must have shape \(32,\)"):
            radix_block.radix_attention(x5, w1, b1, (*norm[:2], norm[2][:4], *norm[3:]), w2, b2, act)


def test_dense_weights_and_logit_order():
    """Grouped 1×1 convs expanded exactly; timm's (cardinality, radix, C/k) logits put in (radix, channel) order."""
    conv = nn.Conv2d(8, 6, 1, groups=2)
    dense = radix_block.dense_pointwise(conv.weight, conv.groups)
    v = torch.randn(3, 8)
    assert torch.allclose(dense @ v.T + conv.bias[:, None], conv(v[:, :, None, None]).flatten(1).T, atol=1e-6)
    assert (dense[:3, 4:] == 0).all() and (dense[3:, :4] == 0).all()
    rsoftmax = reference.RadixSoftmax(radix=3, cardinality=2)
    logits = torch.randn(4, 3 * 2 * 5)
    w = torch.eye(30)
    w_perm, b_perm = radix_block.radix_logit_order(w, torch.arange(30.0), radix=3, cardinality=2)
    z = (logits @ w_perm.T).view(4, 3, 10)
    assert torch.equal(z.softmax(1).reshape(4, -1), rsoftmax(logits))
    assert torch.equal(b_perm, torch.arange(30.0).view(2, 3, 5).transpose(0, 1).reshape(-1))


# --- inference: SplitAttn's bn0 and act0 inside the two kernels (the prologue) ---------------------

#: SplitAttn cases whose bn0 is a BatchNorm2d (the prologue's)
PROLOGUE_CASES = ["splat-r2-bn", "splat-r1-g4-bn", "splat-r4-g2-bn", "sk-default", "sk-3paths-nosplit"]


def norm_act_ops(names: list[str]) -> list[str]:
    """The BatchNorm and ReLU operators among ``names``."""
    return [n for n in names if "batch_norm" in n or "relu" in n or "threshold" in n]


def run_with_ops(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    with AtenOps() as ops:
        y = module(x)
    return y, ops.names


@pytest.mark.parametrize("case", PROLOGUE_CASES)
def test_inference_runs_bn0_and_act0_inside_the_kernels(case, channels_last, launched, launched_counters):
    """Eval, no grad, randomized bn0: only the conv runs in torch (no aten batch_norm or relu),
    then radix_squeeze_attend_fwd + radix_combine_fwd on the conv output; timm's numbers in float64."""
    peer, twin = build_peer_and_twin(case)
    peer.eval(), twin.eval()
    x = inference_input(case, channels_last)
    with torch.no_grad():
        ref = peer(x)
        launched.clear()
        y, names = run_with_ops(twin, x)
        refusal = twin.prologue_refusal(x)
    assert refusal is None and twin.prologue_refusal() is None
    if on_kernels():
        assert launched == FUSED
        assert norm_act_ops(names) == [], names
        assert "aten.convolution" in names and "tritattn.radix_attention" in names
    else:
        assert launched == []  # the torch backend: today's per-op path (attention_refusal: no Triton kernels)
    assert_close(y, ref, torch.float64, what=f"{case} inference with bn0 and act0 in the kernels")
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert counters_reset(launched_counters)


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval BatchNorm as c · scale + shift [R·C, 1, 1], in float64."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return scale[:, None, None], (bn.bias.double() - bn.running_mean.double() * scale)[:, None, None]


def prologue_reference(peer: nn.Module, c: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """timm's block after its conv, in float64 (peer holds the dtype-rounded weights in float64) on
    the conv output c: z = bn0(c) and x = relu(z) rounded to ``dtype`` where eager writes them."""
    scale, shift = bn_scale_shift(peer.bn0)
    z = (c.double() * scale + shift).to(dtype).double()
    x = torch.relu(z)
    B, RC, H, W = x.shape
    return reference_attention(peer, x.view(B, peer.radix, RC // peer.radix, H, W))


@pytest.mark.parametrize("case", ["splat-r2-bn", "splat-r4-g2-bn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_prologue_in_low_precision(case, dtype, channels_last, launched):
    """The twin in float32 / bfloat16 against timm's layers in float64 on the twin's own conv output
    (the same rounded weights and statistics), z and x rounded where eager writes them; inputs are
    redrawn while bn0's output has an element within reach of the ReLU's kink (a forward is
    continuous there, but the element's two roundings would then be luck)."""
    peer, twin = build_peer_and_twin(case)
    peer.eval(), twin.eval()
    twin.to(dtype)
    peer.to(dtype).double()
    scale, shift = bn_scale_shift(peer.bn0)
    with torch.no_grad():
        for _ in range(20):
            x = make_input((2, *MODULE_CASES[case][3][1:]), dtype, channels_last)
            c = twin.conv(x).double()
            if not relu_kink_near(c * scale + shift, (c * scale).abs() + shift.abs()).any():
                break
        else:
            raise AssertionError("no input kept bn0's output off the ReLU's kink")
        launched.clear()
        y = twin(x)
        ref = prologue_reference(peer, twin.conv(x), dtype)
        assert twin.prologue_refusal(x) is None
    assert launched == (FUSED if on_kernels() else [])
    assert y.dtype == dtype
    assert_close(y, ref, what=f"{case} {dtype} with bn0 and act0 in the kernels")


def _act0_hook(peer, twin):
    calls = []
    for m in (peer, twin):
        m.act0.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    return calls


def _act0_silu(peer, twin):
    for m in (peer, twin):
        m.act0 = nn.SiLU()


def _bn0_training(peer, twin):
    for m in (peer, twin):
        m.bn0.train()


#: refusal → (module edit, what prologue_refusal says): the attention still runs in the two kernels
PROLOGUE_REFUSALS = {
    "hooked-act0": (_act0_hook, "hooks on act0"),
    "act0-silu": (_act0_silu, "act0 is a SiLU"),
    "bn0-training": (_bn0_training, "bn0 is in training mode"),
}


@pytest.mark.parametrize("refusal", list(PROLOGUE_REFUSALS))
def test_refused_prologue_runs_bn0_and_act0_as_modules(refusal, launched):
    edit, reason = PROLOGUE_REFUSALS[refusal]
    peer, twin = build_peer_and_twin("splat-r2-bn")
    peer.eval(), twin.eval()
    calls = edit(peer, twin)
    x = inference_input("splat-r2-bn", channels_last=True)
    with torch.no_grad():
        ref = peer(x)
        launched.clear()
        y, names = run_with_ops(twin, x)
        said = twin.prologue_refusal(x)
    assert reason in said, said
    assert any("batch_norm" in n for n in names), names
    assert launched == (FUSED if on_kernels() else [])
    assert_close(y, ref, torch.float64, what=f"prologue refused ({refusal})")
    for (name, got), expected in zip(twin.state_dict().items(), peer.state_dict().values()):
        assert torch.equal(got, expected), name  # bn0 in training: the same running statistics
    if calls is not None:
        assert len(calls) == 2  # the hook ran in both modules


def test_prologue_refusal_reasons():
    splat = split_attention.SplitAttn(8, radix=2, norm_layer=nn.BatchNorm2d).eval()
    assert splat.prologue_refusal() is None
    assert "Identity" in split_attention.SplitAttn(8, radix=2).prologue_refusal()  # no norm_layer: bn0 is an Identity
    x = torch.randn(2, 8, 3, 3)
    assert "a gradient is needed" in splat.prologue_refusal(x)  # bn0's parameters require grad
    with torch.no_grad():
        assert splat.prologue_refusal(x) is None
    splat.bn0.weight.requires_grad_(False), splat.bn0.bias.requires_grad_(False)
    assert splat.prologue_refusal(x) is None
    splat.drop = nn.Dropout(0.1)
    assert "drop is a Dropout" in splat.prologue_refusal()
    splat.drop = nn.Identity()
    splat.drop.register_forward_pre_hook(lambda module, args: None)
    assert "hooks on drop" in splat.prologue_refusal()
    splat.drop = nn.Identity()
    splat.bn0 = nn.BatchNorm2d(16, track_running_stats=False).eval()
    assert "running statistics" in splat.prologue_refusal()
    splat.bn0 = nn.BatchNorm2d(16, affine=False).eval()
    assert "affine" in splat.prologue_refusal()
    splat.bn0 = nn.GroupNorm(2, 16)
    assert "GroupNorm" in splat.prologue_refusal()
    splat.bn0 = timm_layers().norm_act.BatchNormAct2d(16).eval()  # act: ReLU inside the norm
    assert "BatchNormAct2d" in splat.prologue_refusal()
    splat.bn0 = timm_layers().norm_act.BatchNormAct2d(16, apply_act=False).eval()
    assert splat.prologue_refusal() is None
    splat.act0 = nn.ReLU6()
    assert "act0 is a ReLU6" in splat.prologue_refusal()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_radix_attention_op_with_a_prologue(dtype, monkeypatch):
    """The op with a prologue (R = 4, several channel blocks and ragged tiles) against the math in
    float64 on both backends, and the kernels against the eager fallback (tritattn.disabled())."""
    import tritattn

    use_small_tiles(monkeypatch)
    peer, twin = build_peer_and_twin("splat-r4-g2-bn")
    peer.eval(), twin.eval()
    twin.to(dtype)
    peer.to(dtype).double()
    scale, shift = bn_scale_shift(peer.bn0)
    for _ in range(20):
        c = make_input((3, 32, 3, 5), dtype, channels_last=True)
        if not relu_kink_near(c.double() * scale + shift, (c.double() * scale).abs() + shift.abs()).any():
            break
    c5 = c.view(3, 4, 8, 3, 5)
    with torch.no_grad():
        out = radix_block.radix_attention(c5, *twin.attention_weights(), prologue=twin.prologue_args())
        with tritattn.disabled():
            eager = radix_block.radix_attention(c5, *twin.attention_weights(), prologue=twin.prologue_args())
        ref = prologue_reference(peer, c, dtype)
    assert out.dtype == eager.dtype == dtype
    assert_close(out, ref, what=f"radix_attention with a prologue ({dtype})")
    assert_close(eager, ref, what=f"radix_attention's eager fallback with a prologue ({dtype})")
    assert_close(out, eager.double(), dtype, what="kernels against the eager fallback")
    assert out.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="prologue's activation must be one of"):
        radix_block.radix_attention(c5, *twin.attention_weights(), prologue=("gelu", None))
    with pytest.raises(ValueError, match=r"prologue norm\[0\] must have shape \(32,\)"):
        bn = twin.prologue_args()[1]
        radix_block.radix_attention(c5, *twin.attention_weights(), prologue=("relu", (bn[0][:8], *bn[1:])))


def test_selective_kernel_prologue_refusals(launched):
    """A hooked path activation, a path BatchNorm in training, a path activation other than ReLU:
    each refused with its reason, and the block (its paths as modules) still gives timm's numbers."""
    peer, twin = build_peer_and_twin("sk-default")
    peer.eval(), twin.eval()
    x = inference_input("sk-default", False)
    calls = []

    def hooked(t):
        t.paths[0].bn.act.register_forward_hook(lambda *_: calls.append("act"))

    def training(t):
        t.paths[1].bn.train()

    def silu(t):
        t.paths[0].bn.act = nn.SiLU()

    for name, change, reason in (("hook", hooked, "hooks"), ("train", training, "training"), ("silu", silu, "ReLU")):
        p, t = copy.deepcopy(peer), copy.deepcopy(twin)
        change(p), change(t)
        calls.clear()
        with torch.no_grad():
            assert reason in t.prologue_refusal(x), name
            y, ref = t(x), p(x)
        assert_close(y, ref, torch.float64, what=f"sk refused prologue ({name})")
        if name == "hook":
            assert calls == ["act", "act"], calls  # the twin's and timm's forward each ran the hooked module


# --- the path of radix_attention: one-launch (the MLP in the squeeze's last program) or split ------


@pytest.mark.skipif(not on_kernels(), reason="the torch backend has one path: the eager formulas")
@pytest.mark.parametrize("case", list(MODULE_CASES))
def test_split_path_matches_timm(case, channels_last, launched, launched_counters):
    """The split path forced: the squeeze kernel pools only (no ticket), the MLP and the radix
    softmax run as GEMMs over all samples, then the combine; timm's numbers in float64, the
    branches' layout, bitwise repeatable."""
    from tritattn import paths

    peer, twin = build_peer_and_twin(case)
    peer.eval(), twin.eval()
    x = inference_input(case, channels_last, batch=3)
    with torch.no_grad(), paths.forced("split"):
        ref = peer(x)
        launched.clear()
        y = twin(x)
        assert launched == FUSED
        again = twin(x)
    assert_close(y, ref, torch.float64, what=f"{case} split path")
    assert torch.equal(y, again) and not launched_counters  # no launcher with tickets ran
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _radix_shape(R: int, C: int, K: int, rd: int, B: int = 8, norm: bool = True):
    from tritattn.radix_cost import RadixShape

    return RadixShape(B, R, C, K, 4, False, rd, "relu", True, True, norm, False, True)


@pytest.mark.parametrize("R, C, K, rd, path", [(2, 64, 56 * 56, 32, "one-launch"), (2, 128, 28 * 28, 64, "one-launch"),
                                               (2, 512, 7 * 7, 256, "split"), (4, 256, 14 * 14, 256, "split")])
def test_the_model_takes_the_mlp_out_of_the_kernel_where_its_tail_is_long(R, C, K, rd, path):
    """With nothing tuned, the estimate decides: ResNeSt's stage-1 MLP stays in the squeeze's last
    program, a wide one (hundreds of serial weight tiles) runs as GEMMs; the decision says why."""
    from tritattn import cost_model, paths, radix_cost

    shape = _radix_shape(R, C, K, rd)
    paths.forget()
    assert radix_block.attention_path("", shape, torch.device("cpu")) == path
    decision = paths.decision("radix_attention", shape.key())
    assert decision.path == path and decision.reason.startswith("estimate (H100 model)")
    kernel = radix_cost.squeeze(shape, True)
    assert (kernel.longest > cost_model.LONGEST_PER_MEDIAN * kernel.median + cost_model.LONGEST_SLACK) == (path == "split")


@pytest.mark.skipif(not on_kernels(), reason="the count runs the Triton kernels in the interpreter")
@pytest.mark.parametrize("path", ["one-launch", "split"])
@pytest.mark.parametrize("case", ["splat-r4-g2-bn", "sk-3paths-nosplit"])
def test_the_predicted_launches_are_the_counted_ones(path, case, channels_last, monkeypatch):
    """tritattn/radix_cost.py's launches (programs, median and longest program's memory
    instructions) are what the interpreter counts (perf/program_census.py), on both paths, with
    the prologue (the BatchNorm's vectors per branch) and several MLP tiles per sample."""
    import sys
    from pathlib import Path

    from tritattn import paths, radix_cost
    from tritattn.kernels import excitation

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
    from program_census import ProgramCensus, interpreting

    if not interpreting():
        pytest.skip("the count needs Triton's interpreter (TRITON_INTERPRET=1)")
    monkeypatch.setattr(excitation, "MLP_TILE_ELEMENTS", 16)
    peer, twin = build_peer_and_twin(case)
    twin.float().eval()
    x = inference_input(case, channels_last, batch=3).float()
    seen = []
    real = radix_block.attention_shape

    def recording(*args):
        seen.append(real(*args))
        return seen[-1]

    monkeypatch.setattr(radix_block, "attention_shape", recording)
    census = ProgramCensus()
    with torch.no_grad(), paths.forced(path), census:
        twin(x)
    counted = [(c.kernel, c.programs, c.median, c.longest) for c in census.launches() if c.programs][-2:]
    (shape,) = seen
    predicted = [(c.kernel, c.programs, c.median, c.longest) for c in radix_cost.paths(shape)[path] if c.programs]
    assert counted == predicted


def test_tune_measures_both_paths_and_the_winner_is_kept(simulated_gpu, monkeypatch):
    """On the simulated GPU inside tuning.benchmarking() (tritattn.tune's pass): the op times each
    path (here with made-up times: split faster), stores the winner in the user cache, and a new
    process reads it back ("measured (user cache)") instead of estimating."""
    peer, twin = build_peer_and_twin("splat-r2-bn")
    peer.eval(), twin.eval()
    x = inference_input("splat-r2-bn", channels_last=False)
    y, again = split_measured_and_kept(simulated_gpu, monkeypatch, "radix_attention", lambda: twin(x))
    assert torch.equal(y, again)
    with torch.no_grad():
        assert_close(y, peer(x), torch.float64, what="the measured path")


@pytest.mark.skipif(not on_kernels(), reason="the torch backend has one path: the eager formulas")
def test_split_path_keeps_float32_attention_under_autocast():
    """Mixed precision (bfloat16 branches under autocast, float32 weights): the split path's GEMMs
    and softmax run in float32 like the kernel's MLP: the same output as the one-launch path."""
    from tritattn import paths

    R, C, RD = 2, 16, 8
    x5 = branches(R, (2, C, 3, 5), torch.bfloat16, "split_channels_last")[1].detach()
    weights = (torch.randn(RD, C, device=DEVICE), torch.randn(RD, device=DEVICE), None,
               torch.randn(R * C, RD, device=DEVICE), torch.randn(R * C, device=DEVICE), "relu")
    out = {}
    for path in ("one-launch", "split"):
        with torch.autocast(DEVICE, dtype=torch.bfloat16), paths.forced(path), torch.no_grad():
            out[path] = radix_block.radix_attention(x5, *weights)
    assert out["split"].dtype == torch.bfloat16
    assert_close(out["split"], out["one-launch"].double(), what="split under autocast")
    pooled = torch.randn(2, C, device=DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        a = eager_ops.radix_pooled_attention(pooled, R, *weights)
    w1, b1, _, w2, b2, _ = (t.double() if isinstance(t, torch.Tensor) else t for t in weights)
    want = (torch.relu(pooled.double() @ w1.T + b1) @ w2.T + b2).view(2, R, C).softmax(1)
    assert a.dtype == torch.float32
    assert_close(a, want, what="the attention under autocast")


@pytest.mark.parametrize("twin", ["SplitAttn", "SelectiveKernel"])
def test_a_gradient_through_x_takes_the_per_op_path_and_no_grad_the_kernels(twin, monkeypatch):
    """A call with a gradient through x runs the per-op path without building the plan (both
    inference passes refuse it); under no_grad the same x — requires_grad or not — takes the
    inference kernels, its plan built; the results are the reference's either way."""
    block = (split_attention.SplitAttn(8, radix=2, norm_layer=nn.BatchNorm2d) if twin == "SplitAttn"
             else split_attention.SelectiveKernel(8, 8)).to(DEVICE).eval()
    attention, plans = [], []
    real_attention, real_plan = split_attention.radix_attention_unchecked, type(block)._plan
    monkeypatch.setattr(split_attention, "radix_attention_unchecked",
                        lambda *a, **k: attention.append(1) or real_attention(*a, **k))
    monkeypatch.setattr(type(block), "_plan", lambda self: plans.append(1) or real_plan(self))
    x = make_input((2, 8, 5, 3), torch.float32, requires_grad=True)
    y = block(x)
    assert not attention and not plans and y.requires_grad
    with torch.no_grad():
        reference = block.reference_forward(x)
        assert_close(y.detach(), reference, what="per-op")
        got = block(x)
    assert bool(attention) == on_kernels() and plans
    assert_close(got, reference, what="inference kernels")


def test_a_constructed_selective_kernel_takes_the_attention_twin():
    """Built by its constructor (timm's arguments), the twin's attention is the twin too, as
    ``tritattn.convert`` makes a timm SelectiveKernel's; the state_dict keys are timm's."""
    import inspect

    sk = split_attention.SelectiveKernel(12, rd_channels=4)
    assert type(sk.attn) is split_attention.SelectiveKernelAttn
    assert inspect.signature(split_attention.SelectiveKernel) == inspect.signature(reference.SelectiveKernel)
    assert sk.state_dict().keys() == reference.SelectiveKernel(12, rd_channels=4).state_dict().keys()
