"""The radix (split) attention of ResNeSt's SplitAttn and SKNet's SelectiveKernel: the pooling of
R branches into one channel descriptor, the attention-weighted sum of the branches, its backward.

A branched feature map x [B, R, C, H, W] (SplitAttn's [B, R·C, H, W] viewed so, or the stack of
SelectiveKernel's paths) is seen as [B, R, C, K], K = H×W: x[b, r, c, k] is at
x_ptr + b·sxb + r·sxr + c·sxc + k·sxk, so NCHW-like and channels_last-like branches are read in
place. The attention a[b, r, c] (at a_ptr + b·sab + r·sar + c·sac) is the radix softmax (or the
sigmoid for R = 1) of the block's logits, computed in torch between the kernels.
Rows are the C channels, columns the K pixels (tiling.py's [R, K] plane with R = C); the radix
index r is a loop inside every program (R is 1, 2 or 4 in timm). All arithmetic in ACC (float32;
float64 for float64 inputs) with one rounding to each output's dtype.
"""
import triton
import triton.language as tl

from .program_tiles import elementwise_tile, row_block
from .rounding import to_output
from .tiling import ELEMENTWISE_TILES, ROW_TILES, oriented_configs

# Autotuning spaces (pruned per problem by tiling.prune_configs). The three kernels store every
# output element exactly once (grad_a from a private accumulator) and accumulate into no output,
# so a config can be benchmarked on the real arguments repeatedly without reset_to_zero / restore_value.
#: radix_pool_fwd loops over r and K: the pipeline depth (num_stages) matters.
RADIX_POOL_FWD_CONFIGS = oriented_configs(ROW_TILES, num_warps=(2, 4, 8), num_stages=(1, 2, 3))
#: radix_combine_fwd loops over the R branches of one tile only: one stage.
RADIX_COMBINE_FWD_CONFIGS = oriented_configs(ELEMENTWISE_TILES, num_warps=(2, 4, 8), num_stages=(1,))
#: radix_combine_bwd loops over K (and r inside): the pipeline depth matters.
RADIX_COMBINE_BWD_CONFIGS = oriented_configs(ROW_TILES, num_warps=(2, 4, 8), num_stages=(1, 2, 3))


