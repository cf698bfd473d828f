"""perf/sweep.py's plumbing, on whatever device the tests run on (CPU: the Triton interpreter).

A tiny sweep writes valid CSV / JSON / PNG with the required columns, honest labels and speed-ups
that are the ratios of its timings; the byte model of each kernel matches the tensors it really
reads and writes and the kernels the blocks really launch; the launch and saved-bytes census
follows its documented rule. Nothing here asserts on how fast anything is.
"""
import csv
import functools
import itertools
import json
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
from torch import nn

from conftest import DEVICE
from tritattn import launch, reference, tuning

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))  # perf/ is a folder of scripts

import bytes_model  # noqa: E402
import census  # noqa: E402
import critical_path  # noqa: E402
import measure  # noqa: E402
import model_shapes  # noqa: E402
import plan  # noqa: E402
import report  # noqa: E402
import sweep  # noqa: E402
from cases import Case, build, build_eager  # noqa: E402


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open() as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_tiny_sweep_writes_valid_csv_json_png(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--models", "seresnet50,cbam_resnet50", "--blocks", "representative",
            "--shrink", "16,4", "--dtypes", "fp32", "--layouts", "nchw,channels_last", "--batch-sizes", "1",
            "--compile", "none", "--census-batch", "2", "--critical-path", "gcresnet50t/gc512@7"]
    assert sweep.main(args) == 0
    printed = capsys.readouterr().out
    graph_modes = 2 if DEVICE == "cuda" else 1

    columns, timings = read_csv(tmp_path / "timings.csv")
    assert columns == report.TIMING_COLUMNS
    # blocks × layouts × passes × (tritattn, eager), + tritattn-per-op on the first block (the CPU
    # preset's compile scope) × layouts × passes; × graph modes
    assert len(timings) == (2 * 2 * 2 * 2 + 2 * 2) * graph_modes
    per_op = [r for r in timings if r["impl"] == "tritattn-per-op"]
    assert {r["block"] for r in per_op} == {"seresnet50/s3"} and all(float(r["ms"]) > 0 for r in per_op)
    for r in timings:
        assert float(r["ms"]) > 0 and int(r["min_bytes"]) > 0 and float(r["gbps"]) > 0 and not r["error"]
        assert (r["timing"] == "GPU timing") if DEVICE == "cuda" else r["timing"].endswith("not GPU performance")
    tri = [r for r in timings if r["impl"] == "tritattn"]
    assert all(float(r["max_rel_err"]) < 1e-4 for r in tri)
    # speed-up over eager = eager's ms / tritattn's ms in the same case, pass and CUDA-graph mode
    # (csv writes floats with repr: no rounding beyond float64's)
    case = ("block", "batch", "dtype", "layout", "pass", "cuda_graph")
    eager_ms = {tuple(r[k] for k in case): float(r["ms"]) for r in timings if r["impl"] == "eager"}
    per_op_ms = {tuple(r[k] for k in case): float(r["ms"]) for r in per_op}
    assert len(eager_ms) == len(tri)
    for r in tri:
        expected = eager_ms[tuple(r[k] for k in case)] / float(r["ms"])
        assert r["speedup_vs_eager"] and float(r["speedup_vs_eager"]) == pytest.approx(expected, rel=1e-6), r
        key = tuple(r[k] for k in case)
        if key in per_op_ms:
            assert float(r["speedup_vs_tritattn-per-op"]) == pytest.approx(per_op_ms[key] / float(r["ms"]), rel=1e-6), r

    columns, blocks = read_csv(tmp_path / "blocks.csv")
    assert columns == report.BLOCK_COLUMNS
    assert [b["block"] for b in blocks] == [b.id for m in ("seresnet50", "cbam_resnet50") for b in model_shapes.MODELS[m]]
    for b in blocks:
        fused = int(b["launches_fwd_tritattn"]) + int(b["launches_bwd_tritattn"])
        assert fused < int(b["launches_fwd_eager"]) + int(b["launches_bwd_eager"])
        assert int(b["saved_bytes_tritattn"]) > 0 and int(b["saved_bytes_eager"]) > 0

    payload = json.loads((tmp_path / "sweep.json").read_text())
    meta = payload["meta"]
    for key in ("device", "torch", "triton", "date", "copy_bandwidth_gbs", "timing_note"):
        assert meta[key]
    assert len(payload["timings"]) == len(timings) and len(payload["blocks"]) == len(blocks)
    assert payload["skipped"] == []
    if DEVICE != "cuda":
        assert "no GPU" in meta["device"] and "not GPU performance" in meta["timing_note"]
        assert "autotuning skipped" in meta["tuning"]["status"] and "not GPU performance" in printed
        assert meta["tuning"]["decisions"] and all(d["source"].startswith("default") for d in meta["tuning"]["decisions"])

    # the critical-path census of the block asked for: every launch of both tritattn paths and passes,
    # and the model's estimates (labelled as such) of the three paths at every estimated batch
    columns, launches = read_csv(tmp_path / "critical_path.csv")
    assert columns == report.CRITICAL_PATH_COLUMNS
    assert {(r["block"], r["path"], r["pass"]) for r in launches} == {
        ("gcresnet50t/gc512@7", path, p) for path in ("tritattn", "tritattn-per-op") for p in critical_path.PASSES}
    for r in (r for r in launches if r["triton"] == "True"):
        assert int(r["programs_large"]) > int(r["programs_small"]) > 0 and int(r["longest_large"]) >= int(r["median_large"]) > 0
    columns, estimates = read_csv(tmp_path / "estimates.csv")
    assert columns == report.ESTIMATE_COLUMNS
    assert len(estimates) == len(critical_path.PATHS) * len(critical_path.PASSES) * len(critical_path.GPUS) * len(critical_path.ESTIMATE_BATCHES)
    assert all(r["label"] == "estimate (model)" and float(r["us"]) > 0 for r in estimates)
    assert payload["critical_path"]["estimate_label"] == "estimate (model)" and len(payload["critical_path"]["launches"]) == len(launches)
    assert printed.count("estimate (model), not a measurement") == len(critical_path.GPUS)

    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["census.png", "speedup_fp32_channels_last.png", "speedup_fp32_nchw.png",
                    "throughput_fp32_channels_last.png", "throughput_fp32_nchw.png"]
    for name in pngs:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(tmp_path / name).ndim == 3


