"""perf/models.py on the CPU: the long CSV, the JSON, the PNGs and the printed table of a tiny
run (one small model, 32×32, batch 2, the kernels in the interpreter), its priority order and
its statistics. (On a GPU, perf/gpu_check.py's ``models`` stage is the real run.)"""
import csv
import json
import sys
from pathlib import Path

import pytest

from conftest import DEVICE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))  # perf/ is a folder of scripts

import models  # noqa: E402


@pytest.mark.skipif(DEVICE == "cuda", reason="the CPU run: on a GPU, perf/gpu_check.py's models stage is the run")
def test_tiny_cpu_run_writes_csv_json_png_and_labels_cpu_timings(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--models", "mobilenetv3_large_100", "--variants", "eager,tritattn",
            "--steps", "1", "--warmup", "0", "--image-size", "32", "--batch-size", "2",
            "--memory-batch", "2", "--memory-image", "32"]
    assert models.main(argv) == 0
    printed = capsys.readouterr().out
    assert "No GPU" in printed and "not GPU performance" in printed and "taking in their producer" in printed
    with (tmp_path / "models.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == ["model", "variant", "mode", "metric", "value", "unit"]
    got = {(r["variant"], r["mode"], r["metric"]) for r in rows}
    for variant in ("eager", "tritattn"):
        for mode in ("inference", "train"):
            for metric in ("samples_per_s", "samples_per_s_p20", "samples_per_s_p80", "step_ms"):
                assert (variant, mode, metric) in got
        assert (variant, "train", "saved_activations_mib") in got
    value = {(r["variant"], r["mode"], r["metric"]): float(r["value"]) for r in rows}
    for variant in ("eager", "tritattn"):
        for mode in ("inference", "train"):
            p20, median, p80 = (value[(variant, mode, m)] for m in ("samples_per_s_p20", "samples_per_s", "samples_per_s_p80"))
            assert 0 < p20 <= median <= p80
    assert value[("tritattn", "train", "saved_activations_mib")] < value[("eager", "train", "saved_activations_mib")]
    assert all(r["timing"].endswith("not GPU performance") for r in rows if r["unit"] == "samples/s")
    assert all(r["device"] == "CPU (no GPU)" and r["torch"] and r["date"] for r in rows)
    payload = json.loads((tmp_path / "models.json").read_text())
    assert payload["rows"] and payload["convert_reports"]["mobilenetv3_large_100"] and not payload["errors"]
    for name in ("models_inference.png", "models_train.png", "models_memory.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_work_runs_eager_and_tritattn_of_every_model_before_any_compile():
    args = models.parse_args(["--models", "seresnet50,efficientnet_b0", "--variants", "compile,eager,tritattn",
                              "--modes", "train"])
    order = [variant for _, variant, _ in models.work_items(args)]
    assert order == ["eager", "tritattn", "eager", "tritattn", "compile", "compile"]


def test_percentiles_and_bad_arguments():
    assert models.percentile([4.0, 1.0, 3.0, 2.0, 5.0], 0.2) == pytest.approx(1.8)
    assert models.percentile([7.0], 0.8) == 7.0
    with pytest.raises(SystemExit):
        models.parse_args(["--models", "resnet18"])
