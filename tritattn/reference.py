"""Eager reference attention blocks: the truth the Triton-backed modules are validated against.

Each class mirrors one block of timm 1.0.31 or torchvision, with the same constructor arguments
and defaults, the same submodule names (so ``state_dict`` keys and shapes match, and weights load
with ``strict=True`` in both directions) and the same forward math:

=====================  ==================================================  ============================
class                  mirrors                                             ``state_dict`` keys
=====================  ==================================================  ============================
``SEModule``           ``timm.layers.squeeze_excite.SEModule``             fc1, bn (if norm_layer), fc2
``EffectiveSEModule``  ``timm.layers.squeeze_excite.EffectiveSEModule``    fc
``EcaModule``          ``timm.layers.eca.EcaModule``                       conv (+ conv2 if use_mlp)
``CecaModule``         ``timm.layers.eca.CecaModule``                      conv
``ChannelAttn``        ``timm.layers.cbam.ChannelAttn``                    fc1, fc2
``LightChannelAttn``   ``timm.layers.cbam.LightChannelAttn``               fc1, fc2
``SpatialAttn``        ``timm.layers.cbam.SpatialAttn``                    conv.conv, conv.bn
``LightSpatialAttn``   ``timm.layers.cbam.LightSpatialAttn``               conv.conv, conv.bn
``CbamModule``         ``timm.layers.cbam.CbamModule``                     channel.*, spatial.*
``LightCbamModule``    ``timm.layers.cbam.LightCbamModule``                channel.*, spatial.*
``SqueezeExcite``      ``timm.models._efficientnet_blocks.SqueezeExcite``  conv_reduce, conv_expand
``SqueezeExcitation``  ``torchvision.ops.misc.SqueezeExcitation``          fc1, fc2
=====================  ==================================================  ============================

(timm's ``timm.layers.SqueezeExcite`` is an alias of ``SEModule``; here ``SqueezeExcite`` is the
EfficientNet block.) Fast modules subclass these and override only ``forward``, reading the
pieces from the attributes set here; :func:`gate_kind` says whether a gate has a kernel.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import LayerType, create_act_layer, make_divisible


_GATE_KINDS: dict[type[nn.Module], str] = {nn.Sigmoid: "sigmoid", nn.Hardsigmoid: "hard_sigmoid"}


def gate_kind(module: nn.Module | None) -> str | None:
    """The kernels' name for a gate module: ``"sigmoid"`` for ``nn.Sigmoid``, ``"hard_sigmoid"``
    for ``nn.Hardsigmoid`` (timm's ``hard_sigmoid``), else ``None``: no kernel for it, use the
    reference forward. The type must match exactly, as a subclass may compute something else.
    (timm and torchvision build gates by calling a class or factory, so a gate is always a module.)"""
    return _GATE_KINDS.get(type(module))


def _eca_kernel_size(channels: int | None, kernel_size: int, gamma: float, beta: float) -> int:
    """ECA-Net's adaptive kernel size: the odd number near (log2(C) + beta) / gamma, at least 3."""
    if channels is not None:
        t = int(abs(math.log(channels, 2) + beta) / gamma)
        kernel_size = max(t if t % 2 else t + 1, 3)
    assert kernel_size % 2 == 1
    return kernel_size


class SEModule(nn.Module):
    """Squeeze-and-Excitation, as ``timm.layers.squeeze_excite.SEModule``:
    ``x * gate(fc2(act(bn(fc1(pool(x))))))`` with pool = mean over H×W, or with ``add_maxpool``
    the average of that mean and the max."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        add_maxpool: bool = False,
        bias: bool = True,
        act_layer: LayerType = nn.ReLU,
        norm_layer: Callable[..., nn.Module] | None = None,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.add_maxpool = add_maxpool
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=bias, **dd)
        self.bn = norm_layer(rd_channels, **dd) if norm_layer else nn.Identity()
        self.act = create_act_layer(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=bias, **dd)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        if self.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
        x_se = self.fc1(x_se)
        x_se = self.act(self.bn(x_se))
        x_se = self.fc2(x_se)
        return x * self.gate(x_se)


class EffectiveSEModule(nn.Module):
    """Effective Squeeze-Excitation (CenterMask), as ``timm.layers.squeeze_excite.EffectiveSEModule``:
    ``x * gate(fc(pool(x)))``, one full C→C 1×1 conv, pool as in :class:`SEModule`. Extra keyword
    arguments are ignored, as timm does."""

    def __init__(
        self,
        channels: int,
        add_maxpool: bool = False,
        gate_layer: LayerType = "hard_sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **_: Any,
    ) -> None:
        super().__init__()
        self.add_maxpool = add_maxpool
        self.fc = nn.Conv2d(channels, channels, kernel_size=1, padding=0, device=device, dtype=dtype)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        if self.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
        x_se = self.fc(x_se)
        return x * self.gate(x_se)


class EcaModule(nn.Module):
    """Efficient Channel Attention, as ``timm.layers.eca.EcaModule``: a zero-padded 1-D conv across
    the channel means, ``x * gate(conv(mean(x)))``. With ``channels`` given, ``kernel_size`` is
    derived from it (``gamma``, ``beta``). ``use_mlp`` (a timm experiment) replaces the conv by
    conv (1→rd_channels, k=1) → act → conv2 (rd_channels→1, kernel_size); ``act_layer`` is used only
    then (default ReLU)."""

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int = 3,
        gamma: float = 2,
        beta: float = 1,
        act_layer: LayerType | None = None,
        gate_layer: LayerType = "sigmoid",
        rd_ratio: float = 1 / 8,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        use_mlp: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        kernel_size = _eca_kernel_size(channels, kernel_size, gamma, beta)
        padding = (kernel_size - 1) // 2
        if use_mlp:
            assert channels is not None
            if rd_channels is None:
                rd_channels = make_divisible(channels * rd_ratio, divisor=rd_divisor)
            self.conv = nn.Conv1d(1, rd_channels, kernel_size=1, padding=0, bias=True, **dd)
            self.act = create_act_layer(act_layer or nn.ReLU)
            self.conv2 = nn.Conv1d(rd_channels, 1, kernel_size=kernel_size, padding=padding, bias=True, **dd)
        else:
            self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=padding, bias=False, **dd)
            self.act = None
            self.conv2 = None
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = self.conv(y)
        if self.conv2 is not None:
            y = self.act(y)
            y = self.conv2(y)
        y = self.gate(y).view(x.shape[0], -1, 1, 1)
        return x * y.expand_as(x)


class CecaModule(nn.Module):
    """Circular ECA, as ``timm.layers.eca.CecaModule``: :class:`EcaModule`'s conv with circular
    padding of the channel axis (``self.padding`` each side, applied with ``F.pad``; the conv itself
    has none). ``act_layer`` is never applied: as in timm, passing one only gives the conv a bias."""

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int = 3,
        gamma: float = 2,
        beta: float = 1,
        act_layer: LayerType | None = None,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kernel_size = _eca_kernel_size(channels, kernel_size, gamma, beta)
        self.padding = (kernel_size - 1) // 2
        self.conv = nn.Conv1d(
            1, 1, kernel_size=kernel_size, padding=0, bias=act_layer is not None, device=device, dtype=dtype
        )
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = F.pad(y, (self.padding, self.padding), mode="circular")
        y = self.conv(y)
        y = self.gate(y).view(x.shape[0], -1, 1, 1)
        return x * y.expand_as(x)


class ChannelAttn(nn.Module):
    """CBAM channel attention, as ``timm.layers.cbam.ChannelAttn``: the shared MLP
    ``fc2(act(fc1(.)))`` applied to the mean and to the max over H×W separately,
    ``x * gate(mlp(mean) + mlp(max))`` (so with ``mlp_bias`` fc2's bias counts twice).
    ``act_layer`` must be a class taking ``inplace`` (timm calls it directly, no name lookup)."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        gate_layer: LayerType = "sigmoid",
        mlp_bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=mlp_bias, **dd)
        self.act = act_layer(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=mlp_bias, **dd)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        x_avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        x_max = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        return x * self.gate(x_avg + x_max)


class LightChannelAttn(ChannelAttn):
    """Light CBAM channel attention, as ``timm.layers.cbam.LightChannelAttn``: the MLP applied once,
    to ``0.5 * mean + 0.5 * max``. As in timm, the gate is always ``F.sigmoid``: ``self.gate`` is
    built from ``gate_layer`` but not used."""

    def forward(self, x: Tensor) -> Tensor:
        x_pool = 0.5 * x.mean((2, 3), keepdim=True) + 0.5 * x.amax((2, 3), keepdim=True)
        x_attn = self.fc2(self.act(self.fc1(x_pool)))
        return x * F.sigmoid(x_attn)


class ConvBn(nn.Module):
    """``conv`` (k×k, stride 1, padding (k-1)//2, no bias) then ``bn`` (BatchNorm2d): the state and
    math of ``timm.layers.ConvNormAct(in_channels, out_channels, kernel_size, apply_act=False)``,
    whose BatchNormAct2d is a BatchNorm2d followed by identities."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False, **dd)
        self.bn = nn.BatchNorm2d(out_channels, **dd)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class SpatialAttn(nn.Module):
    """CBAM spatial attention, as ``timm.layers.cbam.SpatialAttn``:
    ``x * gate(bn(conv([mean over C, max over C])))``, a 2→1 k×k conv."""

    def __init__(
        self,
        kernel_size: int = 7,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.conv = ConvBn(2, 1, kernel_size, device=device, dtype=dtype)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        x_attn = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        x_attn = self.conv(x_attn)
        return x * self.gate(x_attn)


class LightSpatialAttn(nn.Module):
    """Light CBAM spatial attention, as ``timm.layers.cbam.LightSpatialAttn``:
    ``x * gate(bn(conv(0.5 * mean over C + 0.5 * max over C)))``, a 1→1 k×k conv."""

    def __init__(
        self,
        kernel_size: int = 7,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.conv = ConvBn(1, 1, kernel_size, device=device, dtype=dtype)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        x_attn = 0.5 * x.mean(dim=1, keepdim=True) + 0.5 * x.amax(dim=1, keepdim=True)
        x_attn = self.conv(x_attn)
        return x * self.gate(x_attn)


class CbamModule(nn.Module):
    """CBAM, as ``timm.layers.cbam.CbamModule``: :class:`ChannelAttn` then :class:`SpatialAttn`,
    both with ``gate_layer``."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        spatial_kernel_size: int = 7,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        gate_layer: LayerType = "sigmoid",
        mlp_bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.channel = ChannelAttn(
            channels,
            rd_ratio=rd_ratio,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
            act_layer=act_layer,
            gate_layer=gate_layer,
            mlp_bias=mlp_bias,
            **dd,
        )
        self.spatial = SpatialAttn(spatial_kernel_size, gate_layer=gate_layer, **dd)

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(self.channel(x))


class LightCbamModule(nn.Module):
    """Light CBAM, as ``timm.layers.cbam.LightCbamModule``: :class:`LightChannelAttn` then
    :class:`LightSpatialAttn`. As in timm, ``gate_layer`` reaches neither gate that runs: the
    channel gate is always sigmoid and the spatial one gets the default, ``"sigmoid"``."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        spatial_kernel_size: int = 7,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        gate_layer: LayerType = "sigmoid",
        mlp_bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.channel = LightChannelAttn(
            channels,
            rd_ratio=rd_ratio,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
            act_layer=act_layer,
            gate_layer=gate_layer,
            mlp_bias=mlp_bias,
            **dd,
        )
        self.spatial = LightSpatialAttn(spatial_kernel_size, **dd)

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(self.channel(x))


class SqueezeExcite(nn.Module):
    """EfficientNet / MobileNet SE, as ``timm.models._efficientnet_blocks.SqueezeExcite``:
    ``x * gate(conv_expand(act1(conv_reduce(mean(x)))))``. ``rd_channels`` defaults to
    ``rd_round_fn(in_chs * rd_ratio)`` (``round``); ``force_act_layer`` overrides ``act_layer``."""

    def __init__(
        self,
        in_chs: int,
        rd_ratio: float = 0.25,
        rd_channels: int | None = None,
        act_layer: LayerType = nn.ReLU,
        gate_layer: LayerType = nn.Sigmoid,
        force_act_layer: LayerType | None = None,
        rd_round_fn: Callable[[float], int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if rd_channels is None:
            rd_round_fn = rd_round_fn or round
            rd_channels = rd_round_fn(in_chs * rd_ratio)
        act_layer = force_act_layer or act_layer
        self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True, **dd)
        self.act1 = create_act_layer(act_layer, inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True, **dd)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_reduce(x_se)
        x_se = self.act1(x_se)
        x_se = self.conv_expand(x_se)
        return x * self.gate(x_se)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-Excitation, as ``torchvision.ops.misc.SqueezeExcitation``:
    ``scale_activation(fc2(activation(fc1(avgpool(x))))) * x``. ``activation`` and
    ``scale_activation`` are factories called with no arguments."""

    def __init__(
        self,
        input_channels: int,
        squeeze_channels: int,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, input: Tensor) -> Tensor:
        scale = self.avgpool(input)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, input: Tensor) -> Tensor:
        return self._scale(input) * input


class LegacySEModule(nn.Module):
    """The original SENet's Squeeze-and-Excitation, as ``timm.models.senet.SEModule`` (the
    ``legacy_seresnet*`` / ``legacy_seresnext*`` / ``legacy_senet154`` models):
    ``x * sigmoid(fc2(relu(fc1(mean over H×W of x))))`` with ``channels // reduction`` hidden
    channels and biased 1×1 convs."""

    def __init__(
        self,
        channels: int,
        reduction: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, **dd)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, **dd)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        module_input = x
        x = x.mean((2, 3), keepdim=True)
        x = self.fc1(x)
        x = self.relu(x)
        x = self.fc2(x)
        x = self.sigmoid(x)
        return module_input * x
