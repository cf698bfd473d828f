#!/usr/bin/env python
"""Mutation check: deliberate breaks of the kernels, the tuner, convert and the GPU-run tools
(perf/gpu_check.py and its helpers), each of which some test must catch.

    python tests/mutants.py [--list] [--only NAME ...] [--jobs N] [--timeout S] [--keep]

Each entry of :data:`mutant_list.MUTANTS` names a file (relative to the repository root), an exact snippet
``old`` that must occur exactly once in it (checked first, on the real tree: an entry whose
snippet no longer matches makes the script fail, so the list cannot rot silently), its
replacement ``new``, what that breaks, and a small pytest selection (node ids, or files with a
``-k`` expression) expected to catch it.

For each mutant the working tree (without .git, .venv, caches, perf/out, *.egg-info; symlinks
kept as symlinks) is copied to a temporary directory, the edit is applied *there* — never in the
real tree — and ``python -m pytest -x -q -p no:cacheprovider <selection>`` runs in the copy with
the copy's root and its tests/ first on PYTHONPATH (the venv's editable install points at the real
tree; the script checks that the copy's ``tritattn`` is the one imported). Outcome by pytest's
exit code:

    caught    1 (a test failed)
    survived  0 (every selected test passed: the tests miss this break)
    broken    anything else (collection or usage error, no test selected, timeout): not a
              meaningful catch — a mutant must keep the code importable

First the union of all selections runs on an unmutated copy and must pass, else the results mean
nothing. The script prints one line per mutant as it finishes and a table at the end, and exits
0 only when every mutant was caught (1: a mutant survived or broke; 2: the baseline failed or
the mutant list is out of date).

The tests draw fresh random inputs each run (tests/conftest.py prints the seed); the selections
are chosen so that a caught mutant is caught with probability ~1 whatever the seed. A mutant that
no current test catches stays in the list, with the selection expected to catch it once a test
is added, and a comment saying so (it shows as "survived" until then). ``--jobs`` runs mutants in
parallel (each in its own copy); the default, 1, suits a 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mutant_list import MUTANTS, Mutant

REPO = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
#: Not copied: names anywhere in the tree, and paths relative to the root.
SKIP_NAMES = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis"}
SKIP_PATHS = {"perf/out"}


# --- checks of the list ---------------------------------------------------------------------

def check_mutants(mutants: list[Mutant]) -> list[str]:
    """Problems with the list against the real tree (empty: all good)."""
    problems, seen = [], set()
    for m in mutants:
        if m.name in seen:
            problems.append(f"{m.name}: duplicate name")
        seen.add(m.name)
        if m.old == m.new:
            problems.append(f"{m.name}: old and new are the same")
        file = REPO / m.path
        if not file.is_file():
            problems.append(f"{m.name}: {m.path} does not exist")
            continue
        count = file.read_text().count(m.old)
        if count != 1:
            problems.append(f"{m.name}: the old snippet occurs {count} times in {m.path} (must be exactly once):\n{m.old}")
        try:
            ids, keyword = parse_selection(m.selection)
        except ValueError as e:
            problems.append(f"{m.name}: {e}")
            continue
        for node in ids:
            if not (REPO / node.split("::")[0]).exists():
                problems.append(f"{m.name}: selection names {node}, whose file does not exist")
    return problems


def parse_selection(selection: tuple[str, ...]) -> tuple[list[str], str | None]:
    """(node ids or test files, the -k expression or None)."""
    args, keyword = list(selection), None
    if "-k" in args:
        i = args.index("-k")
        if i + 1 >= len(args):
            raise ValueError("-k without an expression")
        keyword = args[i + 1]
        del args[i:i + 2]
    bad = [a for a in args if a.startswith("-") or not a.startswith("tests/")]
    if bad or not args:
        raise ValueError(f"a selection is node ids / files under tests/ and at most one -k EXPR, not {selection}")
    return args, keyword


# --- copies ---------------------------------------------------------------------------------

def _ignore(directory: str, names: list[str]) -> set[str]:
    rel = Path(directory).relative_to(REPO)
    return {
        n for n in names
        if n in SKIP_NAMES or n.endswith(".egg-info") or (rel / n).as_posix() in SKIP_PATHS
    }


def make_copy(mutant: Mutant | None) -> Path:
    """A temporary copy of the working tree, with ``mutant`` applied to the copy."""
    root = Path(tempfile.mkdtemp(prefix=f"tritattn-mutant-{mutant.name if mutant else 'baseline'}-"))
    tree = root / "repo"
    shutil.copytree(REPO, tree, symlinks=True, ignore=_ignore)
    if mutant is not None:
        file = tree / mutant.path
        text = file.read_text()
        if text.count(mutant.old) != 1:  # the real tree changed since check_mutants
            raise RuntimeError(f"{mutant.name}: old snippet not found exactly once in the copy's {mutant.path}")
        file.write_text(text.replace(mutant.old, mutant.new))
    return tree


def child_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "tests"), str(tree / "perf"), *rest])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


#: Where ``tritattn`` would be imported from (found, not imported: cheap, and before conftest
#: sets TRITON_INTERPRET).
FIND_TRITATTN = "import importlib.util; print(importlib.util.find_spec('tritattn').origin)"

#: The baseline also imports the package and every module a mutant edits, checking their files.
IMPORT_CHECK = """
import importlib, json, os, sys, torch
if not torch.cuda.is_available() and os.environ.get("TRITATTN_TEST_BACKEND", "interpreter") == "interpreter":
    os.environ["TRITON_INTERPRET"] = "1"  # as tests/conftest.py
