"""Split attention's inference paths (``tritattn::radix_attention``), predicted from the shape
alone: every launch of each path as the critical-path model sees it (:class:`cost_model.Launch`:
programs, the median and longest program's memory instructions, bytes) — an **estimate from a
model**, which tritattn/paths.py compares (or a measurement replaces, inside ``tritattn.tune``).

- ``one-launch``: radix_squeeze_attend_fwd pools and, in each sample's last program, runs the
  attention MLP and the radix softmax (a tail of memory instructions that grows with C·RD) →
  radix_combine_fwd;
- ``split``: radix_squeeze_attend_fwd pools only → the MLP and the softmax as GEMMs over all
  samples in torch (eager_ops.radix_pooled_attention) → radix_combine_fwd.

A Triton launch's counts are those of its default config (launch.radix_rows_tile for the squeeze,
tiling.default_config for the combine: what the interpreter runs); torch's launches are parallel (cost_model.eager_launch): bytes and a launch.
"""
from __future__ import annotations

from dataclasses import dataclass


from .cost_model import INT32, Launch, eager_launch
from .kernels.grid_math import cdiv, next_power_of_2

PATHS = ("one-launch", "split")


@dataclass(frozen=True)
class RadixShape:
    """What the prediction needs of one radix_attention call."""

    B: int
    R: int
    C: int
    K: int  # H·W
    itemsize: int  # x5's
    channels_last: bool
    RD: int
    act: str  # the hidden activation: "relu", "silu" or "identity"
    has_b1: bool
    has_b2: bool
    hidden_norm: bool
    pro_norm: bool  # a prologue BatchNorm (its four vectors loaded per branch)
    weights_in_acc: bool  # the MLP's weights already in the accumulator dtype (no cast launches)

    @property
    def acc(self) -> int:
        return 8 if self.itemsize == 8 else 4

    def key(self) -> str:
        """The decision's problem key: the batch bucketed to a power of two, as tuning keys are."""
        return (f"R={self.R},C={self.C},K={self.K},B<={next_power_of_2(self.B)},"
                f"contig={'rows' if self.channels_last else 'cols'},item={self.itemsize},RD={self.RD},{self.act},"
                f"b1={int(self.has_b1)},b2={int(self.has_b2)},norm={int(self.hidden_norm)},"
                f"pro_norm={int(self.pro_norm)},w_acc={int(self.weights_in_acc)}")


def mlp_tail(s: RadixShape) -> int:
    """Memory instructions of one sample's MLP and softmax in its last program (sample_radix_attention)."""
    from .launch import excitation_geometry  # launch imports the kernels: only a prediction needs it

    n = cdiv(s.C, excitation_geometry(s.C, s.RD)["MLP_BLOCK_C"])
    return 2 * n + s.has_b1 + 4 * s.hidden_norm + n * (s.R * (1 + s.has_b2) + 1)


def squeeze(s: RadixShape, tail: bool) -> Launch:
    from .launch import radix_rows_tile  # launch imports the kernels: only a prediction needs it

    block_r, block_k = radix_rows_tile(s.C, s.K, s.channels_last, s.R)
    per_sample = cdiv(s.C, block_r)
    median = s.R * (4 * s.pro_norm + cdiv(s.K, block_k)) + 1 + tail  # tiles; pooled; ticket
    longest = median + (1 + mlp_tail(s) if tail else 0)  # the counter reset, the sample's MLP
    if per_sample == 1:  # every program is its sample's last
        median = longest
    return Launch("radix_squeeze_attend_fwd", s.B * per_sample, median, longest,
                  s.B * s.R * s.C * s.K * s.itemsize + s.B * s.C * s.acc * (1 + s.R * tail))


def combine(s: RadixShape) -> Launch:
    from .kernels import tiling  # tiling imports triton: only a prediction needs it

    cfg = tiling.default_config(s.C, s.K, s.channels_last, 1)
    programs = s.B * cdiv(s.C, cfg.kwargs["BLOCK_R"]) * cdiv(s.K, cfg.kwargs["BLOCK_K"])
    n = s.R * (2 + 4 * s.pro_norm) + 1  # per branch a and x (and the BatchNorm's vectors); out
    return Launch("radix_combine_fwd", programs, n, n,
                  s.B * s.C * s.K * s.itemsize * (s.R + 1) + s.B * s.R * s.C * s.acc)


def mlp_gemms(s: RadixShape) -> list[Launch]:
    """eager_ops.radix_pooled_attention's aten launches on [B, ·] ACC vectors."""
    B, R, C, RD, acc = s.B, s.R, s.C, s.RD, s.acc
    out = [] if s.weights_in_acc else [eager_launch("weight cast", RD * C * acc)] * (2 + s.has_b1 + s.has_b2)
    out.append(eager_launch("fc1", (B * C + RD * C + B * RD) * acc))
    if s.hidden_norm:  # scale and shift from the running statistics, then h · scale + shift
        out += [eager_launch("hidden norm", 3 * RD * acc)] * 6 + [eager_launch("hidden norm", 3 * B * RD * acc)] * 2
    out += [eager_launch("act", 2 * B * RD * acc)] * (s.act != "identity")
    out.append(eager_launch("fc2", (B * RD + R * C * RD + B * R * C) * acc))
    return out + [eager_launch("radix softmax", 2 * B * R * C * acc)]


def paths(s: RadixShape) -> dict[str, list[Launch]]:
    """{path: its launches} of one inference call."""
    counters = eager_launch("ticket counters (zeroed)", s.B * INT32)
    return {"one-launch": [counters, squeeze(s, True), combine(s)],
            "split": [squeeze(s, False)] + mlp_gemms(s) + [combine(s)]}
