"""GCNet's inference paths (``tritattn::context_mlp``: the context and its MLPs), predicted from the
shape alone: every launch of each path as the critical-path model sees it
(:class:`cost_model.Launch`: programs, the median and longest program's memory instructions,
bytes) — an **estimate from a model**, which tritattn/paths.py compares (or a measurement
replaces, inside ``tritattn.tune``).

- ``one-launch``: context_pool_partials → context_pool_combine_mlp, whose last program per sample
  runs both MLPs (fc1 → LayerNorm → act → fc2: a tail of memory instructions that grows with C·RD);
- ``split``: context_pool_partials → context_pool_combine → the MLPs as GEMMs over all samples in
  torch (eager_ops.context_mlp on the [B, C] context).

A Triton launch's counts are those of the kernels' fixed tiles (launch.context_pool_tile,
context_combine_tile, excitation_geometry); torch's launches are parallel
(cost_model.eager_launch): bytes and a launch each.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .cost_model import INT32, Launch, eager_launch
from .kernels.grid_math import cdiv, next_power_of_2

PATHS = ("one-launch", "split")


@dataclass(frozen=True)
class ContextShape:
    """What the prediction needs of one context_mlp call."""

    B: int
    C: int
    K: int  # H·W
    dtype: torch.dtype  # x's
    rd_scale: int  # mlp_scale's hidden width, 0 without it
    rd_add: int  # mlp_add's, 0 without it
    act: str
    weights_in_acc: bool  # the MLPs' weights already in the accumulator dtype (no cast launches)

    @property
    def acc(self) -> int:
        return 8 if self.dtype == torch.float64 else 4

    @property
    def mlps(self) -> tuple[int, ...]:
        return tuple(rd for rd in (self.rd_scale, self.rd_add) if rd)

    def x(self) -> torch.Tensor:
        """A meta tensor of x's shape (the tile rules read C, H·W and the element size; H·W as 1 × K)."""
        return torch.empty((self.B, self.C, 1, self.K), dtype=self.dtype, device="meta")

    def key(self) -> str:
        """The decision's problem key: the batch bucketed to a power of two, as tuning keys are."""
        return (f"C={self.C},K={self.K},B<={next_power_of_2(self.B)},{str(self.dtype).removeprefix('torch.')},"
                f"scale={self.rd_scale},add={self.rd_add},{self.act},w_acc={int(self.weights_in_acc)}")


def mlp_tail(s: ContextShape) -> int:
    """Memory instructions of one sample's MLPs in its last program (layer_norm_mlp, each:
    W1 and ctx tiles, b1, ln_w, ln_b, W2 and b2 tiles and the output: 5·n + 3)."""
    from .launch import excitation_geometry  # launch imports the kernels: only a prediction needs it

    n = cdiv(s.C, excitation_geometry(s.C, max(s.mlps))["MLP_BLOCK_C"])
    return len(s.mlps) * (5 * n + 3)


def partials(s: ContextShape) -> Launch:
    from .launch import context_pool_programs, context_pool_tile

    x = s.x()
    programs = context_pool_programs(x)
    n = 4 * cdiv(s.C, context_pool_tile(x)[1]) + 2  # x and w; x again and part; pstats
    return Launch("context_pool_partials", programs, n, n,
                  s.B * s.C * s.K * x.element_size() + programs * (s.C + 2) * s.acc)


def _merge(s: ContextShape) -> tuple[int, int, int]:
    """(programs, steps of BLOCK_NP partials, bytes of the partials read) of the merge."""
    from .launch import context_combine_tile, context_pool_programs

    x = s.x()
    block_np, block_c = context_combine_tile(x)
    rows = context_pool_programs(x)
    return s.B * cdiv(s.C, block_c), cdiv(rows // s.B, block_np), rows * (s.C + 2) * s.acc


def combine(s: ContextShape) -> Launch:
    programs, steps, read = _merge(s)
    median = 3 * steps + 2  # the partials; ctx and stats stored (the sample's first program: M and L too)
    return Launch("context_pool_combine", programs, median + 2 * (programs == s.B), median + 2,
                  read + s.B * s.C * s.x().element_size() + s.B * (s.C + 2) * s.acc)


def combine_mlp(s: ContextShape) -> Launch:
    programs, steps, read = _merge(s)
    median = 3 * steps + 2  # the partials; ctx stored; the ticket
    longest = median + 1 + mlp_tail(s)  # the counter reset, the MLPs
    return Launch("context_pool_combine_mlp", programs, longest if programs == s.B else median, longest,
                  read + s.B * s.C * s.acc * (2 + len(s.mlps)))  # one program per sample: each is its last


def mlp_gemms(s: ContextShape) -> list[Launch]:
    """eager_ops.context_mlp's aten launches, per MLP: fc1, LayerNorm, act, fc2 on [B, ·] ACC
    vectors (and the weights' casts when they are not in the accumulator dtype)."""
    B, C, acc = s.B, s.C, s.acc
    out: list[Launch] = []
    for rd in s.mlps:
        out += [] if s.weights_in_acc else [eager_launch("weight cast", rd * C * acc)] * 6
        out += [eager_launch("fc1", (B * C + rd * C + B * rd) * acc), eager_launch("layer norm", 2 * B * rd * acc),
                eager_launch("act", 2 * B * rd * acc), eager_launch("fc2", (B * rd + rd * C + B * C) * acc)]
    return out


def paths(s: ContextShape) -> dict[str, list[Launch]]:
    """{path: its launches} of one inference call."""
    counters = eager_launch("ticket counters (zeroed)", s.B * INT32)
    return {"one-launch": [counters, partials(s), combine_mlp(s)],
            "split": [partials(s), combine(s)] + mlp_gemms(s)}
