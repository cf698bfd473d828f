"""A channel-attention block (SE, Effective-SE, ECA / CECA, CBAM's channel branch) as one
differentiable unit: ``tritattn::excitation_block`` (2 kernels) and its backward (2 kernels),
each on one of two kernel paths (``path``):

- "one-launch": squeeze_excite_fwd (pool over H×W, then each sample's MLP or channel conv in the
  sample's last program) → gated_scale_fwd (y = act_out(x · gate(s) + residual)); backward
  excitation_bwd_reduce (Σ_hw dy·x → grad of the logits, then the MLP's backward per sample) →
  the weight gradients as GEMMs over the batch → excitation_bwd_apply (grad_x = dy · gate + grad
  of the pooling, grad_residual; elementwise);
- "split": squeeze_excite_fwd pools only → the MLP as GEMMs over all samples
  (tritattn/excitation_mlp.py: one read of the weights) → gated_scale_fwd; backward
  excitation_bwd_reduce without the MLP → the MLP's backward and the weight gradients as GEMMs
  → excitation_bwd_apply.

The last program's MLP re-reads all C×RD weights per sample, a serial tail where C·RD is large;
:func:`block_path` chooses per shape between the two, the per-op path and the reference
module's eager forward (tritattn/paths.py: the critical-path model on the launches
tritattn/excitation_cost.py predicts, or a winner ``tritattn.tune`` measured). See
kernels/excitation.py for the math.

Saved for backward: x and the logits s [B, C] (float32), y only with the ReLU epilogue (as
eager's ReLU saves its output), and on the split path the MLP's hidden vectors act(h) [B, RD]
(float32; and h for SiLU: :func:`kept_hidden`); never an x-sized intermediate. The pooled
vectors are not saved: the backward's pass over x recomputes them. So a block saves at most what
eager saves (x, the pooled vector, the hidden activations and the gate, each in x's dtype). The weights are
inputs of the op, so optimizers, DDP, AMP (the MLP accumulates in float32 whatever x's dtype)
and strict ``state_dict`` see the module's own parameters.

Both ops are custom ops with fake implementations (``torch.compile(fullgraph=True)``,
``torch.export``). They run on the Triton kernels only (GPU or interpreter): a module whose input
the kernels cannot take (the eager fallback, :func:`tritattn.backend_for`) uses the per-op path.
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor

from . import dispatch, excitation_cost, excitation_mlp, paths, workspaces
from .backend import TRITON_AVAILABLE, backend_for, kernels_disabled
from .excitation_cost import KERNEL_PATHS, BlockShape
from .functions import differentiable
from .layout import addressable, flat_spatial_stride
from .ops import _empty_like_4d, _new, _new_as, _nothing, _optional

if TRITON_AVAILABLE:
    from . import launch

#: Pooling of the block's input: "mean"; "mean_max_avg" (0.5·mean + 0.5·max, timm's add_maxpool
#: and LightChannelAttn); "mean_max_both" (CBAM's ChannelAttn: mlp(mean) + mlp(max)).
POOLS = ("mean", "mean_max_avg", "mean_max_both")
#: The excitation: "fc_act_fc" (SE's MLP), "fc" (Effective-SE), "taps_zero" / "taps_circular" (ECA / CECA).
MLPS = ("fc_act_fc", "fc", "taps_zero", "taps_circular")
#: The MLP's hidden activations with a kernel.
MLP_ACTS = ("relu", "silu", "identity")
#: The largest hidden width (C for "fc") whose vector a program keeps in registers.
MAX_HIDDEN = 4096

#: Set TRITATTN_BLOCK_PIPELINE=0 (or this to False) to run every block on the per-op path
#: (squeeze, the MLP in torch, excite_scale): for comparisons and for bisecting a suspected bug.
enabled: bool = os.environ.get("TRITATTN_BLOCK_PIPELINE", "1") != "0"


def _l2_fraction_from_environment() -> float | None:
    value = os.environ.get("TRITATTN_L2_CHUNK", "")
    return float(value) if value not in ("", "0") else None


#: The second read of x from L2 (opt-in: ``TRITATTN_L2_CHUNK=0.5``): the forward runs its two
#: kernels over chunks of samples whose x fills at most this fraction of the GPU's L2 cache, so
#: the scale kernel finds x in L2 and HBM moves 2·|x| instead of 3·|x|, at the price of two
#: launches per chunk. None: one launch pair over the whole batch. Off by default until a GPU run
#: has measured where it pays (the sweep with and without it).
l2_fraction: float | None = _l2_fraction_from_environment()

def runs_for(x: Tensor) -> bool:
    """Whether a block takes its pipeline for ``x``: switched on, and x on Triton kernels — or on
    the meta device, where a shape-only run (perf/census.py) takes the path a GPU would."""
    return enabled and (backend_for(x) != "torch" or (x.is_meta and not kernels_disabled()))


def samples_per_launch(x: Tensor) -> int:
    """How many samples each launch pair of the forward covers (see :data:`l2_fraction`)."""
    B = x.shape[0]
    if l2_fraction is None or not x.is_cuda:
        return B
    l2_bytes = torch.cuda.get_device_properties(x.device).L2_cache_size
    return chunk_samples(B, x[0].numel() * x.element_size(), l2_bytes, l2_fraction)


def chunk_samples(batch: int, sample_bytes: int, l2_bytes: int, fraction: float) -> int:
    """The most samples (at least 1, at most the batch) whose bytes fit in ``fraction`` of L2."""
    return max(1, min(batch, int(fraction * l2_bytes) // max(1, sample_bytes)))


@contextlib.contextmanager
def pipelines(on: bool) -> Iterator[None]:
    """Within the scope, the block pipelines are switched on or off (:data:`enabled`); the modules
    choose their path at each forward, so a backward follows the forward's choice."""
    global enabled
    before, enabled = enabled, on
    try:
        yield
    finally:
        enabled = before


