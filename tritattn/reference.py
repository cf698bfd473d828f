"""Eager reference attention blocks: the truth the Triton-backed modules are validated against.

Each class mirrors one block of timm 1.0.31 or torchvision, with the same constructor arguments
and defaults, the same submodule names (so ``state_dict`` keys and shapes match, and weights load
with ``strict=True`` in both directions) and the same forward math:

=======================  ====================================================  ==========================
class                    mirrors                                               ``state_dict`` keys
=======================  ====================================================  ==========================
``SEModule``             ``timm.layers.squeeze_excite.SEModule``               fc1, bn (if norm_layer), fc2
``EffectiveSEModule``    ``timm.layers.squeeze_excite.EffectiveSEModule``      fc
``EcaModule``            ``timm.layers.eca.EcaModule``                         conv (+ conv2 if use_mlp)
``CecaModule``           ``timm.layers.eca.CecaModule``                        conv
``ChannelAttn``          ``timm.layers.cbam.ChannelAttn``                      fc1, fc2
``LightChannelAttn``     ``timm.layers.cbam.LightChannelAttn``                 fc1, fc2
``SpatialAttn``          ``timm.layers.cbam.SpatialAttn``                      conv.conv, conv.bn
``LightSpatialAttn``     ``timm.layers.cbam.LightSpatialAttn``                 conv.conv, conv.bn
``CbamModule``           ``timm.layers.cbam.CbamModule``                       channel.*, spatial.*
``LightCbamModule``      ``timm.layers.cbam.LightCbamModule``                  channel.*, spatial.*
``SqueezeExcite``        ``timm.models._efficientnet_blocks.SqueezeExcite``    conv_reduce, conv_expand
``SqueezeExcitation``    ``torchvision.ops.misc.SqueezeExcitation``            fc1, fc2
``LegacySEModule``       ``timm.models.senet.SEModule``                        fc1, fc2
``SplitAttn``            ``timm.layers.split_attn.SplitAttn``                  conv, bn0, fc1, bn1, fc2
``RadixSoftmax``         ``timm.layers.split_attn.RadixSoftmax``               (none)
``SelectiveKernel``      ``timm.layers.selective_kernel.SelectiveKernel``      paths.<i>.conv / .bn, attn.*
``SelectiveKernelAttn``  ``timm.layers.selective_kernel.SelectiveKernelAttn``  fc_reduce, bn, fc_select
``ConvNormAct``          ``timm.layers.ConvNormAct`` (BatchNorm only)          conv, bn
``BatchNormAct2d``       ``timm.layers.norm_act.BatchNormAct2d``               BatchNorm2d's
``GlobalContext``        ``timm.layers.global_context.GlobalContext``          conv_attn, mlp_add.*, mlp_scale.*
``ConvMlp``              ``timm.layers.mlp.ConvMlp``                           fc1, norm, fc2
``LayerNorm2d``          ``timm.layers.norm.LayerNorm2d``                      weight, bias
=======================  ====================================================  ==========================

(timm's ``timm.layers.SqueezeExcite`` is an alias of ``SEModule``; here ``SqueezeExcite`` is the
EfficientNet block.) Fast modules subclass these and override only ``forward``, reading the
pieces from the attributes set here; :func:`gate_kind` says whether a gate has a kernel.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import LayerType, create_act_layer, get_act_layer, make_divisible


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


# --- radix (split) attention: ResNeSt's SplitAttn, SKNet's SelectiveKernel ----------------------


class RadixSoftmax(nn.Module):
    """The attention of split attention, as ``timm.layers.split_attn.RadixSoftmax``: the logits
    [B, R·C(, 1, 1)] in timm's (cardinality, radix, C / cardinality) channel order, softmaxed over
    the radix and returned as [B, R·C] in (radix, channel) order; ``sigmoid`` (shape kept) when
    ``radix`` is 1."""

    def __init__(self, radix: int, cardinality: int) -> None:
        super().__init__()
        self.radix = radix
        self.cardinality = cardinality

    def forward(self, x: Tensor) -> Tensor:
        batch = x.size(0)
        if self.radix > 1:
            x = x.view(batch, self.cardinality, self.radix, -1).transpose(1, 2)
            x = F.softmax(x, dim=1)
            x = x.reshape(batch, -1)
        else:
            x = torch.sigmoid(x)
        return x


class SplitAttn(nn.Module):
    """Split-Attention (ResNeSt's "Splat"), as ``timm.layers.split_attn.SplitAttn``:

    x = act0(drop(bn0(conv(x)))) [B, R·C, H, W], seen as R branches [B, R, C, H, W];
    a = rsoftmax(fc2(act1(bn1(fc1(mean over H×W of Σ_r x[:, r]))))) [B, R, C] (a softmax over r,
    a sigmoid for R = 1); out = Σ_r a[:, r] · x[:, r] [B, C, H, W] (NCHW-contiguous, as timm).
    ``conv`` is grouped ``groups · radix`` ways, fc1 / fc2 ``groups`` ways; ``attn_chs`` =
    ``make_divisible(in_channels · radix · rd_ratio, min_value=32, divisor=rd_divisor)`` or
    ``rd_channels · radix``. Extra keyword arguments go to ``conv``, as timm does. ``act_layer``
    is a class taking ``inplace`` (a timm activation name is accepted too); ``drop_layer`` is
    called with no arguments."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        radix: int = 2,
        rd_ratio: float = 0.25,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        act_layer: LayerType = nn.ReLU,
        norm_layer: Callable[..., nn.Module] | None = None,
        drop_layer: Callable[..., nn.Module] | None = None,
        **kwargs: Any,
    ) -> None:
        dd = {"device": kwargs.pop("device", None), "dtype": kwargs.pop("dtype", None)}
        super().__init__()
        out_channels = out_channels or in_channels
        self.radix = radix
        mid_chs = out_channels * radix
        if rd_channels is None:
            attn_chs = make_divisible(in_channels * radix * rd_ratio, min_value=32, divisor=rd_divisor)
        else:
            attn_chs = rd_channels * radix
        padding = kernel_size // 2 if padding is None else padding
        act = get_act_layer(act_layer)
        self.conv = nn.Conv2d(
            in_channels, mid_chs, kernel_size, stride, padding, dilation, groups=groups * radix, bias=bias, **kwargs, **dd
        )
        self.bn0 = norm_layer(mid_chs, **dd) if norm_layer else nn.Identity()
        self.drop = drop_layer() if drop_layer is not None else nn.Identity()
        self.act0 = act(inplace=True)
        self.fc1 = nn.Conv2d(out_channels, attn_chs, 1, groups=groups, **dd)
        self.bn1 = norm_layer(attn_chs, **dd) if norm_layer else nn.Identity()
        self.act1 = act(inplace=True)
        self.fc2 = nn.Conv2d(attn_chs, mid_chs, 1, groups=groups, **dd)
        self.rsoftmax = RadixSoftmax(radix, groups)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        x = self.bn0(x)
        x = self.drop(x)
        x = self.act0(x)

        B, RC, H, W = x.shape
        if self.radix > 1:
            x = x.reshape((B, self.radix, RC // self.radix, H, W))
            x_gap = x.sum(dim=1)
        else:
            x_gap = x
        x_gap = x_gap.mean((2, 3), keepdim=True)
        x_gap = self.fc1(x_gap)
        x_gap = self.bn1(x_gap)
        x_gap = self.act1(x_gap)
        x_attn = self.fc2(x_gap)

        x_attn = self.rsoftmax(x_attn).view(B, -1, 1, 1)
        if self.radix > 1:
            out = (x * x_attn.reshape((B, self.radix, RC // self.radix, 1, 1))).sum(dim=1)
        else:
            out = x * x_attn
        return out.contiguous()


class SelectiveKernelAttn(nn.Module):
    """Selective Kernel attention, as ``timm.layers.selective_kernel.SelectiveKernelAttn``: for the
    stacked paths x [B, num_paths, C, H, W], ``softmax over the paths of fc_select(act(bn(fc_reduce(
    mean over H×W of Σ_paths x))))`` → [B, num_paths, C, 1, 1]. ``act_layer`` is a class taking
    ``inplace`` (a timm activation name is accepted too), ``norm_layer`` a class called with the
    channel count."""

    def __init__(
        self,
        channels: int,
        num_paths: int = 2,
        attn_channels: int = 32,
        act_layer: LayerType = nn.ReLU,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.num_paths = num_paths
        self.fc_reduce = nn.Conv2d(channels, attn_channels, kernel_size=1, bias=False, **dd)
        self.bn = norm_layer(attn_channels, **dd)
        self.act = get_act_layer(act_layer)(inplace=True)
        self.fc_select = nn.Conv2d(attn_channels, channels * num_paths, kernel_size=1, bias=False, **dd)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.num_paths:
            raise ValueError(f"SelectiveKernelAttn expects {self.num_paths} paths on dim 1, got x of shape {list(x.shape)}")  # a list: TorchScript
        x = x.sum(1).mean((2, 3), keepdim=True)
        x = self.fc_reduce(x)
        x = self.bn(x)
        x = self.act(x)
        x = self.fc_select(x)
        B, C, H, W = x.shape
        x = x.view(B, self.num_paths, C // self.num_paths, H, W)
        return torch.softmax(x, dim=1)


_TIMM_BATCHNORM_ACT = "timm.layers.norm_act.BatchNormAct2d"


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm2d, then ``drop`` and ``act``, as ``timm.layers.norm_act.BatchNormAct2d`` (a
    BatchNorm2d subclass: the same ``state_dict`` keys as a plain BatchNorm2d). ``act`` is
    ``create_act_layer(act_layer, inplace=inplace)`` (Identity without ``apply_act`` or an
    ``act_layer``), ``drop`` is ``drop_layer()`` or Identity."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        apply_act: bool = True,
        act_layer: LayerType | None = nn.ReLU,
        act_kwargs: dict[str, Any] | None = None,
        inplace: bool = True,
        drop_layer: Callable[..., nn.Module] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, device=device, dtype=dtype)
        self.drop = drop_layer() if drop_layer is not None else nn.Identity()
        act_kwargs = dict(act_kwargs or {})
        act_kwargs.setdefault("inplace", inplace)
        act = create_act_layer(act_layer, **act_kwargs) if apply_act else None
        self.act = nn.Identity() if act is None else act

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected 4D input (got {x.ndim}D input)")
        return self.act(self.drop(super().forward(x)))


def _batchnorm_act_layer(norm_layer: object) -> Callable[..., nn.Module]:
    """The norm-act class timm's ``get_norm_act_layer`` gives for ``norm_layer``, as far as it can
    be mirrored without timm: BatchNorm2d (class, ``"batchnorm"`` / ``"batchnorm2d"``, a
    ``functools.partial`` of it, or timm's BatchNormAct2d) → :class:`BatchNormAct2d`."""
    keywords: dict[str, Any] = {}
    if isinstance(norm_layer, functools.partial):
        keywords, norm_layer = dict(norm_layer.keywords), norm_layer.func
    if isinstance(norm_layer, str):
        name = norm_layer.replace("_", "").lower().split("-")[0]
        ok = name in ("batchnorm", "batchnorm2d")
    else:
        qualified = f"{getattr(norm_layer, '__module__', '')}.{getattr(norm_layer, '__qualname__', '')}"
        ok = norm_layer in (nn.BatchNorm2d, BatchNormAct2d) or qualified == _TIMM_BATCHNORM_ACT
    if not ok:
        raise ValueError(
            f"norm_layer {norm_layer!r} cannot be mirrored without timm: the reference ConvNormAct supports "
            "BatchNorm2d (timm's BatchNormAct2d) only"
        )
    return functools.partial(BatchNormAct2d, **keywords) if keywords else BatchNormAct2d


class ConvNormAct(nn.Module):
    """Conv2d → BatchNorm2d → act, as ``timm.layers.ConvNormAct`` with a BatchNorm (``conv``, then
    ``bn`` a :class:`BatchNormAct2d` holding the activation; the same ``state_dict`` keys:
    conv.weight (conv.bias), bn.weight, bn.bias, bn.running_mean, bn.running_var,
    bn.num_batches_tracked). ``padding=''`` is timm's default symmetric padding
    ``((stride - 1) + dilation · (kernel_size - 1)) // 2``; an int is used as is, ``"valid"`` is 0.
    ``aa_layer`` does nothing at stride 1 (as in timm); at stride > 1 it would need timm's
    anti-aliasing layers and is refused. ``drop_layer()`` goes into the BatchNormAct2d, as timm."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | str = "",
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        apply_act: bool = True,
        norm_layer: LayerType = nn.BatchNorm2d,
        act_layer: LayerType | None = nn.ReLU,
        aa_layer: LayerType | None = None,
        drop_layer: Callable[..., nn.Module] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if aa_layer is not None and stride > 1:
            raise ValueError(
                f"aa_layer {aa_layer!r} with stride {stride} cannot be mirrored without timm's anti-aliasing layers; "
                "use the timm module (the reference supports aa_layer=None, or stride 1 where timm ignores it)"
            )
        if isinstance(padding, str):
            if padding.lower() not in ("", "valid"):
                raise ValueError(f"padding {padding!r} is not supported by the reference ConvNormAct ('', 'valid' or an int)")
            padding = 0 if padding.lower() == "valid" else ((stride - 1) + dilation * (kernel_size - 1)) // 2
        norm_act_layer = _batchnorm_act_layer(norm_layer)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=bias, **dd)
        self.bn = norm_act_layer(out_channels, apply_act=apply_act, act_layer=act_layer, drop_layer=drop_layer, **dd)

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class SelectiveKernel(nn.Module):
    """Selective Kernel convolution (SKNet), as ``timm.layers.selective_kernel.SelectiveKernel``:
    ``num_paths`` :class:`ConvNormAct` paths (3×3, dilated ``dilation · (k - 1) // 2`` for a k×k
    kernel with ``keep_3x3``), each on its slice of the input channels with ``split_input``,
    stacked to x [B, num_paths, C, H, W]; a = :class:`SelectiveKernelAttn` (x) (built with its
    default act and norm layers, as timm does); out = Σ_paths a · x [B, C, H, W].
    ``kernel_size`` defaults to [3, 5]; as timm, only its first entry is validated (odd, ≥ 3)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        kernel_size: int | list[int] | None = None,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        keep_3x3: bool = True,
        split_input: bool = True,
        act_layer: LayerType = nn.ReLU,
        norm_layer: LayerType = nn.BatchNorm2d,
        aa_layer: LayerType | None = None,
        drop_layer: Callable[..., nn.Module] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        out_channels = out_channels or in_channels
        kernel_size = kernel_size or [3, 5]
        first = kernel_size[0] if isinstance(kernel_size, (list, tuple)) else kernel_size
        if not (first >= 3 and first % 2):
            raise ValueError(f"kernel_size must be odd and at least 3, got {kernel_size!r}")
        if not isinstance(kernel_size, list):
            kernel_size = [kernel_size] * 2
        if keep_3x3:
            dilation = [dilation * (k - 1) // 2 for k in kernel_size]
            kernel_size = [3] * len(kernel_size)
        else:
            dilation = [dilation] * len(kernel_size)
        self.num_paths = len(kernel_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.split_input = split_input
        if self.split_input:
            if in_channels % self.num_paths:
                raise ValueError(f"in_channels {in_channels} must divide into the {self.num_paths} paths (split_input)")
            in_channels = in_channels // self.num_paths
        groups = min(out_channels, groups)
        conv_kwargs = dict(stride=stride, groups=groups, act_layer=act_layer, norm_layer=norm_layer,
                           aa_layer=aa_layer, drop_layer=drop_layer, **dd)
        self.paths = nn.ModuleList([
            ConvNormAct(in_channels, out_channels, kernel_size=k, dilation=d, **conv_kwargs)
            for k, d in zip(kernel_size, dilation)])
        attn_channels = rd_channels or make_divisible(out_channels * rd_ratio, divisor=rd_divisor)
        self.attn = SelectiveKernelAttn(out_channels, self.num_paths, attn_channels, **dd)

    def forward(self, x: Tensor) -> Tensor:
        if self.split_input:
            x_split = torch.split(x, self.in_channels // self.num_paths, 1)
            x_paths = [op(x_split[i]) for i, op in enumerate(self.paths)]
        else:
            x_paths = [op(x) for op in self.paths]
        x = torch.stack(x_paths, dim=1)
        x_attn = self.attn(x)
        x = x * x_attn
        return torch.sum(x, dim=1)


# --- GCNet's global context block (timm.layers.global_context), with its MLP and LayerNorm -------

class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor, as ``timm.layers.norm.LayerNorm2d``: ``F.layer_norm``
    on the [B, H, W, C] permutation, permuted back. ``state_dict``: weight, bias (with ``affine``)."""

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, **kwargs: Any) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _pair(v: Any) -> tuple:
    """timm's ``to_2tuple``: an iterable (not a string) as a tuple, anything else repeated twice."""
    if isinstance(v, (list, tuple)) or (hasattr(v, "__iter__") and not isinstance(v, str)):
        return tuple(v)
    return (v, v)


class ConvMlp(nn.Module):
    """The MLP of 1×1 convs of ``timm.layers.mlp.ConvMlp``: ``fc2(drop(act(norm(fc1(x)))))``;
    ``norm`` is ``nn.Identity`` without a ``norm_layer``, ``bias`` a bool or a pair (fc1, fc2).
    ``state_dict``: fc1, norm (if it has parameters), fc2."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        norm_layer: Callable[..., nn.Module] | None = None,
        bias: bool | tuple[bool, bool] = True,
        drop: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        bias = _pair(bias)
        self.fc1 = nn.Conv2d(in_features, hidden_features, kernel_size=1, bias=bias[0], **dd)
        self.norm = norm_layer(hidden_features, **dd) if norm_layer else nn.Identity()
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden_features, out_features, kernel_size=1, bias=bias[1], **dd)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        x = self.norm(x)
        x = self.act(x)
        x = self.drop(x)
        return self.fc2(x)


class GlobalContext(nn.Module):
    """GCNet's global context block, as ``timm.layers.global_context.GlobalContext``.

    context = Σ_p softmax_p(conv_attn(x))[p] · x[:, :, p] (``use_attn``; else the mean over H×W),
    then ``x * gate(mlp_scale(context))`` (``fuse_scale``) and ``+ mlp_add(context)``
    (``fuse_add``); the MLPs are :class:`ConvMlp` with a :class:`LayerNorm2d`, hidden width
    ``make_divisible(channels * rd_ratio, rd_divisor, round_limit=0)`` unless ``rd_channels``.
    ``reset_parameters``: Kaiming-normal conv_attn, and mlp_add's fc2 zeroed. ``state_dict``:
    conv_attn (weight [1, C, 1, 1], bias [1]), mlp_add.*, mlp_scale.* (fc1, norm, fc2)."""

    def __init__(
        self,
        channels: int,
        use_attn: bool = True,
        fuse_add: bool = False,
        fuse_scale: bool = True,
        init_last_zero: bool = False,
        rd_ratio: float = 1.0 / 8,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        act_layer: LayerType = nn.ReLU,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        act_layer = get_act_layer(act_layer)
        self.conv_attn = nn.Conv2d(channels, 1, kernel_size=1, bias=True, **dd) if use_attn else None
        if rd_channels is None:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        if fuse_add:
            self.mlp_add = ConvMlp(channels, rd_channels, act_layer=act_layer, norm_layer=LayerNorm2d, **dd)
        else:
            self.mlp_add = None
        if fuse_scale:
            self.mlp_scale = ConvMlp(channels, rd_channels, act_layer=act_layer, norm_layer=LayerNorm2d, **dd)
        else:
            self.mlp_scale = None
        self.gate = create_act_layer(gate_layer)
        self.init_last_zero = init_last_zero
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.conv_attn is not None:
            nn.init.kaiming_normal_(self.conv_attn.weight, mode="fan_in", nonlinearity="relu")
        if self.mlp_add is not None:
            nn.init.zeros_(self.mlp_add.fc2.weight)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        if self.conv_attn is not None:
            attn = self.conv_attn(x).reshape(B, 1, H * W)
            attn = F.softmax(attn, dim=-1).unsqueeze(3)
            context = x.reshape(B, C, H * W).unsqueeze(1) @ attn
            context = context.view(B, C, 1, 1)
        else:
            context = x.mean(dim=(2, 3), keepdim=True)
        if self.mlp_scale is not None:
            x = x * self.gate(self.mlp_scale(context))
        if self.mlp_add is not None:
            x = x + self.mlp_add(context)
        return x
