"""The host's work per block call, counted (not timed: timings are flaky on shared CI CPUs;
perf/host_time.py measures the µs).

- a converted block checks its input once per call: ``checks.check_tensor`` (which every tensor
  check goes through) runs once for x, on the block pipeline and on the per-op path, in
  inference and in the training step — the ops below the module trust it;
- after a warm-up call, no problem key is formatted and no default config is built again: the
  tuner's lookups hit their caches (``tuning.problem_key``, ``tuning._default_config``);
- in inference a custom op called through ``tritattn.dispatch.call`` runs its implementation
  without the dispatcher, and goes through the dispatcher wherever something must see it
  (autograd, tracers, dispatch and function modes, functorch, the profiler, meta and fake
  tensors), with the same results either way.
"""
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import tritattn
from tritattn import checks, dispatch, excitation_block, modules, ops, tuning
from conftest import DEVICE, make_input

C, RD, H, W = 12, 3, 3, 5


class CountCalls:
    """Counts the calls of each Python function defined in ``module`` while active (sys.setprofile)."""

    def __init__(self, module) -> None:
        self.filename, self.calls = module.__file__, {}

    def _profile(self, frame, event, arg) -> None:
        if event == "call" and frame.f_code.co_filename == self.filename:
            name = frame.f_code.co_name
            self.calls[name] = self.calls.get(name, 0) + 1

    def __enter__(self) -> "CountCalls":
        self.previous = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc) -> None:
        sys.setprofile(self.previous)


def se_block() -> modules.SEModule:
    return modules.SEModule(C, rd_channels=RD).to(DEVICE)


def one_call(block: torch.nn.Module, x: torch.Tensor, training: bool) -> None:
    if training:
        block.train()
        x = x.detach().requires_grad_(True)
        torch.autograd.grad(block(x), [x, *block.parameters()], torch.randn_like(x))
    else:
        block.eval()
        with torch.no_grad():
            block(x)


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("pipeline", [True, False], ids=["block-pipeline", "per-op"])
def test_a_converted_block_checks_its_input_once_per_call_signature(training, pipeline):
    """Once in a call on a new signature (another batch), and not again in a call on a signature
    met before (modules.KnownCall; tests/test_known_calls.py: a bad input is still refused)."""
    block, x = se_block(), make_input((2, C, H, W), torch.float32)
    with excitation_block.pipelines(pipeline):
        one_call(block, x, training)  # warm-up: one-time warnings, first launches
        with CountCalls(checks) as counted:
            one_call(block, x[:1], training)
        with CountCalls(checks) as counted_again:
            one_call(block, x[:1], training)
    # x, a plain float32 map: check_feature_map's one test, without check_tensor's steps
    assert counted.calls.get("check_feature_map") == 1 and "check_tensor" not in counted.calls, counted.calls
    assert not counted_again.calls, counted_again.calls


def _gcnet():
    return tritattn.GlobalContext(C, fuse_add=True, fuse_scale=True, rd_ratio=0.25), "mlp_kernel_refusal"


def _split_attention():
    from tritattn import split_attention

    return split_attention.SplitAttn(C, radix=2), "attention_refusal"


@pytest.mark.parametrize("make", [_gcnet, _split_attention], ids=["gcnet", "split-attention"])
def test_a_block_on_its_inference_kernels_checks_its_input_once_per_call(make):
    """GCNet's inference call (the context and its MLP in the kernels, then the scale) and
    SplitAttn's (its attention in the two radix kernels): x checked by the module alone, not the
    scale's logits and residual it made, nor its own weights (radix_attention_unchecked)."""
    block, refusal = make()
    block = block.to(DEVICE).eval()
    x = make_input((2, C, H, W), torch.float32)
    with torch.no_grad():
        block(x)  # warm-up
        assert getattr(block, refusal)(x) is None, "the inference kernels run"
        with CountCalls(checks) as counted:
            block(x)
    assert counted.calls.get("check_feature_map") == 1, counted.calls
    assert "check_tensor" not in counted.calls and "check_companion" not in counted.calls, counted.calls


def test_the_functional_ops_still_check_everything():
    """What a user calling the functional API gets: each argument checked (x, s, the residual)."""
    x = make_input((2, C, H, W), torch.float32)
    with CountCalls(checks) as counted:
        tritattn.excite_scale(x, torch.randn(2, C, device=DEVICE), residual=torch.randn_like(x))
    assert counted.calls["check_feature_map"] == 1  # x
    assert counted.calls["check_tensor"] == 2 and counted.calls["check_gate"] == counted.calls["check_act"] == 1  # s, residual
    with pytest.raises(ValueError, match="residual must have shape"):
        tritattn.excite_scale(x, torch.randn(2, C, device=DEVICE), residual=x[:1])


def test_a_block_checks_the_residual_it_is_given():
    """excite(x, residual) on the block pipeline: a residual of another shape is refused up front."""
    block, x = se_block().eval(), make_input((2, C, H, W), torch.float32)
    with torch.no_grad(), pytest.raises(ValueError, match="residual must have shape"):
        block.excite(x, x[:, :1], "relu")


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_no_tuner_lookup_misses_its_cache_after_a_warm_up(training):
    block, x = se_block(), make_input((2, C, H, W), torch.float32)
    one_call(block, x, training)
    keys, defaults = tuning.problem_key.cache_info(), tuning._default_config.cache_info()
    one_call(block, x, training)
    assert tuning.problem_key.cache_info().misses == keys.misses  # no key formatted again (each plan's problem keeps its own)
    assert tuning._default_config.cache_info().misses == defaults.misses
    assert tuning._default_config.cache_info().hits > defaults.hits, "the launches looked their configs up"


