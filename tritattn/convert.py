"""``tritattn.convert(model)``: put tritattn's kernels into a timm or torchvision model.

Every attention block with a fast twin (:data:`tritattn.peers.PEER_TWINS`, and tritattn's own
:mod:`tritattn.reference` blocks) is *re-classed* in place to that twin: the object stays the
same, with the same parameters and buffers (an optimizer built before keeps working), hooks,
device, dtype and training mode; only its ``forward`` becomes tritattn's. The twins read exactly
the attributes the peer classes set (same names, same submodules), which is what makes that
safe. Then each timm ResNet block whose SE was converted gets its tail fused
(:mod:`tritattn.fusion`), and each converted channel-attention block whose input is a BatchNorm
plus activation read by nothing else takes those in (:mod:`tritattn.prologue`). Both fusions are
applied only where a probe of the enclosing block (:mod:`tritattn.probe`) shows them exact.

A re-classed block remembers its class before (in its ``__dict__``, not its ``state_dict``), so
:func:`revert` can give it back, and a second :func:`convert` reports it as the first did and
changes nothing. ``dry_run=True`` makes the same report without touching the model.

A block is left as it is, and listed in the report with the reason, when its gate has no kernel,
when it is a subclass of a peer (which may compute something else), when its ``forward`` was
replaced on the instance, or when tritattn has no twin for it (timm's other attention blocks).
A CBAM block is converted with both its parts or not at all.

A traced model (a ``torch.fx.GraphModule``, e.g. timm's ``features_only=True, feature_cls='fx'``)
keeps the modules its graph calls: those that are attention blocks are converted like any other.
The blocks the tracer went through left only their operations in the graph: nothing is left to
convert, and convert warns (``warnings.warn`` and the ``tritattn`` logger) with the blocks it can
name. A scripted model (``torch.jit.ScriptModule``) runs compiled code that a new class cannot
change: convert warns and leaves it. Convert the eager model before tracing or scripting it.

The report says where the blocks run on this machine: :func:`~tritattn.backend_for` a tensor on
the model's device (its first parameter's or buffer's; the CPU for a model with neither).
"""
from __future__ import annotations

import copy
import itertools
import logging
import warnings
from collections import Counter

import torch
from torch import fx, nn

from . import global_context, modules, split_attention
from .backend import TRITON_AVAILABLE, Backend, backend_for, backend_reason, kernels_disabled
from .fusion import fuse_tail, fused_class, fusion_refusal, is_fused, tail_attention, unfuse, unfused_class
from .modules import kernel_gate_as
from .peers import ORIGINAL_CLASS_ATTR, PEER_TWINS, SELF_ATTENTION, WITHOUT_TWIN, qualified_name
from .producer import is_passthrough, prologue_of
from .prologue import drop_prologue, fuse_prologue, prologue_refusal
from .report import ConvertReport, Replaced, Restored, RevertReport, Skipped, TakenIn
from .twins import FAST_TWINS, twin_named

log = logging.getLogger("tritattn")

_FAST_CLASSES = frozenset(FAST_TWINS.values())
#: why a self-attention layer (:data:`tritattn.peers.SELF_ATTENTION`) is left as it is
SELF_ATTENTION_REASON = "a self-attention layer: outside tritattn's channel and spatial attention"
#: why convert leaves a scripted model (or a scripted part of one) as it is
SCRIPTED_REASON = ("a TorchScript module (torch.jit.script / torch.jit.trace): it runs compiled code, which giving "
                   "its modules a new class cannot change; convert the eager model before scripting or tracing it")
#: qualified names of the classes convert re-classes (timm's, torchvision's and tritattn's reference blocks)
_CONVERTIBLE = frozenset(PEER_TWINS) | frozenset(qualified_name(cls) for cls in FAST_TWINS)


def _twin_of(cls: type[nn.Module]) -> type[nn.Module] | None:
    """The fast twin for a block of exactly this class, if any."""
    if cls in FAST_TWINS:
        return FAST_TWINS[cls]
    twin_name = PEER_TWINS.get(qualified_name(cls))
    return twin_named(twin_name) if twin_name else None


