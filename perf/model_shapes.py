"""The attention blocks of real models at 224×224 input: which module, its C, H, W and arguments.

Taken from timm 1.0.31's model definitions (``seresnet50``, ``ecaresnet50d``,
``efficientnet_b0``, ``regnety_016``, a ResNet-50 with ``attn_layer="cbam"``, ``resnest50d``,
``skresnet50``, ``gcresnet50t``, ``legacy_seresnet50``) and torchvision's ``mobilenet_v3_large``, by hooking every attention module during a 224×224 forward. Blocks
of equal shape and arguments within a model are listed once with ``count``, the number of
times the model runs them. C is the channel count the block sees, H×W its feature map.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

#: Per module class: the constructor argument taking the channel count, and the one taking the
#: reduced (bottleneck) width, if any.
CHANNEL_ARGS: dict[str, tuple[str, str | None]] = {
    "SEModule": ("channels", "rd_channels"),
    "EffectiveSEModule": ("channels", None),
    "EcaModule": ("channels", None),
    "CbamModule": ("channels", "rd_channels"),
    "SqueezeExcite": ("in_chs", "rd_channels"),
    "SqueezeExcitation": ("input_channels", "squeeze_channels"),
    "LegacySEModule": ("channels", None),
    "SplitAttn": ("in_channels", None),
    "SelectiveKernel": ("in_channels", None),
    "GlobalContext": ("channels", "rd_channels"),
}


@dataclass(frozen=True)
class Block:
    """One attention block of a model: ``module(**constructor_kwargs())`` on a [B, C, H, W] map."""

    model: str
    name: str
    module: str  # class name in tritattn.reference (eager) and tritattn.modules (tritattn)
    C: int
    H: int
    W: int
    count: int = 1
    rd: int | None = None  # reduced width of the excitation MLP (None: the module derives it)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.model}/{self.name}"

    def constructor_kwargs(self) -> dict[str, Any]:
        channels_arg, rd_arg = CHANNEL_ARGS[self.module]
        kwargs = {channels_arg: self.C, **self.extra}
        if self.rd is not None:
            kwargs[rd_arg] = self.rd
        return kwargs

    def describe(self) -> str:
        """Constructor call as text, e.g. ``SEModule(channels=256)``."""
        args = ", ".join(f"{k}={getattr(v, '__name__', v)}" for k, v in self.constructor_kwargs().items())
        return f"{self.module}({args})"

    def scaled(self, max_channels: int, max_side: int) -> "Block":
        """The same block shrunk to at most ``max_channels`` × ``max_side``², the MLP width in proportion."""
        C = min(self.C, max_channels)
        rd = None if self.rd is None else max(1, round(self.rd * C / self.C))
        extra = dict(self.extra)
        if "out_channels" in extra:  # a block that changes the width keeps its ratio
            extra["out_channels"] = max(1, round(extra["out_channels"] * C / self.C))
        return replace(self, C=C, H=min(self.H, max_side), W=min(self.W, max_side), rd=rd, extra=extra)


def _resnet50_stages(model: str, module: str) -> list[Block]:
    """ResNet-50 bottlenecks: the block sits after conv3, on 4× the stage width."""
    return [
        Block(model, f"s{i + 1}", module, C, side, side, count)
        for i, (C, side, count) in enumerate([(256, 56, 3), (512, 28, 4), (1024, 14, 6), (2048, 7, 3)])
    ]


def _efficientnet_b0() -> list[Block]:
    """SE on the expanded width after the depthwise conv; rd = block input width / 4; SiLU."""
    rows = [(32, 112, 8, 1), (96, 56, 4, 1), (144, 56, 6, 1), (144, 28, 6, 1), (240, 28, 10, 1), (240, 14, 10, 1),
            (480, 14, 20, 3), (672, 14, 28, 2), (672, 7, 28, 1), (1152, 7, 48, 4)]
    return [
        Block("efficientnet_b0", f"se{C}@{side}", "SqueezeExcite", C, side, side, count, rd, {"act_layer": nn.SiLU})
        for C, side, rd, count in rows
    ]


def _mobilenetv3_large() -> list[Block]:
    """torchvision's SqueezeExcitation with a hard-sigmoid gate; squeeze = make_divisible(C / 4, 8)."""
    rows = [(72, 28, 24, 1), (120, 28, 32, 2), (480, 14, 120, 1), (672, 14, 168, 1), (672, 7, 168, 1), (960, 7, 240, 2)]
    return [
        Block("mobilenetv3_large", f"se{C}@{side}", "SqueezeExcitation", C, side, side, count, rd,
              {"scale_activation": nn.Hardsigmoid})
        for C, side, rd, count in rows
    ]


