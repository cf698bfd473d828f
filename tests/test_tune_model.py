"""``tritattn.tune(model, example_input)``: every kernel problem of a model decided ahead of time.

On the simulated GPU (tests/fixtures/simulated_gpu.py: the tuner's CUDA branch, kernels in the
interpreter) tune benchmarks every forward and backward problem the model launches, leaves no
trace on the model (no ``.grad``, BatchNorm statistics and the RNG as before), and afterwards a
training step benchmarks nothing. Where nothing is tuned (the interpreter without the simulated
GPU, the eager backend) it runs nothing and says why.
"""
import logging

import pytest
import torch
from torch import nn

import tritattn
from fixtures.simulated_gpu import simulated_gpu  # noqa: F401
from tritattn import tuning


def _model() -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12),
        tritattn.SEModule(12, norm_layer=nn.BatchNorm2d), tritattn.CbamModule(12, rd_ratio=0.25),
    )
    return model.train()


def test_tune_decides_every_problem_and_leaves_no_trace(simulated_gpu, caplog):
    model, x = _model(), torch.randn(2, 3, 6, 5)
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    with caplog.at_level(logging.INFO, logger="tritattn"):
        report = tritattn.tune(model, x)
    assert report.skipped is None and report.tuned_now == len(report.decisions) > 0, str(report)
    kernels = {d.kernel for d in report.decisions}
    # the SE with a BatchNorm in its MLP runs the per-op kernels, CBAM its pipeline (whose
    # spatial_conv_bwd has one fixed config: nothing to decide)
    assert kernels == {"mean_max_fwd", "gated_scale_fwd", "gated_scale_bwd", "squeeze_excite_fwd",
                       "gated_spatial_pool_fwd", "doubly_gated_scale_fwd", "cbam_spatial_bwd_reduce",
                       "excitation_bwd_reduce", "excitation_bwd_apply"}, kernels
    assert all(d.source == "tuned" for d in report.decisions), str(report)
    assert simulated_gpu.timed, "configs were benchmarked"
    assert all(p.grad is None for p in model.parameters()), "tune writes no .grad"
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), buffers, strict=True)), "running statistics restored"
    assert torch.equal(torch.get_rng_state(), rng), "the caller's random stream is untouched"
    assert (logging.INFO, report.summary()) in [(r.levelno, r.getMessage()) for r in caplog.records]

    benchmarked = len(simulated_gpu.timed)
    model(x).sum().backward()  # the training step after tune: everything is decided
    assert len(simulated_gpu.timed) == benchmarked, "nothing left to benchmark"
    again = tritattn.tune(model, x)
    assert again.tuned_now == 0 and len(again.decisions) == len(report.decisions), str(again)


def test_tune_forward_only(simulated_gpu):
    report = tritattn.tune(_model().eval(), torch.randn(1, 3, 4, 4), backward=False)
    # in eval every block is a pipeline: CBAM's 3 kernels, the SE with a BatchNorm in its MLP 2
    assert {d.kernel for d in report.decisions} == {
        "gated_scale_fwd", "squeeze_excite_fwd", "gated_spatial_pool_fwd", "doubly_gated_scale_fwd"}, str(report)


def test_tune_refuses_inside_a_capture(simulated_gpu):
    simulated_gpu.capturing = True
    with pytest.raises(RuntimeError, match="before capturing"):
        tritattn.tune(_model(), torch.randn(1, 3, 4, 4))
    assert not simulated_gpu.launched


def test_tune_is_a_no_op_where_nothing_is_tuned():
    if torch.cuda.is_available():
        pytest.skip("a GPU tunes (the simulated-GPU tests above run on CPU)")
    model, x = _model(), torch.randn(1, 3, 4, 4)
    seen = len(tuning.decisions()) if tritattn.backend_for(x) != "torch" else 0
    report = tritattn.tune(model, x)
    assert report.skipped and not report.decisions and report.tuned_now == 0, str(report)
    assert "nothing to tune on cpu" in report.summary()
    if tritattn.backend_for(x) != "torch":
        assert len(tuning.decisions()) == seen, "the model was not run"
    with tritattn.disabled():
        assert "kernels disabled" in tritattn.tune(model, x).skipped


def test_tune_needs_a_tensor():
    with pytest.raises(TypeError, match="at least one tensor"):
        tritattn.tune(_model(), (1, 2))


def test_tune_restores_the_buffers_when_the_model_fails(simulated_gpu):
    model = _model()
    model.append(nn.Conv2d(99, 1, 1))  # a channel mismatch: the forward raises after the BatchNorms ran
    buffers = [b.clone() for b in model.buffers()]
    with pytest.raises(RuntimeError):
        tritattn.tune(model, torch.randn(2, 3, 4, 4))
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), buffers, strict=True))
