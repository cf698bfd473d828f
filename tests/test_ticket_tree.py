"""kernels/ticket_tree.py: a launch's per-program rows merged in a fixed-order tree by tickets.

A test kernel gives each program a ragged run of fresh random values, makes its row (sums, or
count, mean and M2) and merges it with tree_merge: the root's row against float64 sums over all
values, for 1 to 65 programs and fan-ins 2 to 64 (one to six levels, ragged last groups); the
workspace exactly as tree_shape sizes it (unwritten rows are NaN, so a read of one would show);
every counter slot back at 0; and the same bits when the programs run reversed or shuffled
(tests/fixtures/program_order.py), in float32, where another order of the sums would round
differently.
"""
import pytest
import torch
import triton
import triton.language as tl

from conftest import DEVICE
from fixtures.program_order import interpreter_internals_missing, program_order
from tritattn.backend import INTERPRETER
from tritattn.kernels.ticket_tree import MAX_FAN, moments_row, tree_fan, tree_merge, tree_shape

WIDTH = 4


@triton.jit
def merge_kernel(values_ptr, starts_ptr, part_ptr, counter_ptr, out_ptr, roots_ptr,
                 KIND: tl.constexpr, FAN: tl.constexpr, WIDTH: tl.constexpr, BLOCK: tl.constexpr):
    """Program i: values[starts[i]:starts[i + 1]] → its row ("sum": (Σ v, Σ v², 0, 0); "moments":
    (n, mean, M2, 0)), merged; the root stores the merged row to out and counts itself in roots."""
    pid = tl.program_id(0)
    start = tl.load(starts_ptr + pid)
    n = tl.load(starts_ptr + pid + 1) - start
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    v = tl.load(values_ptr + start + offs, mask=mask, other=0.0)
    cols = tl.arange(0, WIDTH)
    if KIND == "sum":
        row = tl.where(cols == 0, tl.sum(v, axis=0), tl.where(cols == 1, tl.sum(v * v, axis=0), 0.0))
    else:
        count = n.to(v.dtype)
        mean = tl.sum(v, axis=0) / count
        row = moments_row(count, mean, tl.sum(tl.where(mask, (v - mean) * (v - mean), 0.0), axis=0), cols)
    root, merged = tree_merge(part_ptr, counter_ptr, pid, tl.num_programs(0), row, KIND, FAN, WIDTH)
    if root:
        tl.store(out_ptr + cols, merged)
        tl.atomic_add(roots_ptr, 1)


BLOCK = 16


def run_merge(values: torch.Tensor, starts: torch.Tensor, kind: str, fan: int):
    """(the root's row, roots counted, counters after) of one launch over len(starts) - 1 programs."""
    n = len(starts) - 1
    rows, slots = tree_shape(n, fan)
    part = torch.full((max(rows, 1), WIDTH), float("nan"), dtype=values.dtype, device=DEVICE)
    counters = torch.zeros(max(slots, 1), dtype=torch.int32, device=DEVICE)
    out = torch.full((WIDTH,), float("nan"), dtype=values.dtype, device=DEVICE)
    roots = torch.zeros(1, dtype=torch.int32, device=DEVICE)
    merge_kernel[(n,)](values, starts, part, counters, out, roots, KIND=kind, FAN=fan, WIDTH=WIDTH, BLOCK=BLOCK)
    return out, roots.item(), counters


def ragged_runs(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """n runs of 1 … BLOCK fresh random values (mean far from 0, so M2 is no sum of squares)."""
    counts = torch.randint(1, BLOCK + 1, (n,))
    starts = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]).to(torch.int32)
    values = torch.randn(int(starts[-1]), dtype=torch.float64) * 3 + 5
    return values.to(DEVICE, dtype), starts.to(DEVICE)


def test_tree_shape_counts_the_rows_below_the_root_and_the_groups_above_the_leaves():
    assert tree_shape(1, 4) == (0, 0)
    assert tree_shape(4, 4) == (4, 1)
    assert tree_shape(5, 4) == (5 + 2, 2 + 1)
    assert tree_shape(257, 2) == (257 + 129 + 65 + 33 + 17 + 9 + 5 + 3 + 2, 129 + 65 + 33 + 17 + 9 + 5 + 3 + 2 + 1)
    assert tree_fan(2, 4096) == MAX_FAN and tree_fan(128, 4096) == 32 and tree_fan(128, 32) == 2


@pytest.mark.parametrize("n, fan", [(1, 64), (2, 2), (5, 4), (64, 64), (65, 64), (40, 2), (65, 8)],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("kind", ["sum", "moments"])
def test_the_root_holds_the_float64_merge_of_every_row_and_the_counters_are_back_at_zero(n, fan, kind):
    values, starts = ragged_runs(n, torch.float64)
    out, roots, counters = run_merge(values, starts, kind, fan)
    assert roots == 1, f"{roots} programs took the root"
    assert not counters.any(), "a counter slot was left dirty"
    v = values.cpu()
    expected = ([v.sum(), (v * v).sum()] if kind == "sum"
                else [float(len(v)), v.mean(), ((v - v.mean()) ** 2).sum()])
    got = out.cpu()[:len(expected)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert out.cpu()[len(expected):].eq(0).all()


@pytest.mark.parametrize("kind", ["sum", "moments"])
@pytest.mark.parametrize("order", ["reverse", "shuffled"])
def test_the_merge_gives_the_same_bits_in_any_program_order(kind, order):
    if not INTERPRETER or interpreter_internals_missing():
        pytest.skip("program order is the Triton interpreter's: runs under TRITON_INTERPRET=1 only")
    values, starts = ragged_runs(40, torch.float32)
    in_order, _, _ = run_merge(values, starts, kind, 4)
    with program_order(order, seed=7) as state:
        other, roots, counters = run_merge(values, starts, kind, 4)
    assert state.permuted == 1
    assert roots == 1 and not counters.any()
    assert torch.equal(in_order, other), (in_order, other)
