"""The channel-attention block's candidate paths, predicted from the shape alone: every launch
of each path as the critical-path model sees it (:class:`tritattn.cost_model.Launch`: programs,
the median and longest program's memory instructions, bytes). An **estimate from a model**.

Paths (tritattn.paths chooses among them):

- ``one-launch``: squeeze_excite_fwd with each sample's MLP in its last program → gated_scale_fwd;
  backward excitation_bwd_reduce with the MLP's backward in the sample's last program → the
  weight gradients as GEMMs (torch) → excitation_bwd_apply;
- ``split``: squeeze_excite_fwd pooling only → the MLP as GEMMs over all samples (torch) →
  gated_scale_fwd (ECA's taps: no GEMM, the scale launch computes s from the pooled vectors);
  backward excitation_bwd_reduce without the tail → the MLP's backward and the weight gradients
  as GEMMs → excitation_bwd_apply;
- ``per-op``: the squeeze op (mean_max_fwd) → the module's MLP in torch → excite_scale
  (gated_scale_fwd); backward gated_scale_bwd → the MLP's autograd → mean_max_bwd → the sum of
  x's two gradients;
- ``eager``: the reference module's aten kernels (:func:`cost_model.eager_launch`).

A Triton launch's counts are those the kernel issues with the default config
(``tiling.default_config``, what the interpreter runs; a tuned GPU config differs): tile loads,
stores and atomics per program, as perf/program_census.py counts them in the interpreter. Torch
and aten launches are parallel (cost_model.eager_launch): their bytes and their launch count.
"""
from __future__ import annotations

from dataclasses import dataclass


from .cost_model import INT32, Launch, eager_launch
from .excitation_mlp import keeps_hidden, taps_grad_in_apply
from .kernels.grid_math import cdiv, next_power_of_2

#: The paths of the block op itself (the kernels), and all the candidates of a module.
KERNEL_PATHS = ("one-launch", "split")
PATHS = KERNEL_PATHS + ("per-op", "eager")


@dataclass(frozen=True)
class BlockShape:
    """What the prediction needs of one block call (names as in tritattn.excitation_block)."""

    B: int
    C: int
    K: int  # H·W
    itemsize: int  # x's
    channels_last: bool
    pool: str
    mlp: str
    act: str
    RD: int  # the hidden width (C for "fc", 1 for the taps)
    taps: int = 1
    has_b1: bool = False
    has_b2: bool = False
    hidden_norm: bool = False
    residual: bool = False
    act_out: str = "identity"
    pro_norm: bool = False  # a prologue BatchNorm (its four vectors loaded per program)

    @property
    def acc(self) -> int:
        return 8 if self.itemsize == 8 else 4

    @property
    def plane(self) -> int:
        """Bytes of one x-sized tensor."""
        return self.B * self.C * self.K * self.itemsize

    @property
    def with_max(self) -> bool:
        return self.pool != "mean"

    def key(self, training: bool) -> str:
        """The decision's problem key: the batch bucketed to a power of two, as tuning keys are."""
        layout = "rows" if self.channels_last else "cols"
        fields = (f"C={self.C},K={self.K},B<={next_power_of_2(self.B)},contig={layout},item={self.itemsize},"
                  f"{self.pool},{self.mlp},{self.act},RD={self.RD},taps={self.taps},b1={int(self.has_b1)},"
                  f"b2={int(self.has_b2)},norm={int(self.hidden_norm)},res={int(self.residual)},{self.act_out},"
                  f"pro_norm={int(self.pro_norm)},train={int(training)}")
        return fields


def _row_grid(s: BlockShape) -> tuple[int, int]:
    """(programs, K tiles per program) of a row-reduction kernel (rows_grid) at the default tile."""
    from .kernels import tiling  # tiling imports triton: only a prediction needs it

    cfg = tiling.default_config(s.C, s.K, s.channels_last, 3)
    return s.B * cdiv(s.C, cfg.kwargs["BLOCK_R"]), cdiv(s.K, cfg.kwargs["BLOCK_K"])


def _tile_grid(s: BlockShape) -> tuple[int, int]:
    """(programs, column blocks per row block) of an elementwise kernel (elementwise_grid) at the default tile."""
    from .kernels import tiling  # tiling imports triton: only a prediction needs it

    cfg = tiling.default_config(s.C, s.K, s.channels_last, 1)
    nk = cdiv(s.K, cfg.kwargs["BLOCK_K"])
    return s.B * cdiv(s.C, cfg.kwargs["BLOCK_R"]) * nk, nk