@dataclass(frozen=True)
class BlockSpec:
    """What a module's excitation is, for :func:`excitation`: pool, mlp, act as in POOLS, MLPS,
    MLP_ACTS, and the module's own weight tensors (shapes in :func:`excitation_block`)."""

    pool: str
    mlp: str
    act: str = "identity"
    w1: Tensor | None = None
    b1: Tensor | None = None
    w2: Tensor | None = None
    b2: Tensor | None = None
    #: a BatchNorm in eval between fc1 and act: (weight, bias, running mean, running var, eps)
    norm: tuple | None = None


def excitation(x: Tensor, spec: BlockSpec, gate: str, residual: Tensor | None = None, act_out: str = "identity",
               prologue: tuple | None = None, path: str = "") -> Tensor:
    """y = act_out(x' · gate(excitation(pool(x'))) + residual) through the block pipeline, x' = x,
    or with ``prologue`` = (act, norm): x' = act(x) (norm None), or act(bn(x)) with norm = a
    BatchNorm's (weight, bias, running mean, running var, eps), normalising with its running
    statistics (:func:`excitation_with_stats` for the batch's). ``path``: "one-launch" or
    "split" (:data:`KERNEL_PATHS`), or "" to let the op choose (:func:`kernel_path`). A call takes,
    where it can, the host's short path to the same launches (tritattn/excitation_step.py)."""
    if prologue is None and excitation_step.applies(x, spec, residual, path):
        return excitation_step.excite(x, spec, gate, residual, act_out, path)
    return excitation_with_stats(x, spec, gate, residual, act_out, prologue, path=path)[0]


def excitation_with_stats(x: Tensor, spec: BlockSpec, gate: str, residual: Tensor | None = None,
                          act_out: str = "identity", prologue: tuple | None = None,
                          batch_stats: bool = False, path: str = "") -> tuple[Tensor, Tensor]:
    """(y, stats) as :func:`excitation`; with ``batch_stats`` the prologue's BatchNorm normalises
    with the batch's statistics (its running ones may be None) and ``stats`` [3, C] holds them:
    mean, biased and unbiased variance (for the running statistics' update); else stats is empty."""
    norm = spec.norm if spec.norm is not None else (None, None, None, None, 0.0)
    pro_act, pro_norm = prologue if prologue is not None else ("none", None)
    y, _, stats, _ = dispatch.call(
        excitation_block, x, residual, spec.w1, spec.b1, spec.w2, spec.b2, spec.pool, spec.mlp, spec.act, gate, act_out, *norm,
        pro_act, *(pro_norm if pro_norm is not None else (None, None, None, None, 0.0)), batch_stats, path)
    return y, stats


# --- the path of a call (tritattn/paths.py; the predictions: tritattn/excitation_cost.py) -----------


