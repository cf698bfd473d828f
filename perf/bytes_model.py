"""Minimum bytes: what a kernel must move at the least — each input read once, each output
written once — the denominator of every achieved-GB/s figure in the sweep.

One function per kernel, mirroring the "Minimum bytes" line of its docstring in
``kernels/mean_max.py``, ``kernels/gated_scale.py``, ``kernels/excitation.py``,
``kernels/prologue_norm.py``, ``kernels/radix_combine.py`` and ``kernels/context_pool.py``. B, R, K as the
kernels see x: R = C, K = H×W for the channel ops; R = H×W, K = C for CBAM's spatial ops.
``itemsize`` is x's (every plane and per-row vector of the per-op kernels has x's dtype, except
``s``, of ``s_itemsize``, and the int32 tie counts); the block pipeline's per-sample vectors are
in the accumulator dtype (``acc``: 4, or 8 for float64 x), and its weights are not counted per
kernel. :func:`op_kernels` maps one call of a tritattn custom op to the kernels it launches (one
for the per-op ops, two to four for the block pipelines'); a block's minimum is the sum over those
kernels plus its parameters (read once; in a training step also their gradients written once),
:func:`block_min_bytes`. The same minimum is
the denominator for tritattn, eager and torch.compile: it is the work, not an implementation.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

INT32 = 4


def mean_max_fwd_planes() -> int:
    """x read."""
    return 1


def mean_max_fwd(B: int, R: int, K: int, itemsize: int, want_mean: bool, want_max: bool) -> int:
    """x read; mean written if wanted; max and its int32 tie count written if wanted."""
    return mean_max_fwd_planes() * B * R * K * itemsize + B * R * (itemsize * want_mean + (itemsize + INT32) * want_max)


def mean_max_bwd_planes(has_max: bool) -> int:
    """grad_x written (+ x read with the max term)."""
    return 1 + has_max


def mean_max_bwd(B: int, R: int, K: int, itemsize: int, has_mean: bool, has_max: bool) -> int:
    """grad_x written (+ x read with the max term); grad_mean read; grad_max, max, count read."""
    planes = mean_max_bwd_planes(has_max) * B * R * K * itemsize
    return planes + B * R * (itemsize * has_mean + (2 * itemsize + INT32) * has_max)


def gated_scale_fwd_planes(has_residual: bool) -> int:
    """x read, y written (+ residual read)."""
    return 2 + has_residual


def gated_scale_fwd(B: int, R: int, K: int, itemsize: int, s_itemsize: int, has_residual: bool,
                    taps_inputs: int = 0) -> int:
    """x read, y written (+ residual read); s read — or, with ECA's taps computed by the launch,
    s written and its ``taps_inputs`` pooled vectors read (1; 2 for "mean_max_avg")."""
    return gated_scale_fwd_planes(has_residual) * B * R * K * itemsize + B * R * s_itemsize * (1 + taps_inputs)


def gated_scale_bwd_planes(relu: bool, write_grad_res: bool) -> int:
    """grad_y and x read, grad_x written (+ y read for relu, + grad_residual written)."""
    return 3 + relu + write_grad_res


def gated_scale_bwd(B: int, R: int, K: int, itemsize: int, s_itemsize: int, relu: bool, write_grad_res: bool) -> int:
    """grad_y and x read, grad_x written (+ y read for relu, + grad_residual written); s read, grad_s written."""
    return gated_scale_bwd_planes(relu, write_grad_res) * B * R * K * itemsize + 2 * B * R * s_itemsize


def squeeze_excite_fwd_planes() -> int:
    """x read."""
    return 1


def squeeze_excite_fwd(B: int, C: int, K: int, itemsize: int, acc: int, with_max: bool, tail: bool = True) -> int:
    """x read; mean written (+ max and its int32 tie count with max pooling); s written by the
    MLP tail (the one-launch path; the split path's MLP writes it outside the kernel)."""
    return squeeze_excite_fwd_planes() * B * C * K * itemsize + B * C * ((1 + tail) * acc + (acc + INT32) * with_max)


def excitation_bwd_reduce_planes(relu: bool) -> int:
    """grad_y and x read (+ y for relu)."""
    return 2 + relu


def excitation_bwd_reduce(B: int, C: int, K: int, RD: int, itemsize: int, acc: int, relu: bool, with_max: bool,
                          hidden_vectors: int, spatial: bool = False, tail: bool = True) -> int:
    """grad_y and x read (+ y for relu); s read, grad_s, mean written (+ max and its int32 tie
    count written); CBAM's per-pixel sp [B, 4, K] read (``spatial``); with the MLP ``tail`` (the
    one-launch path) also grad_mean (+ grad_max) and ``hidden_vectors`` [B, RD] vectors written
    (hidden and grad_h: 2, 3 for CBAM's two branches, 0 without a hidden layer)."""
    vectors = B * C * ((3 + tail) * acc + ((1 + tail) * acc + INT32) * with_max) + 4 * B * K * acc * spatial
    return excitation_bwd_reduce_planes(relu) * B * C * K * itemsize + vectors + B * RD * acc * hidden_vectors * tail


def excitation_bwd_apply_planes(relu: bool, write_grad_res: bool, with_max: bool, spatial: bool = False,
                                prologue: bool = False) -> int:
    """grad_y read, grad_x written (+ y read for relu, + grad_residual written, + x read with max
    pooling, CBAM's spatial half or a prologue)."""
    return 2 + relu + write_grad_res + (with_max or spatial or prologue)


def excitation_bwd_apply(B: int, C: int, K: int, itemsize: int, acc: int, relu: bool, write_grad_res: bool,
                         with_max: bool, spatial: bool = False, prologue: bool = False) -> int:
    """grad_y read, grad_x written (+ y read for relu, + grad_residual written, + x read with max
    pooling, ``spatial`` or a ``prologue``); s, grad_mean read (+ max, grad_max, count); CBAM's
    per-pixel sp [B, 4, K] read (``spatial``). The weight gradients are GEMMs outside it."""
    planes = excitation_bwd_apply_planes(relu, write_grad_res, with_max, spatial, prologue) * B * C * K * itemsize
    vectors = B * C * (2 * acc + (2 * acc + INT32) * with_max) + 4 * B * K * acc * spatial
    return planes + vectors


def gated_spatial_pool_fwd_planes() -> int:
    """x read."""
    return 1


def gated_spatial_pool_fwd(B: int, C: int, P: int, D: int, itemsize: int, acc: int) -> int:
    """x read, s [B, C] read; the descriptor d [B, D, P] written (ACC)."""
    return gated_spatial_pool_fwd_planes() * B * C * P * itemsize + B * C * acc + B * P * D * acc


def spatial_conv_fwd(B: int, P: int, D: int, acc: int) -> int:
    """[B, P] maps only: the descriptor d [B, D, P] read, the conv output u [B, P] written (ACC)."""
    return B * P * (D + 1) * acc


def doubly_gated_scale_fwd_planes() -> int:
    """x read, y written."""
    return 2


def doubly_gated_scale_fwd(B: int, C: int, P: int, itemsize: int, acc: int) -> int:
    """x read, y written; s [B, C] and u [B, P] read (ACC)."""
    return doubly_gated_scale_fwd_planes() * B * C * P * itemsize + B * (C + P) * acc


def cbam_spatial_bwd_reduce_planes() -> int:
    """grad_y and x read."""
    return 2


def cbam_spatial_bwd_reduce(B: int, C: int, P: int, D: int, itemsize: int, acc: int) -> int:
    """grad_y and x read; s [B, C] and u [B, P] read; grad_t, d [B, D, P], sp's gate and max rows
    written (ACC) and the int32 ties."""
    return cbam_spatial_bwd_reduce_planes() * B * C * P * itemsize + B * C * acc + B * P * ((D + 4) * acc + INT32)


def spatial_conv_bwd(B: int, P: int, D: int, acc: int) -> int:
    """[B, P] maps only: grad_t, u, d [B, D, P] (ACC) and the int32 ties read; sp's two gradient rows written."""
    return B * P * ((D + 4) * acc + INT32)


def batch_stats_fwd_planes() -> int:
    """x (the prologue BatchNorm's input) read."""
    return 1


def batch_stats_fwd(B: int, C: int, K: int, itemsize: int, acc: int, rows: int) -> int:
    """x read; the partial (mean, M2) [rows, 2, C] written and read back (``rows``: one per sample
    and pixel chunk, and per group of them: :func:`batch_stats_rows`), stats [3, C] written (ACC)."""
    return batch_stats_fwd_planes() * B * C * K * itemsize + 4 * rows * C * acc + 3 * C * acc


def batch_stats_rows(x: Tensor) -> int:
    """Rows of batch_stats_fwd's workspace for x (tritattn/launch.py's tile rule)."""
    from tritattn.launch import batch_stats_workspace  # needs triton: only a prologue's traffic asks
    return batch_stats_workspace(x)[0]


def prologue_norm_bwd(B: int, C: int, acc: int) -> int:
    """[B, C] vectors only: psum [B, 4, C], s and grad_mean read; sums [2, C] and the BatchNorm's
    weight and bias gradients written (ACC: the BatchNorm's parameters are float32, or float64
    with float64 x, as :func:`prologue_vectors` counts them)."""
    return 6 * B * C * acc + 4 * C * acc


def prologue_vectors(C: int, acc: int, norm: bool) -> int:
    """The per-channel vectors a kernel with a prologue BatchNorm reads: weight, bias, mean and
    variance, at the accumulator's width (a BatchNorm's parameters and statistics are float32
    under autocast, float64 with float64 x)."""
    return 4 * C * acc * norm


def hidden_vectors(mlp: str, pool: str, norm: bool = False) -> int:
    """The [B, RD] vectors the block's backward keeps between its kernels: hidden and grad_h (and
    grad_h of the max branch for CBAM's "mean_max_both"; and the two of grad_norm with a hidden
    BatchNorm); none without a hidden layer."""
    return ((3 if pool == "mean_max_both" else 2) + 2 * norm) if mlp == "fc_act_fc" else 0


def radix_pool_fwd(B: int, R: int, C: int, K: int, itemsize: int) -> int:
    """x5 [B, R, C, K] read; pooled [B, C] written."""
    return B * R * C * K * itemsize + B * C * itemsize


def radix_combine_fwd(B: int, R: int, C: int, K: int, itemsize: int, a_itemsize: int) -> int:
    """x5 read, out [B, C, K] written; a [B, R, C] read."""
    return B * R * C * K * itemsize + B * C * K * itemsize + B * R * C * a_itemsize


def radix_combine_bwd(B: int, R: int, C: int, K: int, itemsize: int, a_itemsize: int, grad_x: bool = True,
                      grad_a: bool = True, pooled_grad: bool = False) -> int:
    """grad_out [B, C, K] and a read; x5 read and grad_a written (``grad_a``); grad_x5 written
    (``grad_x``; the pooled gradient [B, C] read with ``pooled_grad``)."""
    maps = B * C * K * itemsize + B * R * C * K * itemsize * (grad_x + grad_a)
    return maps + B * R * C * a_itemsize * (1 + grad_a) + B * C * itemsize * pooled_grad


def radix_squeeze_attend_fwd(B: int, R: int, C: int, K: int, itemsize: int, acc: int, mlp_tail: bool = True) -> int:
    """x5 read; the pooled vector [B, C] and (with the MLP tail: the one-launch path) the attention
    [B, R, C] written (ACC); weights counted per block."""
    return B * R * C * K * itemsize + B * C * acc + B * R * C * acc * mlp_tail


def context_pool_partials(B: int, C: int, P: int, NP: int, itemsize: int, acc: int) -> int:
    """x read; the partial sums [B·NP, C] and (max, sum) [B·NP, 2] written (w: a parameter)."""
    return B * C * P * itemsize + B * NP * (C + 2) * acc


def context_pool_combine(B: int, C: int, NP: int, itemsize: int, acc: int) -> int:
    """The partials read; ctx [B, C] and stats [B, C + 2] written."""
    return B * NP * (C + 2) * acc + B * C * itemsize + B * (C + 2) * acc


def context_pool_combine_mlp(B: int, C: int, NP: int, acc: int, n_mlp: int) -> int:
    """The partials read; ctx [B, C] written and read back by each sample's last program; each
    MLP's output [B, C] written (all ACC); weights counted per block."""
    return B * NP * (C + 2) * acc + B * C * acc * (1 + n_mlp) + B * C * acc


def context_pool_bwd(B: int, C: int, P: int, NP: int, itemsize: int, acc: int) -> int:
    """grad_ctx [B, C], x and stats read; grad_x and the weight partials [B·NP, C + 1] written."""
    return B * C * itemsize + 2 * B * C * P * itemsize + B * (C + 2) * acc + B * NP * (C + 1) * acc


def _channel(x: Tensor) -> tuple[int, int, int, int]:
    B, C, H, W = x.shape
    return B, C, H * W, x.element_size()


def _spatial(x: Tensor) -> tuple[int, int, int, int]:
    B, C, H, W = x.shape
    return B, H * W, C, x.element_size()


def _acc_size(x: Tensor) -> int:
    return 8 if x.dtype == torch.float64 else 4


class KernelTraffic(NamedTuple):
    """One kernel launch of an op: its name, minimum bytes and x-sized tensor passes (planes)."""

    kernel: str
    bytes: int
    planes: int


def _mlp_tail(a: dict[str, Any], backward: bool) -> bool:
    """Whether a block op's call runs the MLP in its kernels' tail (the one-launch path) or as
    GEMMs between them (the split path), as the op decides (tritattn.excitation_block.op_kernel_path)."""
    from tritattn.excitation_block import op_kernel_path  # needs triton: only a block op's traffic asks
    return op_kernel_path(a, backward) == "one-launch"


def _block_traffic(op: str, a: dict[str, Any]) -> list[KernelTraffic]:
    B, C, K, size = _channel(a["x"])
    acc = _acc_size(a["x"])
    with_max, hidden = a["pool"] != "mean", hidden_vectors(a["mlp"], a["pool"], a.get("bn_weight") is not None)
    RD = a["w1"].shape[0] if a["mlp"] == "fc_act_fc" else 0
    relu = a["act_out"] == "relu"
    prologue = a.get("prologue_act", "none") != "none"
    pre_norm = a.get("pre_weight") is not None
    pre = prologue_vectors(C, acc, pre_norm)
    tail = _mlp_tail(a, op == "excitation_block_backward")
    if op == "excitation_block":
        has_residual = a["residual"] is not None
        stats = ([KernelTraffic("batch_stats_fwd", batch_stats_fwd(B, C, K, size, acc, batch_stats_rows(a["x"])),
                                batch_stats_fwd_planes())]
                 if a.get("pre_batch_stats") else [])
        return stats + [
            KernelTraffic("squeeze_excite_fwd", squeeze_excite_fwd(B, C, K, size, acc, with_max, tail) + pre,
                          squeeze_excite_fwd_planes()),
            KernelTraffic("gated_scale_fwd", gated_scale_fwd(B, C, K, size, acc, has_residual, _taps_inputs(a, tail)) + pre,
                          gated_scale_fwd_planes(has_residual))]
    wgr = a["want_grad_residual"]
    norm_bwd = ([KernelTraffic("prologue_norm_bwd", prologue_norm_bwd(B, C, acc), 0)]
                if pre_norm else [])
    psum, sums = 4 * B * C * acc * pre_norm, 2 * C * acc * pre_norm
    return [KernelTraffic("excitation_bwd_reduce",
                          excitation_bwd_reduce(B, C, K, RD, size, acc, relu, with_max, hidden, tail=tail) + pre + psum,
                          excitation_bwd_reduce_planes(relu))] + norm_bwd + [
            KernelTraffic("excitation_bwd_apply",
                          excitation_bwd_apply(B, C, K, size, acc, relu, wgr, with_max, prologue=prologue)
                          + pre + sums,
                          excitation_bwd_apply_planes(relu, wgr, with_max, prologue=prologue))]


def _taps_inputs(a: dict[str, Any], tail: bool) -> int:
    """The pooled vectors the split path's scale launch reads for ECA's taps (none elsewhere)."""
    return 0 if tail or not a["mlp"].startswith("taps") else 1 + (a["pool"] == "mean_max_avg")


def _cbam_traffic(op: str, a: dict[str, Any]) -> list[KernelTraffic]:
    B, C, P, size = _channel(a["x"])
    acc, D = _acc_size(a["x"]), a["conv_w"].shape[1]
    if op == "cbam_block":
        return [KernelTraffic("squeeze_excite_fwd", squeeze_excite_fwd(B, C, P, size, acc, True), squeeze_excite_fwd_planes()),
                KernelTraffic("gated_spatial_pool_fwd", gated_spatial_pool_fwd(B, C, P, D, size, acc),
                              gated_spatial_pool_fwd_planes()),
                KernelTraffic("spatial_conv_fwd", spatial_conv_fwd(B, P, D, acc), 0),
                KernelTraffic("doubly_gated_scale_fwd", doubly_gated_scale_fwd(B, C, P, size, acc),
                              doubly_gated_scale_fwd_planes())]
    RD, hidden = a["w1"].shape[0], hidden_vectors("fc_act_fc", a["pool"])
    return [KernelTraffic("cbam_spatial_bwd_reduce", cbam_spatial_bwd_reduce(B, C, P, D, size, acc),
                          cbam_spatial_bwd_reduce_planes()),
            KernelTraffic("spatial_conv_bwd", spatial_conv_bwd(B, P, D, acc), 0),
            KernelTraffic("excitation_bwd_reduce", excitation_bwd_reduce(B, C, P, RD, size, acc, False, True, hidden, True,
                                                                         _mlp_tail(dict(a, bn_weight=None), True)),
                          excitation_bwd_reduce_planes(False)),
            KernelTraffic("excitation_bwd_apply",
                          excitation_bwd_apply(B, C, P, size, acc, False, False, True, True),
                          excitation_bwd_apply_planes(False, False, True, True))]


def _radix_traffic(op: str, a: dict[str, Any]) -> list[KernelTraffic]:
    """Planes: [B, C, H, W] maps, one per branch of x5."""
    B, R, C, H, W = a["x5"].shape
    size = a["x5"].element_size()
    if op == "radix_pool":
        return [KernelTraffic("radix_pool_fwd", radix_pool_fwd(B, R, C, H * W, size), R)]
    if op == "radix_attention":  # inference: the squeeze (with the MLP: one-launch), then the combine of the ACC attention
        from tritattn.radix_block import op_attention_path  # the op's own choice of path

        acc, tail = _acc_size(a["x5"]), op_attention_path(a) == "one-launch"
        return [KernelTraffic("radix_squeeze_attend_fwd", radix_squeeze_attend_fwd(B, R, C, H * W, size, acc, tail), R),
                KernelTraffic("radix_combine_fwd", radix_combine_fwd(B, R, C, H * W, size, acc), R + 1)]
    a_size = a["a"].element_size()
    if op == "radix_combine":
        return [KernelTraffic("radix_combine_fwd", radix_combine_fwd(B, R, C, H * W, size, a_size), R + 1)]
    return [KernelTraffic("radix_combine_bwd", radix_combine_bwd(B, R, C, H * W, size, a_size), 2 * R + 1)]


def context_programs(x: Tensor) -> int:
    """B · NP: the programs (workspace rows) of the context-pooling kernels for x (tritattn/launch.py's tile rule)."""
    from tritattn.launch import context_pool_programs  # needs triton: only a context op's traffic asks
    return context_pool_programs(x)


def _context_traffic(op: str, a: dict[str, Any]) -> list[KernelTraffic]:
    B, C, P, size = _channel(a["x"])
    acc, NP = _acc_size(a["x"]), context_programs(a["x"]) // max(B, 1)
    if op == "context_pool":
        return [KernelTraffic("context_pool_partials", context_pool_partials(B, C, P, NP, size, acc), 1),
                KernelTraffic("context_pool_combine", context_pool_combine(B, C, NP, size, acc), 0)]
    if op == "context_mlp":  # inference: the merge with the MLPs (one-launch), or the merge (split: the MLPs in torch)
        from tritattn.context_block import op_mlp_path  # the op's own choice of path

        n_mlp = (a["scale_w1"] is not None) + (a["add_w1"] is not None)
        merge = (KernelTraffic("context_pool_combine_mlp", context_pool_combine_mlp(B, C, NP, acc, n_mlp), 0)
                 if op_mlp_path(a) == "one-launch" else
                 KernelTraffic("context_pool_combine", context_pool_combine(B, C, NP, acc, acc), 0))
        return [KernelTraffic("context_pool_partials", context_pool_partials(B, C, P, NP, size, acc), 1), merge]
    return [KernelTraffic("context_pool_bwd", context_pool_bwd(B, C, P, NP, size, acc), 2)]


def _op_traffic(op: str, a: dict[str, Any]) -> list[KernelTraffic]:
    """The kernels one call of ``torch.ops.tritattn.<op>`` launches, with arguments ``a`` by name, in launch order."""
    if op in ("excitation_block", "excitation_block_backward"):
        return _block_traffic(op, a)
    if op in ("radix_pool", "radix_combine", "radix_combine_backward", "radix_attention"):
        return _radix_traffic(op, a)
    if op in ("context_pool", "context_pool_backward", "context_mlp"):
        return _context_traffic(op, a)
    if op in ("cbam_block", "cbam_block_backward"):
        return _cbam_traffic(op, a)
    if op == "squeeze":
        return [KernelTraffic("mean_max_fwd", mean_max_fwd(*_channel(a["x"]), a["want_mean"], a["want_max"]),
                              mean_max_fwd_planes())]
    if op == "squeeze_backward":
        has_max = a["grad_max"] is not None
        return [KernelTraffic("mean_max_bwd", mean_max_bwd(*_channel(a["x"]), a["grad_mean"] is not None, has_max),
                              mean_max_bwd_planes(has_max))]
    if op == "spatial_pool":
        return [KernelTraffic("mean_max_fwd", mean_max_fwd(*_spatial(a["x"]), True, True), mean_max_fwd_planes())]
    if op == "spatial_pool_backward":
        return [KernelTraffic("mean_max_bwd", mean_max_bwd(*_spatial(a["x"]), True, True), mean_max_bwd_planes(True))]
    if op == "excite_scale":
        has_residual = a["residual"] is not None
        return [KernelTraffic("gated_scale_fwd", gated_scale_fwd(*_channel(a["x"]), a["s"].element_size(), has_residual),
                              gated_scale_fwd_planes(has_residual))]
    if op == "excite_scale_backward":
        relu, wgr = a["act"] == "relu", a["want_grad_residual"]
        return [KernelTraffic("gated_scale_bwd", gated_scale_bwd(*_channel(a["x"]), a["s"].element_size(), relu, wgr),
                              gated_scale_bwd_planes(relu, wgr))]
    if op == "spatial_scale":
        return [KernelTraffic("gated_scale_fwd", gated_scale_fwd(*_spatial(a["x"]), a["t"].element_size(), False),
                              gated_scale_fwd_planes(False))]
    if op == "spatial_scale_backward":
        return [KernelTraffic("gated_scale_bwd", gated_scale_bwd(*_spatial(a["x"]), a["t"].element_size(), False, False),
                              gated_scale_bwd_planes(False, False))]
    raise KeyError(f"no byte model for tritattn op {op!r}")


def op_kernels(op: str, a: dict[str, Any]) -> list[tuple[str, int]]:
    """[(kernel, minimum bytes)] of the kernels one call of ``torch.ops.tritattn.<op>`` launches,
    with arguments ``a`` by name, in launch order."""
    return [(k.kernel, k.bytes) for k in _op_traffic(op, a)]


def op_planes(op: str, a: dict[str, Any]) -> int:
    """x-sized tensors read or written by the kernels one call of ``torch.ops.tritattn.<op>``
    launches: the census's tensor passes (the plane terms of the byte functions, counted)."""
    return sum(k.planes for k in _op_traffic(op, a))


def param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def block_min_bytes(op_calls: list[tuple[str, dict[str, Any]]], module: nn.Module, training: bool) -> int:
    """Σ over the tritattn kernels a block launched, plus its parameters read once (and, for a
    training step, their gradients written once)."""
    kernels = sum(n for op, a in op_calls for _, n in op_kernels(op, a))
    return kernels + param_bytes(module) * (2 if training else 1)
