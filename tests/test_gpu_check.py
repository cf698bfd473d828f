"""perf/gpu_check.py, so that it cannot rot between GPU runs: a CPU dry run of every stage that
can run without a GPU (tiny budget, the kernels in the interpreter), the time-boxing of stages,
and the summary's parsing and tables. Nothing here asserts on how fast anything is."""
import csv
import json
import signal
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType

from conftest import DEVICE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))  # perf/ is a folder of scripts

import gpu_check  # noqa: E402
import gpu_kernels  # noqa: E402
import gpu_summary  # noqa: E402
import land_results  # noqa: E402
import stage_runner  # noqa: E402

CPU_ONLY = pytest.mark.skipif(DEVICE == "cuda", reason="the CPU dry run: on a GPU, perf/gpu_check.py itself is the run")
QUICK_TEST = "tests/test_sweep.py::test_launch_census_counts_kernels_not_views_or_allocations"


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@CPU_ONLY
def test_cpu_dry_run_writes_the_results_folder(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--budget-min", "5", "--workers", "0", "--quiet", "--models", "seresnet50",
            "--pytest-args", QUICK_TEST, "--sweep-args", "--quick --shrink 16,4 --compile none --census-batch 2",
            "--kernels-args", "--impls tritattn,eager", "--l2-args", "--blocks seresnet50/s3 --fractions 0.5",
            "--models-args", "--models mobilenetv3_large_100 --variants eager,tritattn --modes inference --steps 1 "
                             "--warmup 0 --image-size 32 --batch-size 2 --memory-batch 2 --memory-image 32"]
    assert gpu_check.main(argv) == 0
    printed = capsys.readouterr().out
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert folder.name.startswith("cpu-")
    for name in ("summary.md", "env.json", "env.txt", "tests.txt", "timings.csv", "blocks.csv", "sweep.json",
                 "kernels.csv", "models.csv", "l2_chunk.csv", "stages.json"):
        assert (folder / name).is_file(), name

    stages = {s["name"]: s for s in json.loads((folder / "stages.json").read_text())}
    assert [s for s in stages] == gpu_check.STAGE_NAMES
    assert all(stages[n]["status"] == "passed" for n in ("env", "tests", "sweep", "kernels", "models", "l2")), stages
    models = read_csv(folder / "models.csv")
    assert {(r["variant"], r["metric"]) for r in models if r["mode"] == "inference"} >= {
        ("eager", "samples_per_s"), ("tritattn", "samples_per_s")}
    assert all("not GPU performance" in r["timing"] for r in models if r["unit"] == "samples/s")
    l2 = read_csv(folder / "l2_chunk.csv")
    assert [r["l2_fraction"] for r in l2] == ["off", "0.5"] and all(float(r["ms"]) > 0 for r in l2)
    assert all("not GPU performance" in r["timing"] and r["dram_note"] for r in l2)
    assert stages["sanitizer"]["status"] == "skipped" and stages["sanitizer"]["detail"] == "no GPU"

    env = json.loads((folder / "env.json").read_text())
    assert env["device"]["kind"] == "cpu" and env["copy_bandwidth_gbs"] > 0 and "not a GPU figure" in env["copy_bandwidth_note"]
    summary = (folder / "summary.md").read_text()
    assert summary in printed and "1 passed" in summary
    assert "no GPU: every timing is a CPU timing, not GPU performance" in summary

    # the measured table quotes the sweep's own numbers: tritattn's and eager's ms of the block's inference row
    timings = [r for r in read_csv(folder / "timings.csv") if r["block"] == "seresnet50/s3" and r["pass"] == "fwd"]
    kernels = {(r["impl"], r["pass"]): r for r in read_csv(folder / "kernels.csv")}
    assert {k for k in kernels} == {(i, p) for i in ("tritattn", "eager") for p in ("fwd", "fwd+bwd")}
    assert all(int(r["kernels"]) > 0 and not r["error"] and "not a kernel count" in r["counted"] for r in kernels.values())
    row = next(line for line in summary.splitlines() if line.startswith("| seresnet50/s3 ") and "| inference |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    ms = {r["impl"]: float(r["ms"]) for r in timings}
    assert float(cells[3]) == pytest.approx(ms["tritattn"], rel=5e-3) and float(cells[4]) == pytest.approx(ms["eager"], rel=5e-3)
    assert cells[-1] == f"{kernels['tritattn', 'fwd']['kernels']} / {kernels['eager', 'fwd']['kernels']} / -"

    tarball = folder.with_name(folder.name + ".tar.gz")
    with tarfile.open(tarball) as tar:
        assert {f"{folder.name}/summary.md", f"{folder.name}/timings.csv", f"{folder.name}/kernels.csv"} <= set(tar.getnames())
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{land_results.BEGIN}\nold\n{land_results.END}\nb\n")
    with pytest.raises(land_results.LandingError, match="not a GPU run"):  # a CPU run's timings never land
        land_results.land(tarball, tmp_path / "results", tmp_path / "tuned", readme)
    assert not (tmp_path / "results").exists() and "old" in readme.read_text()

    # a stage rerun alone lands in the same folder, the other stages' results kept
    assert gpu_check.main(["--out", str(tmp_path), "--stages", "env", "--quiet"]) == 0
    again = json.loads((folder / "stages.json").read_text())
    assert [s["name"] for s in again] == gpu_check.STAGE_NAMES and again[1] == stages["tests"]


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("parent_sigint", ["default", "ignored"])
def test_a_stage_past_its_time_is_interrupted_and_the_next_one_runs(parent_sigint, tmp_path, monkeypatch):
    """Stage "slow" outlives its share and is interrupted (it prints first, and handles the
    interrupt like pytest would); "broken" fails; "last" still runs and gets the time left. Also
    when gpu_check itself runs with SIGINT ignored, as a background job of a non-interactive shell
    does: the stage must still see the interrupt."""
    slow = "import time\nprint('started', flush=True)\ntry:\n    time.sleep(120)\nexcept KeyboardInterrupt:\n    print('interrupted')\n    raise SystemExit(2)"
    stages = [
        gpu_check.Stage("slow", 1.0, 0, "slow.txt", lambda a, f, t: _python(slow)),
        gpu_check.Stage("broken", 1.0, 0, "broken.txt", lambda a, f, t: _python("raise SystemExit(3)")),
        gpu_check.Stage("cannot", 1.0, 0, "cannot.txt", lambda a, f, t: "not on this machine"),
        gpu_check.Stage("last", 1.0, 0, "last.txt", lambda a, f, t: _python(f"print({t!r})")),
    ]
    monkeypatch.setattr(gpu_check, "STAGES", stages)
    args = gpu_check.parse_args(["--budget-min", str(8 / 60), "--quiet"])
    args.stages = [s.name for s in stages]
    start = time.monotonic()
    previous = signal.getsignal(signal.SIGINT)
    if parent_sigint == "ignored":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        slow_r, broken_r, cannot_r, last_r = gpu_check.run_stages(args, tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - start < 8 + stage_runner.GRACE_S
    assert (slow_r.status, slow_r.returncode) == ("timed out", 2) and 1.5 < slow_r.allotted_s <= 2.1
    assert (tmp_path / "slow.txt").read_text().splitlines()[-2:] == ["started", "interrupted"]
    assert (broken_r.status, broken_r.detail) == ("failed", "exit code 3")
    assert (cannot_r.status, cannot_r.detail) == ("skipped", "not on this machine")
    assert last_r.status == "passed" and last_r.allotted_s > slow_r.allotted_s  # the unused shares went to it
    assert float((tmp_path / "last.txt").read_text().splitlines()[-1]) == pytest.approx(last_r.allotted_s)


def test_a_stage_with_too_little_time_left_is_skipped(tmp_path, monkeypatch):
    stages = [gpu_check.Stage("greedy", 1.0, 3600, "g.txt", lambda a, f, t: _python("pass"))]
    monkeypatch.setattr(gpu_check, "STAGES", stages)
    args = gpu_check.parse_args(["--budget-min", "0.1", "--quiet"])
    args.stages = ["greedy"]
    (result,) = gpu_check.run_stages(args, tmp_path)
    assert result.status == "skipped" and "under the 3600 s it needs" in result.detail
    assert not (tmp_path / "g.txt").exists()


def test_unknown_stage_is_an_error(capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--stages", "env,benchmark"])
    assert "benchmark" in capsys.readouterr().err


@pytest.mark.parametrize("text, counts", [
    ("....\n===== 3 failed, 120 passed, 4 skipped in 61.20s (0:01:01) =====", {"failed": 3, "passed": 120, "skipped": 4}),
    ("x\n1 passed, 1 error in 2.0s", {"passed": 1, "errors": 1}),
    ("!!!!! KeyboardInterrupt !!!!!\n==== 17 passed, 2 deselected in 30.01s ====", {"passed": 17, "deselected": 2}),
    ("collected 0 items\nno tests ran in 0.01s", {}),
])
def test_pytest_counts_are_read_from_the_last_summary_line(text, counts):
    assert gpu_summary.test_counts(text) == counts


def test_failing_tests_are_listed():
    text = "FAILED tests/a.py::t1 - AssertionError\nsome FAILED line\nERROR tests/b.py::t2 - RuntimeError\n"
    assert gpu_summary.failing_tests(text) == ["FAILED tests/a.py::t1 - AssertionError", "ERROR tests/b.py::t2 - RuntimeError"]


def test_measured_table_takes_the_compiled_case_and_leaves_cuda_graphs_out():
    """On a GPU the sweep times compile at one case (largest batch); the table shows that case,
    every implementation's ms, tritattn's ratios, and the profiler's kernel counts."""
    def row(impl, batch, ms, graph=False, **extra):
        return {"block": "seresnet50/s3", "module": "SEModule(channels=1024)", "batch": batch, "dtype": "bf16",
                "layout": "channels_last", "pass": "fwd", "impl": impl, "cuda_graph": graph, "ms": ms, **extra}
    timings = [row("tritattn", 32, 0.1), row("eager", 32, 0.3), row("tritattn", 128, 0.25, gbps=1000.0, pct_copy_bw=33.0,
               speedup_vs_eager=3.2, speedup_vs_compile=1.4), row("eager", 128, 0.8), row("compile", 128, 0.35),
               row("tritattn", 128, 0.2, graph=True), row("eager", 128, 0.1, graph=True)]
    kernels = [{"block": "seresnet50/s3", "pass": "fwd", "impl": i, "kernels": str(n), "error": ""}
               for i, n in (("tritattn", 5), ("eager", 6), ("compile", 3))]
    table = gpu_summary.measured_table(timings, kernels).splitlines()
    assert len(table) == 3  # header, rule, the one inference row
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[1:] == ["inference", "128, bf16, channels_last", "0.25", "0.8", "0.35", "-", "-", "1000", "33", "3.2", "1.4", "-", "-",
                         "5 / 6 / 3"]


def test_gpu_kernels_are_the_device_events_in_start_order_copies_apart():
    def event(name, device, start):
        return SimpleNamespace(name=name, device_type=device, time_range=SimpleNamespace(start=start))
    events = [event("aten::mul", DeviceType.CPU, 0), event("_gated_scale_fwd", DeviceType.CUDA, 30),
              event("Memset (Device)", DeviceType.CUDA, 5), event("_mean_max_fwd", DeviceType.CUDA, 10),
              event("Memcpy DtoD (Device -> Device)", DeviceType.CUDA, 40)]
    assert gpu_kernels.gpu_kernels(events) == (2, 2, ["_mean_max_fwd", "_gated_scale_fwd"])


def test_summary_says_when_the_test_run_was_cut_short(tmp_path):
    (tmp_path / "tests.txt").write_text("....\n!!! KeyboardInterrupt !!!\n12 passed, 1 failed in 90.1s\nFAILED tests/t.py::x - boom\n")
    stage = stage_runner.StageResult("tests", "timed out", 95.0, 90.0, 2, "tests.txt", "interrupted after its 90 s")
    summary = gpu_summary.write_summary(tmp_path, [stage.as_dict()])
    assert "12 passed, 1 failed — the run was interrupted" in summary and "- `FAILED tests/t.py::x - boom`" in summary
    assert "| tests | timed out | 95 (90) | interrupted after its 90 s |" in summary
    assert "(sweep.json not written)" in summary and (tmp_path / "summary.md").read_text() == summary


def _fake_gpu_run(folder: Path) -> None:
    """The files land_results reads, as a GPU run of gpu_check.py would leave them."""
    folder.mkdir(parents=True)
    env = {"date": "2026-11-26T10:00:00+00:00", "device": {"name": "NVIDIA H100 80GB HBM3", "kind": "cuda"},
           "versions": {"tritattn": "0.1.0", "torch": "2.11.0+cu130", "triton": "3.6.0"}}
    (folder / "env.json").write_text(json.dumps(env))
    (folder / "summary.md").write_text("# x\n\n## Stages\n\nfoo\n\n## Measured on NVIDIA H100 80GB HBM3\n\nTimings: GPU timing.\n\n"
                                       "| block | ms |\n|---|---|\n| se | 0.1 |\n\n## Kernels per block\n\nbar\n")
    (folder / "speedup_bf16_channels_last.png").write_bytes(b"png")
    (folder / "tuned").mkdir()
    (folder / "tuned" / "nvidia-h100-80gb-hbm3.json").write_text("{}")


def test_landing_a_gpu_run_fills_the_readme_section_and_ships_the_tuned_table(tmp_path):
    run = tmp_path / "runs" / "nvidia-h100-80gb-hbm3-2026-11-26"
    _fake_gpu_run(run)
    with tarfile.open(tmp_path / "run.tar.gz", "w:gz") as tar:
        tar.add(run, arcname=run.name)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{land_results.BEGIN}\nno figure yet\n{land_results.END}\nafter\n")
    results = tmp_path / "perf" / "results"
    target = land_results.land(tmp_path / "run.tar.gz", results, tmp_path / "tuned", readme)
    assert target == results / run.name and (target / "summary.md").read_text() == (run / "summary.md").read_text()
    assert (tmp_path / "tuned" / "nvidia-h100-80gb-hbm3.json").read_text() == "{}"
    text = readme.read_text()
    where = "perf/results/nvidia-h100-80gb-hbm3-2026-11-26"
    assert text.startswith(f"intro\n{land_results.BEGIN}\n### Measured on NVIDIA H100 80GB HBM3\n") and text.endswith(f"{land_results.END}\nafter\n")
    assert "no figure yet" not in text and "| se | 0.1 |" in text and "Kernels per block" not in text and "Stages" not in text
    assert "torch 2.11.0+cu130, triton 3.6.0" in text and f"![tritattn speed-ups]({where}/speedup_bf16_channels_last.png)" in text
    with pytest.raises(land_results.LandingError, match="exists"):  # landing twice needs --replace
        land_results.land(run, results, tmp_path / "tuned", readme)
    land_results.land(run, results, tmp_path / "tuned", readme, replace=True)
    assert readme.read_text() == text


def test_the_readme_has_one_place_for_the_measured_table():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    landed = land_results.replace_between_markers(readme, "### Measured on X\n")
    assert landed.count("### Measured on X") == 1 and "No GPU figure is committed yet" not in landed
