"""A twin's plan, built from its module once and reused while the module is unchanged.

A converted block reads the same things from its module at every call: its gate's kernel name,
why it cannot run as one pipeline (if it cannot), its weights as the kernels take them
(:class:`~tritattn.excitation_block.BlockSpec`). Building them costs ≈ 15 µs of host time per call
(``nn.Module`` attribute lookups, weight views, a dataclass: perf/host_time.py), a third of eager
timm's whole SE block. :func:`cached` keeps what ``build`` returned for a module and builds again
when the module's :func:`state_token` changes. The token holds, for every module in the tree:

- its identity, its ``training`` flag, and the scalars a plan reads or a refusal weighs: ``eps``
  (a BatchNorm's, a LayerNorm's), ``p`` (a Dropout's), ``momentum`` (a BatchNorm's);
- each parameter's and buffer's identity, storage address (``p.data = ...`` and ``module.to(...)``
  put new storage under the same Parameter) and ``requires_grad`` (a view of a frozen weight
  carries no gradient);

and the caller's ``extra`` values (the block's own plain attributes, module-level limits), grad
mode and inference mode (a weight view made in one is not valid in the other: one plan per mode).
A plan holds the module's tensors or views of them, never a copy: an in-place update (an optimizer
step, ``load_state_dict``, a write through ``p.data``) is seen without a rebuild, so a training
loop keeps its plans across steps. A twin makes its copies (grouped weights made dense,
concatenated BatchNorms) at each call. The plan holds the objects behind the identities, so no
identity is reused while it lives. Other plain attributes of the layers (a conv's padding, fixed
by timm's constructors) are read when the plan is built; with ``watch_hooks`` the token also
holds whether each module has hooks.

Under ``torch.compile`` / ``torch.export`` (dynamo traces the build instead) and ``torch.jit.trace``
the plan is built at each call and not kept.
"""
from __future__ import annotations

import weakref
from typing import Callable, TypeVar

import torch
from torch import nn

from .hooks import hooked

Plan = TypeVar("Plan")

#: id(module) → (a weak reference to the module, {(grad mode, inference mode): (state token, plan,
#: the objects the token identifies)}); an entry goes with its module (:func:`_forget`). Keyed by
#: id, not a WeakKeyDictionary: its lookup makes a weak reference per call (≈ 0.4 µs).
_plans: dict[int, tuple[weakref.ref, dict[tuple[bool, bool], tuple]]] = {}


def has_plans(module: nn.Module) -> bool:
    """Whether a plan is kept for ``module``."""
    return _entries(module) is not None


def _entries(module: nn.Module) -> dict | None:
    entry = _plans.get(id(module))
    return entry[1] if entry is not None and entry[0]() is module else None


def _forget(key: int, ref: weakref.ref) -> None:
    """The weak reference's callback: the module is going; its plans go with it."""
    entry = _plans.get(key)
    if entry is not None and entry[0] is ref:
        del _plans[key]


def state_token(module: nn.Module, extra: tuple = (), objects: list | None = None, watch_hooks: bool = False) -> tuple:
    """What a plan built from ``module`` depends on (module docstring); ``objects`` (when given)
    receives the modules and tensors whose identities the token holds; ``watch_hooks``: whether
    each module has hooks (hooks.hooked), for a plan that refuses hooked layers. ≈ 3 µs for an
    SE block's six modules (kept flat, empty dicts skipped: it runs at every call)."""
    parts: list = [extra]
    add, extend = parts.append, parts.extend  # one extend per module and tensor: fewer calls than appends
    stack: list = [module]
    pop, push = stack.pop, stack.extend
    while stack:
        m = pop()
        if m is None:  # a child slot set to None
            add(None)
            continue
        d = m.__dict__
        get = d.get
        if watch_hooks:
            extend((id(m), m.training, get("eps"), get("p"), get("momentum"), hooked(d)))
        else:
            extend((id(m), m.training, get("eps"), get("p"), get("momentum")))
        for tensors in (d["_parameters"], d["_buffers"]):
            if not tensors:
                continue
            for t in tensors.values():
                if t is None:
                    add(None)
                    continue
                extend((id(t), t.data_ptr(), t.requires_grad))
                if objects is not None:
                    objects.append(t)
        if objects is not None and m is not module:  # the module itself: weakly referenced (held, it would never go)
            objects.append(m)
        children = d["_modules"]
        if children:
            push(children.values())
    return tuple(parts)


def cached(module: nn.Module, build: Callable[[], Plan], extra: tuple = (), watch_hooks: bool = False) -> Plan:
    """``build()``'s plan for ``module``, kept while :func:`state_token` (with ``extra`` and
    ``watch_hooks``) and the grad and inference modes are those it was built under."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return build()
    mode = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
    token = state_token(module, extra, watch_hooks=watch_hooks)
    entries = _entries(module)
    if entries is not None:
        entry = entries.get(mode)
        if entry is not None and entry[0] == token:
            return entry[1]
    plan = build()
    objects: list = []
    token = state_token(module, extra, objects, watch_hooks)
    if entries is None:
        key = id(module)
        entries = {}
        _plans[key] = (weakref.ref(module, lambda ref, key=key: _forget(key, ref)), entries)
    entries[mode] = (token, plan, objects)
    return plan