def _tile_programs(s: BlockShape) -> int:
    """Programs of an elementwise kernel (elementwise_grid) at the default tile."""
    return _tile_grid(s)[0]


def mlp_tiles(s: BlockShape) -> int:
    """The weight tiles a sample's MLP tail steps through: ⌈C / MLP_BLOCK_C⌉ (launch.excitation_geometry)."""
    from .launch import excitation_geometry  # launch imports the kernels: only a prediction needs it

    return cdiv(s.C, excitation_geometry(s.C, s.RD, s.taps)["MLP_BLOCK_C"])


def _pooled_loads(s: BlockShape) -> int:
    """Loads of the MLP's input v per tile (kernels/excitation.py pooled_input)."""
    return 2 if s.pool == "mean_max_avg" else 1


def forward_tail(s: BlockShape) -> int:
    """Memory instructions of one sample's MLP in its last program (sample_logits)."""
    n, pi = mlp_tiles(s), _pooled_loads(s)
    if s.mlp == "fc_act_fc":
        hidden = n * (1 + pi + (s.pool == "mean_max_both")) + s.has_b1 + 4 * s.hidden_norm
        return hidden + n * (2 + s.has_b2)
    if s.mlp == "fc":
        return pi + n * (2 + s.has_b2)
    return n * (1 + pi + s.has_b2 + 1)  # the taps: their vector, v's gathered tile, the bias; s stored


def backward_tail(s: BlockShape) -> int:
    """Memory instructions of one sample's MLP backward in its last program (sample_pool_grads)."""
    n, pi = mlp_tiles(s), _pooled_loads(s)
    if s.mlp == "fc_act_fc":
        hidden = n * (1 + pi + (s.pool == "mean_max_both")) + s.has_b1 + 4 * s.hidden_norm
        stores = 2 * s.hidden_norm + (2 if s.pool == "mean_max_both" else 1) + 1
        return hidden + 2 * n + stores + n * (2 + s.with_max)
    if s.mlp == "fc":
        return 2 * n + 1 + (s.pool == "mean_max_avg")
    return n * (2 + 1 + s.with_max)  # the taps' vector, grad_s's gathered tile; grad_mean (grad_max) stored


def _median(programs: int, B: int, base: int, longest: int) -> int:
    """The median program of a launch whose last program of each sample runs a tail: ``base``,
    unless every program is its sample's last (one per sample)."""
    return longest if programs == B else base


def squeeze_excite_fwd(s: BlockShape, tail: bool) -> Launch:
    programs, nk = _row_grid(s)
    base = 4 * s.pro_norm + nk + 1 + 2 * s.with_max + tail  # x tiles; mean (max, count) stored; the ticket
    longest = base + (forward_tail(s) + 1 if tail else 0)  # the sample's MLP, the counter reset
    median = _median(programs, s.B, base, longest)
    vectors = s.B * s.C * (s.acc * (1 + tail) + (s.acc + INT32) * s.with_max)
    return Launch("squeeze_excite_fwd", programs, median, longest, s.plane + vectors)


def gated_scale_fwd(s: BlockShape, residual: bool, taps: bool = False) -> Launch:
    """With ``taps`` (ECA's split path), s computed from the pooled vectors in every program
    (channel_taps.channel_conv: the taps' vector, v's tile, the bias) and stored by the first
    column block's."""
    programs, nk = _tile_grid(s)
    s_loads = 1 + _pooled_loads(s) + s.has_b2 if taps else 1
    n = s_loads + 1 + residual + 4 * s.pro_norm + 1  # s (or the taps), x (residual) loaded; y stored
    vectors = s.B * s.C * s.acc * (1 + taps * (1 + (s.pool == "mean_max_avg")))  # s (v read, s written)
    return Launch("gated_scale_fwd", programs, n + (taps and nk == 1), n + taps, s.plane * (2 + residual) + vectors)


def _output_grad_loads(s: BlockShape) -> int:
    """Loads per tile of the gradient at the excitation's output (block_output_grad)."""
    return 5 if s.act_out == "spatial" else 1 + (s.act_out == "relu")


