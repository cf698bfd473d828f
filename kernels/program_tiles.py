"""Which part of the [B, R, K] problem a program owns, from its program id (see tiling.py's grids)."""
import triton
import triton.language as tl


@triton.jit
def row_block(R, BLOCK_R: tl.constexpr):
    """Row-reduction kernels (grid: tiling.rows_grid): batch index b (int64) and the program's
    BLOCK_R row offsets."""
    pid = tl.program_id(0)
    n_rblocks = tl.cdiv(R, BLOCK_R)
    return (pid // n_rblocks).to(tl.int64), (pid % n_rblocks) * BLOCK_R + tl.arange(0, BLOCK_R)


@triton.jit
def elementwise_tile(R, K, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """Elementwise kernels (grid: tiling.elementwise_grid, column block fastest): batch index b
    (int64), the BLOCK_R row offsets and the BLOCK_K column offsets of the program's tile."""
    pid = tl.program_id(0)
    n_kblocks = tl.cdiv(K, BLOCK_K)
    n_rblocks = tl.cdiv(R, BLOCK_R)
    offs_k = (pid % n_kblocks) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_r = ((pid // n_kblocks) % n_rblocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    return (pid // (n_kblocks * n_rblocks)).to(tl.int64), offs_r, offs_k
