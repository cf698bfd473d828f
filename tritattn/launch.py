"""Host-side launchers: allocate nothing, check nothing, just map tensors onto kernel arguments.

Each function takes already-validated, kernel-addressable tensors (see :mod:`tritattn.layout`)
and preallocated outputs, describes the problem (B, R, K, layout, dtype, flags) and launches one
kernel through its :class:`~tritattn.tuning.Tuner`, which picks the block sizes, num_warps and
num_stages (tuned per GPU on CUDA, the tile heuristic under the interpreter); the grid is a
callable of the chosen config's META. The per-op functions mirror :mod:`tritattn.eager_ops` name
for name; the block pipeline's (``squeeze_excite_fwd``, ``excitation_bwd_reduce`` / ``excitation_bwd_apply``) have no eager twin: a
block whose tensors the kernels cannot take runs the per-op path instead (tritattn/modules.py).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import triton
import triton.language as tl

from .kernels import (
    cbam_spatial, cbam_spatial_bwd, context_pool, excitation, gated_scale, mean_max, prologue_norm, radix_combine,
    ticket_tree, tiling,
)
from .kernels.grid_math import cdiv, next_power_of_2
from .layout import Axis, flat_spatial_stride, plane_strides, vector_strides
from .tuning import MAX_CONFIGS, FixedConfig, Problem, Tuner

# Kernels that loop over K default to 3 pipeline stages; elementwise ones have nothing to pipeline.
MEAN_MAX_FWD = Tuner("mean_max_fwd", mean_max.mean_max_fwd, mean_max.MEAN_MAX_FWD_CONFIGS, num_stages=3)
MEAN_MAX_BWD = Tuner("mean_max_bwd", mean_max.mean_max_bwd, mean_max.MEAN_MAX_BWD_CONFIGS, num_stages=1)
GATED_SCALE_FWD = Tuner("gated_scale_fwd", gated_scale.gated_scale_fwd, gated_scale.GATED_SCALE_FWD_CONFIGS, num_stages=1)
SQUEEZE_EXCITE_FWD = Tuner("squeeze_excite_fwd", excitation.squeeze_excite_fwd, excitation.SQUEEZE_EXCITE_FWD_CONFIGS, num_stages=3)


class WideTuner(Tuner):
    """A Tuner whose untuned config spreads tiling's tile over ``num_warps`` warps (not 4) where
    both its sides are at least ``min_side`` (a square-ish tile; a long thin one keeps 4)."""

    def __init__(self, name: str, kernel, configs: list[triton.Config], num_stages: int, num_warps: int,
                 min_side: int) -> None:
        super().__init__(name, kernel, configs, num_stages)
        self.num_warps, self.min_side = num_warps, min_side

    def _default(self, problem: Problem) -> triton.Config:
        cfg = super()._default(problem)
        if min(cfg.kwargs["BLOCK_R"], cfg.kwargs["BLOCK_K"]) < self.min_side:
            return cfg
        return triton.Config(cfg.kwargs, num_warps=self.num_warps, num_stages=cfg.num_stages)


#: excitation_bwd_reduce keeps x, grad_y, d and the pooling's running max and ties live: tiling's
#: 64 × 64 tile (NCHW 7×7) over 4 warps spills on sm_90 (84 B of stores at SE 2048@7×7, with or
#: without the MLP tail; 255 registers), over 8 warps not (169); a 4 × 1024 tile spills over 8
#: warps (12 B with the prologue and the MLP tail: 128 registers), not over 4 (tests/test_spills.py)
EXCITATION_BWD_REDUCE = WideTuner("excitation_bwd_reduce", excitation.excitation_bwd_reduce,
                                  excitation.EXCITATION_BWD_REDUCE_CONFIGS, num_stages=3, num_warps=8, min_side=16)
#: gated_scale_bwd keeps grad_y, x, y (and its reduction) live: over 4 warps tiling's 64 × 64 tile
#: (NCHW 7×7) spills on sm_90 (360 B at SE 2048@7×7: 255 registers), and so does a 1024 × 4 tile
#: (bf16 channels_last, 12 B); over 8 warps neither does (tests/test_spills.py)
GATED_SCALE_BWD = WideTuner("gated_scale_bwd", gated_scale.gated_scale_bwd, gated_scale.GATED_SCALE_BWD_CONFIGS,
                            num_stages=3, num_warps=8, min_side=1)
DOUBLY_GATED_SCALE_FWD = Tuner(
    "doubly_gated_scale_fwd", cbam_spatial.doubly_gated_scale_fwd, cbam_spatial.DOUBLY_GATED_SCALE_FWD_CONFIGS, num_stages=1)
#: batch_stats_fwd's workspace has a row per (sample, pixel chunk): its tile is part of its
#: algorithm, chosen per problem by :func:`batch_stats_tile` and passed as constexprs (not tuned)
BATCH_STATS_FWD = FixedConfig("batch_stats_fwd", prologue_norm.batch_stats_fwd,
                              triton.Config({}, num_warps=4, num_stages=2))
#: prologue_norm_bwd: a tiny [B, C] reduction, one fixed config (BLOCK_B, BLOCK_C from :func:`prologue_norm_bwd`)
PROLOGUE_NORM_BWD = FixedConfig("prologue_norm_bwd", prologue_norm.prologue_norm_bwd,
                                triton.Config({}, num_warps=4, num_stages=1))
EXCITATION_BWD_APPLY = Tuner(
    "excitation_bwd_apply", excitation.excitation_bwd_apply, excitation.EXCITATION_BWD_APPLY_CONFIGS, num_stages=1)

Grid = Callable[[dict], tuple[int]]


#: Launch plans: what a launcher derives from a call's signature alone (shapes, strides, dtype,
#: flags) — its Problem, grid and constexprs — built once per distinct signature, so a call met
#: before only assembles its argument tuple (host time at batch 1–8: tritattn/dispatch.py).
_plans: dict[tuple, tuple] = {}
#: distinct signatures kept: a process meets a few per shape it runs; beyond this the cache restarts
PLAN_CACHE_SIZE = 4096


def _plan(signature: tuple, build: Callable[[], tuple]) -> tuple:
    """``build()`` for ``signature``, built on its first call and then remembered."""
    plan = _plans.get(signature)
    if plan is None:
        if len(_plans) >= PLAN_CACHE_SIZE:
            _plans.clear()
        plan = _plans[signature] = build()
    return plan


def _acc_dtype(t: torch.Tensor):
    return tl.float64 if t.dtype == torch.float64 else tl.float32


def _extent(x: torch.Tensor, axis: Axis) -> tuple[int, int, int]:
    B, C, H, W = x.shape
    return (B, C, H * W) if axis == "channel" else (B, H * W, C)


def _problem(x: torch.Tensor, axis: Axis, x_strides: tuple[int, int, int], **flags) -> Problem:
    B, R, K = _extent(x, axis)
    _, sr, sk = x_strides
    return Problem(B, R, K, rows_contiguous=sr < sk, dtype=x.dtype, flags=tuple(flags.items()))


def _rows_grid(p: Problem) -> Grid:
    return lambda META: tiling.rows_grid(p.B, p.R, META["BLOCK_R"])


def _elementwise_grid(p: Problem) -> Grid:
    return lambda META: tiling.elementwise_grid(p.B, p.R, p.K, META["BLOCK_R"], META["BLOCK_K"])


def mean_max_fwd(
    x: torch.Tensor, axis: Axis, mean: torch.Tensor | None, maximum: torch.Tensor | None, count: torch.Tensor | None
) -> None:
    """mean / max (and tie count) of x over the K axis of ``axis`` into the given per-row vectors."""
    def build() -> tuple:
        xs = plane_strides(x, axis)
        p = _problem(x, axis, xs, WANT_MEAN=mean is not None, WANT_MAX=maximum is not None)
        ms = vector_strides(mean, axis) if mean is not None else (0, 0)
        Ms = vector_strides(maximum, axis) if maximum is not None else (0, 0)
        return p, _rows_grid(p), (*xs, *ms, *Ms), dict(p.flags, ACC=_acc_dtype(x))

    p, grid, strides, constexprs = _plan(
        ("mean_max_fwd", x.shape, x.stride(), x.dtype, axis, None if mean is None else mean.stride(),
         None if maximum is None else maximum.stride(), count is None), build)
    MEAN_MAX_FWD.launch(p, grid, (x, mean, maximum, count, p.R, p.K, *strides), constexprs, x.device)


def mean_max_bwd(
    x: torch.Tensor, axis: Axis, grad_mean: torch.Tensor | None, grad_max: torch.Tensor | None,
    maximum: torch.Tensor | None, count: torch.Tensor | None, grad_x: torch.Tensor,
) -> None:
    """grad_x = grad_mean / K + [x == max] · grad_max / count, broadcast along K."""
    def build() -> tuple:
        xs = plane_strides(x, axis)
        p = _problem(x, axis, xs, HAS_MEAN=grad_mean is not None, HAS_MAX=grad_max is not None)
        gms = vector_strides(grad_mean, axis) if grad_mean is not None else (0, 0)
        gMs = vector_strides(grad_max, axis) if grad_max is not None else (0, 0)
        Ms = vector_strides(maximum, axis) if maximum is not None else (0, 0)
        return (p, _elementwise_grid(p), (*xs, *plane_strides(grad_x, axis), *gms, *gMs, *Ms),
                dict(p.flags, ACC=_acc_dtype(x)))

    p, grid, strides, constexprs = _plan(
        ("mean_max_bwd", x.shape, x.stride(), x.dtype, axis, grad_x.stride(),
         *(None if t is None else t.stride() for t in (grad_mean, grad_max, maximum)), count is None), build)
    MEAN_MAX_BWD.launch(p, grid, (x, grad_mean, grad_max, maximum, count, grad_x, p.R, p.K, *strides),
                        constexprs, x.device)


def _prologue_flags(prologue: tuple | None) -> dict:
    """The Problem flags of a block's prologue, its kernel constexprs: present only with one (so
    the tuning keys of the blocks without are unchanged)."""
    return _prologue_args(prologue)[2] if prologue is not None else {}


def _prologue_args(prologue: tuple | None) -> tuple[tuple, float, dict]:
    """(the BatchNorm's weight, bias, mean, var; its eps; the constexprs) of a prologue
    ``(act, norm)`` (kernels/norm_act.py), Nones and "none" without one."""
    if prologue is None:
        return _NO_PROLOGUE
    act, norm = prologue
    *tensors, eps = norm if norm is not None else (None, None, None, None, 0.0)
    return tuple(tensors), eps, dict(PRO_ACT=act, PRO_NORM=norm is not None)


#: :func:`_prologue_args` without a prologue (its dict is only read)
_NO_PROLOGUE = ((None, None, None, None), 0.0, dict(PRO_ACT="none", PRO_NORM=False))


def gated_scale_fwd(
    x: torch.Tensor, s: torch.Tensor, residual: torch.Tensor | None, y: torch.Tensor,
    axis: Axis, gate: str, act: str, prologue: tuple | None = None, plan: tuple | None = None,
    taps: tuple | None = None,
) -> tuple:
    """y = act(x · gate(s) + residual), s broadcast along the K axis of ``axis``; ``prologue``
    (channel axis only): (the producer's activation, its BatchNorm's (weight, bias, mean, var,
    eps) — running or batch statistics — or None), applied to x as loaded; ``taps`` (channel
    axis only, ECA's split path): (mean, max or None — the pooled workspaces, contiguous [B, C] —,
    the taps w [k], the bias [1] or None, the pool, whether the padding is circular): s [B, C]
    is then computed by the launch from them and written, not read (kernels/gated_scale.py).
    Returns its plan (:func:`_plan`), which a caller may pass back as ``plan`` for a call of the
    same signature."""
    pro, pro_eps, pro_flags = _prologue_args(prologue)
    mean, maximum, w, bias = taps[:4] if taps is not None else _NO_TAPS_TENSORS
    if plan is None:  # else the plan returned for this signature before (the caller kept it)
        flags = _taps_flags(taps)

        def build() -> tuple:
            xs = plane_strides(x, axis)
            p = _problem(x, axis, xs, HAS_RESIDUAL=residual is not None, ACT=act, **_prologue_flags(prologue),
                         **({"TAPS": flags["TAPS"], "POOL": flags["POOL"]} if taps is not None else {}))
            res = plane_strides(residual, axis) if residual is not None else (0, 0, 0)
            strides = (*xs, *vector_strides(s, axis), *res, *plane_strides(y, axis))
            constexprs = {**flags, **dict(p.flags), "GATE": gate, "ACC": _acc_dtype(x), **pro_flags}
            return p, _elementwise_grid(p), strides, constexprs, w.stride(0) if w is not None else 0

        plan = _plan(
            ("gated_scale_fwd", x.shape, x.stride(), x.dtype, s.stride(),
             None if residual is None else residual.stride(), y.stride(), axis, gate, act, tuple(pro_flags.values()),
             tuple(flags.values()), None if w is None else w.stride()), build)
    p, grid, strides, constexprs, stw = plan
    GATED_SCALE_FWD.launch(p, grid, (x, s, residual, y, *pro, mean, maximum, w, bias, p.R, p.K, pro_eps, stw,
                                     *strides), constexprs, x.device)
    return plan


#: gated_scale_fwd's taps tensors (mean, max, w, bias) without taps
_NO_TAPS_TENSORS = (None, None, None, None)


def _taps_flags(taps: tuple | None) -> dict:
    """gated_scale_fwd's taps constexprs for ``taps`` (its argument), TAPS = 0 without."""
    if taps is None:
        return dict(_taps_constexprs(None, False), POOL="mean", HAS_TAP_BIAS=False)
    _, _, w, bias, pool, circular = taps
    return dict(_taps_constexprs(w, circular), POOL=pool, HAS_TAP_BIAS=bias is not None)


def _taps_constexprs(w: torch.Tensor | None, circular: bool) -> dict:
    """The constexprs of a channel conv over the taps w [k] (kernels/channel_taps.py), TAPS = 0 without."""
    if w is None:
        return dict(TAPS=0, PAD=0, CIRCULAR=False, BLOCK_T=1)
    k = w.shape[0]
    return dict(TAPS=k, PAD=(k - 1) // 2, CIRCULAR=circular, BLOCK_T=next_power_of_2(k))


def gated_scale_bwd(
    grad_y: torch.Tensor, x: torch.Tensor, s: torch.Tensor, y: torch.Tensor | None,
    grad_x: torch.Tensor, grad_res: torch.Tensor | None, grad_s: torch.Tensor,
    axis: Axis, gate: str, act: str,
) -> None:
    """grad_x, grad_s (and grad_residual for relu) of gated_scale in one pass over grad_y and x."""
    def build() -> tuple:
        xs = plane_strides(x, axis)
        p = _problem(x, axis, xs, ACT=act, WRITE_GRAD_RES=grad_res is not None)
        ys = plane_strides(y, axis) if y is not None else (0, 0, 0)
        grs = plane_strides(grad_res, axis) if grad_res is not None else (0, 0, 0)
        strides = (*plane_strides(grad_y, axis), *xs, *vector_strides(s, axis), *ys,
                   *plane_strides(grad_x, axis), *grs, *vector_strides(grad_s, axis))
        return p, _rows_grid(p), strides, dict(p.flags, GATE=gate, ACC=_acc_dtype(x))

    p, grid, strides, constexprs = _plan(
        ("gated_scale_bwd", x.shape, x.stride(), x.dtype, grad_y.stride(), s.stride(),
         None if y is None else y.stride(), grad_x.stride(), None if grad_res is None else grad_res.stride(),
         grad_s.stride(), axis, gate, act), build)
    GATED_SCALE_BWD.launch(p, grid, (grad_y, x, s, y, grad_x, grad_res, grad_s, p.R, p.K, *strides),
                           constexprs, x.device)


# --- the channel-attention block pipeline (kernels/excitation.py) ------------------------------

def _strides2(t: torch.Tensor | None) -> tuple[int, int]:
    """Strides of a 2-D weight (a 1-D one: (0, its stride)); (0, 0) for None."""
    if t is None:
        return 0, 0
    return (0, t.stride(0)) if t.dim() == 1 else (t.stride(0), t.stride(1))


def excitation_geometry(C: int, RD: int, taps: int = 1) -> dict[str, int]:
    """The per-sample MLP's tile: BLOCK_J ≥ RD (the hidden width; C for "fc"), ≥ ``taps`` for the
    taps (their gathered tile's width, kernels/channel_taps.py; RD is 1) and MLP_BLOCK_C channels
    per step, BLOCK_J × MLP_BLOCK_C ≤ excitation.MLP_TILE_ELEMENTS."""
    block_j = next_power_of_2(max(RD, taps, 1))
    block_c = max(1, min(next_power_of_2(C), excitation.MLP_TILE_ELEMENTS // block_j))
    return dict(BLOCK_J=block_j, MLP_BLOCK_C=block_c)


def _excitation_flags(spec: dict, C: int, RD: int) -> dict:
    """The constexprs every block-pipeline kernel takes (the hidden ACT only the two that run the MLP)."""
    return dict(POOL=spec["pool"], MLP=spec["mlp"], PAD=spec["pad"], TAPS=spec["taps"],
                **excitation_geometry(C, RD, spec["taps"]))


def _norm_flags(norm: tuple | None) -> dict:
    """The Problem flag of a hidden BatchNorm: present only when there is one (so the tuning keys
    of the other blocks are unchanged)."""
    return {"HIDDEN_NORM": True} if norm is not None else {}


def _norm_args(norm: tuple | None) -> tuple:
    """The kernels' (weight, bias, running mean, running var, eps) of a hidden BatchNorm; Nones
    and 0 without one."""
    return norm if norm is not None else (None, None, None, None, 0.0)


def squeeze_excite_fwd(
    x: torch.Tensor, w1, b1, w2, b2, spec: dict, RD: int,
    mean: torch.Tensor, maximum: torch.Tensor | None, count: torch.Tensor | None, s: torch.Tensor | None,
    counter: torch.Tensor | None, norm: tuple | None = None, prologue: tuple | None = None, mlp_tail: bool = True,
    plan: tuple | None = None,
) -> tuple:
    """Pooled vectors and the excitation logits s [B, C] of x in one launch (kernels/excitation.py);
    ``norm``: the hidden BatchNorm's (weight, bias, running mean, running var, eps), or None;
    ``prologue`` as in :func:`gated_scale_fwd`. Without ``mlp_tail`` (the split path) the
    launch pools only: s, the weights and the counters are not used (None). Returns its plan
    (``plan``: as :func:`gated_scale_fwd`'s)."""
    *bn, bn_eps = _norm_args(norm)
    pro, pro_eps, pro_flags = _prologue_args(prologue)
    if plan is None:  # else the plan returned for this signature before (the caller kept it)
        def build() -> tuple:
            xs = plane_strides(x, "channel")
            p = _problem(x, "channel", xs, POOL=spec["pool"], MLP=spec["mlp"], RD=RD, **_norm_flags(norm),
                         **_prologue_flags(prologue), **_tail_flag(mlp_tail))
            constexprs = dict(_excitation_flags(spec, p.R, RD), ACT=spec["act"], HAS_B1=b1 is not None,
                              HAS_B2=b2 is not None, HIDDEN_NORM=norm is not None, ACC=_acc_dtype(x), MLP_TAIL=mlp_tail,
                              **pro_flags)
            return p, _rows_grid(p), (*xs, *_strides2(w1), *_strides2(w2)), constexprs

        plan = _plan(
            ("squeeze_excite_fwd", x.shape, x.stride(), x.dtype, spec["pool"], spec["mlp"], spec["act"], spec["taps"],
             RD, None if w1 is None else w1.stride(), b1 is None, None if w2 is None else w2.stride(), b2 is None,
             norm is None, tuple(pro_flags.values()), mlp_tail, excitation.MLP_TILE_ELEMENTS), build)
    p, grid, strides, constexprs = plan
    SQUEEZE_EXCITE_FWD.launch(
        p, grid, (x, mean, maximum, count, counter, w1, b1, w2, b2, *bn, s, *pro, p.R, p.K, RD, bn_eps, pro_eps,
                  *strides), constexprs, x.device)
    return plan


def _tail_flag(mlp_tail: bool) -> dict:
    """The Problem flag of the split path (no MLP tail): present only then, so the one-launch
    path's tuning keys are unchanged."""
    return {} if mlp_tail else {"MLP_TAIL": False}


def excitation_bwd_reduce(
    grad_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None, s: torch.Tensor,
    mean: torch.Tensor, maximum: torch.Tensor | None, count: torch.Tensor | None,
    w1, b1, w2, spec: dict, RD: int, gate: str, act_out: str,
    work: dict[str, torch.Tensor], counter: torch.Tensor | None,
    sp: torch.Tensor | None = None, norm: tuple | None = None, prologue: tuple | None = None,
    batch_stats: bool = False, mlp_tail: bool = True, plan: tuple | None = None,
) -> tuple:
    """The block's backward, first launch (kernels/excitation.py excitation_bwd_reduce): Σ_k dy·x
    → ``work`` "grad_s", the pooled vectors into ``mean`` / ``maximum`` / ``count``, and with
    ``mlp_tail`` (the one-launch path) the MLP backward per sample into ``work`` ("grad_mean",
    "grad_max", "hidden", "grad_h", "grad_norm"); without it (the split path) the weights, those
    workspaces and the counters are not used. With act_out "spatial" (CBAM), grad_y is the
    gradient of the block's output after the spatial half, and ``sp`` [B, 4, H·W] that half's
    per-pixel terms (kernels/cbam_spatial_bwd.py). ``norm``: the hidden BatchNorm's (weight,
    bias, running mean, running var, eps). ``prologue`` as in :func:`gated_scale_fwd` (with a
    BatchNorm also ``work`` "psum"), its BatchNorm's statistics the batch's with ``batch_stats``.
    Returns its plan (``plan``: as :func:`gated_scale_fwd`'s)."""
    *bn, bn_eps = _norm_args(norm)
    pro, pro_eps, pro_kernel_flags = _prologue_args(prologue)
    if plan is None:  # else the plan returned for this signature before (the caller kept it)
        def build() -> tuple:
            xs = plane_strides(x, "channel")
            p = _problem(x, "channel", xs, POOL=spec["pool"], MLP=spec["mlp"], RD=RD, ACT_OUT=act_out,
                         **_norm_flags(norm), **_backward_prologue_flags(prologue, batch_stats), **_tail_flag(mlp_tail))
            ys = plane_strides(y, "channel") if y is not None else (0, 0, 0)
            strides = (*plane_strides(grad_y, "channel"), *xs, *ys, *_strides2(w1), *_strides2(w2))
            constexprs = dict(_excitation_flags(spec, x.shape[1], RD), ACT=spec["act"], GATE=gate, ACT_OUT=act_out,
                              HAS_B1=b1 is not None, HIDDEN_NORM=norm is not None, MLP_TAIL=mlp_tail, ACC=_acc_dtype(x),
                              **pro_kernel_flags)
            return p, _rows_grid(p), strides, constexprs

        plan = _plan(
            ("excitation_bwd_reduce", x.shape, x.stride(), x.dtype, grad_y.stride(), None if y is None else y.stride(),
             spec["pool"], spec["mlp"], spec["act"], spec["taps"], RD, gate, act_out,
             None if w1 is None else w1.stride(), b1 is None, None if w2 is None else w2.stride(), norm is None,
             tuple(pro_kernel_flags.values()), batch_stats, mlp_tail, excitation.MLP_TILE_ELEMENTS), build)
    p, grid, strides, constexprs = plan
    EXCITATION_BWD_REDUCE.launch(
        p, grid,
        (grad_y, x, y, sp, s, work["grad_s"], counter, mean, maximum, count, w1, b1, w2, *bn,
         work["hidden"], work["grad_h"], work["grad_norm"], work["grad_mean"], work["grad_max"],
         *pro, work.get("psum"), p.R, p.K, RD, bn_eps, pro_eps, *strides), constexprs, x.device)
    return plan


def _backward_prologue_flags(prologue: tuple | None, batch_stats: bool) -> dict:
    """The backward's Problem flags of a prologue (BATCH_STATS with a prologue BatchNorm)."""
    flags = _prologue_flags(prologue)
    if prologue is not None and prologue[1] is not None:
        flags["BATCH_STATS"] = batch_stats
    return flags


def excitation_bwd_apply(
    grad_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None, s: torch.Tensor,
    maximum: torch.Tensor | None, count: torch.Tensor | None, spec: dict, RD: int, gate: str, act_out: str,
    work: dict[str, torch.Tensor], grad_x: torch.Tensor, grad_res: torch.Tensor | None,
    sp: torch.Tensor | None = None, norm: tuple | None = None, prologue: tuple | None = None,
    batch_stats: bool = False, plan: tuple | None = None, taps: torch.Tensor | None = None,
) -> tuple:
    """The block's backward, last launch (kernels/excitation.py excitation_bwd_apply), elementwise:
    grad_x (and grad_residual) from ``work`` "grad_mean" / "grad_max" (and "sums" with a
    prologue BatchNorm, :func:`prologue_norm_bwd`); with ``taps`` (ECA's split path, the "mean"
    pool: the taps w [k]) grad_mean is computed by the launch from ``work`` "grad_s" and the taps
    (the transposed channel conv, kernels/channel_taps.py) instead of read; arguments and ``plan``
    as :func:`excitation_bwd_reduce`."""
    pro, pro_eps, pro_kernel_flags = _prologue_args(prologue)
    if plan is None:  # else the plan returned for this signature before (the caller kept it)
        if taps is not None and spec["pool"] != "mean":
            raise ValueError(f"the apply launch computes the taps' input gradient for the mean pool only, not {spec['pool']}")
        taps_flags = _taps_constexprs(taps, spec["mlp"] == "taps_circular")

        def build() -> tuple:
            xs = plane_strides(x, "channel")
            pa = _problem(x, "channel", xs, POOL=spec["pool"], MLP=spec["mlp"], RD=RD, ACT_OUT=act_out,
                          WRITE_GRAD_RES=grad_res is not None, **_norm_flags(norm),
                          **_backward_prologue_flags(prologue, batch_stats),
                          **({"TAPS": taps_flags["TAPS"]} if taps is not None else {}))
            ys = plane_strides(y, "channel") if y is not None else (0, 0, 0)
            strides = (*plane_strides(grad_y, "channel"), *xs, *ys,
                       *plane_strides(grad_x, "channel"),
                       *(plane_strides(grad_res, "channel") if grad_res is not None else (0, 0, 0)))
            constexprs = dict(taps_flags, GATE=gate, ACT_OUT=act_out, WRITE_GRAD_RES=grad_res is not None,
                              POOL=spec["pool"], BATCH_STATS=batch_stats, ACC=_acc_dtype(x), **pro_kernel_flags)
            return pa, _elementwise_grid(pa), strides, constexprs, taps.stride(0) if taps is not None else 0

        plan = _plan(
            ("excitation_bwd_apply", x.shape, x.stride(), x.dtype, grad_y.stride(), None if y is None else y.stride(),
             grad_x.stride(), None if grad_res is None else grad_res.stride(), spec["pool"], spec["mlp"], RD, gate,
             act_out, norm is None, tuple(pro_kernel_flags.values()), batch_stats, tuple(taps_flags.values()),
             None if taps is None else taps.stride()), build)
    pa, grid, strides, constexprs, stw = plan
    EXCITATION_BWD_APPLY.launch(
        pa, grid,
        (grad_y, x, y, sp, s, grad_x, grad_res, work["grad_mean"], work["grad_max"], maximum, count,
         *pro, work.get("sums"), work["grad_s"] if taps is not None else None, taps, pa.B, pa.R, pa.K, pro_eps, stw,
         *strides), constexprs, x.device)
    return plan


#: batch_stats_fwd: at most this many channels per program (its merges then read
#: TILE_ELEMENTS / 2 / BLOCK_R ≥ 64 partial rows per load)
BATCH_STATS_MAX_BLOCK_R = 32
#: batch_stats_fwd: BLOCK_K tiles per program (a chunk of KC = BATCH_STATS_STEPS · BLOCK_K pixels)
BATCH_STATS_STEPS = 8


def batch_stats_tile(x: torch.Tensor) -> dict[str, int]:
    """batch_stats_fwd's tile for x [B, C, H, W]: BLOCK_R, BLOCK_K (the long side on the
    contiguous axis, tiling.tile_shape's rule, at most BATCH_STATS_MAX_BLOCK_R channels), KC (a
    program's chunk of pixels), MERGE_ROWS (partial rows per merge load), ROWS = B·cdiv(H·W, KC)
    (one per sample and chunk) and NG = cdiv(ROWS, MERGE_ROWS) groups (TILE_ELEMENTS and
    LONG_SIDE_MAX read at call time: tests shrink them)."""
    B, C, H, W = x.shape
    K = H * W
    cap_r = min(BATCH_STATS_MAX_BLOCK_R, tiling.LONG_SIDE_MAX)
    if _problem(x, "channel", plane_strides(x, "channel")).rows_contiguous:
        block_r = min(next_power_of_2(C), cap_r)
        block_k = max(1, min(next_power_of_2(K), tiling.TILE_ELEMENTS // block_r))
    else:
        block_k = min(next_power_of_2(K), tiling.LONG_SIDE_MAX, tiling.TILE_ELEMENTS)
        block_r = max(1, min(next_power_of_2(C), cap_r, tiling.TILE_ELEMENTS // block_k))
    kc = BATCH_STATS_STEPS * block_k
    merge_rows = max(1, tiling.TILE_ELEMENTS // 2 // block_r)
    rows = B * cdiv(K, kc)
    return dict(BLOCK_R=block_r, BLOCK_K=block_k, KC=kc, MERGE_ROWS=merge_rows, ROWS=rows,
                NG=cdiv(rows, merge_rows))


def batch_stats_workspace(x: torch.Tensor) -> tuple[int, int]:
    """(rows of batch_stats_fwd's ACC workspace [rows, 2, C]: ROWS, + NG with several groups; its
    counter slots: cdiv(C, BLOCK_R) · (1 + NG)) — :func:`batch_stats_tile`."""
    t = batch_stats_tile(x)
    return t["ROWS"] + (t["NG"] if t["NG"] > 1 else 0), cdiv(x.shape[1], t["BLOCK_R"]) * (1 + t["NG"])


def batch_stats_fwd(x: torch.Tensor, part: torch.Tensor, stats: torch.Tensor, counter: torch.Tensor) -> None:
    """Per channel of x: batch mean, biased and unbiased variance into ``stats`` [3, C]
    (kernels/prologue_norm.py); ``part`` [rows, 2, C] ACC workspace and ``counter`` zeroed
    slots (left at 0), as many as :func:`batch_stats_workspace` says."""
    xs = plane_strides(x, "channel")
    p = _problem(x, "channel", xs)
    t = batch_stats_tile(x)
    BATCH_STATS_FWD.launch(p, lambda META: (t["ROWS"] * cdiv(p.R, t["BLOCK_R"]),),
                           (x, part, stats, counter, p.R, p.K, t["KC"], cdiv(p.K, t["KC"]), t["ROWS"], *xs),
                           dict(ACC=_acc_dtype(x), BLOCK_R=t["BLOCK_R"], BLOCK_K=t["BLOCK_K"],
                                MERGE_ROWS=t["MERGE_ROWS"]), x.device)


#: prologue_norm_bwd's tile: up to this many samples per load (more take several steps) ...
PROLOGUE_NORM_BWD_MAX_BLOCK_B = 256
#: ... and this many elements per [BLOCK_B, BLOCK_C] tile
PROLOGUE_NORM_BWD_TILE = 2048


def prologue_norm_bwd(
    s: torch.Tensor, grad_mean: torch.Tensor, psum: torch.Tensor, sums: torch.Tensor,
    grad_weight: torch.Tensor, grad_bias: torch.Tensor, gate: str, K: int,
) -> None:
    """The prologue BatchNorm's per-channel sums S, T into ``sums`` [2, C] and its weight and bias
    gradients (kernels/prologue_norm.py): [BLOCK_B, BLOCK_C] tiles, BLOCK_B the batch up to
    PROLOGUE_NORM_BWD_MAX_BLOCK_B samples, BLOCK_B · BLOCK_C = PROLOGUE_NORM_BWD_TILE."""
    B, C = s.shape
    block_b = min(next_power_of_2(B), PROLOGUE_NORM_BWD_MAX_BLOCK_B)
    block_c = max(1, min(next_power_of_2(C), PROLOGUE_NORM_BWD_TILE // block_b))
    ps = Problem(B, C, 1, rows_contiguous=True, dtype=s.dtype)
    PROLOGUE_NORM_BWD.launch(ps, lambda META: (cdiv(C, block_c),),
                             (s, grad_mean, psum, sums, grad_weight, grad_bias, B, C, K),
                             dict(GATE=gate, ACC=_acc_dtype(s), BLOCK_B=block_b, BLOCK_C=block_c), s.device)


# --- CBAM's spatial half (kernels/cbam_spatial.py, kernels/cbam_spatial_bwd.py) ----------------

#: The per-pixel reductions over C (gated_spatial_pool_fwd, cbam_spatial_bwd_reduce) spread a
#: sample's map over at least this many programs by default: ≥ 264 programs (two per H100 SM,
#: cost_model.MIN_PROGRAMS) from B = 32 on, with every program's work independent of B ...
SPATIAL_PROGRAMS_PER_SAMPLE = 9
#: ... and a program takes at most this many steps along C (2 or 3 loads each), so that its
#: memory instructions stay a few dozen (cost_model.tail_violations: × 0.4 µs under 12 µs) ...
SPATIAL_MAX_STEPS = 4
#: ... without cutting a program's pixels below this many in NCHW, where they are contiguous.
SPATIAL_MIN_BLOCK_R = 4
#: Their tile holds several live copies (x, z, grad_y, the masks): half of tiling.TILE_ELEMENTS
#: over 8 warps, which compiles for sm_90 without spilling (4096 over 4 warps spills up to 672 B).
SPATIAL_TILE_SHARE, SPATIAL_NUM_WARPS = 2, 8


def _power_of_two_below(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def pixel_rows_config(p: Problem, num_stages: int) -> triton.Config:
    """The untuned tile of CBAM's per-pixel reductions over C (R = H·W pixels, K = C): tiling's
    tile shape for tiling.TILE_ELEMENTS / SPATIAL_TILE_SHARE elements, its pixel side cut to at
    most R / SPATIAL_PROGRAMS_PER_SAMPLE and to what leaves at most SPATIAL_MAX_STEPS steps along
    C (powers of two, not below SPATIAL_MIN_BLOCK_R when the pixels are contiguous), its channel
    side grown to keep the tile's size; SPATIAL_NUM_WARPS warps."""
    elements = max(1, tiling.TILE_ELEMENTS // SPATIAL_TILE_SHARE)
    block_r, block_k = tiling.tile_shape(p.R, p.K, p.rows_contiguous, elements)
    share = _power_of_two_below(p.R // SPATIAL_PROGRAMS_PER_SAMPLE)
    steps = _power_of_two_below(elements * SPATIAL_MAX_STEPS // next_power_of_2(p.K))
    cap = max(SPATIAL_MIN_BLOCK_R if p.rows_contiguous else 1, min(share, steps))
    if block_r > cap:
        block_r, block_k = cap, max(1, min(next_power_of_2(p.K), tiling.LONG_SIDE_MAX, block_r * block_k // cap))
    return triton.Config({"BLOCK_R": block_r, "BLOCK_K": block_k}, num_warps=SPATIAL_NUM_WARPS, num_stages=num_stages)


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _cached_default(config: Callable[[Problem, int], triton.Config], problem: Problem, num_stages: int,
                    tile_elements: int, long_side_max: int) -> triton.Config:
    """``config(problem, num_stages)``, made once: an untuned problem's config is asked for at every
    launch (tuning.Tuner._config). ``tile_elements`` and ``long_side_max`` are the values of
    tiling.TILE_ELEMENTS / LONG_SIDE_MAX it reads, so a changed heuristic is a new entry."""
    return config(problem, num_stages)


class PixelRowsTuner(Tuner):
    """A Tuner of CBAM's per-pixel reductions over C: its untuned tile is :func:`pixel_rows_config`,
    the first of the candidates it benchmarks (then tiling's pruned ones)."""

    def _default(self, problem: Problem) -> triton.Config:
        return _cached_default(pixel_rows_config, problem, self.num_stages, tiling.TILE_ELEMENTS, tiling.LONG_SIDE_MAX)

    def candidates(self, problem: Problem, grid: Grid, min_programs: int = 0) -> list[triton.Config]:
        default = self._default(problem)
        rest = [cfg for cfg in super().candidates(problem, grid, min_programs)
                if (cfg.kwargs, cfg.num_warps, cfg.num_stages) != (default.kwargs, default.num_warps, default.num_stages)]
        return [default] + rest[:MAX_CONFIGS - 1]


GATED_SPATIAL_POOL_FWD = PixelRowsTuner(
    "gated_spatial_pool_fwd", cbam_spatial.gated_spatial_pool_fwd, cbam_spatial.GATED_SPATIAL_POOL_FWD_CONFIGS, num_stages=3)
CBAM_SPATIAL_BWD_REDUCE = PixelRowsTuner(
    "cbam_spatial_bwd_reduce", cbam_spatial_bwd.cbam_spatial_bwd_reduce,
    cbam_spatial_bwd.CBAM_SPATIAL_BWD_REDUCE_CONFIGS, num_stages=3)
#: The conv launches' tile (spatial_conv_tile) is part of their workspace's shape: one config each.
SPATIAL_CONV_FWD = FixedConfig("spatial_conv_fwd", cbam_spatial.spatial_conv_fwd,
                               triton.Config({}, num_warps=4, num_stages=1))
SPATIAL_CONV_BWD = FixedConfig("spatial_conv_bwd", cbam_spatial_bwd.spatial_conv_bwd,  # 4 warps spill (light CBAM)
                               triton.Config({}, num_warps=8, num_stages=1))
#: Row widths of the merge trees (kernels/ticket_tree.py): the forward conv's (n, mean, M2) and the
#: BatchNorm's two gradient sums.
MOMENTS_WIDTH, BN_SUMS_WIDTH = 4, 2


def spatial_conv_tile(P: int, D: int, KS: int) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_T) of spatial_conv_fwd (BLOCK_T ≥ D·KS·KS taps) and of spatial_conv_bwd
    (BLOCK_T ≥ KS·KS taps of each of D channels): BLOCK_P pixels × the D·KS·KS taps padded to a
    power of two make a gather of at most tiling.TILE_ELEMENTS (read at call time)."""
    taps = next_power_of_2(D * KS * KS)
    return max(1, min(next_power_of_2(P), tiling.TILE_ELEMENTS // taps)), taps


def spatial_conv_programs(B: int, P: int, D: int, KS: int) -> int:
    """The conv launches' grid: one program per (sample, BLOCK_P pixels)."""
    return B * cdiv(P, spatial_conv_tile(P, D, KS)[0])


def _tree_fan(width: int) -> int:
    """FAN of a merge tree of rows of ``width`` values (tiling.TILE_ELEMENTS read at call time)."""
    return ticket_tree.tree_fan(width, tiling.TILE_ELEMENTS)


def _tree(n: int, width: int) -> tuple[int, int]:
    """(partial rows, counter slots) of a merge tree of ``n`` rows of ``width`` values."""
    return ticket_tree.tree_shape(n, _tree_fan(width))


def cbam_forward_workspace(B: int, P: int, D: int, KS: int, batch_stats: bool) -> tuple[int, int]:
    """(rows of the forward's merge workspace [rows, MOMENTS_WIDTH], counter slots) of
    :func:`cbam_spatial_forward`: the batch statistics' tree (none with running statistics)."""
    return _tree(spatial_conv_programs(B, P, D, KS), MOMENTS_WIDTH) if batch_stats else (0, 0)


def cbam_backward_workspace(B: int, P: int, D: int, KS: int) -> tuple[int, int, int]:
    """(rows of the BatchNorm sums' merge workspace [rows, BN_SUMS_WIDTH], rows of the conv
    weight's [rows, D·KS·KS padded], counter slots) of :func:`cbam_spatial_backward`. The first
    launch's grid is its tuned tile's: sized for its most programs (one per pixel)."""
    sum_rows, sum_slots = _tree(B * P, BN_SUMS_WIDTH)
    w_rows, w_slots = _tree(spatial_conv_programs(B, P, D, KS), spatial_conv_tile(P, D, KS)[1])
    return sum_rows, w_rows, max(sum_slots, w_slots)


def cbam_spatial_forward(
    x: torch.Tensor, s: torch.Tensor, gate_c: str, gate_s: str, conv_w: torch.Tensor, bn: tuple, bn_eps: float,
    batch_stats: bool, d: torch.Tensor, u: torch.Tensor, part: torch.Tensor, affine: torch.Tensor, counter: torch.Tensor,
    y: torch.Tensor,
) -> None:
    """CBAM's spatial half on z = x · gate_c(s) in three launches: the descriptor d; u = conv(d)
    and the BatchNorm's affine; y = z · gate_s(a · u + c). ``bn`` = (weight, bias, running mean,
    running var); ``part`` and ``counter``: the merge tree's workspace (:func:`cbam_forward_workspace`)."""
    B, C, H, W = x.shape
    xs_spatial = plane_strides(x, "spatial")
    D, KS = conv_w.shape[1], conv_w.shape[2]
    p = _problem(x, "spatial", xs_spatial, GATE=gate_c, D=D)
    acc = _acc_dtype(x)
    block_p, block_t = spatial_conv_tile(H * W, D, KS)
    GATED_SPATIAL_POOL_FWD.launch(p, _rows_grid(p), (x, s, d, p.R, p.K, *xs_spatial),
                                  dict(GATE=gate_c, D=D, ACC=acc), x.device)
    pc = Problem(B, H * W, 1, rows_contiguous=True, dtype=x.dtype, flags=(("D", D), ("KS", KS)))
    SPATIAL_CONV_FWD.launch(
        pc, lambda META: (spatial_conv_programs(B, H * W, D, KS),),
        (d, conv_w, u, part, counter, affine, *bn, H, W, bn_eps),
        dict(D=D, KS=KS, BATCH_STATS=batch_stats, FAN=_tree_fan(MOMENTS_WIDTH), ACC=acc,
             BLOCK_P=block_p, BLOCK_T=block_t), x.device,
    )
    xs = plane_strides(x, "channel")
    pc = _problem(x, "channel", xs, GATE_C=gate_c, GATE_S=gate_s)
    DOUBLY_GATED_SCALE_FWD.launch(
        pc, _elementwise_grid(pc), (x, s, u, affine, y, pc.R, pc.K, *xs, *plane_strides(y, "channel")),
        dict(GATE_C=gate_c, GATE_S=gate_s, ACC=acc), x.device,
    )


def cbam_spatial_backward(
    grad_y: torch.Tensor, x: torch.Tensor, s: torch.Tensor, u: torch.Tensor, affine: torch.Tensor,
    gate_c: str, gate_s: str, conv_w: torch.Tensor, batch_stats: bool, work: dict[str, torch.Tensor],
    counter: torch.Tensor, grad_conv_w: torch.Tensor, grad_bn_weight: torch.Tensor, grad_bn_bias: torch.Tensor,
) -> None:
    """CBAM's spatial half backward in two launches (kernels/cbam_spatial_bwd.py): grad_t and the
    BatchNorm's gradients, then grad_u, grad_d and the conv's gradient; leaves ``work["sp"]`` for
    the channel branch's backward (the excitation's backward kernels with act_out "spatial").
    ``work["part"]``, ``work["wpart"]`` and ``counter``: the merge trees' workspaces
    (:func:`cbam_backward_workspace`)."""
    B, C, H, W = x.shape
    D, KS = conv_w.shape[1], conv_w.shape[2]
    xs = plane_strides(x, "spatial")
    p = _problem(x, "spatial", xs, GATE_C=gate_c, GATE_S=gate_s, D=D)
    acc = _acc_dtype(x)
    block_p, block_t = spatial_conv_tile(H * W, D, KS)
    CBAM_SPATIAL_BWD_REDUCE.launch(
        p, _rows_grid(p),
        (grad_y, x, s, u, affine, work["grad_t"], work["d"], work["sp"], work["ties"], work["part"], work["sums"],
         counter, grad_bn_weight, grad_bn_bias, p.R, p.K, *plane_strides(grad_y, "spatial"), *xs),
        dict(GATE_C=gate_c, GATE_S=gate_s, D=D, FAN=_tree_fan(BN_SUMS_WIDTH), ACC=acc), x.device,
    )
    ps = Problem(B, H * W, 1, rows_contiguous=True, dtype=x.dtype, flags=(("D", D), ("KS", KS)))
    SPATIAL_CONV_BWD.launch(
        ps, lambda META: (spatial_conv_programs(B, H * W, D, KS),),
        (work["grad_t"], u, work["d"], affine, work["sums"], conv_w, work["sp"], work["ties"], work["wpart"],
         counter, grad_conv_w, C, H, W, B * H * W),
        dict(D=D, KS=KS, BATCH_STATS=batch_stats, FAN=_tree_fan(block_t), ACC=acc,
             BLOCK_P=block_p, BLOCK_T=block_t // D), x.device,
    )


# --- radix (split) attention: ResNeSt's SplitAttn, SKNet's SelectiveKernel (kernels/radix_combine.py) ---


#: The radix row reductions (radix_pool_fwd, radix_combine_bwd, radix_squeeze_attend_fwd) loop over
#: the R branches and over H·W in BLOCK_K steps in each program: their untuned tile keeps those
#: R · cdiv(H·W, BLOCK_K) steps at most this many where it can (channels_last's tile otherwise
#: holds every channel and walks a whole 56×56 map: 98 steps at C = 64, R = 2) ...
RADIX_MAX_STEPS = 16
#: ... halving its channels (and doubling its pixels) down to this many where they are contiguous.
RADIX_MIN_BLOCK_R = 8


def radix_rows_tile(C: int, K: int, rows_contiguous: bool, radix: int) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_K) of the radix row reductions' untuned tile: tiling.tile_shape's, its
    channel side halved and its pixel side doubled (the tile's size kept, BLOCK_K at most
    LONG_SIDE_MAX and H·W) while a program takes more than RADIX_MAX_STEPS steps, not below
    RADIX_MIN_BLOCK_R channels where they are contiguous (TILE_ELEMENTS, LONG_SIDE_MAX read at
    call time)."""
    block_r, block_k = tiling.tile_shape(C, K, rows_contiguous, tiling.TILE_ELEMENTS)
    floor = RADIX_MIN_BLOCK_R if rows_contiguous else 1
    k_cap = min(next_power_of_2(K), tiling.LONG_SIDE_MAX)
    while radix * cdiv(K, block_k) > RADIX_MAX_STEPS and block_r // 2 >= floor and block_k * 2 <= k_cap:
        block_r, block_k = block_r // 2, block_k * 2
    return block_r, block_k


class RadixRowsTuner(PixelRowsTuner):
    """A Tuner of the radix row reductions: its untuned tile is :func:`radix_rows_tile` with 4
    warps, the first of the candidates it benchmarks (then tiling's pruned ones: PixelRowsTuner's
    candidates)."""

    def _default(self, problem: Problem) -> triton.Config:
        return _cached_default(radix_rows_config, problem, self.num_stages, tiling.TILE_ELEMENTS, tiling.LONG_SIDE_MAX)


def radix_rows_config(p: Problem, num_stages: int) -> triton.Config:
    """The untuned config of the radix row reductions: :func:`radix_rows_tile`, 4 warps."""
    block_r, block_k = radix_rows_tile(p.R, p.K, p.rows_contiguous, dict(p.flags)["RADIX"])
    return triton.Config({"BLOCK_R": block_r, "BLOCK_K": block_k}, num_warps=4, num_stages=num_stages)


RADIX_POOL_FWD = RadixRowsTuner(
    "radix_pool_fwd", radix_combine.radix_pool_fwd, radix_combine.RADIX_POOL_FWD_CONFIGS, num_stages=3)
RADIX_COMBINE_FWD = Tuner(
    "radix_combine_fwd", radix_combine.radix_combine_fwd, radix_combine.RADIX_COMBINE_FWD_CONFIGS, num_stages=1)
RADIX_COMBINE_BWD = RadixRowsTuner(
    "radix_combine_bwd", radix_combine.radix_combine_bwd, radix_combine.RADIX_COMBINE_BWD_CONFIGS, num_stages=3)


def _radix_strides(x5: torch.Tensor) -> tuple[int, int, int, int]:
    """(batch, branch, channel, pixel) strides of a branched map [B, R, C, H, W] seen as [B, R, C, H·W]."""
    sp = flat_spatial_stride(x5)
    assert sp is not None, "call layout.addressable() first"
    return x5.stride(0), x5.stride(1), x5.stride(2), sp


def _radix_problem(x5: torch.Tensor, xs: tuple[int, int, int, int], prologue: tuple | None = None, **flags) -> Problem:
    """Rows: the C channels; columns: the H·W pixels; the radix R is a flag (it sets the traffic),
    then ``flags``, then a prologue's (:func:`_prologue_flags`: none without one, so the keys stay
    as they were)."""
    B, R, C, H, W = x5.shape
    return Problem(B, C, H * W, rows_contiguous=xs[2] < xs[3], dtype=x5.dtype,
                   flags=(("RADIX", R), *flags.items(), *_prologue_flags(prologue).items()))


def radix_pool_fwd(x5: torch.Tensor, pooled: torch.Tensor, plan: tuple | None = None) -> tuple:
    """pooled [B, C] = the mean over H·W of the sum over r of x5 [B, R, C, H, W]. Returns its plan
    (``plan``: as :func:`gated_scale_fwd`'s)."""
    if plan is None:  # else the plan returned for this signature before (the caller kept it)
        def build() -> tuple:
            xs = _radix_strides(x5)
            p = _radix_problem(x5, xs)
            tail = (x5.shape[1], p.R, p.K, *xs, pooled.stride(0), pooled.stride(1))
            return p, _rows_grid(p), tail, dict(ACC=_acc_dtype(x5))

        plan = _plan(("radix_pool_fwd", x5.shape, x5.stride(), x5.dtype, pooled.stride()), build)
    p, grid, tail, constexprs = plan
    RADIX_POOL_FWD.launch(p, grid, (x5, pooled, *tail), constexprs, x5.device)
    return plan


def radix_combine_fwd(x5: torch.Tensor, a: torch.Tensor, out: torch.Tensor, prologue: tuple | None = None,
                      plan: tuple | None = None) -> tuple:
    """out [B, C, H, W] = Σ_r a[b, r, c] · x5[b, r, c, h, w]; ``prologue``: (act, the eval
    BatchNorm's (weight, bias, running mean, running var, eps) [R·C], or None), x5 then holding
    its input c and x5[b, r, c] read as act(bn(c)) with BatchNorm channel r·C + c (kernels/radix_combine.py).
    Returns its plan (``plan``: as :func:`gated_scale_fwd`'s)."""
    pro, pro_eps, pro_flags = _prologue_args(prologue)
    if plan is None:  # else the plan returned for this signature before (the caller kept it)
        def build() -> tuple:
            xs = _radix_strides(x5)
            p = _radix_problem(x5, xs, prologue)
            return (p, _elementwise_grid(p), (*xs, *a.stride(), *plane_strides(out, "channel")),
                    dict(ACC=_acc_dtype(x5), **pro_flags))

        plan = _plan(("radix_combine_fwd", x5.shape, x5.stride(), x5.dtype, a.stride(), out.stride(),
                      tuple(pro_flags.values())), build)
    p, grid, strides, constexprs = plan
    RADIX_COMBINE_FWD.launch(p, grid, (x5, a, out, *pro, x5.shape[1], p.R, p.K, pro_eps, *strides), constexprs,
                             x5.device)
    return plan


def radix_combine_bwd(
    g: torch.Tensor, x5: torch.Tensor, a: torch.Tensor, grad_x5: torch.Tensor | None, grad_a: torch.Tensor | None,
    plan: tuple | None = None, pooled_grad: torch.Tensor | None = None,
) -> tuple:
    """grad_x5 = a · g broadcast over the branches and grad_a = Σ_hw g · x5, in one pass over g and
    x5; either alone where the other is None (x5 is read only for grad_a); with ``pooled_grad``
    (the radix pool's output gradient [B, C] or [B, C, 1, 1]) grad_x5 = a · g + pooled_grad / (H·W)
    (kernels/radix_combine.py). Returns its plan (``plan``: as :func:`gated_scale_fwd`'s)."""
    if plan is None:  # else the plan returned for this signature before (the caller kept it)
        want = dict(WANT_GRAD_X=grad_x5 is not None, WANT_GRAD_A=grad_a is not None, ADD_POOL=pooled_grad is not None)

        def build() -> tuple:
            xs = _radix_strides(x5)
            both = want["WANT_GRAD_X"] and want["WANT_GRAD_A"]  # the op's: its tuning key as it was
            p = _radix_problem(x5, xs, **({} if both else want))
            R = x5.shape[1]
            tail = (R, p.R, p.K, *plane_strides(g, "channel"), *xs, *a.stride(),
                    *(_radix_strides(grad_x5) if grad_x5 is not None else (0, 0, 0, 0)),
                    *(grad_a.stride() if grad_a is not None else (0, 0, 0)),
                    *(pooled_grad.stride()[:2] if pooled_grad is not None else (0, 0)))
            return p, _rows_grid(p), tail, dict(want, ACC=_acc_dtype(x5), RADIX_BLOCK=next_power_of_2(R))

        plan = _plan(("radix_combine_bwd", x5.shape, x5.stride(), x5.dtype, g.stride(), a.stride(),
                      None if grad_x5 is None else grad_x5.stride(), None if grad_a is None else grad_a.stride(),
                      None if pooled_grad is None else pooled_grad.stride()), build)
    p, grid, tail, constexprs = plan
    RADIX_COMBINE_BWD.launch(p, grid, (g, x5, a, grad_x5, grad_a, pooled_grad, *tail), constexprs, x5.device)
    return plan


# --- split attention in inference: the squeeze and the attention MLP in one launch ----------------

RADIX_SQUEEZE_ATTEND_FWD = RadixRowsTuner(
    "radix_squeeze_attend_fwd", radix_combine.radix_squeeze_attend_fwd, radix_combine.RADIX_SQUEEZE_ATTEND_FWD_CONFIGS,
    num_stages=3)


def radix_squeeze_attend_fwd(
    x5: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, norm: tuple | None,
    w2: torch.Tensor, b2: torch.Tensor | None, act: str,
    pooled: torch.Tensor, a: torch.Tensor | None, counter: torch.Tensor | None, prologue: tuple | None = None,
    mlp_tail: bool = True,
) -> None:
    """The attention a [B, R, C] (ACC, contiguous) of the branches x5 [B, R, C, H, W] in one launch
    (kernels/radix_combine.py): the pooled vector (workspace ``pooled`` [B, C], ACC, contiguous),
    then per sample act(bn(W1 · v + b1)) → W2 · … + b2 → softmax over r (sigmoid for R = 1).
    ``w1`` dense [RD, C], ``w2`` dense [R·C, RD] with rows in (r, c) order; ``norm`` the hidden
    BatchNorm's (weight, bias, running mean, running var, eps), or None; ``counter`` ≥ B zeroed
    int32 slots (left at 0); ``prologue`` as in :func:`radix_combine_fwd` (x5 then holds c).
    Without ``mlp_tail`` (the split path) the launch writes ``pooled`` only: a and the counters
    are not used (None)."""
    RD = w1.shape[0]
    *bn, bn_eps = _norm_args(norm)
    pro, pro_eps, pro_flags = _prologue_args(prologue)

    def build() -> tuple:
        xs = _radix_strides(x5)
        B, R, C, H, W = x5.shape
        p = _radix_problem(x5, xs, prologue, RD=RD, ACT=act, **_norm_flags(norm), **_tail_flag(mlp_tail))
        sizes = (R, C, H * W, RD)
        strides = (*xs, *_strides2(w1), *_strides2(w2))
        constexprs = dict(ACT=act, HAS_B1=b1 is not None, HAS_B2=b2 is not None, HIDDEN_NORM=norm is not None,
                          ACC=_acc_dtype(x5), RADIX_BLOCK=next_power_of_2(R), MLP_TAIL=mlp_tail,
                          **excitation_geometry(C, RD), **pro_flags)
        return p, _rows_grid(p), sizes, strides, constexprs

    p, grid, sizes, strides, constexprs = _plan(
        ("radix_squeeze_attend_fwd", x5.shape, x5.stride(), x5.dtype, RD, act, norm is None, mlp_tail,
         tuple(pro_flags.values()), w1.stride(), w2.stride(), b1 is None, b2 is None, excitation.MLP_TILE_ELEMENTS),
        build)
    RADIX_SQUEEZE_ATTEND_FWD.launch(
        p, grid, (x5, pooled, counter, w1, b1, *bn, w2, b2, a, *pro, *sizes, bn_eps, pro_eps, *strides),
        constexprs, x5.device)


# --- softmax-weighted ("context") pooling, GCNet's global context (kernels/context_pool.py) -----


#: The context-pooling kernels' tile is part of their algorithm (workspaces with a row per
#: program; the backward recomputes the forward's logits in the same order): one config, the
#: tile passed as constexprs from :func:`context_pool_tile`.
CONTEXT_POOL_PARTIALS = FixedConfig("context_pool_partials", context_pool.context_pool_partials,
                                    triton.Config({}, num_warps=4, num_stages=2))
CONTEXT_POOL_COMBINE = FixedConfig("context_pool_combine", context_pool.context_pool_combine,
                                   triton.Config({}, num_warps=4, num_stages=2))
CONTEXT_POOL_BWD = FixedConfig("context_pool_bwd", context_pool.context_pool_bwd,
                               triton.Config({}, num_warps=4, num_stages=2))
#: A program's C × BLOCK_P tile of x should stay in cache between its two loops over C: BLOCK_P
#: is the largest power of two with C · BLOCK_P · itemsize ≤ this, clamped to
#: [CONTEXT_POOL_MIN_BLOCK_P, CONTEXT_POOL_MAX_BLOCK_P] (at least 16 pixels: 32-byte sectors in NCHW).
CONTEXT_POOL_CACHE_BYTES = 32 * 1024
CONTEXT_POOL_MIN_BLOCK_P, CONTEXT_POOL_MAX_BLOCK_P = 16, 128
#: ... and, where that minimum allows, small enough that a program's loops over C take at most
#: this many steps of BLOCK_C = TILE_ELEMENTS / BLOCK_P channels (each step a few memory
#: instructions in series: fewer steps, more programs)
CONTEXT_POOL_C_STEPS = 2
#: the merge (context_pool_combine, context_pool_combine_mlp) reads [BLOCK_NP, BLOCK_C] tiles of
#: the partials, with at least this many channels per program
CONTEXT_COMBINE_MIN_BLOCK_C = 32


def context_pool_tile(x: torch.Tensor) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C) of the context-pooling kernels for x [B, C, H, W]: BLOCK_P from the cache
    budget (:data:`CONTEXT_POOL_CACHE_BYTES`) and the steps over C (:data:`CONTEXT_POOL_C_STEPS`),
    at least CONTEXT_POOL_MIN_BLOCK_P, BLOCK_C = TILE_ELEMENTS / BLOCK_P, both at most
    tiling.LONG_SIDE_MAX and the problem's extent (TILE_ELEMENTS and LONG_SIDE_MAX read at call
    time: tests shrink them)."""
    _, C, H, W = x.shape
    return _context_pool_tile(C, H * W, x.element_size(), tiling.TILE_ELEMENTS, tiling.LONG_SIDE_MAX)


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _context_pool_tile(C: int, P: int, element_size: int, tile_elements: int, long_side_max: int) -> tuple[int, int]:
    """:func:`context_pool_tile` for C channels of P pixels, computed once per distinct problem
    (the host's call path meets it three times per GCNet block call)."""
    fit = max(1, CONTEXT_POOL_CACHE_BYTES // (C * element_size))
    few_steps = max(1, tile_elements // next_power_of_2(cdiv(C, CONTEXT_POOL_C_STEPS)))
    block_p = min(next_power_of_2(P), long_side_max, CONTEXT_POOL_MAX_BLOCK_P,
                  max(CONTEXT_POOL_MIN_BLOCK_P, min(1 << (fit.bit_length() - 1), few_steps)))
    block_c = max(1, min(next_power_of_2(C), long_side_max, tile_elements // block_p))
    return block_p, block_c


def context_pool_programs(x: torch.Tensor) -> int:
    """Programs of context_pool_partials and context_pool_bwd (rows of their workspaces): B · NP,
    NP = cdiv(H·W, BLOCK_P)."""
    B, _, H, W = x.shape
    return B * cdiv(H * W, context_pool_tile(x)[0])


def _context_problem(x: torch.Tensor, xs: tuple[int, int, int]) -> Problem:
    B, C, H, W = x.shape
    return Problem(B, H * W, C, rows_contiguous=xs[2] < xs[1], dtype=x.dtype)


def context_combine_tile(x: torch.Tensor) -> tuple[int, int]:
    """(BLOCK_NP, BLOCK_C) of the merge of the partials for x [B, C, H, W]: BLOCK_NP ≥ NP (all of a
    sample's partials in one load) up to TILE_ELEMENTS / CONTEXT_COMBINE_MIN_BLOCK_C, and BLOCK_C
    = TILE_ELEMENTS / BLOCK_NP channels (at most LONG_SIDE_MAX and C; both read at call time)."""
    C = x.shape[1]
    n_partials = context_pool_programs(x) // max(x.shape[0], 1)
    block_np = min(next_power_of_2(n_partials), max(1, tiling.TILE_ELEMENTS // CONTEXT_COMBINE_MIN_BLOCK_C))
    return block_np, max(1, min(next_power_of_2(C), tiling.LONG_SIDE_MAX, tiling.TILE_ELEMENTS // block_np))


def _launch_context_partials(
    x: torch.Tensor, w: torch.Tensor, part: torch.Tensor, pstats: torch.Tensor, plan: tuple | None = None,
) -> tuple:
    """Launch context_pool_partials; returns its plan: (Problem, grid, tail, constexprs, number of
    programs B · NP); ``plan``: as :func:`gated_scale_fwd`'s."""
    if plan is None:  # else the plan returned for this signature before (the caller kept it)
        def build() -> tuple:
            p, grid, constexprs, n_programs, xs = _context_pool_programs_plan(x)
            return p, grid, (x.shape[1], x.shape[2] * x.shape[3], *xs), constexprs, n_programs

        plan = _plan(_context_signature("context_pool_partials", x), build)
    p, grid, tail, constexprs, _ = plan
    CONTEXT_POOL_PARTIALS.launch(p, grid, (x, w, part, pstats, *tail), constexprs, x.device)
    return plan


def _context_pool_programs_plan(x: torch.Tensor) -> tuple:
    """(Problem, grid, constexprs, programs, x's plane strides) of the launches with one program
    per sample and BLOCK_P pixels (:func:`context_pool_tile`): context_pool_partials and
    context_pool_bwd, which recomputes the partials' logits in the same order."""
    B, C, H, W = x.shape
    xs = plane_strides(x, "channel")
    block_p, block_c = context_pool_tile(x)
    n_programs = B * cdiv(H * W, block_p)
    return (_context_problem(x, xs), lambda META: (n_programs,),
            dict(ACC=_acc_dtype(x), BLOCK_C=block_c, BLOCK_P=block_p), n_programs, xs)


def _context_signature(name: str, x: torch.Tensor, *more) -> tuple:
    """A context launch's plan signature: x's, and the tile limits its tile is read from at call time."""
    return (name, x.shape, x.stride(), x.dtype, tiling.TILE_ELEMENTS, tiling.LONG_SIDE_MAX, *more)


def context_pool_fwd(
    x: torch.Tensor, w: torch.Tensor, part: torch.Tensor, pstats: torch.Tensor, ctx: torch.Tensor, stats: torch.Tensor,
    plan: tuple | None = None,
) -> tuple:
    """ctx [B, C] (x's dtype) and stats [B, C + 2] (ACC: M, L, ctx unrounded) of the softmax-weighted
    pooling of x under the logits w · x (w [C], contiguous), in two launches; ``part``
    [B·NP, C] and ``pstats`` [B·NP, 2] (ACC, contiguous) are workspaces (:func:`context_pool_programs`).
    Returns its plan, the two launches' (``plan``: as :func:`gated_scale_fwd`'s)."""
    partials, combine = plan if plan is not None else (None, None)
    partials = _launch_context_partials(x, w, part, pstats, partials)
    if combine is None:  # else the plan returned for this signature before (the caller kept it)
        n_programs = partials[4]

        def build() -> tuple:
            B, C = x.shape[:2]
            block_np, combine_c = context_combine_tile(x)
            return (lambda META: (B * cdiv(C, combine_c),), (C, n_programs // B, ctx.stride(0), ctx.stride(1)),
                    dict(ACC=_acc_dtype(x), BLOCK_C=combine_c, BLOCK_NP=block_np))

        combine = _plan(_context_signature("context_pool_combine", x, ctx.stride()), build)
    grid, tail, constexprs = combine
    CONTEXT_POOL_COMBINE.launch(partials[0], grid, (part, pstats, ctx, stats, *tail), constexprs, x.device)
    return partials, combine


def context_pool_bwd(
    grad_ctx: torch.Tensor, x: torch.Tensor, w: torch.Tensor, stats: torch.Tensor,
    grad_x: torch.Tensor, wpart: torch.Tensor, plan: tuple | None = None,
) -> tuple:
    """grad_x (x's layout) and the per-program partial sums wpart [B·NP, C + 1] (ACC: Σ_p dlogit · x
    and Σ_p dlogit) of the context pooling's backward, in one launch; the caller sums wpart's
    rows into grad_w and grad_bias. Returns its plan (``plan``: as :func:`gated_scale_fwd`'s)."""
    if plan is None:  # else the plan returned for this signature before (the caller kept it)
        def build() -> tuple:
            p, grid, constexprs, _, xs = _context_pool_programs_plan(x)
            tail = (x.shape[1], x.shape[2] * x.shape[3], grad_ctx.stride(0), grad_ctx.stride(1), *xs,
                    *plane_strides(grad_x, "channel"))
            return p, grid, tail, constexprs

        plan = _plan(_context_signature("context_pool_bwd", x, grad_ctx.stride(), grad_x.stride()), build)
    p, grid, tail, constexprs = plan
    CONTEXT_POOL_BWD.launch(p, grid, (grad_ctx, x, w, stats, grad_x, wpart, *tail), constexprs, x.device)
    return plan


# --- GCNet's global context for inference: the context and its MLPs in two launches -------------

CONTEXT_POOL_COMBINE_MLP = FixedConfig("context_pool_combine_mlp", context_pool.context_pool_combine_mlp,
                                       triton.Config({}, num_warps=4, num_stages=2))


def _context_mlp_args(mlp: tuple | None) -> tuple[tuple, int, float, tuple]:
    """(w1, b1, ln_w, ln_b, w2, b2; RD; eps; the strides of w1 [RD, C] and w2 [C, RD]) of one of
    GCNet's MLPs given as (w1, b1, ln_w, ln_b, w2, b2, eps); Nones, 1, 0 and zeros without it."""
    if mlp is None:
        return (None,) * 6, 1, 0.0, (0, 0, 0, 0)
    *tensors, eps = mlp
    w1, w2 = tensors[0], tensors[4]
    return tuple(tensors), w1.shape[0], eps, (*_strides2(w1), *_strides2(w2))


def global_context_fwd(
    x: torch.Tensor, w: torch.Tensor, part: torch.Tensor, pstats: torch.Tensor, ctx: torch.Tensor,
    counter: torch.Tensor, scale_mlp: tuple | None, add_mlp: tuple | None, s: torch.Tensor | None,
    t: torch.Tensor | None, act: str,
) -> None:
    """GCNet's context of x under the logits w · x (w [C], contiguous) and its MLPs' outputs, in two
    launches: context_pool_partials (as :func:`context_pool_fwd`), then context_pool_combine_mlp,
    which merges the partials into ``ctx`` [B, C] (ACC workspace) and, in each sample's last
    program, writes s = mlp_scale(ctx) and / or t = mlp_add(ctx) ([B, C], ACC, contiguous).
    ``scale_mlp`` / ``add_mlp``: (w1 [RD, C], b1 [RD], ln_w [RD], ln_b [RD], w2 [C, RD], b2 [C],
    eps) or None; ``act``: "relu" or "silu"; ``counter`` ≥ B zeroed slots
    (workspaces.counters), left at 0. ``part``, ``pstats`` as :func:`context_pool_fwd`'s."""
    p, _, _, _, n_programs = _launch_context_partials(x, w, part, pstats)
    s_args, rd_s, eps_s, s_strides = _context_mlp_args(scale_mlp)
    a_args, rd_a, eps_a, a_strides = _context_mlp_args(add_mlp)

    def build() -> tuple:
        B, C = x.shape[:2]
        block_np, combine_c = context_combine_tile(x)
        rd = max(rd_s, rd_a)
        pc = Problem(p.B, p.R, p.K, p.rows_contiguous, p.dtype,
                     flags=(("SCALE_MLP", scale_mlp is not None), ("ADD_MLP", add_mlp is not None), ("ACT", act),
                            ("RD", rd)))
        constexprs = dict(HAS_SCALE=scale_mlp is not None, HAS_ADD=add_mlp is not None, ACT=act, ACC=_acc_dtype(x),
                          BLOCK_C=combine_c, BLOCK_NP=block_np, **excitation_geometry(C, rd))
        return pc, lambda META: (B * cdiv(C, combine_c),), (C, n_programs // B, rd_s, rd_a), constexprs

    pc, grid, sizes, constexprs = _plan(
        _context_signature("context_pool_combine_mlp", x, scale_mlp is None, add_mlp is None, rd_s, rd_a, act,
                           s_strides, a_strides, excitation.MLP_TILE_ELEMENTS), build)
    CONTEXT_POOL_COMBINE_MLP.launch(
        pc, grid,
        (part, pstats, ctx, counter, *s_args, s, *a_args, t, *sizes, eps_s, eps_a, *s_strides, *a_strides),
        constexprs, x.device)