files = {}
for name in json.loads(sys.argv[1]):
    files[name] = os.path.realpath(importlib.import_module(name).__file__)
print(json.dumps(files))
"""


def module_name(path: str) -> str:
    """tritattn/x.py → tritattn.x; kernels/x.py → tritattn.kernels.x (installed there); perf/x.py
    → x (perf/ is a folder of scripts, on the path)."""
    stem = path.removesuffix(".py").replace("/", ".")
    if path.startswith("perf/"):
        return stem.removeprefix("perf.")
    return "tritattn." + stem if path.startswith("kernels/") else stem


def check_imports_from(tree: Path, modules: dict[str, str] | None = None) -> None:
    """Raise unless ``tritattn`` (and each of ``modules``: name → path) comes from ``tree``."""
    env = child_env(tree)
    found = subprocess.run([sys.executable, "-c", FIND_TRITATTN], cwd=tree, env=env, capture_output=True, text=True)
    origin = Path(found.stdout.strip()).resolve() if found.returncode == 0 and found.stdout.strip() else None
    if origin != (tree / "tritattn" / "__init__.py").resolve():
        raise RuntimeError(f"the copy at {tree} would import tritattn from {origin}, not from the copy\n{found.stderr}")
    if modules:
        out = subprocess.run([sys.executable, "-c", IMPORT_CHECK, json.dumps(sorted(modules))],
                             cwd=tree, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"importing the copy's modules failed:\n{out.stderr[-3000:]}")
        got = json.loads(out.stdout.strip().splitlines()[-1])
        wrong = {name: got[name] for name, path in modules.items()
                 if Path(got[name]) != (tree / path).resolve()}
        if wrong:
            raise RuntimeError(f"modules imported from outside the copy {tree}: {wrong}")


# --- running pytest -------------------------------------------------------------------------

#: Runs the union of several selections in one pytest process: collects their files and keeps an
#: item when any selection takes it (node id or file prefix, and that selection's -k expression,
#: matched as pytest's own -k does).
UNION_RUNNER = r"""
import json, sys
import pytest
from _pytest.mark import KeywordMatcher
from _pytest.mark.expression import Expression

selections = [(ids, Expression.compile(k) if k else None) for ids, k in json.loads(sys.argv[1])]

def takes(nodeid, node):
    return nodeid == node or nodeid.startswith((node + "::", node + "[", node.rstrip("/") + "/"))

class Union:
    def pytest_collection_modifyitems(self, config, items):
        keep = [item for item in items
                if any(any(takes(item.nodeid, n) for n in ids) and (k is None or k.evaluate(KeywordMatcher.from_item(item)))
                       for ids, k in selections)]
        kept = set(map(id, keep))
        config.hook.pytest_deselected(items=[item for item in items if id(item) not in kept])
        items[:] = keep

sys.exit(pytest.main(sys.argv[2:], plugins=[Union()]))
"""


@dataclass
class Result:
    name: str
    outcome: str  # "caught", "survived", "broken"
    seconds: float
    detail: str  # the first failing test, or why broken
    log: str


def first_failure(output: str) -> str:
    """The first FAILED / ERROR line of pytest's summary, or where a crashed run was (the first
    test frame of faulthandler's traceback), or ""."""
    lines = output.splitlines()
    for line in lines:
        if line.startswith(("FAILED ", "ERROR ")):
            return line[:200]
    fatal = next((line.strip() for line in lines if line.startswith("Fatal Python error")), "")
    frame = next((line.strip() for line in lines if re.search(r'File ".*/tests/test_\w+\.py", line \d+ in test_', line)), "")
    return "; ".join(x for x in (fatal, frame) if x)[:300]


def run_in_copy(mutant: Mutant | None, command: list[str], timeout: float, keep: bool,
                check_modules: dict[str, str] | None = None) -> tuple[int | None, str, Path]:
    tree = make_copy(mutant)
    try:
        check_imports_from(tree, check_modules)
        try:
            proc = subprocess.run(command, cwd=tree, env=child_env(tree), capture_output=True, text=True, timeout=timeout)
            return proc.returncode, proc.stdout + proc.stderr, tree
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return None, out + f"\n[timed out after {timeout:.0f} s]", tree
    finally:
        if not keep:
            shutil.rmtree(tree.parent, ignore_errors=True)