def block_shape(x: Tensor, spec: BlockSpec | dict, w1: Optional[Tensor], b1: Optional[Tensor], b2: Optional[Tensor],
                hidden_norm: bool, residual: bool, act_out: str, pro_norm: bool = False) -> BlockShape:
    """The cost model's view of one block call on ``x`` (``spec``: a BlockSpec, or the kernels'
    description of :func:`pipeline_spec`)."""
    B, C, H, W = x.shape
    pool, mlp, act = (spec.pool, spec.mlp, spec.act) if isinstance(spec, BlockSpec) else (spec["pool"], spec["mlp"], spec["act"])
    kernel_spec, RD = pipeline_spec(pool, mlp, act, w1, C)
    sp = flat_spatial_stride(x)
    return BlockShape(B, C, H * W, x.element_size(), sp is not None and x.stride(1) < sp, pool, mlp, act, RD,
                      kernel_spec["taps"], b1 is not None, b2 is not None, hidden_norm, residual, act_out, pro_norm)


def kernel_path(path: str, shape_of: Callable[[], BlockShape], device: torch.device, backward: bool) -> str:
    """The op's path: ``path`` when it names one of :data:`KERNEL_PATHS` (the module chose it),
    else chosen between them for the forward (or the ``backward``) alone (paths.op_path: forced,
    tuned, or estimated) for the call whose shape ``shape_of()`` gives (built only then)."""
    if path in KERNEL_PATHS:  # the common case first: no closures to make
        return path
    direction = excitation_cost.backward if backward else excitation_cost.forward
    return paths.op_path(f"excitation_block {'backward' if backward else 'forward'}", path, KERNEL_PATHS, shape_of,
                         lambda shape: shape.key(backward),
                         lambda shape: {name: direction(shape, name) for name in KERNEL_PATHS}, device)


def op_kernel_path(args: dict, backward: bool) -> str:
    """The kernel path a call of ``tritattn::excitation_block`` (or, ``backward``, of its backward
    op; or of CBAM's channel branch: no "mlp" nor "act_out" given, "fc_act_fc" and "spatial")
    with these arguments by name takes, as the op decides it (perf/bytes_model.py asks)."""
    hidden_norm = args.get("bn_weight") is not None
    residual = args.get("want_grad_residual", False) if backward else args.get("residual") is not None
    spec = dict(pool=args["pool"], mlp=args.get("mlp", "fc_act_fc"), act=args["act"])
    return kernel_path(args.get("path", ""), lambda: block_shape(
        args["x"], spec, args["w1"], args["b1"], args["b2"], hidden_norm, residual, args.get("act_out", "spatial"),
        args.get("pre_weight") is not None), args["x"].device, backward)


#: The ``path`` argument that lets the block op choose between its kernel paths (:func:`kernel_path`).
OP_CHOOSES = ""