def excitation_bwd_reduce(s: BlockShape, tail: bool) -> Launch:
    programs, nk = _row_grid(s)
    base = 1 + 8 * s.pro_norm + nk * (1 + _output_grad_loads(s)) + 2 + 2 * s.with_max + tail
    longest = base + (backward_tail(s) + 1 if tail else 0)
    median = _median(programs, s.B, base, longest)
    planes = 2 + (s.act_out == "relu")
    hidden = (2 + (s.pool == "mean_max_both") + 2 * s.hidden_norm) * (s.mlp == "fc_act_fc") * tail
    vectors = s.B * s.C * (s.acc * (3 + tail) + (s.acc * (1 + tail) + INT32) * s.with_max)
    return Launch("excitation_bwd_reduce", programs, median, longest,
                  s.plane * planes + vectors + s.B * s.RD * s.acc * hidden + 4 * s.B * s.K * s.acc * (s.act_out == "spatial"))


def _apply_taps(s: BlockShape) -> bool:
    """Whether the split path's apply launch computes the taps' input gradient (excitation_mlp.taps_grad_in_apply)."""
    return taps_grad_in_apply(s.mlp, s.pool, s.pro_norm)


def excitation_bwd_apply(s: BlockShape, write_grad_res: bool, taps: bool = False) -> Launch:
    """With ``taps`` (the split path, :func:`_apply_taps`): grad_mean computed from grad_s, the taps'
    vector and one gathered tile of grad_s in place of grad_mean's tile."""
    reads_x = s.with_max or s.act_out == "spatial"
    n = 1 + 4 * s.pro_norm + reads_x + _output_grad_loads(s) + write_grad_res + 1 + taps + 3 * s.with_max + 1
    planes = 2 + (s.act_out == "relu") + write_grad_res + reads_x
    vectors = s.B * s.C * (2 * s.acc + (2 * s.acc + INT32) * s.with_max)
    return Launch("excitation_bwd_apply", _tile_programs(s), n, n, s.plane * planes + vectors)


def mean_max_fwd(s: BlockShape, want_mean: bool, want_max: bool) -> Launch:
    programs, nk = _row_grid(s)
    n = nk + want_mean + 2 * want_max
    return Launch("mean_max_fwd", programs, n, n, s.plane + s.B * s.C * (s.itemsize * want_mean + (s.itemsize + INT32) * want_max))


def mean_max_bwd(s: BlockShape, has_mean: bool, has_max: bool) -> Launch:
    n = has_mean + 4 * has_max + 1
    return Launch("mean_max_bwd", _tile_programs(s), n, n, s.plane * (1 + has_max) + s.B * s.C * s.itemsize * 3)


def gated_scale_bwd(s: BlockShape, relu: bool, write_grad_res: bool) -> Launch:
    programs, nk = _row_grid(s)
    n = 1 + nk * (3 + relu + write_grad_res) + 1
    return Launch("gated_scale_bwd", programs, n, n, s.plane * (3 + relu + write_grad_res) + 2 * s.B * s.C * s.itemsize)


# --- torch / aten launches on the [B, ·] vectors ----------------------------------------------------


def _gemm(name: str, m: int, k: int, n: int, size: int) -> Launch:
    return eager_launch(name, (m * k + k * n + m * n) * size)


def _vector_ops(name: str, count: int, numel: int, size: int) -> list[Launch]:
    """``count`` elementwise launches over a [numel] vector (read and write)."""
    return [eager_launch(f"{name} {i}", 2 * numel * size) for i in range(count)]


def _act_launches(act: str) -> int:
    return 0 if act == "identity" else 1


def _act_backward_launches(act: str) -> int:
    """threshold_backward (ReLU) or silu_backward (SiLU): one launch (excitation_mlp.activation_backward)."""
    return 0 if act == "identity" else 1


def mlp_forward(s: BlockShape, size: int) -> list[Launch]:
    """The MLP over all samples in torch (excitation_mlp.logits; the per-op path's module MLP is
    the same work in ``size``-byte elements); not the taps (the scale launch's)."""
    B, C, RD = s.B, s.C, s.RD
    out = _vector_ops("pooled input", 2 * (s.pool == "mean_max_avg"), B * C, size)
    branches = 2 if s.pool == "mean_max_both" else 1
    if s.mlp == "fc_act_fc":
        for _ in range(branches):
            out += [_gemm("fc1", B, C, RD, size)] + _vector_ops("hidden norm", 2 * s.hidden_norm, B * RD, size)
            out += _vector_ops("act", _act_launches(s.act), B * RD, size)
        out += _vector_ops("branch sum", branches - 1, B * RD, size) + [_gemm("fc2", B, RD, C, size)]
        out += _vector_ops("norm affine", 6 * s.hidden_norm, RD, size)
    else:
        out.append(_gemm("fc", B, C, C, size))
    return out