#: how the twins of split attention, selective kernel and global context run: in inference (eval,
#: no gradient) the squeeze with the MLP in one kernel; otherwise their kernels around the MLP in
#: torch (an eager MLP between two kernels: exact with a batch-statistics BatchNorm)
_PER_OP_DESCRIPTIONS: dict[type[nn.Module], str] = {
    split_attention.SplitAttn: ("conv, BN, act in torch; inference: squeeze + MLP + radix softmax, radix combine "
                                "(2 kernels); training: radix pool, MLP in torch, radix combine"),
    split_attention.SelectiveKernel: ("branches in torch; inference: squeeze + MLP + softmax, radix combine "
                                      "(2 kernels); training: the attention per op, radix combine"),
    split_attention.SelectiveKernelAttn: "per-op: radix pool, MLP and softmax in torch",
    global_context.GlobalContext: ("inference: context pool + MLPs (2 kernels), then scale (1 kernel) or torch add; "
                                   "training: context pool, MLPs in torch, scale or torch add"),
}


#: A channel-attention block on the kernels: its path is chosen per problem at its first call
#: (tritattn/paths.py: a tuned winner, else the critical-path model's fastest); paths.decisions() lists them.
PATH_PER_SHAPE = "block pipeline, path per shape (one-launch, split, per-op or eager: tritattn.paths.decisions())"


def pipeline_as(module: nn.Module, twin: type[nn.Module]) -> str:
    """How ``module`` runs as a ``twin`` on the Triton kernels: "block pipeline", or "per-op" and
    why; a CBAM lists its two parts. (On the eager fallback every block runs the per-op path.)"""
    if issubclass(twin, modules.ChannelExcitation):
        refusal = twin.block_refusal(module)  # reads only the parameters and submodules twin and peer share
        return PATH_PER_SHAPE if refusal is None else f"per-op: {refusal}"
    if issubclass(twin, modules.SpatialScaling):
        return "per-op: spatial pool, conv, spatial scale"
    if twin in _PER_OP_DESCRIPTIONS:
        return _PER_OP_DESCRIPTIONS[twin]
    if issubclass(twin, modules.CbamPipeline):
        refusal = twin.refusal(module)
        if refusal is None:
            return "block pipeline (4 kernels forward, 4 backward)"
        parts = [(name, child, type(child) if type(child) in _FAST_CLASSES else _twin_of(type(child)))
                 for name, child in module.named_children()]
        return f"per part ({refusal}): " + "; ".join(
            f"{name} {pipeline_as(child, t)}" for name, child, t in parts if t is not None)
    return ""


def _skip_reason(module: nn.Module, twin: type[nn.Module] | None) -> str | None:
    """Why ``module`` is not converted (None: convert it, or it is no attention block at all)."""
    cls = type(module)
    if twin is None:
        if qualified_name(cls) in WITHOUT_TWIN:
            return "tritattn has no twin for this block"
        if qualified_name(cls) in SELF_ATTENTION:
            return SELF_ATTENTION_REASON
        parent = next((base for base in cls.__mro__[1:] if _twin_of(base) is not None), None)
        if parent is not None:
            return f"a subclass of {qualified_name(parent)}, whose forward may differ"
        return None
    if "forward" in module.__dict__:
        return "its forward is replaced on the instance"
    gate_attr = getattr(twin, "gate_attr", None)
    if gate_attr is not None and kernel_gate_as(module, twin) is None:
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


def _plan_replacements(model: nn.Module, report: ConvertReport) -> dict[nn.Module, type[nn.Module]]:
    """Fill ``report.replaced`` / ``report.skipped``; returns the blocks to re-class → their twin."""
    planned: dict[nn.Module, type[nn.Module]] = {}
    left_eager: list[str] = []  # path prefixes of skipped blocks: their parts stay as they are too
    for path, module in model.named_modules():
        cls = type(module)
        if any(path.startswith(prefix) for prefix in left_eager):
            continue
        if cls in _FAST_CLASSES:  # converted before (reported as then), or built as a tritattn block
            original = module.__dict__.get(ORIGINAL_CLASS_ATTR)
            if original is not None:
                report.replaced.append(Replaced(path, qualified_name(original), f"tritattn.{cls.__name__}",
                                                kernel_gate_as(module, cls), pipeline_as(module, cls)))
            continue
        twin = _twin_of(cls)
        reason = _skip_reason(module, twin)
        if reason is not None:
            report.skipped.append(Skipped(path, qualified_name(cls), reason))
            left_eager.append(f"{path}." if path else "")
        elif twin is not None:
            planned[module] = twin
            report.replaced.append(Replaced(path, qualified_name(cls), f"tritattn.{twin.__name__}",
                                            kernel_gate_as(module, twin), pipeline_as(module, twin)))
    return planned


