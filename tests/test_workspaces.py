"""The ticket counters of the block ops (tritattn/workspaces.py): safe under growth, interruption and CUDA graphs.

A launch whose programs take tickets needs its counter slots at 0 when it starts and nobody
else's launch drawing from them. Checked on every launcher that takes counters (the
``launched_counters`` fixture, tests/fixtures/workspaces.py, records what each launch got):

- every launch starts from zeroed counters and leaves them at 0, at every call site;
- a bigger call after a smaller one never takes the smaller call's counters while something
  still holds them (a CUDA graph holds the address its capture got: the test keeps the tensor);
- a launch interrupted after some of its programs drew tickets (the grid cut short, then an
  exception) leaves nothing to the next call: it starts from zeroed counters and is right;
- on a GPU: a CUDA graph recorded at batch 8, an eager call at batch 64, the graph replayed at 8
  gives eager's numbers.
"""
import pytest
import torch
import torch.nn.functional as F

import tritattn
from conftest import DEVICE, assert_close, expected_backend, make_input, use_small_tiles
from fixtures.workspaces import counter_launchers, counters_reset, launched_counters  # noqa: F401
from tritattn import excitation_block, launch
from tritattn.excitation_block import BlockSpec

pytestmark = pytest.mark.skipif(expected_backend() == "torch", reason="the eager torch backend launches no kernel")

C = 37  # not a power of two; with small tiles several programs (tickets) per sample


def leaf(*shape, lo: float | None = None, grad: bool = False) -> torch.Tensor:
    t = torch.randn(shape, dtype=torch.float64, device=DEVICE) * 0.7 if lo is None else \
        torch.rand(shape, dtype=torch.float64, device=DEVICE) + lo
    return t.requires_grad_(grad)


def mlp_weights(grad: bool = False) -> tuple[torch.Tensor, ...]:
    return tuple(leaf(*s, grad=grad) for s in ((3, C), (3,), (C, 3), (C,)))


def batch_norm() -> tuple:
    """A producer BatchNorm as the prologue takes it: (weight, bias, running mean, running var, eps)."""
    return leaf(C, lo=0.5), leaf(C), leaf(C), leaf(C, lo=0.5), 1e-5


def se_block(x: torch.Tensor, weights: tuple) -> torch.Tensor:
    return excitation_block.excitation(x, BlockSpec("mean", "fc_act_fc", "relu", *weights), "sigmoid")


def se_reference(x: torch.Tensor, weights: tuple) -> torch.Tensor:
    w1, b1, w2, b2 = (w.detach() for w in weights)
    return x * torch.sigmoid(F.linear(F.relu(F.linear(x.mean((2, 3)), w1, b1)), w2, b2))[:, :, None, None]