def run_mutant(m: Mutant, timeout: float, keep: bool) -> Result:
    start = time.perf_counter()
    try:
        code, output, tree = run_in_copy(m, PYTEST + list(m.selection), timeout, keep)
    except Exception as e:  # noqa: BLE001  (a copy or import check failed: report, go on)
        return Result(m.name, "broken", time.perf_counter() - start, f"{type(e).__name__}: {e}", "")
    seconds = time.perf_counter() - start
    if code == 1:
        return Result(m.name, "caught", seconds, first_failure(output) or "pytest exit code 1", output)
    if code == 0:
        return Result(m.name, "survived", seconds, "every selected test passed", output)
    if code is None:
        why = "timeout"
    elif code < 0:
        why = f"pytest crashed ({signal.Signals(-code).name})"
    else:
        why = f"pytest exit code {code}"
    last = output.strip().splitlines()[-1] if output.strip() else ""
    return Result(m.name, "broken", seconds, f"{why}: {first_failure(output) or last}", output)


def run_baseline(mutants: list[Mutant], timeout: float, keep: bool) -> tuple[bool, str, float]:
    """The union of the mutants' selections on an unmutated copy: (passed, output, seconds)."""
    selections = [parse_selection(m.selection) for m in mutants]
    files = sorted({node.split("::")[0] for ids, _ in selections for node in ids})
    command = [sys.executable, "-c", UNION_RUNNER, json.dumps(selections), "-q", "-p", "no:cacheprovider", *files]
    modules = {module_name(m.path): m.path for m in mutants}
    start = time.perf_counter()
    code, output, _ = run_in_copy(None, command, timeout, keep, check_modules=modules)
    return code == 0, output, time.perf_counter() - start


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the mutants (after checking their snippets) and exit")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants (the baseline covers their selections)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run in parallel, each in its own copy (default 1)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per pytest run before it counts as broken (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies (their paths are printed)")
    parser.add_argument("--skip-baseline", action="store_true", help="debugging only: do not run the unmutated baseline first")
    args = parser.parse_args(argv)

    problems = check_mutants(MUTANTS)
    if problems:
        print("mutants.py: the mutant list does not match the tree:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 2
    mutants = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in MUTANTS})
        if unknown:
            print(f"mutants.py: no mutant named {', '.join(unknown)} (see --list)", file=sys.stderr)
            return 2
        mutants = [m for m in MUTANTS if m.name in args.only]

    if args.list:
        for m in mutants:
            print(f"{m.name}\n    {m.path}: {m.breaks}\n    caught by: {' '.join(m.selection)}")
        print(f"{len(mutants)} mutants; every snippet occurs exactly once")
        return 0

    total_start = time.perf_counter()
    if not args.skip_baseline:
        print(f"baseline: the union of {len(mutants)} selections on an unmutated copy ...", flush=True)
        try:
            passed, output, seconds = run_baseline(mutants, args.timeout * 3, args.keep)
        except RuntimeError as e:  # the copy does not import its own tritattn
            print(f"mutants.py: {e}", file=sys.stderr)
            return 2
        summary = output.strip().splitlines()[-1] if output.strip() else ""
        print(f"baseline: {'passed' if passed else 'FAILED'} in {seconds:.0f} s ({summary})", flush=True)
        if not passed:
            print(tail(output, 60))
            print("mutants.py: the unmutated tests fail: the mutant results would mean nothing", file=sys.stderr)
            return 2

    width = max(len(m.name) for m in mutants)
    lock = threading.Lock()
    results: dict[str, Result] = {}

    def one(m: Mutant) -> None:
        r = run_mutant(m, args.timeout, args.keep)
        with lock:
            results[m.name] = r
            print(f"{len(results):>3}/{len(mutants)}  {m.name:<{width}}  {r.outcome:<8}  {r.seconds:6.1f} s", flush=True)
            if r.outcome != "caught":
                print(f"      {r.detail}")
                if r.log:
                    print("      " + tail(r.log, 25).replace("\n", "\n      "))

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, mutants))

    print()
    print(f"{'mutant':<{width}}  {'outcome':<8}  {'seconds':>7}  file / first failure")
    for m in mutants:
        r = results[m.name]
        print(f"{m.name:<{width}}  {r.outcome:<8}  {r.seconds:7.1f}  {m.path}")
        print(f"{'':<{width}}  {'':<8}  {'':>7}  {r.detail}")
    counts = {o: sum(r.outcome == o for r in results.values()) for o in ("caught", "survived", "broken")}
    print(f"\n{counts['caught']} caught, {counts['survived']} survived, {counts['broken']} broken "
          f"of {len(mutants)} mutants in {time.perf_counter() - total_start:.0f} s")
    for outcome in ("survived", "broken"):
        names = [m.name for m in mutants if results[m.name].outcome == outcome]
        if names:
            print(f"{outcome}: {', '.join(names)}")
    return 0 if counts["caught"] == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())