def _plan_fusion(model: nn.Module, report: ConvertReport, planned: dict[nn.Module, type[nn.Module]]) -> list[nn.Module]:
    """Fill ``report.fused`` / ``report.not_fused``; returns the blocks to fuse."""
    to_fuse = []
    for path, block in model.named_modules():
        timm_class = unfused_class(block)
        se = tail_attention(block)
        if se is None:
            continue
        fused = Replaced(path, qualified_name(timm_class), f"tritattn.fusion.{fused_class(timm_class).__name__}", None)
        if is_fused(block):
            report.fused.append(fused)
            continue
        reason = fusion_refusal(block, planned.get(se))
        if reason is None:
            to_fuse.append(block)
            report.fused.append(fused)
        else:
            report.not_fused.append(Skipped(path, qualified_name(timm_class), reason))
    return to_fuse


def _traced_through(graph: fx.GraphModule) -> dict[str, str] | None:
    """The attention blocks (path → class) that the tracer of ``graph`` went into, leaving their
    operations in the graph, read from the nodes' ``nn_module_stack``; None when no node records it
    (timm's and torchvision's feature extractors do not)."""
    found: dict[str, str] = {}
    recorded = False
    for node in graph.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        recorded = recorded or bool(stack)
        for path, cls in (stack or {}).values():
            name = cls if isinstance(cls, str) else qualified_name(cls)
            if name in _CONVERTIBLE and not (node.op == "call_module" and node.target == path):
                found.setdefault(path, name)
    return found if recorded else None


def _plan_unconvertible(model: nn.Module, report: ConvertReport) -> None:
    """Fill ``report.unconvertible``: the scripted parts of ``model``, and its FX graphs traced
    through their attention blocks (or, when the graph does not say, calling none as a module)."""
    scripted: list[str] = []  # path prefixes of scripted parts: their submodules are scripted too
    reached = [block.path for block in (*report.replaced, *report.skipped)]  # attention blocks found as modules
    for path, module in model.named_modules():
        if any(path.startswith(prefix) for prefix in scripted):
            continue
        if isinstance(module, torch.jit.ScriptModule):
            report.unconvertible.append(Skipped(path, "torch.jit.ScriptModule", SCRIPTED_REASON))
            scripted.append(f"{path}." if path else "")
        elif isinstance(module, fx.GraphModule):
            traced = _traced_through(module)
            if traced:
                named = ", ".join(f"{p} ({cls})" for p, cls in itertools.islice(traced.items(), 3))
                reason = (f"an FX graph traced through its attention blocks ({len(traced)}: {named}"
                          f"{', ...' if len(traced) > 3 else ''}): their operations are inlined in the graph, so "
                          "there is no block to convert; convert the model before tracing it")
            elif traced is None and not any(not path or p == path or p.startswith(f"{path}.") for p in reached):
                reason = ("an FX graph that calls no attention block as a module, and whose nodes do not record the "
                          "modules they came from: if the traced model had attention blocks, the tracer went "
                          "through them (timm's and torchvision's feature extractors do), and there is no block to "
                          "convert; convert the model before tracing it")
            else:
                continue
            report.unconvertible.append(Skipped(path, "torch.fx.GraphModule", reason))


def _prologue_candidate(module: nn.Module, twin: type[nn.Module]) -> str | None:
    """Why a channel-attention block (running as ``twin``) cannot take in a prologue at all, or None."""
    refusal = twin.block_refusal(module)
    if refusal is not None:
        return f"it runs per op ({refusal})"
    as_twin = copy.copy(module)  # a shallow view with the twin's methods (the peer lacks the twin's class attributes)
    as_twin.__class__ = twin
    spec = as_twin.block_spec()
    if spec.pool != "mean" or spec.norm is not None:
        return "the prologue is built for mean pooling without a BatchNorm in the MLP"
    return None


def _plan_prologues(model: nn.Module, report: ConvertReport, planned: dict[nn.Module, type[nn.Module]]) -> list:
    """Fill ``report.taken_in`` / ``report.not_taken_in``; returns (se, prologue, pass-through modules) to fuse."""
    to_fuse = []
    paths = {id(m): path for path, m in model.named_modules()}
    registered = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    for path, module in model.named_modules():
        twin = planned.get(module, type(module) if type(module) in _FAST_CLASSES else None)
        if twin is None or not issubclass(twin, modules.ChannelExcitation) or not path:
            continue
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        if issubclass(planned.get(parent, type(parent)), modules.CbamPipeline):
            continue  # CBAM's channel part: its input is the CBAM block's
        existing = prologue_of(module)
        if existing is not None:
            report.taken_in.append(TakenIn(path, paths.get(id(existing.norm), "?"), existing.kind))
            continue
        reason = _prologue_candidate(module, twin)
        found = prologue_refusal(parent, name, twin) if reason is None else reason
        if not isinstance(found, str) and any(registered[id(m)] > 1 for m in found[1]):
            found = "its producer's modules are shared with another place in the model"
        if isinstance(found, str):
            report.not_taken_in.append(Skipped(path, qualified_name(type(module)), found))
        else:
            prologue, passthrough = found
            to_fuse.append((module, prologue, passthrough))
            report.taken_in.append(TakenIn(path, paths[id(prologue.norm)], prologue.kind))
    return to_fuse