def mlp_backward(s: BlockShape, size: int) -> list[Launch]:
    """The MLP's backward over all samples (excitation_mlp.pool_grads, without the weight gradients):
    from the hidden vectors the forward kept (excitation_mlp.keeps_hidden; kept where the module
    names the split path, as it does outside torch.compile), else computing them again; none for
    the taps where the apply launch computes their input gradient (:func:`_apply_taps`)."""
    B, C, RD = s.B, s.C, s.RD
    out = _vector_ops("pooled input", 2 * (s.pool == "mean_max_avg"), B * C, size)
    if keeps_hidden(s.mlp, s.pool, s.hidden_norm):
        out += [_gemm("fc2 input grad", B, C, RD, size)] + _vector_ops("act backward", _act_backward_launches(s.act),
                                                                       B * RD, size)
        out.append(_gemm("fc1 input grad", B, RD, C, size))
    elif s.mlp == "fc_act_fc":
        branches = 2 if s.pool == "mean_max_both" else 1
        out += [_gemm("fc2 input grad", B, C, RD, size)]
        for _ in range(branches):
            out += [_gemm("fc1 (recomputed)", B, C, RD, size), _gemm("fc1 input grad", B, RD, C, size)]
            out += _vector_ops("act backward", _act_backward_launches(s.act) + _act_launches(s.act), B * RD, size)
        out += _vector_ops("hidden branch sum", branches - 1, B * RD, size)
        out += _vector_ops("hidden norm", 12 * s.hidden_norm, B * RD, size)
    elif s.mlp == "fc":
        out.append(_gemm("fc input grad", B, C, C, size))
    elif not _apply_taps(s):  # the taps' convolution_backward's input gradient (weight_grads: its weight's, in the same op)
        out.append(_conv_backward("taps backward", B * C, s.taps, B * C, 0, size)[0])
        # with the circular padding (v padded again: weight_grads), its gradient folded back: a copy, two adds
        out += _vector_ops("circular fold", 3 * (s.mlp == "taps_circular"), B * C, size)
    return out + _vector_ops("pooled input grad", 2 * (s.pool == "mean_max_avg"), B * C, size)


# --- the module's own MLP (the per-op path and eager): torch's autograd of its layers -----------------
#
# One aten op, one launch — as perf/census.py counts eager (tests/test_excitation_census.py checks
# these predictions against that count) — except convolution_backward: one launch per gradient
# (census.aten_kernels: cuDNN's backward-data and backward-filter calls, the bias's sum).


def _conv(name: str, inputs: int, weights: int, outputs: int, biases: int, size: int) -> Launch:
    """A convolution over the pooled vectors (a 1×1 conv over [B, cin] → [B, cout], or ECA's conv1d
    over [B, 1, C]), by its tensors' element counts, its bias inside the op."""
    return eager_launch(name, (inputs + weights + biases + outputs) * size)


def _conv_backward(name: str, inputs: int, weights: int, outputs: int, biases: int, size: int) -> list[Launch]:
    """Its convolution_backward, one launch per gradient: the input's (reads grad_output and the
    weight), the weight's (grad_output and the input), the bias's (grad_output)."""
    out = [eager_launch(f"{name} (grad input)", (outputs + weights + inputs) * size),
           eager_launch(f"{name} (grad weight)", (outputs + inputs + weights) * size)]
    return out + [eager_launch(f"{name} (grad bias)", (outputs + biases) * size)] * (biases > 0)


def _dense(name: str, B: int, cin: int, cout: int, size: int, bias: bool) -> tuple[str, Launch, list[Launch]]:
    """(name, forward launch, backward launches) of a 1×1 conv layer [B, cin] → [B, cout]."""
    counts = (B * cin, cin * cout, B * cout, cout * bias)
    return name, _conv(name, *counts, size), _conv_backward(f"{name} backward", *counts, size)


def _module_branches(s: BlockShape) -> int:
    """The MLP's passes: CBAM's channel branch ("mean_max_both") runs it on the mean and on the max."""
    return 2 if s.pool == "mean_max_both" else 1