def block_path(x: Tensor, spec: BlockSpec, gate: str, residual: Tensor | None, act_out: str,
               run: Callable[[], Tensor] | None = None) -> str:
    """The path a module's call takes (:data:`excitation_cost.PATHS`: "one-launch", "split",
    "per-op" or "eager"), for the inference forward, or the training step when x or a weight
    needs a gradient (paths.choose). ``run``: the module's call on x, for timing each path
    inside ``tritattn.tune`` on a GPU. Under ``torch.compile`` / ``torch.export`` and
    ``torch.jit.trace``: :data:`OP_CHOOSES` — the recorded block op chooses between its kernel
    paths at each call (dynamo traces no further; the tracer records no shape decision)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return OP_CHOOSES
    tensors = (x, residual, spec.w1, spec.b1, spec.w2, spec.b2)
    training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    shape, key = _shape_and_key(x, spec, residual is not None, act_out, training)
    measure = None
    if run is not None:
        leaves = [t for t in tensors if t is not None and t.requires_grad] if training else []
        measure = functools.partial(_timed_call, run=run, leaves=leaves)
    return paths.choose("excitation_block", key, excitation_cost.PATHS,
                        lambda: excitation_cost.paths(shape, training), x.device, measure)


#: (x's sizes, strides and dtype, what the spec's shapes say, residual, act_out, training) →
#: (BlockShape, its problem key): computed once per distinct call, as the host path is short
_shapes: dict[tuple, tuple[BlockShape, str]] = {}


def _shape_and_key(x: Tensor, spec: BlockSpec, residual: bool, act_out: str, training: bool) -> tuple[BlockShape, str]:
    w1 = spec.w1
    memo = (tuple(x.shape), x.stride(), x.dtype, spec.pool, spec.mlp, spec.act, None if w1 is None else w1.shape[0],
            spec.b1 is None, spec.b2 is None, spec.norm is None, residual, act_out, training)
    found = _shapes.get(memo)
    if found is None:
        shape = block_shape(x, spec, w1, spec.b1, spec.b2, spec.norm is not None, residual, act_out)
        found = _shapes[memo] = (shape, shape.key(training))
    return found


def _timed_call(path: str, run: Callable[[], Tensor], leaves: list[Tensor]) -> Callable[[], None]:
    """One call of ``run`` with ``path`` forced: the forward, and its backward when ``leaves`` need gradients."""
    def call() -> None:
        with paths.forced(path):
            y = run()
            if leaves:
                torch.autograd.grad(y, leaves, torch.ones_like(y))
    return call


def pipeline_spec(pool: str, mlp: str, act: str, w1: Optional[Tensor], C: int) -> tuple[dict, int]:
    """(the kernels' description of the excitation, RD): RD is the MLP's hidden width (fc1's
    outputs), C for "fc", 1 for the taps, whose count k = w1's length sets the padding (k-1)/2."""
    taps = w1.shape[0] if mlp.startswith("taps") else 1
    RD = w1.shape[0] if mlp == "fc_act_fc" else (C if mlp == "fc" else 1)
    return dict(pool=pool, mlp=mlp, act=act, taps=taps, pad=(taps - 1) // 2), RD


def acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _alloc_forward(x: Tensor, batch_stats: bool = False, kept: tuple = (0, 0)) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, s, stats, hidden) of :func:`excitation_block`."""
    B, C = x.shape[:2]
    acc, device = acc_dtype(x), x.device
    slots, RD = kept
    return (_empty_like_4d(x), _new((B, C), acc, device),
            _new((3, C) if batch_stats else (0,), acc, device), _new((slots, B, RD) if slots else (0,), acc, device))


def kept_hidden(pool: str, mlp: str, act: str, w1: Optional[Tensor], hidden_norm: bool, path: str) -> tuple[int, int]:
    """(slots, RD) of the hidden vectors [slots, B, RD] (ACC) the split path's forward keeps for
    its backward (excitation_mlp.hidden_slots) where the caller names that path; else (0, 0): the
    backward computes them again (the one-launch path's reduce kernel does; under torch.compile
    the op chooses its path at run time)."""
    slots = excitation_mlp.hidden_slots(mlp, pool, act, hidden_norm) if path == "split" else 0
    return (slots, w1.shape[0]) if slots else (0, 0)


def pooled_workspace(x: Tensor, pool: str) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """mean, max and tie count [B, C] (ACC, ACC, int32): written by the kernels, read by the same op."""
    B, C = x.shape[:2]
    acc, device = acc_dtype(x), x.device
    if pool == "mean":
        return _new((B, C), acc, device), None, None
    return _new((B, C), acc, device), _new((B, C), acc, device), _new((B, C), torch.int32, device)


@torch.library.custom_op("tritattn::excitation_block", mutates_args=())
def excitation_block(
    x: Tensor, residual: Optional[Tensor], w1: Optional[Tensor], b1: Optional[Tensor], w2: Optional[Tensor],
    b2: Optional[Tensor], pool: str, mlp: str, act: str, gate: str, act_out: str,
    bn_weight: Optional[Tensor] = None, bn_bias: Optional[Tensor] = None, bn_running_mean: Optional[Tensor] = None,
    bn_running_var: Optional[Tensor] = None, bn_eps: float = 0.0,
    prologue_act: str = "none", pre_weight: Optional[Tensor] = None, pre_bias: Optional[Tensor] = None,
    pre_running_mean: Optional[Tensor] = None, pre_running_var: Optional[Tensor] = None, pre_eps: float = 0.0,
    pre_batch_stats: bool = False, path: str = "",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, s, stats, hidden): y = act_out(x · gate(s) + residual) with s = excitation(pool(x)), the
    logits [B, C] in float32 (float64 for float64 x), kept for the backward; stats below; hidden:
    the MLP's hidden vectors the split path keeps for the backward (:func:`kept_hidden`), or empty.

    Weights: "fc_act_fc" w1 [RD, C], b1 [RD], w2 [C, RD], b2 [C]; "fc" w2 [C, C], b2 [C]; taps
    w1 [k] (k odd; padding (k-1)/2), b2 [1]. "fc_act_fc" may have a BatchNorm in eval between fc1
    and act: its weight, bias, running mean and variance [RD] and eps (all four or none).

    Prologue (kernels/norm_act.py): with ``prologue_act`` ("relu", "silu", "hardswish"), the
    block's input is act(x), or act(bn(x)) with the ``pre_*`` weight and bias [C] of the
    producer's BatchNorm (x: its input). The BatchNorm normalises with ``pre_running_mean`` /
    ``pre_running_var``, or with ``pre_batch_stats`` with the batch's (kernels/prologue_norm.py),
    which ``stats`` [3, C] returns: mean, biased and unbiased variance (empty otherwise); the
    running statistics are not updated here (the op is functional). act(…) is computed where
    the kernels load x, never written; the backward gives the gradient of x itself.

    ``path``: "one-launch" (each sample's MLP in the last program of the squeeze launch), "split"
    (the squeeze launch pools only; the MLP runs as GEMMs over all samples,
    tritattn/excitation_mlp.py), or "" to choose by the critical-path model or a tuned winner
    (:func:`kernel_path`); the backward takes the same argument."""
    x = addressable(x)
    residual = addressable(residual) if residual is not None else None
    kept_slots = kept_hidden(pool, mlp, act, w1, bn_weight is not None, path)
    B, C = x.shape[:2]
    if not x.numel():
        y, s, stats, hidden = _alloc_forward(x, pre_batch_stats, kept_slots)
        s.zero_()
        stats.zero_()  # no batch, no statistics (the modules run an empty input on the eager path)
        return y, s, stats, hidden
    spec, RD = pipeline_spec(pool, mlp, act, w1, C)
    norm = _norm(bn_weight, bn_bias, bn_running_mean, bn_running_var, bn_eps)
    tail = kernel_path(path, lambda: block_shape(x, spec, w1, b1, b2, norm is not None, residual is not None, act_out,
                                                 pre_weight is not None), x.device, backward=False) == "one-launch"
    step = samples_per_launch(x)
    y, s, stats, hidden = _alloc_forward(x, pre_batch_stats, kept_slots)
    workspace = pooled_workspace(x, pool)
    counter = workspaces.counters(x.device, B) if tail else None
    if pre_batch_stats:
        rows, slots = launch.batch_stats_workspace(x)
        launch.batch_stats_fwd(x, _new((rows, 2, C), acc_dtype(x), x.device), stats, workspaces.counters(x.device, slots))
        pre_running_mean, pre_running_var = stats[0], stats[1]
    prologue = _prologue(prologue_act, pre_weight, pre_bias, pre_running_mean, pre_running_var, pre_eps)
    kept = _optional(hidden)
    for b0 in range(0, B, step):  # one chunk, the whole batch, unless the L2 chunking is on
        xc, sc, yc, rc, pooled = (x, s, y, residual, workspace) if step >= B else (
            _chunk(t, b0, step) for t in (x, s, y, residual, workspace))
        hc = kept if kept is None or step >= B else kept[:, b0:b0 + step]
        forward_launches(xc, rc, (w1, b1, w2, b2), spec, RD, gate, act_out, tail, yc, sc, pooled, counter, norm,
                         prologue, hc)
    return y, s, stats, hidden


def forward_launches(x: Tensor, residual: Optional[Tensor], weights: tuple, spec: dict, RD: int, gate: str,
                     act_out: str, tail: bool, y: Tensor, s: Optional[Tensor], pooled: tuple,
                     counter: Optional[Tensor], norm: Optional[tuple] = None, prologue: Optional[tuple] = None,
                     hidden: Optional[Tensor] = None,
                     prepared: Optional[excitation_mlp.DenseMLP] = None) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The forward's launches on samples x (the batch, or one L2 chunk): squeeze_excite_fwd (with
    each sample's MLP where ``tail``, the one-launch path; else pooling only, then the MLP as
    GEMMs) → gated_scale_fwd, into y and the logits s; ``pooled`` = :func:`pooled_workspace`'s
    (mean, max, ties), ``counter`` the zeroed ticket slots of the one-launch path, ``hidden`` the
    split path's kept hidden vectors (:func:`kept_hidden`) or None. On the split path ECA's
    taps run in the scale launch (:func:`scale_taps`), which writes s; s may be None with
    ``prepared`` (its MLP, excitation_mlp.DenseMLP): the MLP's GEMM allocates it. Returns (s, the
    hidden vectors ``prepared`` kept, else ())."""
    w1, b1, w2, b2 = weights
    kept = ()
    if tail:
        launch.squeeze_excite_fwd(x, w1, b1, w2, b2, spec, RD, *pooled, s, counter, norm, prologue)
    else:
        launch.squeeze_excite_fwd(x, None, None, None, None, spec, RD, *pooled, None, None, norm, prologue,
                                  mlp_tail=False)
        if spec["mlp"].startswith("taps"):  # the scale launch computes s from the pooled vectors, and writes it
            launch.gated_scale_fwd(x, s, residual, y, "channel", gate, act_out, prologue, taps=scale_taps(pooled, w1, b2, spec))
            return s, kept
        if prepared is not None:
            s, kept = excitation_mlp.dense_logits(excitation_mlp.pooled_input(pooled[0], pooled[1], spec["pool"]),
                                                  prepared, s)
        else:
            s = excitation_mlp.logits(pooled[0], pooled[1], weights, spec, norm, s, hidden)
    launch.gated_scale_fwd(x, s, residual, y, "channel", gate, act_out, prologue)
    return s, kept


def scale_taps(pooled: tuple, w1: Tensor, b2: Optional[Tensor], spec: dict) -> tuple:
    """launch.gated_scale_fwd's ``taps`` on the split path: the pooled workspaces (mean, max), the
    taps w1 [k] and bias b2, the pool, whether the padding is circular."""
    return pooled[0], pooled[1], w1, b2, spec["pool"], spec["mlp"] == "taps_circular"


def _chunk(t, b0: int, step: int):
    """Samples b0 … b0 + step - 1 of a tensor (None stays None), or of each in a tuple."""
    if isinstance(t, tuple):
        return tuple(_chunk(u, b0, step) for u in t)
    return t[b0:b0 + step] if t is not None else None


@excitation_block.register_fake
def _(x, residual, w1, b1, w2, b2, pool, mlp, act, gate, act_out, bn_weight=None, bn_bias=None, bn_running_mean=None,
      bn_running_var=None, bn_eps=0.0, prologue_act="none", pre_weight=None, pre_bias=None, pre_running_mean=None,
      pre_running_var=None, pre_eps=0.0, pre_batch_stats=False, path=""):
    return _alloc_forward(addressable(x), pre_batch_stats, kept_hidden(pool, mlp, act, w1, bn_weight is not None, path))


def _prologue(act: str, weight, bias, running_mean, running_var, eps) -> tuple | None:
    """The prologue as the launchers take it: (act, the BatchNorm's (weight, bias, mean, var, eps)
    or None), or None without one."""
    return None if act == "none" else (act, _norm(weight, bias, running_mean, running_var, eps))


def _norm(weight, bias, running_mean, running_var, eps) -> tuple | None:
    """The hidden BatchNorm as the launchers take it, or None without one."""
    return None if weight is None else (weight, bias, running_mean, running_var, eps)


def _alloc_backward(x: Tensor, want_grad_res: bool, *params: Optional[Tensor]) -> tuple[Tensor, ...]:
    grad_res = _empty_like_4d(x) if want_grad_res else _nothing(x)
    return (_empty_like_4d(x), grad_res) + tuple(
        _new_as(t) if t is not None else _nothing(x) for t in params)


@torch.library.custom_op("tritattn::excitation_block_backward", mutates_args=())
def excitation_block_backward(
    grad_y: Tensor, x: Tensor, y: Optional[Tensor], s: Tensor,
    w1: Optional[Tensor], b1: Optional[Tensor], w2: Optional[Tensor], b2: Optional[Tensor],
    pool: str, mlp: str, act: str, gate: str, act_out: str, want_grad_residual: bool,
    bn_weight: Optional[Tensor] = None, bn_bias: Optional[Tensor] = None, bn_running_mean: Optional[Tensor] = None,
    bn_running_var: Optional[Tensor] = None, bn_eps: float = 0.0, prologue_act: str = "none",
    pre_weight: Optional[Tensor] = None, pre_bias: Optional[Tensor] = None, pre_mean: Optional[Tensor] = None,
    pre_var: Optional[Tensor] = None, pre_eps: float = 0.0, pre_batch_stats: bool = False, path: str = "",
    hidden: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(grad_x, grad_residual, grad_w1, grad_b1, grad_w2, grad_b2, grad_bn_weight, grad_bn_bias,
    grad_pre_weight, grad_pre_bias); an absent one is empty. With a prologue, grad_x is the
    gradient of x itself (z, or the BatchNorm's input c); ``pre_mean`` / ``pre_var``: the
    statistics the forward normalised with (the batch's with ``pre_batch_stats``); ``path`` as
    the forward's (:func:`excitation_block`); ``hidden``: the hidden vectors the forward kept
    (its fourth output), or None."""
    x, grad_y = addressable(x), addressable(grad_y)
    y = addressable(y) if y is not None else None
    out = _alloc_backward(x, want_grad_residual, w1, b1, w2, b2, bn_weight, bn_bias, pre_weight, pre_bias)
    grad_x, grad_res, *grads = out
    if not x.numel():
        for g in grads:
            g.zero_()
        return out
    channel_backward(grad_y, x, y, s, (w1, b1, w2, b2), pool, mlp, act, gate, act_out, grad_x, _optional(grad_res),
                     [_optional(g) for g in grads], norm=_norm(bn_weight, bn_bias, bn_running_mean, bn_running_var, bn_eps),
                     prologue=_prologue(prologue_act, pre_weight, pre_bias, pre_mean, pre_var, pre_eps),
                     batch_stats=pre_batch_stats, path=path,
                     kept=hidden.unbind(0) if hidden is not None else None)
    return out