def _where_blocks_run(model: nn.Module) -> tuple[Backend, str]:
    """:func:`~tritattn.backend_for` a tensor on ``model``'s device, and why (for the report)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    probe = torch.empty(0, device=first.device if first is not None else "cpu")
    backend, why = backend_for(probe), backend_reason(probe).partition(": ")[2]
    on_cpu_beside_a_gpu = probe.device.type == "cpu" and torch.cuda.is_available()
    if backend == "torch" and on_cpu_beside_a_gpu and TRITON_AVAILABLE and not kernels_disabled():
        why += "; the model is on the CPU: on the GPU they run the Triton kernels"
    return backend, why


def _log(report: ConvertReport) -> None:
    """Log the report (and warn about the parts of the model convert could not convert)."""
    log.info("%s", report.summary())
    for s in report.unconvertible:
        message = f"tritattn.convert: {s.path or 'the model'} is {s.reason}"
        log.info("%s", message)
        warnings.warn(message, stacklevel=3)  # at the caller of convert
    for s in report.skipped:
        log.debug("left eager: %s (%s): %s", s.path or "(model)", s.cls, s.reason)
    for s in report.not_fused:
        log.debug("not fused: %s (%s): %s", s.path or "(model)", s.cls, s.reason)
    for s in report.not_taken_in:
        log.debug("producer not taken in: %s (%s): %s", s.path, s.cls, s.reason)


def convert(model: nn.Module, *, inplace: bool = True, fuse: bool = True, dry_run: bool = False) -> ConvertReport:
    """Replace every supported timm / torchvision attention block in ``model`` by its tritattn
    twin, carrying the same parameters and buffers; with ``fuse``, also run the SE, residual add
    and ReLU of timm's SE-ResNet blocks as one pass, and let each channel-attention block
    compute its producer's BatchNorm and activation where that is exact
    (:mod:`tritattn.prologue`). ``inplace=False`` converts a deep copy.
    ``dry_run=True`` changes nothing (and copies nothing) and reports what would be done.
    Converting a converted model changes nothing and reports the same. A scripted model, or a
    traced one whose tracer went through its attention blocks, has nothing to convert: convert
    warns, with the reason (module docstring). Returns the :class:`~tritattn.ConvertReport` (its
    summary line is logged at INFO on the ``tritattn`` logger); the converted model is ``report.model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"tritattn.convert takes an nn.Module, not {type(model).__name__}")
    if not (inplace or dry_run):
        model = copy.deepcopy(model)
    backend, why = _where_blocks_run(model)
    report = ConvertReport(model, dry_run=dry_run, kernels_disabled=kernels_disabled(), backend=backend, backend_why=why)
    planned = _plan_replacements(model, report)
    _plan_unconvertible(model, report)
    to_fuse = _plan_fusion(model, report, planned) if fuse else []
    prologues = _plan_prologues(model, report, planned) if fuse else []
    if not dry_run:
        for module, twin in planned.items():
            setattr(module, ORIGINAL_CLASS_ATTR, type(module))
            module.__class__ = twin
        for block in to_fuse:
            fuse_tail(block)
        for se, prologue, passthrough in prologues:
            fuse_prologue(se, prologue, passthrough)
    _log(report)
    return report


def revert(model: nn.Module) -> RevertReport:
    """Undo :func:`convert` in place: every re-classed block gets its class back (the same object,
    the same parameters), every fused block its timm forward. A model that was never converted
    is left as it is. Returns the :class:`~tritattn.RevertReport` (summary logged at INFO)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"tritattn.revert takes an nn.Module, not {type(model).__name__}")
    report = RevertReport(model)
    for path, module in model.named_modules():
        was = qualified_name(type(module))
        if drop_prologue(module):
            report.released.append(path)
        if unfuse(module):
            report.unfused.append(Restored(path, was, qualified_name(type(module))))
        passthrough = is_passthrough(module)
        original = module.__dict__.pop(ORIGINAL_CLASS_ATTR, None)
        if original is not None:
            module.__class__ = original
            if not passthrough:  # a producer: counted with its SE block in report.released
                report.restored.append(Restored(path, was, qualified_name(original)))
    log.info("%s", report.summary())
    return report
