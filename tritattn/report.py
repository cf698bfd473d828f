"""What :func:`tritattn.convert` and :func:`tritattn.revert` did to a model, as data and as text.

``str(report)`` starts with a one-line summary (also logged at INFO on the ``tritattn`` logger by
the function that made the report), then lists the blocks: one line per block, or one line for
every block that shares a description (the same peer, twin and pipeline, or the same reason),
followed by their paths. ``repr(report)`` is the summary line in angle brackets (the report holds
the whole model, which a notebook would otherwise print).

The summary says where the converted blocks run on this machine, for tensors on the model's
device when convert ran (:func:`tritattn.backend_for`): on the Triton kernels (a GPU), on the
kernels in Triton's interpreter (a CPU with ``TRITON_INTERPRET=1``), or, converted all the same,
on the eager torch path, and why.
"""
from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass, field

from torch import nn

from .backend import Backend

#: tritattn twin class name → the kind of block the summary line counts
BLOCK_KINDS: dict[str, str] = {
    "SEModule": "SE", "SqueezeExcite": "SE", "SqueezeExcitation": "SE", "EffectiveSEModule": "ESE",
    "EcaModule": "ECA", "CecaModule": "CECA", "CbamModule": "CBAM", "LightCbamModule": "light CBAM",
    "ChannelAttn": "CBAM channel", "LightChannelAttn": "light CBAM channel",
    "SpatialAttn": "CBAM spatial", "LightSpatialAttn": "light CBAM spatial", "LegacySEModule": "SE",
    "SplitAttn": "split attention", "SelectiveKernel": "selective kernel", "SelectiveKernelAttn": "SK attention",
    "GlobalContext": "global context",
}


@dataclass(frozen=True)
class Replaced:
    """A block now running on the kernels."""

    path: str  #: its name in ``model.named_modules()`` ("" for the model itself)
    peer: str  #: its class before, qualified
    twin: str  #: its tritattn class now
    gate: str | None  #: the kernel gate it applies (None for a container such as CbamModule)
    #: how it runs on the kernels: "block pipeline, path per shape …" (the path — one-launch,
    #: split, per-op or eager — is chosen per problem at its first call: tritattn.paths.decisions()
    #: lists each with its reason) or "per-op" with the reason (a container lists its parts')
    pipeline: str = ""


@dataclass(frozen=True)
class Skipped:
    """A block left as it was (or a block tail left unfused), and why."""

    path: str
    cls: str
    reason: str


@dataclass(frozen=True)
class TakenIn:
    """An SE block that computes its producer's BatchNorm and activation itself."""

    path: str  #: the SE block
    producer: str  #: the producer's BatchNorm (path)
    act: str  #: the activation taken in ("relu", "silu", "hardswish")


@dataclass(frozen=True)
class Restored:
    """A block given its own class back by :func:`tritattn.revert`."""

    path: str
    was: str  #: its tritattn class, qualified
    now: str  #: its class before convert, qualified


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _grouped(rows: list[tuple[str, str]]) -> list[str]:
    """One line per (path, description), or, for a description shared by several rows, one line
    with their count and the description, then their paths (wrapped)."""
    groups: dict[str, list[str]] = {}
    for path, what in rows:
        groups.setdefault(what, []).append(path or "(model)")
    lines = []
    for what, paths in groups.items():
        if len(paths) == 1:
            lines.append(f"  {paths[0]}  {what}")
        else:
            lines.append(f"  {len(paths)} blocks: {what}")
            lines += textwrap.wrap(", ".join(paths), width=100, initial_indent="    ", subsequent_indent="    ",
                                   break_long_words=False, break_on_hyphens=False)
    return lines


def _table(sections: list[tuple[str, list[tuple[str, str]]]]) -> list[str]:
    lines = []
    for title, rows in sections:
        if rows:
            lines.append(f"{title}:")
            lines += _grouped(rows)
    return lines