#: channel_backward's ``grads``, in order (those left out are None)
_GRAD_NAMES = ("w1", "b1", "w2", "b2", "bn_weight", "bn_bias", "pre_weight", "pre_bias")


def channel_backward(
    grad_y: Tensor, x: Tensor, y: Optional[Tensor], s: Tensor, weights: tuple, pool: str, mlp: str, act: str,
    gate: str, act_out: str, grad_x: Optional[Tensor], grad_res: Optional[Tensor], grads: Sequence[Optional[Tensor]],
    sp: Optional[Tensor] = None, norm: Optional[tuple] = None, prologue: Optional[tuple] = None,
    batch_stats: bool = False, path: str = "", kept: Optional[tuple] = None, kernel_spec: Optional[tuple] = None,
    counter: Optional[Tensor] = None, prepared: Optional[excitation_mlp.DenseMLP] = None,
) -> list[Optional[Tensor]]:
    """The excitation's backward (launch.excitation_bwd_reduce → the MLP's backward and the weight
    gradients as GEMMs, tritattn/excitation_mlp.py → launch.excitation_bwd_apply) with its [B, C]
    workspaces: ``weights`` = (w1, b1, w2, b2) and ``grads`` their gradients (+ the hidden
    BatchNorm's weight and bias with ``norm``; None where absent or not wanted; a dtype: made
    new, excitation_mlp.weight_grads), returned in their order; grad_x None
    (and grad_res None): x's gradient is not wanted, and the apply launch does not run; ``sp``: the spatial half's
    per-pixel terms for CBAM (act_out "spatial"); ``prologue`` (act, norm) and ``batch_stats``
    as the launchers take them (+ the prologue BatchNorm's weight and bias gradients in
    ``grads``); ``path`` as :func:`excitation_block`'s ("": chosen for this backward); ``kept``:
    the hidden vectors the split path's forward kept (:func:`kept_hidden`'s slots), or None; ``prepared``:
    the split path's MLP prepared by the caller (excitation_mlp.DenseMLP), or None; ``kernel_spec``:
    :func:`pipeline_spec`'s (spec, RD) where the caller has it; ``counter``: B zeroed ticket slots
    for the one-launch path's reduce launch (the forward's, which its kernel left at 0), else new ones."""
    B, C = x.shape[:2]
    w1, b1, w2, b2 = weights
    spec, RD = kernel_spec if kernel_spec is not None else pipeline_spec(pool, mlp, act, w1, C)
    pro_norm = prologue is not None and prologue[1] is not None
    tail = kernel_path(path, lambda: block_shape(x, spec, w1, b1, b2, norm is not None, grad_res is not None, act_out,
                                                 pro_norm), x.device, backward=True) == "one-launch"
    acc = acc_dtype(x)
    with_max = pool != "mean"
    mean, maximum, count = pooled_workspace(x, pool)
    hidden = tail and mlp == "fc_act_fc"
    # the taps' input gradient computed by the apply launch (where it runs, and nothing else reads it)
    taps = w1 if apply_taps(tail, spec, pro_norm) and grad_x is not None else None
    work = dict(
        grad_s=_new((B, C), acc, x.device),
        grad_mean=None if not tail and excitation_mlp.makes_its_outputs(mlp) else _new((B, C), acc, x.device),
        grad_max=_new((B, C), acc, x.device) if with_max else None,
        hidden=_new((B, RD), acc, x.device) if hidden else None,
        grad_h=_new((B, (2 if pool == "mean_max_both" else 1) * RD), acc, x.device) if hidden else None,
        grad_norm=_new((B, 2 * RD), acc, x.device) if hidden and norm is not None else None,
    )
    if pro_norm:
        work.update(psum=_new((B, 4, C), acc, x.device), sums=_new((2, C), acc, x.device))
    named = dict.fromkeys(_GRAD_NAMES)
    named.update(zip(_GRAD_NAMES, grads))
    launch.excitation_bwd_reduce(grad_y, x, y, s, mean, maximum, count, w1 if tail else None, b1 if tail else None,
                                 w2 if tail else None, spec, RD, gate, act_out, work,
                                 (counter if counter is not None else workspaces.counters(x.device, B)) if tail else None,
                                 sp, norm if tail else None,
                                 prologue, batch_stats, mlp_tail=tail)
    if tail or taps is not None:  # the weights' gradients alone
        excitation_mlp.tail_weight_grads(work["grad_s"], mean, maximum, spec, RD, work, named, w1)
    else:
        work["grad_mean"] = excitation_mlp.pool_grads(work["grad_s"], mean, maximum, weights, spec, norm,
                                                      work["grad_mean"], work["grad_max"], named, kept, prepared)
    if pro_norm:
        launch.prologue_norm_bwd(s, work["grad_mean"], work["psum"], work["sums"], named["pre_weight"],
                                 named["pre_bias"], gate, x.shape[2] * x.shape[3])
    if grad_x is not None:
        launch.excitation_bwd_apply(grad_y, x, y, s, maximum, count, spec, RD, gate, act_out, work, grad_x, grad_res,
                                    sp, norm, prologue, batch_stats, taps=taps)
    return [named[name] for name in _GRAD_NAMES[:len(grads)]]