def _pointers_moved(kernel: str, f: dict) -> list[str]:
    """The pointer arguments a kernel reads or writes (each once), given its flags, as its
    docstring in kernels/*.py says — not from bytes_model; "sp_half": two of the four rows of
    CBAM's per-pixel workspace sp. The block pipeline's weights are left out (block_min_bytes adds
    the parameters)."""
    with_max = f.get("POOL", "mean") != "mean"
    hidden = ["hidden_ptr", "grad_h_ptr"] * (f.get("MLP") == "fc_act_fc") + ["grad_norm_ptr"] * bool(f.get("HIDDEN_NORM"))
    prologue = f.get("PRO_ACT", "none") != "none"
    pre = ["pw_ptr", "pb_ptr", "pm_ptr", "pv_ptr"] * bool(f.get("PRO_NORM"))  # the prologue BatchNorm's vectors
    if kernel == "radix_pool_fwd":  # x5 read; pooled written
        return ["x_ptr", "pooled_ptr"]
    if kernel == "radix_combine_fwd":  # x5, a read; out written
        return ["x_ptr", "a_ptr", "out_ptr"]
    if kernel == "radix_combine_bwd":  # grad_out, a read; x5 read and grad_a written; grad_x5 written (gp read)
        return (["grad_out_ptr", "a_ptr"] + ["x_ptr", "grad_a_ptr"] * f["WANT_GRAD_A"] + ["grad_x_ptr"] * f["WANT_GRAD_X"]
                + ["gp_ptr"] * f["ADD_POOL"])
    if kernel == "radix_squeeze_attend_fwd":  # x5 read; pooled (the attention with the MLP tail) written (weights: parameters)
        return ["x_ptr", "pooled_ptr"] + ["a_ptr"] * f["MLP_TAIL"]
    if kernel == "context_pool_combine_mlp":  # the partials read; ctx written and read back; s and / or t written
        return ["part_ptr", "pstats_ptr", "ctx_ptr", "ctx_ptr"] + ["s_ptr"] * f["HAS_SCALE"] + ["t_ptr"] * f["HAS_ADD"]
    if kernel == "context_pool_partials":  # x read; the partials written (w: a parameter)
        return ["x_ptr", "part_ptr", "pstats_ptr"]
    if kernel == "context_pool_combine":  # the partials read; ctx, stats written
        return ["part_ptr", "pstats_ptr", "ctx_ptr", "stats_ptr"]
    if kernel == "context_pool_bwd":  # grad_ctx, x, stats read; grad_x, the weight partials written (w: a parameter)
        return ["grad_ctx_ptr", "x_ptr", "stats_ptr", "grad_x_ptr", "wpart_ptr"]
    if kernel == "batch_stats_fwd":  # x read; part written (and read back: 2×); stats written
        return ["x_ptr", "part_ptr", "part_ptr", "stats_ptr"]
    if kernel == "prologue_norm_bwd":  # psum, s, grad_mean read; sums, the two gradients written
        return ["psum_ptr", "s_ptr", "grad_mean_ptr", "sums_ptr", "gw_ptr", "gb_ptr"]
    if kernel == "gated_spatial_pool_fwd":  # x, s read; descriptor d written
        return ["x_ptr", "s_ptr", "d_ptr"]
    if kernel == "spatial_conv_fwd":  # descriptor d read; conv output u written
        return ["d_ptr", "u_ptr"]
    if kernel == "doubly_gated_scale_fwd":  # x, s, u read; y written
        return ["x_ptr", "s_ptr", "u_ptr", "y_ptr"]
    if kernel == "cbam_spatial_bwd_reduce":  # grad_y, x, s, u read; grad_t, d, sp's gate and max rows, ties written
        return ["grad_y_ptr", "x_ptr", "s_ptr", "u_ptr", "grad_t_ptr", "d_ptr", "sp_half", "ties_ptr"]
    if kernel == "spatial_conv_bwd":  # grad_t, u, d, ties read; sp's two gradient rows written
        return ["grad_t_ptr", "u_ptr", "d_ptr", "ties_ptr", "sp_half"]
    tail = f.get("MLP_TAIL", True)  # the one-launch path: the MLP in the kernel's tail
    if kernel == "squeeze_excite_fwd":  # x read; mean, s (tail) written (+ max, count)
        return ["x_ptr", "mean_ptr"] + ["s_ptr"] * tail + ["max_ptr", "count_ptr"] * with_max + pre
    spatial = f.get("ACT_OUT") == "spatial"
    if kernel == "excitation_bwd_reduce":  # grad_y, x (y; sp), s read; grad_s, mean (max, count) written; tail: grad_mean (grad_max), hidden
        return (["grad_y_ptr", "x_ptr", "s_ptr", "mean_ptr", "grad_s_ptr"] + ["grad_mean_ptr"] * tail
                + ["y_ptr"] * (f["ACT_OUT"] == "relu") + ["max_ptr", "count_ptr"] * with_max
                + ["grad_max_ptr"] * (with_max and tail) + hidden * tail + ["sp_ptr"] * spatial
                + pre + ["psum_ptr"] * bool(pre))
    if kernel == "excitation_bwd_apply":  # grad_y read, grad_x written (y, grad_res; x, max, count, grad_max; sp); vectors read
        return (["grad_y_ptr", "grad_x_ptr", "s_ptr", "grad_s_ptr" if f.get("TAPS") else "grad_mean_ptr"]
                + ["y_ptr"] * (f["ACT_OUT"] == "relu") + ["grad_res_ptr"] * f["WRITE_GRAD_RES"]
                + ["x_ptr"] * (with_max or spatial or prologue) + ["max_ptr", "count_ptr", "grad_max_ptr"] * with_max
                + ["sp_ptr"] * spatial + pre + ["sums_ptr"] * bool(pre))
    if kernel == "mean_max_fwd":  # x read; mean written if wanted; max and its int32 tie count if wanted
        return ["x_ptr"] + ["mean_ptr"] * f["WANT_MEAN"] + ["max_ptr", "count_ptr"] * f["WANT_MAX"]
    if kernel == "mean_max_bwd":  # grad_x written; grad_mean read; x, grad_max, max, count read for the max term
        return ["grad_x_ptr"] + ["grad_mean_ptr"] * f["HAS_MEAN"] + ["x_ptr", "grad_max_ptr", "max_ptr", "count_ptr"] * f["HAS_MAX"]
    if kernel == "gated_scale_fwd":  # x, s read, y written; residual read; with the taps s written, the pooled vectors read
        taps = ["mean_ptr"] + ["max_ptr"] * with_max if f.get("TAPS") else []
        return ["x_ptr", "s_ptr", "y_ptr"] + ["res_ptr"] * f["HAS_RESIDUAL"] + pre + taps
    assert kernel == "gated_scale_bwd", kernel  # grad_y, x, s read, grad_x, grad_s written; y read for relu; grad_residual written
    return ["grad_y_ptr", "x_ptr", "s_ptr", "grad_x_ptr", "grad_s_ptr"] + ["y_ptr"] * (f["ACT"] == "relu") + ["grad_res_ptr"] * f["WRITE_GRAD_RES"]


