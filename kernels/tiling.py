"""Tile shapes and launch grids for kernels over the [R, K] plane of each batch element.

Every kernel views a 4-D tensor [B, C, H, W] as [B, R, K]: R "rows" that are kept and K
"columns" that are reduced over or broadcast along. Channel attention uses R = C, K = H×W;
CBAM's spatial attention uses R = H×W, K = C. Element (b, r, k) lives at
``ptr + b·sb + r·sr + k·sk``, so NCHW and channels_last are both read in place.

A tile is BLOCK_R × BLOCK_K elements. The memory-contiguous axis gets the long side so loads
coalesce. ``TILE_ELEMENTS`` bounds a tile so live registers stay modest on a GPU
(4096 float32 values over 4 warps = 32 per thread).
"""
import triton

TILE_ELEMENTS = 4096
LONG_SIDE_MAX = 1024


def tile_shape(R: int, K: int, rows_contiguous: bool, tile_elements: int = TILE_ELEMENTS) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_K), powers of two, the long side on the axis with unit stride."""
    if rows_contiguous:
        block_r = min(triton.next_power_of_2(R), LONG_SIDE_MAX, tile_elements)
        block_k = max(1, min(triton.next_power_of_2(K), tile_elements // block_r))
    else:
        block_k = min(triton.next_power_of_2(K), LONG_SIDE_MAX, tile_elements)
        block_r = max(1, min(triton.next_power_of_2(R), tile_elements // block_k))
    return block_r, block_k


def rows_grid(B: int, R: int, block_r: int) -> tuple[int]:
    """Row-reduction kernels: one program per (b, block of BLOCK_R rows), looping over K."""
    return (B * triton.cdiv(R, block_r),)


def elementwise_grid(B: int, R: int, K: int, block_r: int, block_k: int) -> tuple[int]:
    """Elementwise kernels: one program per (b, row block, column block), column block fastest."""
    return (B * triton.cdiv(R, block_r) * triton.cdiv(K, block_k),)
