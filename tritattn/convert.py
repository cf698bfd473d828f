"""``tritattn.convert(model)``: put tritattn's kernels into a timm or torchvision model.

Every attention block with a fast twin (:data:`tritattn.peers.PEER_TWINS`, and tritattn's own
:mod:`tritattn.reference` blocks) is *re-classed* in place to that twin: the object stays the
same, with the same parameters and buffers (an optimizer built before keeps working), hooks,
device, dtype and training mode; only its ``forward`` becomes tritattn's. The twins read exactly
the attributes the peer classes set (same names, same submodules), which is what makes that
safe. Then each timm ResNet block whose SE was converted gets its tail fused
(:mod:`tritattn.fusion`).

A block is left as it is, and listed in the report with the reason, when its gate has no kernel,
when it is a subclass of a peer (which may compute something else), when its ``forward`` was
replaced on the instance, or when tritattn has no twin for it (timm's other attention blocks).
A CBAM block is converted with both its parts or not at all.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from . import modules
from .fusion import MIRRORED_FORWARDS, fuse_residual
from .modules import FAST_TWINS, kernel_for_gate
from .peers import PEER_TWINS, WITHOUT_TWIN, qualified_name


@dataclass(frozen=True)
class Replaced:
    """A block now running on the kernels."""

    path: str  #: its name in ``model.named_modules()`` ("" for the model itself)
    peer: str  #: its class before, qualified
    twin: str  #: its tritattn class now
    gate: str | None  #: the kernel gate it applies (None for a container such as CbamModule)


@dataclass(frozen=True)
class Skipped:
    """A block left as it was (or a block tail left unfused), and why."""

    path: str
    cls: str
    reason: str


@dataclass
class ConvertReport:
    """What :func:`convert` did to ``model``; ``print(report)`` shows it as a table."""

    model: nn.Module  #: the converted model (the one passed in, unless ``inplace=False``)
    replaced: list[Replaced] = field(default_factory=list)
    fused: list[Replaced] = field(default_factory=list)  #: blocks whose SE + residual add + ReLU is one pass
    skipped: list[Skipped] = field(default_factory=list)  #: attention blocks left eager
    not_fused: list[Skipped] = field(default_factory=list)  #: ResNet blocks with attention, tail left unfused

    def __str__(self) -> str:
        lines = [
            f"tritattn.convert: {len(self.replaced)} replaced, {len(self.fused)} fused, "
            f"{len(self.skipped)} skipped, {len(self.not_fused)} not fused"
        ]
        for title, rows in (
            ("replaced", [(r.path, f"{r.peer} -> {r.twin}" + (f" (gate {r.gate})" if r.gate else ""))
                          for r in self.replaced]),
            ("fused", [(r.path, f"{r.peer}: se + residual add + ReLU in one pass") for r in self.fused]),
            ("skipped", [(s.path, f"{s.cls}: {s.reason}") for s in self.skipped]),
            ("not fused", [(s.path, f"{s.cls}: {s.reason}") for s in self.not_fused]),
        ):
            if rows:
                lines.append(f"{title}:")
                lines += [f"  {path or '(model)'}  {what}" for path, what in rows]
        return "\n".join(lines)


_FAST_CLASSES = frozenset(FAST_TWINS.values())


def _twin_of(cls: type[nn.Module]) -> type[nn.Module] | None:
    """The fast twin for a block of exactly this class, if any."""
    if cls in FAST_TWINS:
        return FAST_TWINS[cls]
    twin_name = PEER_TWINS.get(qualified_name(cls))
    return getattr(modules, twin_name) if twin_name else None


def _twin_gate(module: nn.Module, twin: type[nn.Module]) -> str | None:
    """The kernel gate ``module`` will apply as a ``twin`` (None: no kernel, or no gate of its own)."""
    gate_attr = getattr(twin, "gate_attr", None)
    if gate_attr is None:
        return "sigmoid" if twin is modules.LightChannelAttn else None  # timm: always F.sigmoid
    return kernel_for_gate(getattr(module, gate_attr))


def _skip_reason(module: nn.Module, twin: type[nn.Module] | None) -> str | None:
    """Why ``module`` is not converted (None: convert it, or it is no attention block at all)."""
    cls = type(module)
    if twin is None:
        if qualified_name(cls) in WITHOUT_TWIN:
            return "tritattn has no twin for this block"
        parent = next((base for base in cls.__mro__[1:] if _twin_of(base) is not None), None)
        if parent is not None:
            return f"a subclass of {qualified_name(parent)}, whose forward may differ"
        return None
    if "forward" in module.__dict__:
        return "its forward is replaced on the instance"
    gate_attr = getattr(twin, "gate_attr", None)
    if gate_attr is not None and _twin_gate(module, twin) is None:
        gate = type(getattr(module, gate_attr)).__name__
        return f"gate {gate} has no kernel (sigmoid and hard-sigmoid do); left eager"
    pool = getattr(module, "avgpool", None)  # torchvision's SqueezeExcitation: the twin takes the mean itself
    if pool is not None and not (type(pool) is nn.AdaptiveAvgPool2d and pool.output_size in (1, (1, 1))):
        return f"avgpool is {pool!r}, not AdaptiveAvgPool2d(1)"
    for name, child in module.named_children():  # CBAM: converted as a whole or not at all
        child_twin = _twin_of(type(child))
        reason = _skip_reason(child, child_twin) if child_twin is not None else None
        if reason is not None:
            return f"its part {name!r} is left eager: {reason}"
    return None


def convert(model: nn.Module, *, inplace: bool = True, fuse: bool = True) -> ConvertReport:
    """Replace every supported timm / torchvision attention block in ``model`` by its tritattn
    twin, carrying the same parameters and buffers; with ``fuse``, also run the SE, residual add
    and ReLU of timm's SE-ResNet blocks as one pass. ``inplace=False`` converts a deep copy.
    Returns the :class:`ConvertReport`; the converted model is ``report.model``."""
    if not inplace:
        model = copy.deepcopy(model)
    report = ConvertReport(model)
    left_eager: list[str] = []  # path prefixes of skipped blocks: their parts stay as they are too
    for path, module in model.named_modules():
        cls = type(module)
        if cls in _FAST_CLASSES or any(path.startswith(prefix) for prefix in left_eager):
            continue  # already converted, or part of a block left eager
        twin = _twin_of(cls)
        reason = _skip_reason(module, twin)
        if reason is not None:
            report.skipped.append(Skipped(path, qualified_name(cls), reason))
            left_eager.append(f"{path}." if path else "")
        elif twin is not None:
            module.__class__ = twin
            gate = _twin_gate(module, twin)
            report.replaced.append(Replaced(path, qualified_name(cls), f"tritattn.{twin.__name__}", gate))
    if fuse:
        for path, block in model.named_modules():
            cls = type(block)
            if qualified_name(cls) not in MIRRORED_FORWARDS or getattr(block, "se", None) is None:
                continue
            reason = fuse_residual(block)
            if reason is None:
                fused_name = f"tritattn.fusion.{type(block).__name__}"
                report.fused.append(Replaced(path, qualified_name(cls), fused_name, None))
            else:
                report.not_fused.append(Skipped(path, qualified_name(cls), reason))
    return report
