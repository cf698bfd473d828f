"""perf/timm_coverage.py: ``convert`` on timm's registry, built on the meta device.

The architectures of the original SENet, ResNeSt, SKNet and GCNet (every one timm registers) are
fully converted — none keeps a block eager for lack of a twin — and the scan writes its CSV and
its markdown. (The whole registry, ~1400 architectures, takes minutes: ``python
perf/timm_coverage.py``.)"""
import csv
import fnmatch
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))

from fixtures.peers import timm  # noqa: E402,F401  (timm importable beside a CPU-only torch)

import timm_coverage  # noqa: E402

#: the families the channel-attention twins were built for, as timm names them
FAMILIES = ["legacy_se*", "resnest*", "skres*", "gcres*", "gc_efficientnet*"]


@pytest.fixture(scope="module")
def family_models() -> list[str]:
    names = [n for n in timm.list_models() if any(fnmatch.fnmatch(n, p) for p in FAMILIES)]
    assert len(names) >= 27, names  # 9 legacy SENets, 8 ResNeSts, 5 SKNets, 5 GCNets in timm 1.0.31
    return names


def test_every_senet_resnest_sknet_gcnet_architecture_is_fully_converted(family_models):
    results = [timm_coverage.scan_model(name, fuse=False) for name in family_models]
    assert all(c.built for c in results), [(c.model, c.error) for c in results if not c.built]
    left = {c.model: dict(c.skipped) for c in results if not c.fully_converted}
    assert not left, left
    assert all(c.replaced >= 4 for c in results), [(c.model, c.replaced) for c in results]


def test_self_attention_is_out_of_scope_and_the_outputs_are_written(tmp_path):
    results = [timm_coverage.scan_model(name, fuse=False) for name in ("halonet26t", "seresnet18")]
    halo, se = results
    assert halo.self_attention == 3 and not halo.skipped and not halo.has_attention
    assert se.fully_converted and se.replaced == 8
    totals = timm_coverage.write_outputs(results, tmp_path, 1.0)
    assert "2 architectures scanned" in totals and "1 fully converted" in totals and "1 hold self-attention" in totals
    with (tmp_path / "coverage.csv").open() as f:
        rows = {row["model"]: row for row in csv.DictReader(f)}
    assert rows["halonet26t"]["self_attention"] == "3" and rows["seresnet18"]["replaced"] == "8"
    assert "convert on timm's architectures" in (tmp_path / "coverage.md").read_text()
