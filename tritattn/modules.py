"""Fast attention blocks: the reference modules with their forward on tritattn's kernels.

Each class subclasses its twin in :mod:`tritattn.reference` (so constructor arguments, defaults
and ``state_dict`` keys are timm's / torchvision's) and overrides only ``forward``: the pooling is
:func:`~tritattn.functional.squeeze` / :func:`~tritattn.functional.spatial_pool`, the small
convolutions stay torch, and the gate plus the scaling of x is one
:func:`~tritattn.functional.excite_scale` / :func:`~tritattn.functional.spatial_scale` pass.
A gate without a kernel (anything but sigmoid and hard-sigmoid) runs the reference forward,
with a one-time warning naming the module and the gate.
"""
from __future__ import annotations

import warnings

import torch.nn.functional as F
from torch import Tensor, nn

from . import reference
from .checks import check_channels, check_feature_map
from .functional import excite_scale, spatial_pool, spatial_scale, squeeze
from .reference import gate_kind

_warned: set[tuple[str, str]] = set()


def kernel_gate(module: nn.Module, gate: nn.Module) -> str | None:
    """The kernel's gate name for ``gate``, or None after warning (once per module class and gate type)."""
    kind = gate_kind(gate)
    if kind is None:
        key = (type(module).__name__, type(gate).__name__)
        if key not in _warned:
            _warned.add(key)
            warnings.warn(
                f"tritattn.{key[0]}: gate {key[1]} has no kernel (sigmoid and hard-sigmoid do); "
                "running the eager reference forward for this module",
                stacklevel=3,
            )
    return kind


def _pooled(x: Tensor, add_maxpool: bool) -> Tensor:
    """timm's SE pooling: the mean over H×W, or (mean + max) / 2 with add_maxpool; [B, C, 1, 1]."""
    if add_maxpool:
        mean, maximum = squeeze(x, "mean_max")
        return (0.5 * mean + 0.5 * maximum)[:, :, None, None]
    return squeeze(x, "mean")[:, :, None, None]


class SEModule(reference.SEModule):
    __doc__ = reference.SEModule.__doc__

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x)
        check_channels(x, self.fc1.in_channels, type(self).__name__)
        gate = kernel_gate(self, self.gate)
        if gate is None:
            return super().forward(x)
        s = self.fc2(self.act(self.bn(self.fc1(_pooled(x, self.add_maxpool)))))
        return excite_scale(x, s, gate)


class EffectiveSEModule(reference.EffectiveSEModule):
    __doc__ = reference.EffectiveSEModule.__doc__

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x)
        check_channels(x, self.fc.in_channels, type(self).__name__)
        gate = kernel_gate(self, self.gate)
        if gate is None:
            return super().forward(x)
        return excite_scale(x, self.fc(_pooled(x, self.add_maxpool)), gate)


class EcaModule(reference.EcaModule):
    __doc__ = reference.EcaModule.__doc__

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x)
        gate = kernel_gate(self, self.gate)
        if gate is None:
            return super().forward(x)
        B, C = x.shape[:2]
        y = self.conv(squeeze(x, "mean").view(B, 1, C))
        if self.conv2 is not None:
            y = self.conv2(self.act(y))
        return excite_scale(x, y.view(B, C), gate)


class CecaModule(reference.CecaModule):
    __doc__ = reference.CecaModule.__doc__

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x)
        gate = kernel_gate(self, self.gate)
        if gate is None:
            return super().forward(x)
        B, C = x.shape[:2]
        y = F.pad(squeeze(x, "mean").view(B, 1, C), (self.padding, self.padding), mode="circular")
        return excite_scale(x, self.conv(y).view(B, C), gate)


class ChannelAttn(reference.ChannelAttn):
    __doc__ = reference.ChannelAttn.__doc__

    def _mlp(self, v: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(v[:, :, None, None])))

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x)
        check_channels(x, self.fc1.in_channels, type(self).__name__)
        gate = kernel_gate(self, self.gate)
        if gate is None:
            return super().forward(x)
        mean, maximum = squeeze(x, "mean_max")
        return excite_scale(x, self._mlp(mean) + self._mlp(maximum), gate)


class LightChannelAttn(ChannelAttn, reference.LightChannelAttn):
    __doc__ = reference.LightChannelAttn.__doc__

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x)
        check_channels(x, self.fc1.in_channels, type(self).__name__)
        mean, maximum = squeeze(x, "mean_max")
        return excite_scale(x, self._mlp(0.5 * mean + 0.5 * maximum), "sigmoid")  # timm: always F.sigmoid


class SpatialAttn(reference.SpatialAttn):
    __doc__ = reference.SpatialAttn.__doc__

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x)
        gate = kernel_gate(self, self.gate)
        if gate is None:
            return super().forward(x)
        return spatial_scale(x, self.conv(spatial_pool(x)), gate)


class LightSpatialAttn(reference.LightSpatialAttn):
    __doc__ = reference.LightSpatialAttn.__doc__

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x)
        gate = kernel_gate(self, self.gate)
        if gate is None:
            return super().forward(x)
        pooled = spatial_pool(x)
        return spatial_scale(x, self.conv(0.5 * pooled[:, 0:1] + 0.5 * pooled[:, 1:2]), gate)


class CbamModule(reference.CbamModule):
    """CBAM on tritattn's kernels: the reference :class:`~tritattn.reference.CbamModule` with fast
    :class:`ChannelAttn` and :class:`SpatialAttn` parts (same parameters, same keys)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channel.__class__ = ChannelAttn
        self.spatial.__class__ = SpatialAttn


class LightCbamModule(reference.LightCbamModule):
    """Light CBAM on tritattn's kernels: fast :class:`LightChannelAttn` and :class:`LightSpatialAttn`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channel.__class__ = LightChannelAttn
        self.spatial.__class__ = LightSpatialAttn


class SqueezeExcite(reference.SqueezeExcite):
    __doc__ = reference.SqueezeExcite.__doc__

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x)
        check_channels(x, self.conv_reduce.in_channels, type(self).__name__)
        gate = kernel_gate(self, self.gate)
        if gate is None:
            return super().forward(x)
        s = self.conv_expand(self.act1(self.conv_reduce(squeeze(x, "mean")[:, :, None, None])))
        return excite_scale(x, s, gate)


class SqueezeExcitation(reference.SqueezeExcitation):
    __doc__ = reference.SqueezeExcitation.__doc__

    def forward(self, input: Tensor) -> Tensor:
        check_feature_map(input, "input")
        check_channels(input, self.fc1.in_channels, type(self).__name__)
        gate = kernel_gate(self, self.scale_activation)
        if gate is None:
            return super().forward(input)
        s = self.fc2(self.activation(self.fc1(squeeze(input, "mean")[:, :, None, None])))
        return excite_scale(input, s, gate)


#: reference class → its fast twin (the same parameters and buffers, so a module can be re-classed)
FAST_TWINS: dict[type[nn.Module], type[nn.Module]] = {
    getattr(reference, cls.__name__): cls
    for cls in (
        SEModule, EffectiveSEModule, EcaModule, CecaModule, ChannelAttn, LightChannelAttn, SpatialAttn,
        LightSpatialAttn, CbamModule, LightCbamModule, SqueezeExcite, SqueezeExcitation,
    )
}
