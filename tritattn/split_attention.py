"""Fast split attention: ResNeSt's SplitAttn and SKNet's SelectiveKernel / SelectiveKernelAttn with
the two passes over their branches on tritattn's kernels (:mod:`tritattn.radix_block`).

Each class subclasses its twin in :mod:`tritattn.reference` (timm's constructor, defaults and
``state_dict`` keys) and overrides only ``forward``, reading only attributes timm's class has too,
so a timm module can be re-classed in place (``module.__class__ = SplitAttn``). In both modes:

- the branches (SplitAttn's grouped conv, bn0, drop, act0; SelectiveKernel's paths and
  ``torch.stack``) run as modules, in torch;
- the descriptor ``mean over H×W of Σ_r x[:, r]`` is one :func:`~tritattn.radix_block.radix_pool`
  pass over the branches (eager: a sum that writes a [B, C, H, W] plane, then the mean);
- the small attention MLP (fc1 / bn1 / act1 / fc2, or fc_reduce / bn / act / fc_select) and the
  radix softmax run as modules on [B, ·, 1, 1] vectors — its BatchNorm uses batch statistics in
  training, as eager;
- ``Σ_r a[:, r] · x[:, r]`` is one :func:`~tritattn.radix_block.radix_combine` pass (eager: an
  R-times-larger product, then the sum), and its backward one pass too.

When :func:`tritattn.backend_for` says "torch" the ops run their eager fallback; nothing here
changes. The output is in one branch's memory format (channels_last for channels_last input,
where timm's SplitAttn returns an NCHW-contiguous copy).
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import reference
from .checks import check_channels, check_feature_map
from .radix_block import check_branches, radix_combine, radix_pool


def _branches(x: Tensor, radix: int) -> Tensor:
    """SplitAttn's [B, R·C, H, W] as R branches [B, R, C, H, W] (a view for NCHW and channels_last)."""
    B, RC, H, W = x.shape
    return x.reshape(B, radix, RC // radix, H, W)


class SplitAttn(reference.SplitAttn):
    __doc__ = reference.SplitAttn.__doc__

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x)
        check_channels(x, self.conv.in_channels, type(self).__name__)
        x = self.conv(x)
        x = self.bn0(x)
        x = self.drop(x)
        x = self.act0(x)
        x5 = _branches(x, self.radix)
        B, R, C = x5.shape[:3]
        x_gap = radix_pool(x5)[:, :, None, None]
        x_gap = self.fc1(x_gap)
        x_gap = self.bn1(x_gap)
        x_gap = self.act1(x_gap)
        x_attn = self.fc2(x_gap)
        a = self.rsoftmax(x_attn)  # [B, R·C] in (radix, channel) order; [B, C, 1, 1] for R = 1
        return radix_combine(x5, a.reshape(B, R, C))


class SelectiveKernelAttn(reference.SelectiveKernelAttn):
    __doc__ = reference.SelectiveKernelAttn.__doc__

    def forward(self, x: Tensor) -> Tensor:
        check_branches(x, "x")
        if x.shape[1] != self.num_paths:
            raise ValueError(
                f"{type(self).__name__} was built for {self.num_paths} paths but x has {x.shape[1]} on dim 1 "
                f"(x: shape {tuple(x.shape)}; expected [B, {self.num_paths}, C, H, W])"
            )
        if x.shape[2] != self.fc_reduce.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self.fc_reduce.in_channels} channels but x has {x.shape[2]} "
                f"on dim 2 (x: shape {tuple(x.shape)}; expected [B, {self.num_paths}, {self.fc_reduce.in_channels}, H, W])"
            )
        x = radix_pool(x)[:, :, None, None]
        x = self.fc_reduce(x)
        x = self.bn(x)
        x = self.act(x)
        x = self.fc_select(x)
        B, RC = x.shape[:2]
        x = x.view(B, self.num_paths, RC // self.num_paths, 1, 1)
        return x.softmax(dim=1)


class SelectiveKernel(reference.SelectiveKernel):
    __doc__ = reference.SelectiveKernel.__doc__

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x)
        check_channels(x, self.in_channels, type(self).__name__)
        if self.split_input:
            x_split = x.split(self.in_channels // self.num_paths, 1)
            x_paths = [op(x_split[i]) for i, op in enumerate(self.paths)]
        else:
            x_paths = [op(x) for op in self.paths]
        x5 = torch.stack(x_paths, dim=1)
        B, R, C = x5.shape[:3]
        a = self.attn(x5)  # [B, R, C, 1, 1]: timm's SelectiveKernelAttn or the twin
        return radix_combine(x5, a.reshape(B, R, C))


#: reference class → its fast twin (the same parameters and buffers, so a module can be re-classed)
FAST_TWINS = {
    reference.SplitAttn: SplitAttn,
    reference.SelectiveKernelAttn: SelectiveKernelAttn,
    reference.SelectiveKernel: SelectiveKernel,
}