def apply_taps(tail: bool, spec: dict, pro_norm: bool) -> bool:
    """Whether the backward's apply launch computes the taps' input gradient from grad_s (on the
    split path: excitation_mlp.taps_grad_in_apply)."""
    return not tail and excitation_mlp.taps_grad_in_apply(spec["mlp"], spec["pool"], pro_norm)


@excitation_block_backward.register_fake
def _(grad_y, x, y, s, w1, b1, w2, b2, pool, mlp, act, gate, act_out, want_grad_residual, bn_weight=None, bn_bias=None,
      bn_running_mean=None, bn_running_var=None, bn_eps=0.0, prologue_act="none", pre_weight=None, pre_bias=None,
      pre_mean=None, pre_var=None, pre_eps=0.0, pre_batch_stats=False, path="", hidden=None):
    return _alloc_backward(addressable(x), want_grad_residual, w1, b1, w2, b2, bn_weight, bn_bias, pre_weight, pre_bias)


def _setup(ctx, inputs, output) -> None:
    (x, residual, w1, b1, w2, b2, pool, mlp, act, gate, act_out, bn_weight, bn_bias, bn_mean, bn_var, bn_eps,
     prologue_act, pre_weight, pre_bias, pre_mean, pre_var, pre_eps, pre_batch_stats, path) = inputs
    y, s, stats, hidden = output
    ctx.config = (pool, mlp, act, gate, act_out, bn_eps, prologue_act, pre_eps, pre_batch_stats, path)
    ctx.has_residual = residual is not None
    if pre_batch_stats:
        pre_mean, pre_var = stats[0], stats[1]
    ctx.save_for_backward(x, y if act_out == "relu" else None, s, w1, b1, w2, b2, bn_weight, bn_bias, bn_mean, bn_var,
                          pre_weight, pre_bias, pre_mean, pre_var, hidden if hidden.numel() else None)
    # s, stats and hidden are not differentiable outputs: autograd allocates no zero gradient for them
    ctx.mark_non_differentiable(s, stats, hidden)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_y, grad_s, grad_stats, grad_hidden):
    (x, y, s, w1, b1, w2, b2, bn_weight, bn_bias, bn_mean, bn_var, pre_weight, pre_bias, pre_mean, pre_var,
     hidden) = ctx.saved_tensors
    pool, mlp, act, gate, act_out, bn_eps, prologue_act, pre_eps, pre_batch_stats, path = ctx.config
    want_grad_res = ctx.has_residual and act_out != "identity" and ctx.needs_input_grad[1]
    grad_x, grad_res, *grads = dispatch.call(
        excitation_block_backward, grad_y, x, y, s, w1, b1, w2, b2, pool, mlp, act, gate, act_out, want_grad_res,
        bn_weight, bn_bias, bn_mean, bn_var, bn_eps, prologue_act, pre_weight, pre_bias, pre_mean, pre_var, pre_eps,
        pre_batch_stats, path, hidden)
    if not ctx.has_residual:
        grad_res = None
    elif act_out == "identity":
        grad_res = grad_y
    params = (w1, b1, w2, b2, bn_weight, bn_bias, pre_weight, pre_bias)
    grads = [g if t is not None else None for g, t in zip(grads, params)]
    return (grad_x, grad_res, *grads[:4], None, None, None, None, None, *grads[4:6], None, None, None,
            None, *grads[6:], None, None, None, None, None)


ExcitationBlock = differentiable(excitation_block, _setup, _backward)  # registers the formula, too

# the short host path (it uses this module's helpers, so it is imported once they exist)
from . import excitation_step  # noqa: E402