def _module_layers(s: BlockShape, size: int) -> list[tuple[str, Launch, list[Launch]]]:
    """(name, forward launch, backward launches) of the module's MLP layers, in forward order, for one branch."""
    B, C, RD = s.B, s.C, s.RD
    if s.mlp == "fc_act_fc":
        layers = [_dense("fc1", B, C, RD, size, s.has_b1)]
        if s.hidden_norm:
            layers.append(("hidden norm", eager_launch("hidden norm", (2 * B * RD + 4 * RD) * size),
                           [eager_launch("hidden norm backward", (3 * B * RD + 6 * RD) * size)]))
        if s.act != "identity":
            layers.append(("act", eager_launch("act", 2 * B * RD * size), [eager_launch("act backward", 3 * B * RD * size)]))
        return layers + [_dense("fc2", B, RD, C, size, s.has_b2)]
    if s.mlp == "fc":
        return [_dense("fc", B, C, C, size, s.has_b2)]
    taps = (B * C, s.taps, B * C, int(s.has_b2))  # ECA's conv1d over the channels, [B, 1, C] → [B, 1, C]
    return [("taps", _conv("taps", *taps, size), _conv_backward("taps backward", *taps, size))]


def _module_parameters(s: BlockShape) -> int:
    """The MLP's parameter tensors (their gradients are summed over CBAM's two branches)."""
    if s.mlp == "fc_act_fc":
        return 2 + s.has_b1 + s.has_b2 + 2 * s.hidden_norm
    return 1 + s.has_b2


def module_mlp_forward(s: BlockShape) -> list[Launch]:
    """The module's MLP on the pooled vectors, in x's dtype: timm's (mean + max) / 2 pooling as
    0.5·mean + 0.5·max (three ops), each layer an op, CBAM's two branches added."""
    vec = s.B * s.C
    out = _vector_ops("pooled input", 3 * (s.pool == "mean_max_avg"), vec, s.itemsize)
    for _ in range(_module_branches(s)):
        out += [forward for _, forward, _ in _module_layers(s, s.itemsize)]
    return out + _vector_ops("branch sum", _module_branches(s) - 1, vec, s.itemsize)


def module_mlp_backward(s: BlockShape) -> list[Launch]:
    """autograd of :func:`module_mlp_forward`: each layer's backward (a convolution_backward: its
    input's, weight's and bias's gradients), CBAM's second branch's parameter gradients added to
    the first's, the pooled input's two halves scaled by 0.5 (timm's (mean + max) / 2)."""
    out: list[Launch] = []
    for _ in range(_module_branches(s)):
        out += [launch for _, _, backward in reversed(_module_layers(s, s.itemsize)) for launch in backward]
    out += _vector_ops("parameter gradient sum", (_module_branches(s) - 1) * _module_parameters(s), s.C * s.RD,
                       s.itemsize)
    return out + _vector_ops("pooled input grad", 2 * (s.pool == "mean_max_avg"), s.B * s.C, s.itemsize)


def weight_grads(s: BlockShape, size: int) -> list[Launch]:
    """The weight gradients as GEMMs and column sums over the batch (excitation_mlp.weight_grads;
    weights in ACC's dtype, as float32 weights under AMP: no conversion of the results)."""
    B, C, RD = s.B, s.C, s.RD
    out: list[Launch] = []
    if s.mlp == "fc_act_fc":
        out += [_gemm("grad W1", RD, B, C, size), _gemm("grad W2", C, B, RD, size)]
        out += _vector_ops("grad W1 max branch", (s.pool == "mean_max_both"), RD * C, size)
        out += _vector_ops("grad b1", s.has_b1 * (1 + (s.pool == "mean_max_both")), B * RD, size)
        out += _vector_ops("hidden norm grads", 2 * s.hidden_norm, B * RD, size)
    elif s.mlp == "fc":
        out.append(_gemm("grad W", C, B, C, size))
    else:  # the taps' convolution_backward (on v padded again, circular): its weight's (and bias's)
        # gradient, each copied into the op's
        taps = (B * C, s.taps, B * C, int(s.has_b2))
        out += _vector_ops("circular pad", s.mlp == "taps_circular", B * C, size)
        out += _conv_backward("taps backward", *taps, size)[1:]
        out += _vector_ops("grad taps copy", 1 + s.has_b2, s.taps, size)
        return out
    # a column sum (× 2 for CBAM's twice-used bias)
    return out + _vector_ops("grad b2", s.has_b2 * (1 + (s.pool == "mean_max_both")), B * C, size)


def _counters(s: BlockShape) -> Launch:
    return eager_launch("ticket counters (zeroed)", s.B * INT32)


