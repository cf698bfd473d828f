"""Integer helpers of the host's grid and tile arithmetic, in plain Python.

``triton.cdiv`` and ``triton.next_power_of_2`` are Triton ``ConstexprFunction`` objects: called
on the host each goes through their ``__call__`` wrapper (≈ 1 µs), several times per launch on
the host's critical path at batch 1–8; and the cost model (tritattn/cost_model.py) must import
where triton is not installed. These are the same functions, without triton: equal to Triton's
for every int (tests/test_grid_math.py).
"""


def cdiv(a: int, b: int) -> int:
    """⌈a / b⌉ for b > 0 (``triton.cdiv``)."""
    return (a + b - 1) // b


def next_power_of_2(n: int) -> int:
    """The least power of two ≥ n for n ≥ 1, and 0 for n ≤ 0 (``triton.next_power_of_2``)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0
