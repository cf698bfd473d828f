"""Which of timm's architectures ``tritattn.convert`` converts fully: a scan of the whole registry.

Every architecture ``timm.list_models()`` names (or those matching ``--filter``) is built on the
"meta" device — shapes and modules, no memory, no arithmetic — and converted with
``dry_run=True``, which plans and reports without touching the model. An architecture *has an
attention block* when the report replaces or skips a channel- or spatial-attention block (one
with a fast twin, or one of timm's tritattn knows to have none, :data:`tritattn.peers.WITHOUT_TWIN`);
it is *fully converted* when none is skipped. timm's self-attention layers
(:data:`tritattn.peers.SELF_ATTENTION`: bottleneck, halo, lambda and non-local attention) are
outside tritattn's scope: counted apart, they make no architecture "not fully converted".
Skipped blocks are counted by reason, so "tritattn has no twin for this block" stands apart from a
gate without a kernel or a subclass.

By default the SE-ResNet tail fusion and the prologue (which probe each candidate block on a
random CPU copy, ~0.3 s a block) are not planned: ``--fuse`` plans them too and counts the tails
fused and the producers taken in.

Writes ``coverage.csv`` (one row per architecture) and ``coverage.md`` (the totals, and every
architecture with a block left eager, with the reasons) under ``--out``; prints the totals.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

import peer_packages  # noqa: F401  (makes timm importable beside a CPU-only torch)
import timm  # noqa: E402
from tqdm import tqdm  # noqa: E402

import tritattn  # noqa: E402
from tritattn.convert import SELF_ATTENTION_REASON  # noqa: E402

DEFAULT_OUT = Path(__file__).parent / "out" / "coverage"
NO_TWIN = "tritattn has no twin for this block"


@dataclass
class Coverage:
    """What ``convert(dry_run=True)`` reports for one architecture."""

    model: str
    built: bool = True
    error: str = ""
    replaced: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason → blocks
    skipped_classes: Counter = field(default_factory=Counter)  # qualified class → blocks
    fused: int = 0
    not_fused: int = 0
    taken_in: int = 0
    self_attention: int = 0  # self-attention layers: out of scope, not counted as skipped

    @property
    def has_attention(self) -> bool:
        return bool(self.replaced or self.skipped)

    @property
    def fully_converted(self) -> bool:
        return self.has_attention and not self.skipped

    @property
    def without_twin(self) -> int:
        return self.skipped[NO_TWIN]


def scan_model(name: str, fuse: bool) -> Coverage:
    """Build ``name`` on the meta device and report what convert would do."""
    cov = Coverage(name)
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
    except Exception as exc:  # an architecture that cannot be built on meta: reported, not hidden
        cov.built, cov.error = False, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return cov
    report = tritattn.convert(model, dry_run=True, fuse=fuse)
    cov.replaced = len(report.replaced)
    for s in report.skipped:
        if s.reason == SELF_ATTENTION_REASON:
            cov.self_attention += 1
            continue
        cov.skipped[s.reason] += 1
        cov.skipped_classes[s.cls] += 1
    cov.fused, cov.not_fused, cov.taken_in = len(report.fused), len(report.not_fused), len(report.taken_in)
    return cov


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--filter", nargs="+", default=["*"], help="fnmatch patterns of architecture names (default: all)")
    p.add_argument("--fuse", action="store_true", help="also plan the tail fusion and the prologues (slower: probes)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    return p.parse_args(argv)


def write_outputs(results: list[Coverage], out: Path, seconds: float) -> str:
    """Write coverage.csv and coverage.md; return the totals as text."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "coverage.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "built", "replaced", "skipped", "without_twin", "self_attention", "fused", "not_fused",
                    "taken_in", "skipped_reasons", "error"])
        for c in results:
            w.writerow([c.model, int(c.built), c.replaced, sum(c.skipped.values()), c.without_twin, c.self_attention, c.fused,
                        c.not_fused, c.taken_in, "; ".join(f"{r} ×{n}" for r, n in c.skipped.items()), c.error])
    with_attention = [c for c in results if c.has_attention]
    full = [c for c in with_attention if c.fully_converted]
    no_twin = [c for c in with_attention if c.without_twin]
    unbuilt = [c for c in results if not c.built]
    self_attention = [c for c in results if c.self_attention]
    totals = (f"timm {timm.__version__}, tritattn {tritattn.__version__}: {len(results)} architectures scanned "
              f"in {seconds:.0f} s ({len(unbuilt)} could not be built on meta); {len(with_attention)} contain an "
              f"attention block; {len(full)} fully converted; {len(with_attention) - len(full)} keep blocks eager, "
              f"{len(no_twin)} of them for lack of a twin; {len(self_attention)} hold self-attention layers (out of scope)")
    lines = ["# convert on timm's architectures (meta device, dry run)", "", totals, ""]
    left = [c for c in with_attention if not c.fully_converted]
    if left:
        lines += ["| model | replaced | left eager | why |", "|---|---|---|---|"]
        lines += [f"| {c.model} | {c.replaced} | {sum(c.skipped.values())} | "
                  + "; ".join(f"{r} ×{n}" for r, n in c.skipped.items()) + " |" for c in left]
        classes = Counter()
        for c in left:
            classes.update(c.skipped_classes)
        lines += ["", "Blocks left eager, by class: " + ", ".join(f"{k} ×{n}" for k, n in classes.most_common())]
    if unbuilt:
        lines += ["", "Not built on meta: " + ", ".join(f"{c.model} ({c.error})" for c in unbuilt)]
    (out / "coverage.md").write_text("\n".join(lines) + "\n")
    return totals


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("tritattn").setLevel(logging.WARNING)  # one INFO summary per model would drown the bar
    names = [n for n in timm.list_models() if any(fnmatch.fnmatch(n, p) for p in args.filter)]
    if not names:
        print(f"no timm architecture matches {args.filter}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    results = [scan_model(n, args.fuse) for n in tqdm(names, desc="convert (meta, dry run)", unit="model")]
    print(write_outputs(results, args.out, time.perf_counter() - start))
    for c in results:
        if c.without_twin:
            print(f"  {c.model}: {c.without_twin} block(s) without a twin: {dict(c.skipped_classes)}")
    print(f"written: {args.out / 'coverage.csv'}, {args.out / 'coverage.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
