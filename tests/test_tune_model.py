"""``tritattn.tune(model, example_input)``: every kernel problem of a model decided ahead of time.

On the simulated GPU (tests/fixtures/simulated_gpu.py: the tuner's CUDA branch, kernels in the
interpreter) tune benchmarks every forward and backward problem the model launches, leaves no
trace on the model (no ``.grad``, BatchNorm statistics and the RNG as before), and afterwards a
training step benchmarks nothing — nor does one at a batch size tune has not seen, which runs
the configs tuned for the nearest batch. Under torch.distributed rank 0 benchmarks and every
rank ends with its configs. Where nothing is tuned (the interpreter without the simulated GPU,
the eager backend) it runs nothing and says why.
"""
import logging

import pytest
import torch
from torch import nn

import tritattn
from fixtures.process_group import fake_process_group
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
    # spatial_conv_fwd and spatial_conv_bwd have one fixed config each: nothing to decide)
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


def smallest_tile_wins(kernel: str, cfg: dict[str, int]) -> float:
    """A made-up time under which the default (the largest tile of the candidates) never wins."""
    return cfg["BLOCK_R"] * cfg["BLOCK_K"] / cfg["num_warps"]


def decisions_of_a_training_step(model: nn.Module, x: torch.Tensor) -> dict[str, "tuning.Decision"]:
    """"kernel/problem key" → decision, of every problem a forward and backward launched."""
    with tuning.recording() as keys:
        model(x).sum().backward()
    return {key: tuning.decision(key) for key in keys if tuning.decision(key) is not None}


def bucket_of(key: str) -> int:
    return int(key.split(",B<=")[1].split(",")[0])


def test_a_training_step_at_a_batch_tune_has_not_seen_benchmarks_nothing(simulated_gpu):
    """tune at batch 8, then a step at batch 3 (an epoch's last, partial batch; batch bucket 4):
    nothing is benchmarked; each kernel problem the step launches at bucket 4 runs the config
    tuned for bucket 8, the nearest, and its decision says so."""
    gpu = simulated_gpu
    gpu.time_of = smallest_tile_wins
    model = _model()
    report = tritattn.tune(model, torch.randn(8, 3, 6, 5))
    tuned = {f"{d.kernel}/{d.key}": d.config for d in report.decisions}
    assert all(d.source == "tuned" for d in report.decisions) and any(bucket_of(k) == 8 for k in tuned)
    benchmarked = len(gpu.timed)

    step = decisions_of_a_training_step(model, torch.randn(3, 3, 6, 5))
    assert len(gpu.timed) == benchmarked, "a batch tune has not seen benchmarks nothing"
    unseen = {key: d for key, d in step.items() if key not in tuned}
    assert unseen and all(bucket_of(key) == 4 for key in unseen), sorted(step)
    for key, d in unseen.items():
        nearest = key.replace(",B<=4,", ",B<=8,")
        assert d.source == "user cache, nearest batch (B<=8)" and d.config == tuned[nearest], (key, d)


def test_tune_under_torch_distributed_gives_every_rank_rank0s_configs(simulated_gpu, monkeypatch, tmp_path):
    """Under torch.distributed tune is a collective: rank 0 benchmarks and broadcasts its
    decisions; rank 1 (another process: an empty user cache of its own) benchmarks nothing,
    ends with rank 0's decisions and its training step launches rank 0's configs."""
    gpu = simulated_gpu
    gpu.time_of = smallest_tile_wins
    model, x = _model(), torch.randn(2, 3, 6, 5)
    sent = fake_process_group(monkeypatch, rank=0)
    first = tritattn.tune(model, x)
    assert gpu.timed and first.tuned_now == len(first.decisions) > 0
    ((payload,),) = sent
    assert sorted(payload) == sorted(f"{d.kernel}/{d.key}" for d in first.decisions)

    monkeypatch.setenv("TRITATTN_CACHE_DIR", str(tmp_path / "rank1"))
    gpu.new_process(user=tuning.ConfigTable())
    fake_process_group(monkeypatch, rank=1, rank0_payload=[payload])
    second = tritattn.tune(model, x)
    assert not gpu.timed, "rank 1 benchmarks nothing"
    assert second.decisions == first.decisions
    configs = {d.kernel: d.config for d in first.decisions}
    assert any(cfg != configs[kernel] for kernel, cfg in gpu.launched if kernel in configs), \
        "rank 1's own pass ran other configs (the defaults) than rank 0 chose"
    gpu.launched.clear()
    model(x).sum().backward()
    assert gpu.launched and all(cfg == configs[kernel] for kernel, cfg in gpu.launched if kernel in configs)


def test_tune_forward_only(simulated_gpu):
    report = tritattn.tune(_model().eval(), torch.randn(1, 3, 4, 4), backward=False)
    # in eval every block is a pipeline: CBAM's 4 kernels (its conv's fixed config decides nothing), the SE
    # with a BatchNorm in its MLP 2
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