def _regnety_016() -> list[Block]:
    """SE with rd = block input width / 4: the first block of a stage has the previous width."""
    rows = [(48, 56, 8, 1), (48, 56, 12, 1), (120, 28, 12, 1), (120, 28, 30, 5),
            (336, 14, 30, 1), (336, 14, 84, 16), (888, 7, 84, 1), (888, 7, 222, 1)]
    return [
        Block("regnety_016", f"s{stage}{'a' if first else 'b'}", "SEModule", C, side, side, count, rd)
        for (C, side, rd, count), stage, first in zip(rows, [1, 1, 2, 2, 3, 3, 4, 4], [True, False] * 4)
    ]


def _resnest50d() -> list[Block]:
    """ResNeSt-50's split attention (the block's 3×3 conv included): radix 2, one group, BatchNorms,
    on the stage width; the first block of stages 2-4 widens the channels (its stride is an
    average pool after the block)."""
    rows = [(64, 64, 56, 3), (128, 128, 56, 1), (128, 128, 28, 3), (256, 256, 28, 1), (256, 256, 14, 5),
            (512, 512, 14, 1), (512, 512, 7, 2)]
    return [
        Block("resnest50d", f"splat{C_out}@{side}" + ("" if C_in == C_out else f"<{C_in}"), "SplitAttn", C_in, side, side,
              count, None, {"out_channels": C_out, "radix": 2, "norm_layer": nn.BatchNorm2d})
        for C_in, C_out, side, count in rows
    ]


def _skresnet50() -> list[Block]:
    """SKNet-50's selective kernel (its two 3×3 branches, one dilated, included): the input split
    between the branches; the first block of stages 2-4 has stride 2."""
    rows = [(64, 64, 56, 1, 3), (128, 128, 56, 2, 1), (128, 128, 28, 1, 3), (256, 256, 28, 2, 1), (256, 256, 14, 1, 5),
            (512, 512, 14, 2, 1), (512, 512, 7, 1, 2)]
    return [
        Block("skresnet50", f"sk{C_out}@{side}" + (f"/s{stride}" if stride > 1 else ""), "SelectiveKernel", C_in, side,
              side, count, None, {"out_channels": C_out, "stride": stride})
        for C_in, C_out, side, stride, count in rows
    ]


def _gcresnet50t() -> list[Block]:
    """GC-ResNet-50's global context after the 3×3 conv: attention pooling, the MLP (LayerNorm,
    ReLU) on C / 8, then x + context (fuse_add, no scaling)."""
    rows = [(64, 56, 3), (128, 28, 4), (256, 14, 6), (512, 7, 3)]
    return [
        Block("gcresnet50t", f"gc{C}@{side}", "GlobalContext", C, side, side, count, C // 8,
              {"fuse_add": True, "fuse_scale": False})
        for C, side, count in rows
    ]


def _legacy_seresnet50() -> list[Block]:
    """The original SENet's SE-ResNet-50: SE after conv3 with C / 16 hidden channels."""
    return [
        Block("legacy_seresnet50", f"s{i + 1}", "LegacySEModule", C, side, side, count, None, {"reduction": 16})
        for i, (C, side, count) in enumerate([(256, 56, 3), (512, 28, 4), (1024, 14, 6), (2048, 7, 3)])
    ]


MODELS: dict[str, list[Block]] = {
    "seresnet50": _resnet50_stages("seresnet50", "SEModule"),
    "ecaresnet50d": _resnet50_stages("ecaresnet50d", "EcaModule"),
    "efficientnet_b0": _efficientnet_b0(),
    "mobilenetv3_large": _mobilenetv3_large(),
    "regnety_016": _regnety_016(),
    "cbam_resnet50": _resnet50_stages("cbam_resnet50", "CbamModule"),
    "resnest50d": _resnest50d(),
    "skresnet50": _skresnet50(),
    "gcresnet50t": _gcresnet50t(),
    "legacy_seresnet50": _legacy_seresnet50(),
}

ALL_BLOCKS: list[Block] = [b for blocks in MODELS.values() for b in blocks]


def representative(model: str) -> Block:
    """The block a model runs most often (the first such)."""
    blocks = MODELS[model]
    return max(blocks, key=lambda b: (b.count, -blocks.index(b)))


def select(patterns: list[str]) -> list[Block]:
    """Blocks whose id contains any of ``patterns`` (a model name picks all its blocks);
    ``"representative"`` picks each model's :func:`representative` block."""
    def wanted(b: Block) -> bool:
        return any(p in b.id for p in patterns) or ("representative" in patterns and b == representative(b.model))

    return [b for b in ALL_BLOCKS if wanted(b)]
