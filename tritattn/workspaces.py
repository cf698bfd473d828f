"""The ticket counters a launch uses, allocated per call: safe under CUDA graphs, growth and streams.

Several kernels let the last program of a sample (or of a channel block, or of a launch) finish
the work of the others: each program draws a ticket from an int32 counter slot
(``kernels/excitation.py``, ``last_of_sample``), and the program that draws the last ticket runs
the sample's MLP, or the merge of the batch statistics, then stores 0 back to the slot. A launch
therefore needs its slots at 0 when it starts, and nobody else's launch may draw from them
while it runs.

:func:`counters` allocates them **per call**, ``torch.zeros(n, dtype=torch.int32)`` from torch's
caching allocator, sized exactly for the op (B, C or B + 1 slots), rather than keeping a cached
buffer per device and stream:

- eager: the op holds its tensor for as long as its launches run; the allocator is stream
  ordered (a block freed on one stream is handed out again only for work on that stream), so
  launches on two streams never share slots, and a bigger call never replaces a buffer that a
  smaller one still uses;
- CUDA graphs (``torch.cuda.graph``, ``torch.compile(mode="reduce-overhead")``): during capture
  the allocation comes from the graph's private memory pool, which the graph keeps reserved as
  long as it lives, and the zeroing is recorded as a memset node: every replay starts from
  zeroed counters that belong to that graph alone — an eager call of another batch size in
  between, or another graph replayed on another stream, cannot take or dirty them. (Graphs that
  share a pool, ``pool=...``, must be replayed as torch documents: in capture order, not at the
  same time — as for every other tensor in them.);
- a launch that raises (an interrupted interpreter run, a failed launch after the first kernel)
  cannot leave dirty slots to the next call: its counters are dropped with it.

The price is one memset of 4·n bytes per op (a kernel of a few µs on a GPU, plus the CPU cost of
a ``torch.zeros`` call in eager; a memset node inside a graph), beside the op's own two to four
Triton launches. The alternative, a cache whose buffers are never freed nor replaced, would still
let two graphs captured on one stream, replayed on two streams, share slots, and would need an
owner per graph to be safe: not worth the saved memset.

Within one op several launches may use the same counters one after another (the L2-chunked
forward, CBAM's channel and spatial halves; a training step on the host's short path, whose
backward takes its forward's, tritattn/excitation_step.py): the kernels' reset of each slot they
use is what makes that safe, and the tests check that every counter is 0 after every launch.
"""
from __future__ import annotations

import torch
from torch import Tensor


def counters(device: torch.device, n: int) -> Tensor:
    """``n`` zeroed int32 ticket counters for one op's launches on ``device`` (see the module
    docstring: allocated per call from the caching allocator, never cached)."""
    return torch.zeros(n, dtype=torch.int32, device=device)