def test_byte_model_counts_the_tensors_each_kernel_moves(monkeypatch):
    """Every kernel in every flag combination, launched by one real call of its op on B=2, C=3,
    H×W=1×5 float16 tensors (s and CBAM's t in float32 and in float16): the byte model equals the
    summed ``nbytes`` of the tensors that launch.py hands the kernel and that the kernel reads or
    writes (:func:`_pointers_moved`)."""
    launched = []
    real_launch = tuning.Tuner.launch

    def recording_launch(self, problem, grid, args, constexprs, device):
        # the interpreter ignores a keyword the kernel does not declare; the compiler rejects it
        unknown = set(constexprs) - set(self.kernel.arg_names)
        assert not unknown, f"{self.name} is passed {sorted(unknown)}, which it does not declare"
        launched.append((self.name, dict(zip(self.kernel.arg_names, args)), constexprs))
        return real_launch(self, problem, grid, args, constexprs, device)

    monkeypatch.setattr(tuning.Tuner, "launch", recording_launch)
    ops, bm = torch.ops.tritattn, bytes_model
    B, C, H, W = 2, 3, 1, 5
    HW = H * W

    def rand(*shape, dtype=torch.float16):
        return torch.randn(shape, device=DEVICE).to(dtype)

    counts = []  # (call, kernel, byte model, bytes of the tensors moved)

    def check(what: str, kernel: str | list[str], modelled: int | list[int], op, *args):
        kernels, models = ([kernel], [modelled]) if isinstance(kernel, str) else (kernel, modelled)
        before = len(launched)
        out = op(*args)
        assert [name for name, _, _ in launched[before:]] == kernels, what
        for name, model, (_, pointers, flags) in zip(kernels, models, launched[before:]):
            names = _pointers_moved(name, flags)
            moved = [pointers["sp_ptr" if p == "sp_half" else p] for p in names]
            assert all(isinstance(t, torch.Tensor) for t in moved), f"{what}: {names} not all passed"
            nbytes = sum(t.nbytes // (2 if p == "sp_half" else 1) for p, t in zip(names, moved))
            counts.append((what, name, model, nbytes))
        return out

    x = rand(B, C, H, W)
    for m, M in ((True, False), (False, True), (True, True)):
        check(f"squeeze mean={m} max={M}", "mean_max_fwd", bm.mean_max_fwd(B, C, HW, 2, m, M), ops.squeeze, x, m, M)
    pooled, pooled_count = check("spatial_pool", "mean_max_fwd", bm.mean_max_fwd(B, HW, C, 2, True, True), ops.spatial_pool, x)

    _, maximum, count = ops.squeeze(x, False, True)
    for m, M in ((True, False), (False, True), (True, True)):
        check(f"squeeze_backward mean={m} max={M}", "mean_max_bwd", bm.mean_max_bwd(B, C, HW, 2, m, M), ops.squeeze_backward,
              x, rand(B, C) if m else None, rand(B, C) if M else None, maximum if M else None, count if M else None)
    check("spatial_pool_backward", "mean_max_bwd", bm.mean_max_bwd(B, HW, C, 2, True, True), ops.spatial_pool_backward,
          x, rand(B, 2, H, W), pooled, pooled_count)

    for s_dtype in (torch.float32, torch.float16):
        s, t = rand(B, C, dtype=s_dtype), rand(B, 1, H, W, dtype=s_dtype)
        size = s.element_size()
        for residual in (False, True):
            for act in ("identity", "relu"):
                check(f"excite_scale s={s_dtype} residual={residual} act={act}", "gated_scale_fwd",
                      bm.gated_scale_fwd(B, C, HW, 2, size, residual), ops.excite_scale,
                      x, s, rand(B, C, H, W) if residual else None, "sigmoid", act)
        check(f"spatial_scale t={s_dtype}", "gated_scale_fwd", bm.gated_scale_fwd(B, HW, C, 2, size, False), ops.spatial_scale, x, t, "sigmoid")
        for act in ("identity", "relu"):
            y = ops.excite_scale(x, s, None, "sigmoid", act) if act == "relu" else None
            for want_grad_residual in (False, True):
                check(f"excite_scale_backward s={s_dtype} act={act} grad_residual={want_grad_residual}", "gated_scale_bwd",
                      bm.gated_scale_bwd(B, C, HW, 2, size, act == "relu", want_grad_residual), ops.excite_scale_backward,
                      rand(B, C, H, W), x, s, y, "sigmoid", act, want_grad_residual)
        check(f"spatial_scale_backward t={s_dtype}", "gated_scale_bwd", bm.gated_scale_bwd(B, HW, C, 2, size, False, False),
              ops.spatial_scale_backward, rand(B, C, H, W), x, t, "sigmoid")

    # the block pipeline: every pooling × excitation kind, with and without the ReLU epilogue
    RD, f32 = 2, 4
    weights = {
        "fc_act_fc": (rand(RD, C), rand(RD), rand(C, RD), rand(C)), "fc": (None, None, rand(C, C), rand(C)),
        "taps_zero": (rand(3), None, None, None), "taps_circular": (rand(3), None, None, rand(1)),
    }
    blocks = [("mean", "fc_act_fc"), ("mean_max_avg", "fc_act_fc"), ("mean_max_both", "fc_act_fc"), ("mean_max_avg", "fc"),
              ("mean", "taps_zero"), ("mean", "taps_circular")]
    for (pool, mlp), path in itertools.product(blocks, ("one-launch", "split")):
        with_max, hidden, tail = pool != "mean", bm.hidden_vectors(mlp, pool), path == "one-launch"
        rd = RD if mlp == "fc_act_fc" else 0
        for act_out, residual in (("identity", False), ("relu", True)):
            what = f"excitation_block {pool} {mlp} {act_out} {path}"
            y, s_, _, _ = check(
                what, ["squeeze_excite_fwd", "gated_scale_fwd"],
                [bm.squeeze_excite_fwd(B, C, HW, 2, f32, with_max, tail),
                 bm.gated_scale_fwd(B, C, HW, 2, f32, residual, (not tail and mlp.startswith("taps")) * (1 + with_max))],
                functools.partial(ops.excitation_block, path=path), x, rand(B, C, H, W) if residual else None,
                *weights[mlp], pool, mlp, "relu", "sigmoid", act_out)
            relu = act_out == "relu"
            check(what + " backward", ["excitation_bwd_reduce", "excitation_bwd_apply"],
                  [bm.excitation_bwd_reduce(B, C, HW, rd, 2, f32, relu, with_max, hidden, tail=tail),
                   bm.excitation_bwd_apply(B, C, HW, 2, f32, relu, residual, with_max)],
                  functools.partial(ops.excitation_block_backward, path=path), rand(B, C, H, W), x, y if relu else None,
                  s_, *weights[mlp], pool, mlp, "relu", "sigmoid", act_out, residual)

    # SE with a BatchNorm in eval between fc1 and act (timm SEModule's norm_layer)
    norm = (rand(RD, dtype=torch.float32), rand(RD, dtype=torch.float32), rand(RD, dtype=torch.float32),
            torch.rand(RD, device=DEVICE) + 0.5, 1e-5)
    hidden = bm.hidden_vectors("fc_act_fc", "mean", norm=True)
    y, s_, _, _ = check("excitation_block hidden norm", ["squeeze_excite_fwd", "gated_scale_fwd"],
                  [bm.squeeze_excite_fwd(B, C, HW, 2, f32, False), bm.gated_scale_fwd(B, C, HW, 2, f32, False)],
                  ops.excitation_block, x, None, *weights["fc_act_fc"], "mean", "fc_act_fc", "relu", "sigmoid", "identity",
                  *norm)
    check("excitation_block hidden norm backward", ["excitation_bwd_reduce", "excitation_bwd_apply"],
          [bm.excitation_bwd_reduce(B, C, HW, RD, 2, f32, False, False, hidden),
           bm.excitation_bwd_apply(B, C, HW, 2, f32, False, False, False)],
          ops.excitation_block_backward, rand(B, C, H, W), x, None, s_, *weights["fc_act_fc"], "mean", "fc_act_fc", "relu",
          "sigmoid", "identity", False, *norm)

    # an SE block taking in its producer's BatchNorm (batch or running statistics) and SiLU
    for batch_stats in (True, False):
        pre = (rand(C, dtype=torch.float32), rand(C, dtype=torch.float32), rand(C, dtype=torch.float32),
               torch.rand(C, device=DEVICE) + 0.5, 1e-5)
        what, vectors = f"excitation_block prologue batch_stats={batch_stats}", bm.prologue_vectors(C, f32, True)
        stats = [bm.batch_stats_fwd(B, C, HW, 2, f32, bm.batch_stats_rows(x))] if batch_stats else []
        hidden = bm.hidden_vectors("fc_act_fc", "mean")
        y, s_, stats_, _ = check(
            what, ["batch_stats_fwd"] * batch_stats + ["squeeze_excite_fwd", "gated_scale_fwd"],
            stats + [bm.squeeze_excite_fwd(B, C, HW, 2, f32, False) + vectors,
                     bm.gated_scale_fwd(B, C, HW, 2, f32, False) + vectors],
            ops.excitation_block, x, None, *weights["fc_act_fc"], "mean", "fc_act_fc", "relu", "sigmoid", "identity",
            None, None, None, None, 0.0, "silu", *pre, batch_stats)
        pre_stats = (stats_[0], stats_[1]) if batch_stats else pre[2:4]
        check(what + " backward", ["excitation_bwd_reduce", "prologue_norm_bwd", "excitation_bwd_apply"],
              [bm.excitation_bwd_reduce(B, C, HW, RD, 2, f32, False, False, hidden) + vectors + 4 * B * C * f32,
               bm.prologue_norm_bwd(B, C, f32),
               bm.excitation_bwd_apply(B, C, HW, 2, f32, False, False, False, prologue=True)
               + vectors + 2 * C * f32],
              ops.excitation_block_backward, rand(B, C, H, W), x, None, s_, *weights["fc_act_fc"], "mean", "fc_act_fc",
              "relu", "sigmoid", "identity", False, None, None, None, None, 0.0, "silu", pre[0], pre[1], *pre_stats,
              1e-5, batch_stats)

    # CBAM (2-channel descriptor) and light CBAM (1 channel), BatchNorm in training and in eval
    for d, pool in ((2, "mean_max_both"), (1, "mean_max_avg")):
        for training in (True, False):
            bn = (rand(1, dtype=torch.float32), rand(1, dtype=torch.float32), rand(1, dtype=torch.float32),
                  torch.rand(1, device=DEVICE) + 0.5)
            conv_w, what = rand(1, d, 3, 3, dtype=torch.float32), f"cbam_block D={d} training={training}"
            _, s_, u, affine = check(
                what, ["squeeze_excite_fwd", "gated_spatial_pool_fwd", "spatial_conv_fwd", "doubly_gated_scale_fwd"],
                [bm.squeeze_excite_fwd(B, C, HW, 2, f32, True), bm.gated_spatial_pool_fwd(B, C, HW, d, 2, f32),
                 bm.spatial_conv_fwd(B, HW, d, f32), bm.doubly_gated_scale_fwd(B, C, HW, 2, f32)],
                ops.cbam_block, x, *weights["fc_act_fc"], pool, "relu", "sigmoid", conv_w, *bn, 1e-5, training, "sigmoid")
            hidden = bm.hidden_vectors("fc_act_fc", pool)
            check(what + " backward",
                  ["cbam_spatial_bwd_reduce", "spatial_conv_bwd", "excitation_bwd_reduce", "excitation_bwd_apply"],
                  [bm.cbam_spatial_bwd_reduce(B, C, HW, d, 2, f32), bm.spatial_conv_bwd(B, HW, d, f32),
                   bm.excitation_bwd_reduce(B, C, HW, RD, 2, f32, False, True, hidden, True),
                   bm.excitation_bwd_apply(B, C, HW, 2, f32, False, False, True, True)],
                  ops.cbam_block_backward, rand(B, C, H, W), x, s_, u, affine, *weights["fc_act_fc"], pool, "relu",
                  "sigmoid", conv_w, bn[0], bn[1], training, "sigmoid")

    # split attention / selective kernel (R branches), and GCNet's context pooling (with and without its bias)
    for R in (1, 2, 3):
        x5, a = rand(B, R, C, H, W), rand(B, R, C)
        check(f"radix_pool R={R}", "radix_pool_fwd", bm.radix_pool_fwd(B, R, C, HW, 2), ops.radix_pool, x5)
        check(f"radix_combine R={R}", "radix_combine_fwd", bm.radix_combine_fwd(B, R, C, HW, 2, 2), ops.radix_combine, x5, a)
        check(f"radix_combine_backward R={R}", "radix_combine_bwd", bm.radix_combine_bwd(B, R, C, HW, 2, 2),
              ops.radix_combine_backward, x, x5, a)
        # the deferred per-op backward's two launches (tritattn/radix_step.py): grad_a alone, then grad_x5 with the pool's term
        check(f"radix_combine_bwd grad_a alone R={R}", "radix_combine_bwd",
              bm.radix_combine_bwd(B, R, C, HW, 2, 2, grad_x=False), launch.radix_combine_bwd, x, x5, a, None,
              torch.empty_like(a))
        check(f"radix_combine_bwd grad_x5 with the pooled gradient R={R}", "radix_combine_bwd",
              bm.radix_combine_bwd(B, R, C, HW, 2, 2, grad_a=False, pooled_grad=True),
              functools.partial(launch.radix_combine_bwd, pooled_grad=rand(B, C, 1, 1)), x, x5, a, torch.empty_like(x5),
              None)
    NP = bm.context_programs(x) // B
    for bias in (None, rand(1)):
        w = rand(C)
        _, ctx_stats = check(f"context_pool bias={bias is not None}", ["context_pool_partials", "context_pool_combine"],
                             [bm.context_pool_partials(B, C, HW, NP, 2, f32), bm.context_pool_combine(B, C, NP, 2, f32)],
                             ops.context_pool, x, w, bias)
        check(f"context_pool_backward bias={bias is not None}", "context_pool_bwd", bm.context_pool_bwd(B, C, HW, NP, 2, f32),
              ops.context_pool_backward, rand(B, C), x, w, bias, ctx_stats)

    # inference: split attention's squeeze with its MLP (with and without the hidden BatchNorm), and
    # GCNet's context with its MLPs (scale, add, both)
    for R, with_bn in ((1, False), (2, True)):
        x5 = rand(B, R, C, H, W)
        bn = ((rand(RD, dtype=torch.float32), rand(RD, dtype=torch.float32), rand(RD, dtype=torch.float32),
               torch.rand(RD, device=DEVICE) + 0.5) if with_bn else (None,) * 4)
        check(f"radix_attention R={R} bn={with_bn}", ["radix_squeeze_attend_fwd", "radix_combine_fwd"],
              [bm.radix_squeeze_attend_fwd(B, R, C, HW, 2, f32), bm.radix_combine_fwd(B, R, C, HW, 2, f32)],
              ops.radix_attention, x5, rand(RD, C), rand(RD), *bn, 1e-5, rand(R * C, RD), rand(R * C), "relu")
    mlp = (rand(RD, C), rand(RD), rand(RD), rand(RD), rand(C, RD), rand(C), 1e-5)
    none = (None,) * 6 + (1e-5,)
    for scale, add in ((True, False), (False, True), (True, True)):
        check(f"context_mlp scale={scale} add={add}", ["context_pool_partials", "context_pool_combine_mlp"],
              [bm.context_pool_partials(B, C, HW, NP, 2, f32), bm.context_pool_combine_mlp(B, C, NP, f32, scale + add)],
              ops.context_mlp, x, rand(C), *(mlp if scale else none), *(mlp if add else none), "relu")

    assert len(counts) == (8 + 2 * 10 + 4 * 2 * 2 * len(blocks) + 4 + (3 + 3 + 2 + 3) + 2 * 2 * 8 + 5 * 3 + 2 * 3
                           + 2 * 2 + 3 * 2)
    wrong = [c for c in counts if c[2] != c[3]]
    assert not wrong, "\n".join(f"{what} ({kernel}): byte model {m}, tensors moved {n}" for what, kernel, m, n in wrong)


def test_op_byte_model_uses_the_right_axis():
    x = torch.empty(2, 3, 4, 5, dtype=torch.float16, device="meta")  # channel: R=3, K=20; spatial: R=20, K=3
    assert bytes_model.op_kernels("squeeze", {"x": x, "want_mean": True, "want_max": False}) == \
        [("mean_max_fwd", bytes_model.mean_max_fwd(2, 3, 20, 2, True, False))]
    assert bytes_model.op_kernels("spatial_pool", {"x": x}) == [("mean_max_fwd", bytes_model.mean_max_fwd(2, 20, 3, 2, True, True))]
    t = torch.empty(2, 1, 4, 5, dtype=torch.float32, device="meta")
    assert bytes_model.op_kernels("spatial_scale_backward", {"grad_y": x, "x": x, "t": t, "gate": "sigmoid"}) == \
        [("gated_scale_bwd", bytes_model.gated_scale_bwd(2, 20, 3, 2, 4, False, False))]


def _bytes_of_launch(name: str, p: tuning.Problem) -> int:
    """The byte model evaluated from what launch.py actually passed to a kernel."""
    f, size = dict(p.flags), p.dtype.itemsize
    if name == "mean_max_fwd":
        return bytes_model.mean_max_fwd(p.B, p.R, p.K, size, f["WANT_MEAN"], f["WANT_MAX"])
    if name == "mean_max_bwd":
        return bytes_model.mean_max_bwd(p.B, p.R, p.K, size, f["HAS_MEAN"], f["HAS_MAX"])
    if name == "gated_scale_fwd":  # with ECA's taps (TAPS, POOL flags) the pooled vectors read, s written
        taps_inputs = (1 + (f["POOL"] == "mean_max_avg")) if f.get("TAPS") else 0
        return bytes_model.gated_scale_fwd(p.B, p.R, p.K, size, size, f["HAS_RESIDUAL"], taps_inputs)
    acc = 8 if p.dtype == torch.float64 else 4
    with_max = f.get("POOL") != "mean"
    hidden = bytes_model.hidden_vectors(f.get("MLP"), f.get("POOL"), f.get("HIDDEN_NORM", False))
    if name == "squeeze_excite_fwd":
        return bytes_model.squeeze_excite_fwd(p.B, p.R, p.K, size, acc, with_max, f.get("MLP_TAIL", True))
    if name == "gated_spatial_pool_fwd":  # R = H×W, K = C
        return bytes_model.gated_spatial_pool_fwd(p.B, p.K, p.R, f["D"], size, acc)
    if name == "doubly_gated_scale_fwd":
        return bytes_model.doubly_gated_scale_fwd(p.B, p.R, p.K, size, acc)
    if name == "cbam_spatial_bwd_reduce":  # R = H×W, K = C
        return bytes_model.cbam_spatial_bwd_reduce(p.B, p.K, p.R, f["D"], size, acc)
    if name in ("spatial_conv_fwd", "spatial_conv_bwd"):  # R = H×W
        return getattr(bytes_model, name)(p.B, p.R, f["D"], acc)
    if name == "radix_squeeze_attend_fwd":
        return bytes_model.radix_squeeze_attend_fwd(p.B, f["RADIX"], p.R, p.K, size, acc, f.get("MLP_TAIL", True))
    if name.startswith("radix_"):  # R = C, K = H×W; the radix is a flag; a in x's dtype (fp32 here: = ACC)
        size_a, R = size, f["RADIX"]
        modes = {"grad_x": f.get("WANT_GRAD_X", True), "grad_a": f.get("WANT_GRAD_A", True),
                 "pooled_grad": f.get("ADD_POOL", False)} if name == "radix_combine_bwd" else {}
        return getattr(bytes_model, name)(p.B, R, p.R, p.K, size, *(() if name == "radix_pool_fwd" else (size_a,)), **modes)
    if name.startswith("context_pool"):  # R = H×W, K = C; NP from the tile rule
        NP = bytes_model.context_programs(torch.empty(p.B, p.K, 1, p.R, dtype=p.dtype, device="meta")) // p.B
        if name == "context_pool_combine":
            return bytes_model.context_pool_combine(p.B, p.K, NP, size, acc)
        if name == "context_pool_combine_mlp":
            return bytes_model.context_pool_combine_mlp(p.B, p.K, NP, acc, f["SCALE_MLP"] + f["ADD_MLP"])
        return getattr(bytes_model, name)(p.B, p.K, p.R, NP, size, acc)
    spatial = f.get("ACT_OUT") == "spatial"
    if name == "excitation_bwd_reduce":
        return bytes_model.excitation_bwd_reduce(p.B, p.R, p.K, f["RD"], size, acc, f["ACT_OUT"] == "relu", with_max, hidden,
                                                 spatial, f.get("MLP_TAIL", True))
    if name == "excitation_bwd_apply":
        return bytes_model.excitation_bwd_apply(p.B, p.R, p.K, size, acc, f["ACT_OUT"] == "relu",
                                                f["WRITE_GRAD_RES"], with_max, spatial)
    return bytes_model.gated_scale_bwd(p.B, p.R, p.K, size, size, f["ACT"] == "relu", f["WRITE_GRAD_RES"])


@pytest.mark.parametrize("block", [
    model_shapes.Block("t", "se", "SEModule", 8, 4, 4, rd=2),
    model_shapes.Block("t", "eca", "EcaModule", 8, 4, 4),
    model_shapes.Block("t", "mbv3", "SqueezeExcitation", 8, 3, 5, rd=4, extra={"scale_activation": nn.Hardsigmoid}),
    model_shapes.Block("t", "cbam", "CbamModule", 8, 4, 4, rd=2),
    model_shapes.Block("t", "legacy_se", "LegacySEModule", 8, 4, 4, extra={"reduction": 4}),
    model_shapes.Block("t", "splat", "SplitAttn", 8, 4, 4, extra={"radix": 2, "norm_layer": nn.BatchNorm2d}),
    model_shapes.Block("t", "sk", "SelectiveKernel", 8, 3, 5),
    model_shapes.Block("t", "gc_add", "GlobalContext", 8, 4, 4, rd=2, extra={"fuse_add": True, "fuse_scale": False}),
    model_shapes.Block("t", "gc_scale", "GlobalContext", 8, 3, 5, rd=2),
], ids=lambda b: b.name)
def test_each_tritattn_op_launches_the_kernels_the_byte_model_names(block, monkeypatch):
    launched = []
    real_launch = tuning.Tuner.launch

    def recording_launch(self, problem, *args):
        launched.append((self.name, problem))
        return real_launch(self, problem, *args)

    monkeypatch.setattr(tuning.Tuner, "launch", recording_launch)
    case = Case(block, 2, "fp32", "channels_last")
    module = build("tritattn", build_eager(block, torch.device(DEVICE), torch.float32), block)
    c = census.take_census(module, case.input(torch.device(DEVICE)))
    calls = c.fwd.tritattn_calls + c.bwd.tritattn_calls + c.inference.tritattn_calls
    modelled = [k for op, a in calls for k in bytes_model.op_kernels(op, a)]
    assert c.fwd.triton + c.bwd.triton + c.inference.triton == len(modelled) == len(launched)
    assert modelled == [(n, _bytes_of_launch(n, p)) for n, p in launched]


def test_launch_census_counts_kernels_not_views_or_allocations():
    x = torch.randn(4, 6)
    with census.LaunchCensus() as c:
        y = x.view(6, 4).t()  # views: no kernel
        z = torch.empty(3)  # allocation: no kernel
        w = x * 2  # one kernel
        w.add_(1)  # in-place: one kernel
        torch.zeros(0) + 1  # empty output: no kernel (the zeros itself is empty too)
    assert (c.aten, c.triton) == (2, 0)
    assert c.passes == 0, "no plane size given: passes are not counted"
    with census.LaunchCensus(plane_numel=x.numel()) as p:
        w = x * 2  # reads x, writes w: 2 passes
        w.add_(1)  # reads and writes w: 2 passes
        x.sum()  # reads x; its output is a scalar: 1 pass
    assert p.passes == 5
    del y, z


def test_saved_bytes_count_each_storage_once_and_skip_parameters():
    lin = nn.Linear(8, 8, bias=False)
    x = torch.randn(4, 8, requires_grad=True)
    with census.saved_activations(lin) as saved:
        y = lin(x)  # saves x (and the weight: a parameter, not counted)
        z = x[:2] * x[2:]  # saves two views of x: x's storage, already counted
        (y.sum() + z.sum()).backward()
    assert sum(saved.values()) == x.numel() * 4


def test_model_table_is_real():
    assert set(model_shapes.MODELS) == {"seresnet50", "ecaresnet50d", "efficientnet_b0", "mobilenetv3_large", "regnety_016",
                                        "cbam_resnet50", "resnest50d", "skresnet50", "gcresnet50t", "legacy_seresnet50"}
    for model in ("seresnet50", "efficientnet_b0", "resnest50d", "skresnet50", "gcresnet50t", "legacy_seresnet50"):
        assert sum(b.count for b in model_shapes.MODELS[model]) == 16, model
    assert sum(b.count for b in model_shapes.MODELS["regnety_016"]) == 2 + 6 + 17 + 2
    assert model_shapes.representative("regnety_016").id == "regnety_016/s3b"
    for b in model_shapes.ALL_BLOCKS:
        m = getattr(reference, b.module)(**b.constructor_kwargs()).eval()
        stride = b.extra.get("stride", 1)
        assert m(torch.zeros(1, b.C, 4, 4)).shape == (1, b.extra.get("out_channels", b.C), 4 // stride, 4 // stride), b.id
    small = model_shapes.representative("seresnet50").scaled(64, 8)
    assert (small.C, small.H, small.W) == (64, 8, 8)


def test_work_items_come_in_priority_order_with_compile_subsets():
    blocks = plan.pick_blocks(["seresnet50", "efficientnet_b0"], ["all"], shrink=None)
    items = plan.work_items(blocks, ["bf16", "fp32"], ["nchw", "channels_last"], [32, 128], ["default", "max-autotune"], "representative")
    per_dtype = 2 * len(blocks) * 2  # layouts × blocks × batch sizes
    per_op = 2 * 2 * 2  # layouts × representative blocks × batch sizes
    first, per_op_items = items[:per_dtype], items[per_dtype:per_dtype + per_op]
    compiled, rest = items[per_dtype + per_op:-per_dtype], items[-per_dtype:]
    assert all(i.impls == ("tritattn", "eager") and i.case.dtype == "bf16" for i in first)
    assert all(i.impls == ("tritattn-per-op",) and i.case.dtype == "bf16" for i in per_op_items)
    assert {i.case.block.id for i in per_op_items} == {"seresnet50/s3", "efficientnet_b0/se1152@7"}
    assert all(i.impls == ("tritattn", "eager") and i.case.dtype == "fp32" for i in rest)
    assert {i.case.block.id for i in compiled} == {"seresnet50/s3", "efficientnet_b0/se1152@7"}
    assert {(i.case.dtype, i.case.batch) for i in compiled} == {("bf16", 128)}
    assert [i.impls for i in compiled] == [("compile",)] * 4 + [("compile-max-autotune",)] * 2
    assert {i.case.layout for i in compiled[4:]} == {"channels_last"}


def test_compile_rows_are_measured_and_rated():
    block = model_shapes.Block("t", "se", "SEModule", 8, 4, 4, rd=2)
    case = Case(block, 1, "fp32", "nchw")
    rows = measure.measure_case(case, ["eager", "compile"], ["fwd"], [False], torch.device(DEVICE))
    report.rate(rows, {(block.id, 1, "fp32", "nchw"): measure.min_bytes(block, 1, "fp32", "nchw")}, copy_gbs=1.0)
    assert [r["impl"] for r in rows] == ["eager", "compile"] and not any(r["error"] for r in rows)
    assert all(r["ms"] > 0 and r["gbps"] > 0 for r in rows)


def test_aten_kernel_bytes_count_each_read_and_write_once():
    meta = torch.device("meta")
    a, b = torch.empty(4, 8, device=meta), torch.empty(8, 16, device=meta)
    with census.LaunchCensus() as c:
        out = torch.mm(a, b)  # reads a and b, writes out
        out.add_(torch.empty(16, device=meta))  # reads the broadcast row, writes out in place (counted once)
        out.t()  # a view: no kernel
    assert c.aten_launches == [("aten.mm", (32 + 128 + 64) * 4), ("aten.add_", (16 + 64) * 4)]


@pytest.mark.parametrize("bias, wanted", [(True, (True, True, True)), (False, (True, True, False)),
                                          (True, (False, True, True)), (True, (True, False, False))])
def test_a_convolution_backward_counts_one_launch_per_gradient(bias, wanted):
    # cuDNN's backward-data and backward-filter calls, and the bias's sum outside the backend
    meta = torch.device("meta")
    grad_out, x, w = (torch.empty(shape, device=meta) for shape in ((2, 6, 1, 1), (2, 5, 1, 1), (6, 5, 1, 1)))
    with census.LaunchCensus() as c:
        torch.ops.aten.convolution_backward(grad_out, x, w, [6] if bias else None, [1, 1], [0, 0], [1, 1], False,
                                            [0, 0], 1, [wanted[0], wanted[1], wanted[2] and bias])
    go = 2 * 6 * 4
    expected = [("aten.convolution_backward (grad input)", go + (30 + 10) * 4),
                ("aten.convolution_backward (grad weight)", go + (10 + 30) * 4),
                ("aten.convolution_backward (grad bias)", go + 6 * 4)]
    assert c.aten_launches == [k for k, want in zip(expected, (wanted[0], wanted[1], wanted[2] and bias)) if want]
    assert c.aten == len(c.aten_launches)


def test_estimates_scale_programs_and_bytes_and_extend_only_a_growing_longest():
    from tritattn.cost_model import Launch

    flat_small, flat_large = Launch("k", 10, 3, 20, 1000), Launch("k", 18, 3, 20, 1800)  # 4 programs, 400 B per sample
    at_256, grew = critical_path.extend(flat_small, flat_large, 2, 4, 256)
    assert not grew and (at_256.programs, at_256.median, at_256.longest, at_256.bytes) == (10 + 4 * 254, 3, 20, 1000 + 400 * 254)
    loop_small, loop_large = Launch("k", 10, 3, 12, 1000), Launch("k", 18, 3, 20, 1800)  # the longest: 4 per sample
    at_256, grew = critical_path.extend(loop_small, loop_large, 2, 4, 256)
    assert grew and at_256.longest == 12 + 4 * 254
    assert critical_path.extend(loop_small, loop_large, 2, 4, 2) == (loop_small, True)


def test_a_path_taken_only_at_larger_batches_is_counted_forced_and_estimated(monkeypatch):
    from tritattn.cost_model import Launch

    block = model_shapes.representative("seresnet50")
    small = [Launch("mean_max_fwd", 8, 2, 2, 800), Launch("aten.mm", 0, 4, 4, 64)]
    forced_launches = [Launch("squeeze_excite_fwd", 8, 3, 9, 900)]
    counted = []

    def count_path(block_, impl, pass_, batch, dtype="fp32", forced=None):
        counted.append((impl, pass_, batch, forced))
        return forced_launches if forced else small

    def taken_at(block_, impl, pass_, batch, dtype="fp32"):  # per-op up to B = 8, then one-launch
        if pass_ == "step" and batch == 1:
            raise ValueError("Expected more than 1 value per channel when training")  # as a training BatchNorm at B = 1
        if impl != "tritattn":
            return ["mean_max_fwd"], None
        return (["mean_max_fwd"], "per-op") if batch <= 8 else (["squeeze_excite_fwd"], "one-launch")

    monkeypatch.setattr(critical_path, "count_path", count_path)
    monkeypatch.setattr(critical_path, "taken_at", taken_at)
    monkeypatch.setattr(critical_path, "eager_path", lambda *a, **k: [Launch("aten.mean", 0, 4, 4, 100)])
    counts = critical_path.count_block(block, (2, 4))
    assert [(c.name, c.pass_) for c in counts if c.forced] == [("tritattn@one-launch", p) for p in critical_path.PASSES]
    assert {(impl, b, f) for impl, _, b, f in counted if f} == {("tritattn", 2, "one-launch"), ("tritattn", 4, "one-launch")}
    rows = {(r["path"], r["batch"]): r for r in critical_path.estimate_rows(counts, batches=(8, 32), dtype="fp32")
            if r["pass"] == "inference" and r["gpu"] == "H100"}
    assert {path for path, _ in rows} == {"tritattn", "tritattn-per-op", "eager"}  # the forced count is no row of its own
    assert rows[("tritattn", 8)]["launches"] == 2 and rows[("tritattn", 8)]["note"] == ""
    assert rows[("tritattn", 32)]["launches"] == 1 and rows[("tritattn", 32)]["longest"] == 9
    assert "one-launch (counted with it forced)" in rows[("tritattn", 32)]["note"]
    without = [c for c in counts if not c.forced]  # an older counts.json: no forced counts, no estimate there
    row = next(r for r in critical_path.estimate_rows(without, batches=(32,), dtype="fp32")
               if r["path"] == "tritattn" and r["pass"] == "inference")
    assert row["us"] is None and "not the counted" in row["note"]


def test_a_gpu_timing_is_printed_beside_the_models_estimate():
    def timing(impl, pass_, ms, **kw):
        return {"block": "b", "batch": 32, "pass": pass_, "impl": impl, "ms": ms, "dtype": "fp32", "layout": "nchw",
                "cuda_graph": False} | kw
    rows = [timing("tritattn", "fwd", 0.05), timing("eager", "fwd+bwd", 0.2), timing("tritattn", "fwd", 0.01, cuda_graph=True),
            timing("tritattn", "fwd", 0.04, dtype="bf16"), timing("compile", "fwd", 0.03)]
    estimates = [{"block": "b", "path": p, "pass": q, "batch": 32, "gpu": "H100", "us": 25.0}
                 for p in ("tritattn", "eager") for q in ("inference", "step")]
    lines = report.estimate_beside_timings(rows, estimates, "H100").splitlines()[2:]
    # only float32 NCHW timings without CUDA graphs of a path the model estimates: measured µs, estimate, ratio
    assert [line.split() for line in lines] == [["b", "32", "fwd", "tritattn", "50", "25", "2"],
                                                 ["b", "32", "fwd+bwd", "eager", "200", "25", "8"]]


def test_a_tail_on_the_path_taken_is_reported_with_whether_that_path_is_still_the_fastest():
    def est(block, path, us, tails=0, violations=""):
        return {"block": block, "path": path, "pass": "step", "batch": 1, "gpu": "H100", "us": us, "tails": tails,
                "violations": violations}
    estimates = [est("a", "tritattn", 120.0, 1, "k: longest program 42 × 0.4 µs = 16.8 µs > 12.0 µs"),
                 est("a", "tritattn-per-op", 280.0), est("a", "eager", 270.0),
                 est("b", "tritattn", 60.0, 2, "k2: tail"), est("b", "tritattn-per-op", 50.0), est("b", "eager", 70.0),
                 est("c", "tritattn", 10.0), est("c", "eager", 20.0)]
    lines = report.tail_notes(estimates, "H100")
    assert len(lines) == 2  # c has no tail
    assert "a step B=1: k: longest program 42" in lines[0]
    assert "still the fastest (120.0 µs; per-op 280.0, eager 270.0)" in lines[0]
    assert "b step B=1: k2: tail" in lines[1] and "NOT the fastest: per-op faster" in lines[1]
    text = report.critical_path_text([], estimates, (2, 4), ["H100"], "estimate (model)")
    assert "miss a §2 target (H100)" in text and lines[1] in text
    assert report.tail_notes(estimates, "H200") == []
