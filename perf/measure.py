"""Measurements of a block: timings per implementation and pass, minimum bytes, and the
device-independent census (launches, saved bytes; taken on the "meta" device)."""
from __future__ import annotations

import torch
import torch._dynamo

import bench
from bytes_model import block_min_bytes
from cases import COMPILE_MODES, DTYPES, Case, build, build_eager, forward_fn, max_relative_error, train_step_fn
from census import BlockCensus, take_census
from model_shapes import Block

META = torch.device("meta")


def _census_on_meta(impl: str, block: Block, batch: int, dtype: str, layout: str) -> tuple[torch.nn.Module, BlockCensus]:
    module = build(impl, build_eager(block, META, DTYPES[dtype]), block)
    return module, take_census(module, Case(block, batch, dtype, layout).input(META))


def _min_bytes(module: torch.nn.Module, c: BlockCensus) -> dict[str, int]:
    return {
        "fwd": block_min_bytes(c.fwd.tritattn_calls, module, training=False),
        "fwd+bwd": block_min_bytes(c.fwd.tritattn_calls + c.bwd.tritattn_calls, module, training=True),
    }


def min_bytes(block: Block, batch: int, dtype: str, layout: str) -> dict[str, int]:
    """Minimum bytes of each pass of a case, from the kernels tritattn launches."""
    return _min_bytes(*_census_on_meta("tritattn", block, batch, dtype, layout))


def census_row(block: Block, batch: int, dtype: str) -> dict:
    """Device-independent figures of a block (NCHW): launches and saved bytes, tritattn and eager."""
    fast, tri = _census_on_meta("tritattn", block, batch, dtype, "nchw")
    _, eager = _census_on_meta("eager", block, batch, dtype, "nchw")
    mb = _min_bytes(fast, tri)
    return {
        "model": block.model, "block": block.id, "module": block.describe(), "C": block.C, "H": block.H,
        "W": block.W, "count": block.count, "batch": batch, "dtype": dtype,
        "launches_fwd_tritattn": tri.fwd.total, "triton_launches_fwd": tri.fwd.triton, "launches_fwd_eager": eager.fwd.total,
        "launches_bwd_tritattn": tri.bwd.total, "triton_launches_bwd": tri.bwd.triton, "launches_bwd_eager": eager.bwd.total,
        "saved_bytes_tritattn": tri.saved_bytes, "saved_bytes_eager": eager.saved_bytes,
        "launches_inference_tritattn": tri.inference.total, "launches_inference_eager": eager.inference.total,
        "passes_inference_tritattn": tri.inference.passes, "passes_inference_eager": eager.inference.passes,
        "passes_step_tritattn": tri.fwd.passes + tri.bwd.passes, "passes_step_eager": eager.fwd.passes + eager.bwd.passes,
        "min_bytes_fwd": mb["fwd"], "min_bytes_fwd+bwd": mb["fwd+bwd"],
    }


def _inputs(case: Case, device: torch.device, n: int, train: bool) -> list:
    xs = [case.input(device, requires_grad=train) for _ in range(n)]
    return [(x, torch.randn_like(x)) for x in xs] if train else xs


def _errors(case: Case, eager: torch.nn.Module, fast: torch.nn.Module, device: torch.device) -> dict[str, float]:
    """tritattn against eager on one input: the forward output and the input gradient."""
    x = case.input(device, requires_grad=True)
    out = {}
    eager.eval(), fast.eval()
    with torch.no_grad():
        out["fwd"] = max_relative_error(fast(x), eager(x))
    eager.train(), fast.train()
    g = torch.randn_like(x)
    (gx_fast,) = torch.autograd.grad(fast(x), [x], g)
    (gx_eager,) = torch.autograd.grad(eager(x), [x], g)
    out["fwd+bwd"] = max_relative_error(gx_fast, gx_eager)
    return out


def measure_case(
    case: Case, impls: list[str], passes: list[str], graph_modes: list[bool], device: torch.device,
) -> list[dict]:
    """One row per (impl, pass, CUDA graph or not): ms, or the error that stopped it."""
    eager = build_eager(case.block, device, DTYPES[case.dtype])
    per_set = case.batch * case.block.C * case.block.H * case.block.W * DTYPES[case.dtype].itemsize
    n_sets = bench.rotation_count(2 * per_set, device)  # x and the cotangent (or the output)
    inputs = {p: _inputs(case, device, n_sets, train=p == "fwd+bwd") for p in passes}
    rows = []
    for impl in impls:
        if impl in COMPILE_MODES:
            torch._dynamo.reset()  # fresh compile caches: no recompile limit across cases
        try:
            module = build(impl, eager, case.block)
            errors = _errors(case, eager, module, device) if impl == "tritattn" else {}
        except Exception as e:  # a failing implementation is reported, the sweep goes on
            rows += [_row(case, impl, p, g, device, error=f"{type(e).__name__}: {e}") for p in passes for g in graph_modes]
            continue
        for p in passes:
            fn = forward_fn(module, inputs[p]) if p == "fwd" else train_step_fn(module, inputs[p])
            for g in graph_modes:
                try:
                    fn()  # warm-up: compiles, tunes
                    rows.append(_row(case, impl, p, g, device, ms=bench.time_ms(fn, device, cuda_graph=g), max_rel_err=errors.get(p)))
                except Exception as e:
                    rows.append(_row(case, impl, p, g, device, error=f"{type(e).__name__}: {e}"))
    return rows


def _row(case: Case, impl: str, pass_: str, cuda_graph: bool, device: torch.device, ms: float | None = None,
         max_rel_err: float | None = None, error: str | None = None) -> dict:
    b = case.block
    return {
        "model": b.model, "block": b.id, "module": b.describe(), "C": b.C, "H": b.H, "W": b.W,
        "batch": case.batch, "dtype": case.dtype, "layout": case.layout, "pass": pass_, "impl": impl,
        "cuda_graph": cuda_graph, "ms": ms, "timing": bench.timing_label(device, impl),
        "max_rel_err": max_rel_err, "error": error,
    }
