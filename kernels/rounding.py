"""Conversion of accumulator values to an output's dtype, rounded to nearest-even everywhere."""
import triton
import triton.language as tl


@triton.jit
def to_output(v, ptr):
    """``v`` converted to the element type of ``ptr``, rounded to nearest (ties to even).

    For a bfloat16 output the rounding is done here on the float32 bits (add 0x7FFF plus the
    lowest kept bit, drop the low 16 bits), so the final conversion is exact: the GPU would round
    to nearest anyway, but Triton's interpreter truncates float32 → bfloat16, and the CPU tests
    must see the numbers the GPU produces. NaN is passed through untouched (the bit trick could
    turn a NaN payload into ±Inf). Costs a few integer operations per stored element.
    """
    if ptr.dtype.element_ty == tl.bfloat16:
        bits = v.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        v = tl.where(v != v, v, bits.to(tl.float32, bitcast=True))
    return v.to(ptr.dtype.element_ty)


@triton.jit
def as_materialised(v, ptr):
    """``v`` rounded to the element type of ``ptr`` and back to v's type: a value eager
    materialises in that dtype (CBAM's gated map z = x · gate_c), so that every kernel that
    recomputes it — forward and backward — gets the same bits and the same channel max."""
    return to_output(v, ptr).to(v.dtype)