# --- the paths ---------------------------------------------------------------------------------------


def forward(s: BlockShape, path: str) -> list[Launch]:
    """The forward's launches on ``path`` (one of :data:`PATHS`)."""
    if path == "one-launch":
        return [_counters(s), squeeze_excite_fwd(s, True), gated_scale_fwd(s, s.residual)]
    if path == "split":
        taps = s.mlp.startswith("taps")  # computed by the scale launch
        return ([squeeze_excite_fwd(s, False)] + (mlp_forward(s, s.acc) if not taps else [])
                + [gated_scale_fwd(s, s.residual, taps)])
    if path == "per-op":
        return [mean_max_fwd(s, True, s.with_max)] + module_mlp_forward(s) + [gated_scale_fwd(s, s.residual)]
    return _eager_forward(s)


def backward(s: BlockShape, path: str) -> list[Launch]:
    """The backward's launches on ``path``."""
    relu = s.act_out == "relu"
    write_grad_res = relu and s.residual
    if path in KERNEL_PATHS:
        tail = path == "one-launch"
        pooled = _vector_ops("pooled input", 2 * (s.pool == "mean_max_avg"), s.B * s.C, s.acc)
        return ([_counters(s)] * tail + [excitation_bwd_reduce(s, tail)] + (pooled if tail else mlp_backward(s, s.acc))
                + weight_grads(s, s.acc) + [excitation_bwd_apply(s, write_grad_res, not tail and _apply_taps(s))])
    if path == "per-op":
        vec = s.B * s.C * s.itemsize
        # the squeeze's gradient: the mean's alone is a broadcast view (grad / H·W), added to
        # grad x; with the max, the squeeze_backward kernel (its absent mean gradient zero-filled)
        pool = ([eager_launch("zeros", vec), mean_max_bwd(s, True, True)] if s.with_max
                else [eager_launch("grad mean / H·W", 2 * vec)])
        return ([gated_scale_bwd(s, relu, write_grad_res)] + module_mlp_backward(s) + pool
                + [eager_launch("grad x sum", 3 * s.plane)])
    return _eager_backward(s)


def _pool_eager(s: BlockShape) -> list[Launch]:
    vec = s.B * s.C * s.itemsize
    out = [eager_launch("mean", s.plane + vec)]
    if s.with_max:
        out.append(eager_launch("amax", s.plane + vec))
    return out


def _eager_forward(s: BlockShape) -> list[Launch]:
    """The reference module's forward: pool, the MLP, the gate, x · gate (+ residual, relu)."""
    out = _pool_eager(s) + module_mlp_forward(s)
    out += [eager_launch("gate", 2 * s.B * s.C * s.itemsize), eager_launch("x * gate", 2 * s.plane)]
    if s.residual:
        out.append(eager_launch("+ residual", 3 * s.plane))
    if s.act_out == "relu":
        out.append(eager_launch("relu", 2 * s.plane))
    return out


def _eager_backward(s: BlockShape) -> list[Launch]:
    """Autograd of the reference forward: relu, the product's two gradients, the gate, the MLP,
    the pooling's backward (amax's: the mask x == max, its count, the gradient shared among the
    ties), the sum of x's gradients."""
    out = [eager_launch("relu backward", 3 * s.plane)] if s.act_out == "relu" else []
    out += [eager_launch("grad x from the product", 3 * s.plane), eager_launch("grad gate: dy * x", 3 * s.plane),
            eager_launch("grad gate: sum over H×W", s.plane), eager_launch("gate backward", 3 * s.B * s.C * s.itemsize)]
    out += module_mlp_backward(s)
    mask = s.plane // s.itemsize  # bytes of a boolean x-sized tensor
    if s.with_max:
        vec = s.B * s.C * s.itemsize
        out += [eager_launch("amax backward: x == max", s.plane + vec + mask), eager_launch("amax backward: ties", mask + vec),
                eager_launch("amax backward: grad / ties", 3 * vec), eager_launch("amax backward: mask · grad", mask + vec + s.plane),
                eager_launch("grad x sum", 3 * s.plane)]
    return out + [eager_launch("mean backward", 2 * s.plane), eager_launch("grad x sum", 3 * s.plane)]


def paths(s: BlockShape, training: bool, names: tuple[str, ...] = PATHS) -> dict[str, list[Launch]]:
    """{path: its launches} for the inference forward, or the training step (forward + backward)."""
    return {name: forward(s, name) + (backward(s, name) if training else []) for name in names}