@dataclass(repr=False)
class ConvertReport:
    """What :func:`~tritattn.convert` did to ``model`` (or would do, with ``dry_run``);
    ``print(report)`` shows the summary line and a table."""

    model: nn.Module  #: the converted model (the one passed in, unless ``inplace=False``)
    replaced: list[Replaced] = field(default_factory=list)  #: every block on the kernels, parts of CBAM included
    fused: list[Replaced] = field(default_factory=list)  #: blocks whose SE + residual add + ReLU is one pass
    skipped: list[Skipped] = field(default_factory=list)  #: attention blocks left eager
    not_fused: list[Skipped] = field(default_factory=list)  #: ResNet blocks with attention, tail left unfused
    #: SE blocks that compute their producer's BatchNorm and activation (:mod:`tritattn.prologue`)
    taken_in: list[TakenIn] = field(default_factory=list)
    #: converted channel-attention blocks whose producer stays as it is, and why
    not_taken_in: list[Skipped] = field(default_factory=list)
    dry_run: bool = False  #: nothing was changed: the report says what convert would do
    kernels_disabled: bool = False  #: TRITATTN_DISABLE or a tritattn.disabled() scope was in force
    #: what tritattn's ops run for tensors on the model's device, when convert ran (:func:`~tritattn.backend_for`)
    backend: Backend = "torch"
    #: why (:func:`~tritattn.backend_reason`, without the backend's name)
    backend_why: str = ""
    #: traced (``torch.fx.GraphModule``) or scripted (``torch.jit.ScriptModule``) parts of the
    #: model whose attention blocks convert could not reach, and why (also warned)
    unconvertible: list[Skipped] = field(default_factory=list)

    def blocks(self) -> list[Replaced]:
        """The replaced blocks that are not parts of another replaced block (a CBAM counts once)."""
        paths = [r.path for r in self.replaced]
        return [r for r in self.replaced
                if not any(p != r.path and (p == "" or r.path.startswith(p + ".")) for p in paths)]

    def _where(self) -> tuple[str, str]:
        """Where the blocks are (after "N blocks"; "converted" where they run eager), and the
        clause that says why they run eager ("" where they run on the kernels)."""
        if self.backend == "triton":
            return "on the Triton kernels", ""
        if self.backend == "triton-interpreter":
            return "on the kernels in Triton's interpreter", ""
        if self.kernels_disabled:
            return "converted", "; kernels disabled (TRITATTN_DISABLE / tritattn.disabled()): the eager torch path runs until enabled"
        return "converted", f"; on this machine they run the eager torch path ({self.backend_why})"

    def summary(self) -> str:
        """One line: e.g. ``tritattn: 16 blocks on the Triton kernels (16 SE), 16 fused, 0 left eager``,
        or "16 blocks converted ..." and why they run the eager torch path."""
        blocks = self.blocks()
        kinds = Counter(BLOCK_KINDS.get(r.twin.rpartition(".")[2], r.twin) for r in blocks)
        by_kind = f" ({', '.join(f'{n} {kind}' for kind, n in kinds.items())})" if kinds else ""
        where, why_eager = self._where() if blocks else ("converted", "")
        if self.dry_run:
            would = "would be converted" if where == "converted" else f"would go {where}"
            line = (f"tritattn (dry run, model untouched): {_count(len(blocks), 'block')} {would}{by_kind}, "
                    f"{len(self.fused)} would be fused, {len(self.skipped)} left eager")
        else:
            line = (f"tritattn: {_count(len(blocks), 'block')} {where}{by_kind}, "
                    f"{len(self.fused)} fused, {len(self.skipped)} left eager")
        if self.not_fused:
            line += f" ({_count(len(self.not_fused), 'block tail')} not fused)"
        if self.taken_in:
            line += (f"; {_count(len(self.taken_in), 'block')} {'would be ' if self.dry_run else ''}taking in "
                     f"their producer's BatchNorm and activation")
        if self.unconvertible:
            line += f"; {_count(len(self.unconvertible), 'traced or scripted part')} it could not convert"
        return line + why_eager

    def __repr__(self) -> str:
        return f"<ConvertReport: {self.summary()}>"

    def __str__(self) -> str:
        would = "would be " if self.dry_run else ""
        return "\n".join([self.summary()] + _table([
            (f"{would}replaced", [(r.path, f"{r.peer} -> {r.twin}" + (f" (gate {r.gate})" if r.gate else "")
                                   + (f": {r.pipeline}" if r.pipeline else "")) for r in self.replaced]),
            (f"{would}fused", [(r.path, f"{r.peer}: se + residual add + ReLU in one pass") for r in self.fused]),
            ("left eager", [(s.path, f"{s.cls}: {s.reason}") for s in self.skipped]),
            ("not fused", [(s.path, f"{s.cls}: {s.reason}") for s in self.not_fused]),
            (f"{would}taking in their producer", [
                (t.path, f"the BatchNorm and {t.act} of {t.producer}") for t in self.taken_in]),
            ("producer not taken in", [(s.path, f"{s.cls}: {s.reason}") for s in self.not_taken_in]),
            ("could not convert", [(s.path, f"{s.cls}: {s.reason}") for s in self.unconvertible]),
        ]))


@dataclass(repr=False)
class RevertReport:
    """What :func:`~tritattn.revert` did to ``model``."""

    model: nn.Module
    restored: list[Restored] = field(default_factory=list)  #: attention blocks back to their own class
    unfused: list[Restored] = field(default_factory=list)  #: ResNet blocks back to timm's forward
    #: SE blocks that no longer compute their producer's BatchNorm and activation (paths)
    released: list[str] = field(default_factory=list)

    def summary(self) -> str:
        line = (f"tritattn.revert: {_count(len(self.restored), 'block')} back to their own classes, "
                f"{_count(len(self.unfused), 'block tail')} unfused")
        if self.released:
            line += f", {_count(len(self.released), 'producer')} given back"
        return line

    def __repr__(self) -> str:
        return f"<RevertReport: {self.summary()}>"

    def __str__(self) -> str:
        return "\n".join([self.summary()] + _table([
            ("restored", [(r.path, f"{r.was} -> {r.now}") for r in self.restored]),
            ("unfused", [(r.path, f"{r.was} -> {r.now}") for r in self.unfused]),
        ]))