def prologue_block(c: torch.Tensor, weights: tuple, bn: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    spec = BlockSpec("mean", "fc_act_fc", "relu", *weights)
    return excitation_block.excitation_with_stats(c, spec, "sigmoid", prologue=("silu", bn), batch_stats=True)


def prologue_reference(c: torch.Tensor, weights: tuple, bn: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    weight, bias, _, _, eps = bn
    mean, var = c.mean((0, 2, 3)), c.var((0, 2, 3), unbiased=False)
    x = F.silu((c - mean[:, None, None]) / torch.sqrt(var[:, None, None] + eps) * weight[:, None, None] + bias[:, None, None])
    return se_reference(x, weights), torch.stack([mean, var, c.var((0, 2, 3), unbiased=True)])


# --- every launch starts from zeroed counters and leaves them at 0 ---------------------------------


def run_se_training():
    x, residual = make_input((3, C, 3, 5), torch.float32, True, requires_grad=True), make_input((3, C, 3, 5), torch.float32)
    weights = tuple(w.float() for w in mlp_weights())
    y = excitation_block.excitation(x, BlockSpec("mean_max_both", "fc_act_fc", "relu", *weights), "sigmoid", residual, "relu")
    torch.autograd.grad(y, x, torch.randn_like(y))


def run_prologue_training():
    c = make_input((3, C, 3, 5), torch.float64, requires_grad=True)
    y, _ = prologue_block(c, mlp_weights(), batch_norm())
    torch.autograd.grad(y, c, torch.randn_like(y))


def run_cbam_training():
    block = tritattn.CbamModule(12, rd_ratio=0.25).to(DEVICE).train()
    x = make_input((2, 12, 3, 5), torch.float32, requires_grad=True)
    block(x).sum().backward()


def run_split_attention_inference():
    block = tritattn.SplitAttn(6, 12, radix=2).to(DEVICE).eval()
    with torch.no_grad():
        block(make_input((2, 6, 3, 5), torch.float32))


def run_global_context_inference():
    block = tritattn.GlobalContext(12, fuse_add=True, fuse_scale=True).to(DEVICE).eval()
    with torch.no_grad():
        block(make_input((2, 12, 3, 5), torch.float32))


#: a call site of each launcher with counters → (the run, the launchers it must reach)
CALL_SITES = {
    "se block": (run_se_training, {"squeeze_excite_fwd", "excitation_bwd_reduce"}),
    "prologue batch statistics": (run_prologue_training, {"batch_stats_fwd", "squeeze_excite_fwd", "excitation_bwd_reduce"}),
    "cbam": (run_cbam_training, {"squeeze_excite_fwd", "cbam_spatial_forward", "cbam_spatial_backward", "excitation_bwd_reduce"}),
    "split attention": (run_split_attention_inference, {"radix_squeeze_attend_fwd"}),
    "global context": (run_global_context_inference, {"global_context_fwd"}),
}


def test_the_call_sites_reach_every_launcher_with_counters():
    assert set().union(*(names for _, names in CALL_SITES.values())) == set(counter_launchers())


@pytest.mark.parametrize("site", list(CALL_SITES))
def test_every_launch_starts_from_zeroed_counters_and_leaves_them_at_zero(site, launched_counters, monkeypatch):
    use_small_tiles(monkeypatch)  # several programs per sample and per channel block
    run, names = CALL_SITES[site]
    run()
    assert {u.launcher for u in launched_counters} == names
    assert counters_reset(launched_counters), [(u.launcher, u.zero_before, u.zero_after) for u in launched_counters]


# --- growth: a later call never takes counters a graph may hold -------------------------------------


def test_a_bigger_call_never_takes_the_counters_a_smaller_call_holds(launched_counters):
    """The counters of a batch-2 call are kept (as a CUDA graph captured at batch 2 keeps their
    address); later calls at batch 3 and at batch 70 (more slots than any earlier call needed)
    must get other memory, and leave the kept counters at 0."""
    weights = mlp_weights()
    x = make_input((2, C, 1, 1), torch.float64)
    assert_close(se_block(x, weights), se_reference(x, weights), what="batch 2")
    held = [u.counter for u in launched_counters]
    assert held
    del launched_counters[:]
    for batch in (3, 70):
        x = make_input((batch, C, 1, 1), torch.float64)
        assert_close(se_block(x, weights), se_reference(x, weights), what=f"batch {batch}")
    for use in launched_counters:
        for kept in held:
            assert not shares_memory(use.counter, kept), f"{use.launcher} took the counters a smaller call holds"
    assert all(not kept.any() for kept in held) and counters_reset(launched_counters)


def shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the bytes a and b span overlap."""
    a0, b0 = a.data_ptr(), b.data_ptr()
    return a0 < b0 + b.numel() * b.element_size() and b0 < a0 + a.numel() * a.element_size()


# --- a launch that raises leaves nothing to the next call ---------------------------------------


class Interrupted(Exception):
    pass


class CutShort:
    """Stands in for a Tuner's kernel: runs the real kernel on all but the last program of its
    grid (as an interrupted launch would: its earlier programs drew tickets, the last never
    did), then raises."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        def launch_all_but_last(*args, **kwargs):
            self.kernel[lambda META: (grid(META)[0] - 1, *grid(META)[1:])](*args, **kwargs)
            raise Interrupted

        return launch_all_but_last


#: launcher with counters → (its Tuner, a call reaching it, the call's float64 reference; both tuples)
INTERRUPTIBLE = {
    "squeeze_excite_fwd": (launch.SQUEEZE_EXCITE_FWD, lambda x, w, bn: (se_block(x, w),), lambda x, w, bn: (se_reference(x, w),)),
    "batch_stats_fwd": (launch.BATCH_STATS_FWD, prologue_block, prologue_reference),
}


@pytest.mark.parametrize("launcher", list(INTERRUPTIBLE))
def test_a_launch_that_raises_leaves_no_dirty_counters_to_the_next_call(launcher, launched_counters, monkeypatch):
    use_small_tiles(monkeypatch)  # several programs per counter slot: cutting the last leaves a slot dirty
    tuner, call, reference = INTERRUPTIBLE[launcher]
    x, weights, bn = make_input((3, C, 3, 5), torch.float64), mlp_weights(), batch_norm()
    with monkeypatch.context() as m:
        m.setattr(tuner, "kernel", CutShort(tuner.kernel))
        with pytest.raises(Interrupted):
            call(x, weights, bn)
    (cut,) = [u for u in launched_counters if u.launcher == launcher]
    assert cut.zero_after is None and cut.counter.any(), "the interrupted launch left tickets drawn"

    del launched_counters[:]
    for _ in range(2):
        for out, ref in zip(call(x, weights, bn), reference(x, weights, bn), strict=True):
            assert_close(out, ref, what=f"after an interrupted {launcher}")
    assert counters_reset(launched_counters)


# --- GPU: a CUDA graph outlives a bigger eager call ------------------------------------------------


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs need a GPU (SKIPPED on CPU: not checked here)")
@pytest.mark.parametrize("capture", ["torch.cuda.graph", "reduce-overhead"])
def test_a_cuda_graph_recorded_at_batch_8_replays_right_after_an_eager_batch_64(capture):
    """Forward and backward of a CBAM block (counters B + 1) and an SE block (counters B) recorded
    at batch 8, an eager call at batch 64 (more counters than the graph's), the graph replayed at
    batch 8 on new inputs: eager's numbers."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(tritattn.CbamModule(24, rd_ratio=0.25), tritattn.SEModule(24)).cuda().train()

    def step(x, forward=model):
        y = forward(x)
        return (y,) + torch.autograd.grad(y, [x, *model.parameters()], torch.ones_like(y))

    def eager(x):
        return step(x.detach().requires_grad_())

    static = torch.randn(8, 24, 7, 7, device="cuda", requires_grad=True)
    if capture == "torch.cuda.graph":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = step(static)

        def replay(x):
            static.data.copy_(x)
            graph.replay()
            return [o.clone() for o in outputs]
    else:
        compiled = torch.compile(model, mode="reduce-overhead")

        def replay(x):
            return [o.clone() for o in step(x.detach().requires_grad_(), compiled)]

        for _ in range(3):
            replay(torch.randn(8, 24, 7, 7, device="cuda"))
    eager(torch.randn(64, 24, 7, 7, device="cuda"))  # a bigger batch in between
    for _ in range(2):
        x = torch.randn(8, 24, 7, 7, device="cuda")
        for got, want in zip(replay(x), eager(x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
