"""Every Python example in README.md runs: the ```python blocks, in order, in one namespace
(a later example uses what an earlier one made), as a newcomer would paste them."""
import re
from pathlib import Path

from fixtures.model_runs import interpreter_friendly  # noqa: F401
from fixtures.peers import timm  # noqa: F401  (makes `import timm` work beside a CPU-only torch)
from fixtures.report_text import blocks_where

README = Path(__file__).resolve().parent.parent / "README.md"


def python_examples() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.DOTALL | re.MULTILINE)


def test_readme_examples_run(interpreter_friendly, capsys):
    examples = python_examples()
    assert len(examples) >= 3
    namespace: dict = {}
    for example in examples:
        exec(compile(example, str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert f"tritattn: 16 blocks {blocks_where()} (16 SE), 16 fused, 0 left eager" in printed
    assert f"tritattn (dry run, model untouched): 8 blocks would go {blocks_where()} (8 SE), 8 would be fused" in printed
