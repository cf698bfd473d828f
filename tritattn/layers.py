"""Layer helpers shared by the reference modules, mirroring timm 1.0.31 (``timm/layers``).

- :func:`make_divisible` is ``timm.layers.helpers.make_divisible``.
- :func:`get_act_layer` / :func:`create_act_layer` are ``timm.layers.create_act``'s factories,
  resolving timm's activation names to the equivalent ``torch.nn`` built-ins. timm's own classes
  for ``sigmoid``, ``tanh``, ``gelu``, ``gelu_tanh`` and ``prelu`` compute the same function and
  hold the same state as these built-ins (they only add a no-op ``inplace`` argument).
  ``quick_gelu`` and ``hard_mish`` have no built-in and are not supported.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Union

from torch import nn

#: What timm accepts for ``act_layer`` / ``gate_layer``: a name, or a class / factory to call.
LayerType = Union[str, Callable[..., nn.Module], type[nn.Module]]

_ACT_LAYERS: dict[str, Callable[..., nn.Module]] = dict(
    silu=nn.SiLU,
    swish=nn.SiLU,
    mish=nn.Mish,
    relu=nn.ReLU,
    relu6=nn.ReLU6,
    leaky_relu=nn.LeakyReLU,
    elu=nn.ELU,
    prelu=nn.PReLU,
    celu=nn.CELU,
    selu=nn.SELU,
    gelu=nn.GELU,
    gelu_tanh=partial(nn.GELU, approximate="tanh"),
    sigmoid=nn.Sigmoid,
    tanh=nn.Tanh,
    hard_sigmoid=nn.Hardsigmoid,  # timm: relu6(x + 3) / 6, which is nn.Hardsigmoid
    hardsigmoid=nn.Hardsigmoid,
    hard_swish=nn.Hardswish,
    hardswish=nn.Hardswish,
    identity=nn.Identity,
)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (at least ``min_value``, default
    ``divisor``), stepping up one multiple if rounding lost more than ``1 - round_limit`` of ``v``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def get_act_layer(name: LayerType | None) -> Callable[..., nn.Module] | None:
    """The activation class for a timm name (case-insensitive); a non-string is returned as is,
    and ``None`` or ``""`` gives ``None``."""
    if name is None:
        return None
    if not isinstance(name, str):
        return name
    if not name:
        return None
    try:
        return _ACT_LAYERS[name.lower()]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r}; expected one of {sorted(_ACT_LAYERS)}") from None


def create_act_layer(name: LayerType | None, inplace: bool | None = None, **kwargs: Any) -> nn.Module | None:
    """Instantiate :func:`get_act_layer` ``(name)``; ``inplace`` is passed only when given and
    dropped for layers that do not take it (as timm does)."""
    act_layer = get_act_layer(name)
    if act_layer is None:
        return None
    if inplace is None:
        return act_layer(**kwargs)
    try:
        return act_layer(inplace=inplace, **kwargs)
    except TypeError:
        return act_layer(**kwargs)