def test_problem_keys_are_cached_per_problem_and_the_default_follows_the_heuristic(monkeypatch):
    problem = tuning.Problem(B=3, R=40, K=35, rows_contiguous=False, dtype=torch.float16, flags=(("ACT", "relu"),))
    same = tuning.Problem(B=3, R=40, K=35, rows_contiguous=False, dtype=torch.float16, flags=(("ACT", "relu"),))
    assert problem.key == "R=40,K<=64,B<=4,contig=cols,float16,ACT=relu" and same.key is problem.key
    tuner = tritattn.launch.MEAN_MAX_FWD
    wide = tuner._default(problem)
    monkeypatch.setattr(tritattn.kernels.tiling, "TILE_ELEMENTS", 32)
    narrow = tuner._default(problem)
    assert narrow.kwargs["BLOCK_R"] * narrow.kwargs["BLOCK_K"] <= 32 < wide.kwargs["BLOCK_R"] * wide.kwargs["BLOCK_K"]


def tripwire(*args):
    raise AssertionError("the op went through the dispatcher")


class Passing(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_an_op_skips_the_dispatcher_with_the_same_results(monkeypatch, grad):
    """excite_scale through dispatch.call against the op through the dispatcher: the same output
    and (training) the same gradients of x, s and the residual, bit for bit."""
    x, s, residual = (make_input(shape, torch.float32, requires_grad=grad) for shape in ((2, C, H, W), (2, C), (2, C, H, W)))
    cot = torch.randn(2, C, H, W, device=DEVICE)

    def run(op_call):
        y = op_call(x, s, residual, "sigmoid", "relu")
        return (y, *torch.autograd.grad(y, (x, s, residual), cot)) if grad else (y,)

    through = run(ops.excite_scale._opoverload)
    monkeypatch.setattr(ops.excite_scale, "_opoverload", tripwire)
    direct = run(lambda *args: dispatch.call(ops.excite_scale, *args))
    for a, b in zip(direct, through, strict=True):
        assert torch.equal(a, b)


def test_a_module_call_in_inference_never_meets_the_dispatcher(monkeypatch):
    block, x = se_block().eval(), make_input((2, C, H, W), torch.float32)
    for op in (ops.squeeze, ops.excite_scale):
        monkeypatch.setattr(op, "_opoverload", tripwire)
    with excitation_block.pipelines(False), torch.no_grad():
        block(x)


@pytest.mark.parametrize("scope", ["dispatch-mode", "function-mode", "vmap", "profiler", "meta", "trace"])
def test_the_dispatcher_runs_where_something_must_see_the_op(scope):
    x = make_input((2, C, H, W), torch.float32).to("meta" if scope == "meta" else DEVICE)
    if scope == "dispatch-mode":
        with Passing():
            assert not dispatch.direct(x)
    elif scope == "function-mode":
        with torch.device(x.device):
            assert not dispatch.direct(x)
    elif scope == "vmap":
        seen = []
        torch.vmap(lambda v: (seen.append(dispatch.direct(v)), v.sum())[1])(x)
        assert seen == [False]
    elif scope == "profiler":
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
            assert not dispatch.direct(x)
    elif scope == "trace":
        traced = torch.jit.trace(lambda t: tritattn.squeeze(t), (x,))
        assert "tritattn::squeeze" in str(traced.graph)
    else:
        assert not dispatch.direct(x)
    assert dispatch.direct(x) == (scope != "meta"), "outside the scope"


def test_fake_tensors_go_through_the_dispatcher():
    from torch._subclasses.fake_tensor import FakeTensorMode

    x = make_input((2, C, H, W), torch.float32)
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(x)
        assert not dispatch.direct(fake)
        mean = tritattn.squeeze(fake)
    assert mean.shape == (2, C)


@pytest.mark.parametrize("pass_, batch", [("fwd", 8), ("fwd+bwd", 1), ("fwd+bwd", 8)])
def test_host_time_forces_the_census_shapes_path(pass_, batch):
    """perf/host_time.py times a block at a small proxy shape, whose own estimate may choose
    another path: it forces the path the census shape chooses — the timed call's own choice (a
    training step's, not that of the forward run first for the cotangent's shape), as the twin's
    block_path gives it for the census shape."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
    import host_time

    label, block = host_time.BLOCKS[0]
    taken = host_time.census_shape_paths(block, batch, pass_)
    fast = host_time._modules(block, torch.device("meta"))[1]
    x = torch.empty(batch, block.C, block.H, block.W, device="meta")
    training = pass_ == "fwd+bwd"
    fast.train(training)
    with torch.set_grad_enabled(training):
        x.requires_grad_(training)
        plan = fast._plan()
        expected = fast.block_path(x, plan.spec, plan.gate)
    assert taken == [expected], label
