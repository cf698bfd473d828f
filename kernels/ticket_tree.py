"""A launch's sum over its programs without a serial tail: partial rows merged in a fixed-order tree
by tickets.

Each of a launch's n0 programs holds a row of WIDTH partial results in ACC (a tile's sums, or its
count, mean and M2). Level 0 of the tree is those rows, stored in program order; the rows of
level l are merged in groups of FAN consecutive rows into the n_{l+1} = ⌈n_l / FAN⌉ rows of level
l + 1, each group by the program that draws the last ticket of the group's counter slot
(kernels/excitation.py's ``last_of_sample``). After ⌈log_FAN n0⌉ levels one program, the root,
holds the merge of all rows, in registers. n0 is the launch's number of programs, read at run
time: a tuned tile changes the tree, not the code.

- Fixed order: a group is merged from its rows in row order, by one reduction over a tile,
  whichever program draws its last ticket: the result is the same bits in any program order, and
  no float atomics are used.
- No tail: a merging program issues 4 memory instructions per level (the ticket, one [FAN, WIDTH]
  tile load, its row stored, the counter reset), never a loop over the rows; the root's
  instructions grow with log_FAN of the number of programs only.

Workspace (:func:`tree_shape`): ``part`` [rows, WIDTH] in ACC (rows = Σ n_l over the levels below
the root's; the root's row is never stored) and Σ_{l ≥ 1} n_l int32 counter slots, zero at the
start and left at zero (each group's merging program resets its slot). Sized for more programs
than run, they fit any fewer.
"""
import triton
import triton.language as tl

from .excitation import last_of_sample

#: The widest group a program merges: a [FAN, WIDTH] tile of at most tile_elements values.
MAX_FAN = 64


def tree_fan(width: int, tile_elements: int) -> int:
    """FAN of a tree of rows of ``width`` values (a power of two): FAN × width ≤ ``tile_elements``,
    FAN a power of two, 2 ≤ FAN ≤ MAX_FAN."""
    return max(2, min(MAX_FAN, tile_elements // width))


def tree_shape(n: int, fan: int) -> tuple[int, int]:
    """(partial rows, counter slots) of the merge of ``n`` rows in groups of ``fan``."""
    rows, slots = 0, 0
    while n > 1:
        rows += n
        n = triton.cdiv(n, fan)
        slots += n
    return rows, slots


@triton.jit
def row_entry(row, cols, j):
    """Entry j of a row held in registers (cols = tl.arange(0, WIDTH))."""
    return tl.sum(tl.where(cols == j, row, 0.0), axis=0)


@triton.jit
def moments_row(n, mean, m2, cols):
    """The row (n, mean, Σ (v - mean)², 0, …) of a group of n values."""
    return tl.where(cols == 0, n, tl.where(cols == 1, mean, tl.where(cols == 2, m2, 0.0)))


@triton.jit
def merge_rows(tile, cols, KIND: tl.constexpr):
    """One row from a [FAN, WIDTH] tile of rows (absent rows loaded as 0), reduced down the rows:

      KIND "sum":     Σ_i row_i
      KIND "moments": rows (n_i, mean_i, M2_i) of groups of values → those of their union:
                      n = Σ n_i, mean = Σ n_i · mean_i / n, M2 = Σ M2_i + Σ n_i (mean_i - mean)²
    """
    if KIND == "sum":
        return tl.sum(tile, axis=0)
    else:
        n_i = tl.sum(tl.where(cols[None, :] == 0, tile, 0.0), axis=1)
        mean_i = tl.sum(tl.where(cols[None, :] == 1, tile, 0.0), axis=1)
        m2_i = tl.sum(tl.where(cols[None, :] == 2, tile, 0.0), axis=1)
        n = tl.sum(n_i, axis=0)
        mean = tl.sum(n_i * mean_i, axis=0) / n
        m2 = tl.sum(m2_i, axis=0) + tl.sum(n_i * (mean_i - mean) * (mean_i - mean), axis=0)
        return moments_row(n, mean, m2, cols)


@triton.jit
def tree_merge(part_ptr, counter_ptr, idx, n0, row, KIND: tl.constexpr, FAN: tl.constexpr, WIDTH: tl.constexpr):
    """Merge this program's ``row`` (partial ``idx`` of ``n0``, WIDTH values in ACC) with the
    launch's others (module docstring). Returns (root, merged): root is true in exactly one
    program, whose ``merged`` is the merge of all n0 rows (n0 = 1: the one row is its own root)."""
    cols = tl.arange(0, WIDTH)
    root = idx >= 0
    if n0 > 1:
        tl.store(part_ptr + idx * WIDTH + cols, row)
    i = idx
    n = n0
    base = n0 * 0  # first row of the level in part
    slot = n0 * 0  # first counter slot of the next level's groups
    while root & (n > 1):
        g = i // FAN
        root = last_of_sample(counter_ptr, slot + g, tl.minimum(n - g * FAN, FAN))
        if root:
            rows = g * FAN + tl.arange(0, FAN)
            tile = tl.load(part_ptr + (base + rows)[:, None] * WIDTH + cols[None, :], mask=(rows < n)[:, None],
                           other=0.0, cache_modifier=".cg")
            row = merge_rows(tile, cols, KIND)
            if n > FAN:  # not yet the root's level
                tl.store(part_ptr + (base + n + g) * WIDTH + cols, row)
            tl.store(counter_ptr + slot + g, 0)
        base += n
        slot += tl.cdiv(n, FAN)
        n = tl.cdiv(n, FAN)
        i = g
    return root, row