@triton.jit
def radix_pool_fwd(
    x_ptr, pooled_ptr,
    R, C, K,
    sxb, sxr, sxc, sxk,
    spb, spc,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """pooled[b, c] = (1/K) · Σ_r Σ_k x[b, r, c, k]   (timm: x.sum(1).mean((2, 3)))

    Reads x once; reduces over the R branches and the K pixels into a private ACC accumulator per
    channel (summed in a fixed order: r outer, K blocks inner — deterministic, no atomics) and
    stores pooled (strides spb, spc) once, rounded to its dtype. BLOCK_R tiles the C channels.
    Minimum bytes: B·R·C·K·itemsize(x) read + B·C·itemsize(pooled) written.
    Grid: rows_grid(B, C, BLOCK_R) — one program per (b, block of BLOCK_R channels), looping over
    r and over K in BLOCK_K steps.
    """
    b, offs_c = row_block(C, BLOCK_R)
    mask_c = offs_c < C
    c64 = offs_c.to(tl.int64)
    total = tl.zeros([BLOCK_R], dtype=ACC)
    row_ptrs = x_ptr + b * sxb + c64[:, None] * sxc  # branch r = 0; stepped by sxr (64-bit pointers)
    for r in range(R):
        for start in range(0, K, BLOCK_K):
            offs_k = start + tl.arange(0, BLOCK_K)
            mask = mask_c[:, None] & (offs_k < K)[None, :]
            v = tl.load(row_ptrs + offs_k.to(tl.int64)[None, :] * sxk, mask=mask, other=0.0).to(ACC)
            total += tl.sum(v, axis=1)
        row_ptrs += sxr
    tl.store(pooled_ptr + b * spb + c64 * spc, to_output(total / K, pooled_ptr), mask=mask_c)


@triton.jit
def radix_combine_fwd(
    x_ptr, a_ptr, out_ptr,
    R, C, K,
    sxb, sxr, sxc, sxk,
    sab, sar, sac,
    sob, soc, sok,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[b, c, k] = Σ_r a[b, r, c] · x[b, r, c, k]

    Reads each x element once and a[b, :, c] once per tile; the sum over r is in ACC (r in order)
    and out (strides sob, soc, sok) is stored once, rounded to its dtype.
    Minimum bytes: B·R·C·K·itemsize(x) read + B·C·K·itemsize(out) written + B·R·C·itemsize(a) read.
    Grid: elementwise_grid(B, C, K, BLOCK_R, BLOCK_K) — one program per (b, channel block,
    pixel block), looping over the R branches of its tile.
    """
    b, offs_c, offs_k = elementwise_tile(C, K, BLOCK_R, BLOCK_K)
    mask_c = offs_c < C
    mask = mask_c[:, None] & (offs_k < K)[None, :]
    c64 = offs_c.to(tl.int64)
    k64 = offs_k.to(tl.int64)[None, :]
    acc = tl.zeros([BLOCK_R, BLOCK_K], dtype=ACC)
    a_ptrs = a_ptr + b * sab + c64 * sac  # branch r = 0; stepped by sar / sxr (64-bit pointers)
    x_ptrs = x_ptr + b * sxb + c64[:, None] * sxc + k64 * sxk
    for r in range(R):
        a = tl.load(a_ptrs, mask=mask_c, other=0.0).to(ACC)
        x = tl.load(x_ptrs, mask=mask, other=0.0).to(ACC)
        acc += a[:, None] * x
        a_ptrs += sar
        x_ptrs += sxr
    tl.store(out_ptr + b * sob + c64[:, None] * soc + k64 * sok, to_output(acc, out_ptr), mask=mask)


@triton.jit
def radix_combine_bwd(
    grad_out_ptr, x_ptr, a_ptr, grad_x_ptr, grad_a_ptr,
    R, C, K,
    sgb, sgc, sgk,
    sxb, sxr, sxc, sxk,
    sab, sar, sac,
    sgxb, sgxr, sgxc, sgxk,
    sgab, sgar, sgac,
    ACC: tl.constexpr, RADIX_BLOCK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Backward of radix_combine_fwd in one pass over (grad_out, x):

      grad_x[b, r, c, k] = a[b, r, c] · grad_out[b, c, k]
      grad_a[b, r, c]    = Σ_k grad_out[b, c, k] · x[b, r, c, k]

    Each grad_out tile is loaded once and used for all R branches. Σ_k is a private ACC
    accumulator per (r, channel) — a [RADIX_BLOCK, BLOCK_R] tile, RADIX_BLOCK = R rounded up to
    a power of two — summed in a fixed order (K blocks in order): deterministic, no atomics; grad_a
    (strides sgab, sgar, sgac) is stored once at the end, grad_x (strides sgx*) once per element.
    Minimum bytes: B·C·K·itemsize(grad_out) + B·R·C·K·itemsize(x) read, B·R·C·K·itemsize(grad_x)
    written, B·R·C·itemsize(a) read + B·R·C·itemsize(grad_a) written.
    Grid: rows_grid(B, C, BLOCK_R) — one program per (b, block of BLOCK_R channels), looping over
    K in BLOCK_K steps and over the R branches inside.
    """
    b, offs_c = row_block(C, BLOCK_R)
    mask_c = offs_c < C
    c64 = offs_c.to(tl.int64)
    rows = c64[:, None]
    radix = tl.arange(0, RADIX_BLOCK)[:, None]  # [RADIX_BLOCK, 1]: the r of each accumulator row
    acc = tl.zeros([RADIX_BLOCK, BLOCK_R], dtype=ACC)
    for start in range(0, K, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask = mask_c[:, None] & (offs_k < K)[None, :]
        k64 = offs_k.to(tl.int64)[None, :]
        g = tl.load(grad_out_ptr + b * sgb + rows * sgc + k64 * sgk, mask=mask, other=0.0).to(ACC)
        # branch r = 0; stepped by sar / sxr / sgxr (64-bit pointers)
        a_ptrs = a_ptr + b * sab + c64 * sac
        x_ptrs = x_ptr + b * sxb + rows * sxc + k64 * sxk
        gx_ptrs = grad_x_ptr + b * sgxb + rows * sgxc + k64 * sgxk
        for r in range(R):
            a = tl.load(a_ptrs, mask=mask_c, other=0.0).to(ACC)
            x = tl.load(x_ptrs, mask=mask, other=0.0).to(ACC)
            tl.store(gx_ptrs, to_output(a[:, None] * g, grad_x_ptr), mask=mask)
            acc = tl.where(radix == r, acc + tl.sum(g * x, axis=1)[None, :], acc)
            a_ptrs += sar
            x_ptrs += sxr
            gx_ptrs += sgxr
    mask_a = (radix < R) & mask_c[None, :]
    tl.store(grad_a_ptr + b * sgab + radix.to(tl.int64) * sgar + c64[None, :] * sgac,
             to_output(acc, grad_a_ptr), mask=mask_a)
