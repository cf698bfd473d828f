"""Land a GPU run of perf/gpu_check.py in the repository: the results folder, the tuned table and
the README's measured table, in one step.

    python perf/land_results.py /work/.device/.../nvidia-h100-80gb-hbm3-2026-11-26.tar.gz

1. the run (a ``.tar.gz`` or a folder) is copied to ``perf/results/<gpu>-<date>/`` (an existing
   folder of that name is an error unless ``--replace``);
2. its ``tuned/<gpu>.json`` becomes ``tritattn/tuned/<gpu>.json``, the table shipped for that GPU;
3. README.md's "Measured on a GPU" section (between its ``gpu-results`` markers) is replaced by the
   run's "Measured on <GPU>" table from summary.md, with its source and plot.

A run made without a GPU (env.json's device is a CPU) is refused: its timings are not GPU figures.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- gpu-results:begin -->", "<!-- gpu-results:end -->"


class LandingError(Exception):
    """The run cannot be landed (the message says why)."""


def _unpacked(run: Path, scratch: Path) -> Path:
    if run.is_dir():
        return run
    if not run.name.endswith(".tar.gz"):
        raise LandingError(f"{run}: expected a results folder or its .tar.gz")
    with tarfile.open(run) as tar:
        tar.extractall(scratch, filter="data")
    (folder,) = [p for p in scratch.iterdir() if p.is_dir()]
    return folder


def measured_section(summary: str) -> tuple[str, list[str]]:
    """The "## Measured on <GPU>" section of summary.md: its title and its lines up to the next section."""
    lines = summary.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("## Measured on ")]
    if not starts:
        raise LandingError("summary.md has no 'Measured on' section")
    body = []
    for line in lines[starts[0] + 1:]:
        if line.startswith("## "):
            break
        body.append(line)
    return lines[starts[0]].removeprefix("## "), body


def readme_section(folder: Path, env: dict, results_path: str) -> str:
    """The README text between the markers, from the run's summary.md."""
    title, body = measured_section((folder / "summary.md").read_text())
    v = env["versions"]
    plots = sorted(p.name for p in folder.glob("speedup_*.png"))
    text = [f"### {title}", "", f"Run of `perf/gpu_check.py` on {env['date'][:10]} (torch {v['torch']}, triton {v['triton']}, "
            f"tritattn {v['tritattn']}); every file in [`{results_path}/`]({results_path}/), the summary in "
            f"[`summary.md`]({results_path}/summary.md).", ""]
    text += [line for line in body if line.strip() or text[-1].strip()]
    if plots:
        text += ["", f"![tritattn speed-ups]({results_path}/{plots[0]})"]
    return "\n".join(text).rstrip() + "\n"


def replace_between_markers(readme: str, section: str) -> str:
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise LandingError(f"README.md needs exactly one {BEGIN} … {END} pair")
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{section}{END}{tail}"


def land(run: Path, results_dir: Path, tuned_dir: Path, readme: Path, replace: bool = False) -> Path:
    """Steps 1–3 of the module docstring; returns the landed results folder."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = _unpacked(run, Path(scratch))
        env_file = folder / "env.json"
        if not env_file.exists() or not (folder / "summary.md").exists():
            raise LandingError(f"{folder.name}: not a perf/gpu_check.py results folder (env.json, summary.md)")
        env = json.loads(env_file.read_text())
        if env["device"]["kind"] != "cuda":
            raise LandingError(f"{folder.name} ran on {env['device']['name']}: not a GPU run, its timings are not GPU figures")
        target = results_dir / folder.name
        if target.exists():
            if not replace:
                raise LandingError(f"{target} exists (--replace to overwrite it)")
            shutil.rmtree(target)
        shutil.copytree(folder, target)
    for table in sorted((target / "tuned").glob("*.json")):
        tuned_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(table, tuned_dir / table.name)
    section = readme_section(target, env, target.relative_to(readme.parent).as_posix())
    readme.write_text(replace_between_markers(readme.read_text(), section))
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="the results .tar.gz (or folder) of perf/gpu_check.py")
    p.add_argument("--replace", action="store_true", help="overwrite an existing perf/results/ folder of the same name")
    args = p.parse_args(argv)
    try:
        target = land(args.run, ROOT / "perf" / "results", ROOT / "tritattn" / "tuned", ROOT / "README.md", args.replace)
    except LandingError as e:
        sys.exit(f"land_results: {e}")
    tuned = sorted(p.name for p in (target / "tuned").glob("*.json"))
    print(f"landed {target}; shipped tuned table{'s' if len(tuned) != 1 else ''}: {', '.join(tuned) or 'none'}; README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
