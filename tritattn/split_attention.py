"""Fast split attention: ResNeSt's SplitAttn and SKNet's SelectiveKernel / SelectiveKernelAttn with
the two passes over their branches on tritattn's kernels (:mod:`tritattn.radix_block`).

Each class subclasses its twin in :mod:`tritattn.reference` (timm's constructor, defaults and
``state_dict`` keys) and overrides only ``forward``, reading only attributes timm's class has too,
so a timm module can be re-classed in place (``module.__class__ = SplitAttn``). In both modes:

- the branches (SplitAttn's grouped conv, bn0, drop, act0; SelectiveKernel's paths and
  ``torch.stack``) run in torch: as the calls their modules' forwards make where the layers are
  plain and unhooked (:mod:`tritattn.layer_calls`: the modules' bits, without their
  ``__call__``), else as modules;
- the descriptor ``mean over H×W of Σ_r x[:, r]`` is one :func:`~tritattn.radix_block.radix_pool`
  pass over the branches (eager: a sum that writes a [B, C, H, W] plane, then the mean);
- the small attention MLP (fc1 / bn1 / act1 / fc2, or fc_reduce / bn / act / fc_select) and the
  radix softmax run on [B, ·, 1, 1] vectors, in torch — its BatchNorm uses batch statistics in
  training, as eager; on the host's short path as the calls their modules' forwards make, where
  the layers are plain and unhooked (:mod:`tritattn.radix_mlp`: the modules' bits, without their
  ``__call__``), else as modules;
- ``Σ_r a[:, r] · x[:, r]`` is one :func:`~tritattn.radix_block.radix_combine` pass (eager: an
  R-times-larger product, then the sum), and its backward one pass too.

Inference (SplitAttn, SelectiveKernel): when no gradient is needed, the MLP's BatchNorm is in eval
with running statistics, its activation is ReLU / SiLU / Identity, the hidden width is at most
:data:`~tritattn.excitation_block.MAX_HIDDEN` and the block pipelines are on for x
(:func:`tritattn.excitation_block.runs_for`), the descriptor, the MLP and the radix softmax are
one kernel and the weighted sum a second (:func:`~tritattn.radix_block.radix_attention`), the
grouped 1×1 convs expanded to dense block-diagonal matrices on the host at each call (tiny; no
cache to go stale). ``attention_refusal`` says why a block takes the per-op path instead.
SplitAttn's bn0 and act0 then run inside those two kernels too (the prologue,
kernels/radix_combine.py) when bn0 is a plain affine BatchNorm in eval with running statistics,
drop an nn.Identity, act0 an nn.ReLU, none of them hooked and no gradient needed for bn0's
parameters: only the conv runs in torch, and its output c is read by the kernels as relu(bn0(c))
(z and x rounded to c's dtype as eager writes them), saving bn0's and act0's passes over the
[B, R·C, H, W] map. ``prologue_refusal`` says why a block runs bn0, drop and act0 as modules.
SelectiveKernel's paths likewise (each a ConvNormAct: conv, then a BatchNormAct2d with a ReLU):
only their convs run in torch, stacked, and the kernels read path r's conv output as
relu(bn_r(c_r)).

When :func:`tritattn.backend_for` says "torch" the ops run their eager fallback and the blocks
take the per-op path; nothing else changes. The output is in one branch's memory format
(channels_last for channels_last input, where timm's SplitAttn returns an NCHW-contiguous copy).
"""
from __future__ import annotations

import dataclasses
import functools

import torch
from torch import Tensor, nn

from . import excitation_block, layer_calls, radix_mlp, radix_step, reference
from .checks import check_channels, check_feature_map
from .modules import _plain_batchnorm, hidden_layer_refusal, mlp_act_kind
from .peers import qualified_name
from .radix_block import (check_branches, dense_pointwise, radix_attention_unchecked, radix_combine,
                          radix_logit_order)
from .hooks import global_module_hooks, has_hooks
from .module_plans import cached
from .tracing import fx_leaf, is_symbolic, leaf_twins, sizes


def _branches(x: Tensor, radix: int) -> Tensor:
    """SplitAttn's [B, R·C, H, W] as R branches [B, R, C, H, W] (a view for NCHW and channels_last)."""
    B, RC, H, W = x.shape
    return x.reshape(B, radix, RC // radix, H, W)


#: timm's and the reference's SelectiveKernelAttn (the twin subclasses the reference)
_SK_ATTNS = ("timm.layers.selective_kernel.SelectiveKernelAttn", qualified_name(reference.SelectiveKernelAttn))


def _path_refusal(path: nn.Module) -> str | None:
    """Why an SK path cannot hand its BatchNorm and ReLU to the inference kernels (and runs as a
    module), or None: it must be a ConvNormAct (conv, then bn: a BatchNormAct2d with a ReLU and
    no drop, then an identity aa), in eval with running statistics, without hooks past its conv."""
    if not layer_calls.is_one_of(type(path), layer_calls.CONV_NORM_ACTS) or "forward" in path.__dict__:
        return f"a path is a {type(path).__name__}, not timm's ConvNormAct"
    bn, aa = path.bn, getattr(path, "aa", None)
    if not layer_calls.is_one_of(type(bn), layer_calls.BATCHNORM_ACTS) or type(bn.act) is not nn.ReLU or type(bn.drop) is not nn.Identity:
        return f"a path's norm is not a BatchNormAct2d with a ReLU and no drop ({type(bn).__name__})"
    if aa is not None and type(aa) is not nn.Identity:
        return f"a path has anti-aliasing ({type(aa).__name__})"
    if not bn.affine or bn.running_mean is None or bn.running_var is None or bn.training:
        return "a path's BatchNorm is in training or keeps no running statistics"
    if has_hooks(path) or any(has_hooks(m) for m in bn.modules()) or (aa is not None and has_hooks(aa)):
        return "hooks on a path's ConvNormAct, BatchNorm or activation (they would be bypassed)"
    return None


def _pointwise(conv: nn.Module) -> bool:
    """A plain 1×1 conv without padding (on the pooled [B, C, 1, 1] vector: a matrix product)."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.padding in ((0, 0), "valid")
            and conv.weight.dim() == 4)


def _mlp_refusal(fc1: nn.Module, bn: nn.Module, act: nn.Module, fc2: nn.Module) -> str | None:
    """Why the attention MLP fc1 → bn → act → fc2 cannot run inside radix_squeeze_attend_fwd,
    whatever the call, or None (:func:`_call_refusal`: this call's reasons)."""
    if not (_pointwise(fc1) and _pointwise(fc2)):
        return "the attention MLP's fc layers are not plain 1×1 nn.Conv2d"
    if type(bn) is not nn.Identity:
        if not _plain_batchnorm(bn) or not bn.affine or bn.running_mean is None:
            return f"a {type(bn).__name__} in the attention MLP other than an affine BatchNorm with running statistics"
        if bn.training:
            return "the attention MLP's BatchNorm is in training mode (batch statistics: per op)"
    reason = hidden_layer_refusal(act, fc1)
    if reason is not None:
        return reason
    hooked = [type(m).__name__ for m in (fc1, bn, act, fc2) if has_hooks(m)]
    if hooked:
        return f"hooks on the attention MLP's {', '.join(hooked)} (they would be bypassed)"
    return None


def _call_refusal(x: Tensor, mlp_needs_grad: bool) -> str | None:
    """Why this call on x (the branches, or the block's input) cannot run the attention's inference
    kernels, or None; ``mlp_needs_grad``: whether an MLP parameter requires grad."""
    if not excitation_block.runs_for(x):
        return "no Triton kernels for x (eager fallback), or the block pipelines are switched off"
    if torch.is_grad_enabled() and (x.requires_grad or mlp_needs_grad):
        return "a gradient is needed (grad mode on and x or an MLP parameter requires grad): inference only"
    return None


@dataclasses.dataclass(frozen=True)
class RadixPlan:
    """What a SplitAttn / SelectiveKernel call reads from its module (kept by module_plans)."""

    #: attention_refusal() and prologue_refusal() without x: the reasons whatever the call
    attention_refusal: str | None
    prologue_refusal: str | None
    #: attention_weights() and prologue_args(), where those refusals are None and they are views of
    #: the module's tensors (a copy — grouped weights made dense, concatenated BatchNorms — is
    #: made at each call: an in-place write through ``p.data`` would leave a kept copy stale)
    weights: tuple | None
    prologue: tuple | None
    #: whether an attention MLP parameter, a prologue BatchNorm parameter requires grad
    mlp_needs_grad: bool
    prologue_needs_grad: bool


def _needs_grad(*layers: nn.Module) -> bool:
    return any(p.requires_grad for m in layers for p in m.parameters())


class _Planned:
    """The plan of a radix twin: its refusals without x, weights and prologue, built once while the
    module is unchanged (module_plans: hooks watched, MAX_HIDDEN and ``radix`` too). Each twin
    defines ``_static_attention_refusal``, ``_static_prologue_refusal``, ``attention_weights``,
    ``prologue_args``, ``_mlp_layers`` and ``_prologue_layers``."""

    def _plan(self) -> RadixPlan:
        return cached(self, self._build_plan, (excitation_block.MAX_HIDDEN, self.__dict__.get("radix")),
                      watch_hooks=True)

    def _build_plan(self) -> RadixPlan:
        attention, prologue = self._static_attention_refusal(), self._static_prologue_refusal()
        views = attention is None and self._weights_are_views()
        # the layers exist as named only where their refusal is None (and only then is the answer read)
        return RadixPlan(attention, prologue, self.attention_weights() if views else None,
                         self.prologue_args() if views and prologue is None and self._prologue_is_views() else None,
                         attention is None and _needs_grad(*self._mlp_layers()),
                         prologue is None and _needs_grad(*self._prologue_layers()))

    def _weights(self, plan: RadixPlan) -> tuple:
        return plan.weights if plan.weights is not None else self.attention_weights()

    def _prologue(self, plan: RadixPlan) -> tuple:
        return plan.prologue if plan.prologue is not None else self.prologue_args()

    def attention_refusal(self, x: Tensor | None = None) -> str | None:
        """Why this block's attention cannot run as the two-kernel inference pass (and takes the
        per-op path), or None; with x (the block's input, or its branches or stacked paths) also
        this call's reasons: no Triton kernels for x, or a gradient needed."""
        return self._attention_refusal(self._plan(), x)

    def _attention_refusal(self, plan: RadixPlan, x: Tensor | None) -> str | None:
        if plan.attention_refusal is not None or x is None:
            return plan.attention_refusal
        return _call_refusal(x, plan.mlp_needs_grad)

    def prologue_refusal(self, x: Tensor | None = None) -> str | None:
        """Why the prologue (SplitAttn: bn0 → drop → act0; SelectiveKernel: the paths' BatchNorm
        and ReLU) cannot run inside the two inference kernels and runs as modules instead, or
        None; with x also this call's reason: a gradient needed for the prologue's parameters.
        Taken only where :meth:`attention_refusal` is None too."""
        return self._prologue_refusal(self._plan(), x)

    def _prologue_refusal(self, plan: RadixPlan, x: Tensor | None) -> str | None:
        if plan.prologue_refusal is None and x is not None and torch.is_grad_enabled() and plan.prologue_needs_grad:
            return f"a gradient is needed (grad mode on and a {self._prologue_name} parameter requires grad): inference only"
        return plan.prologue_refusal


def _mlp_weights(fc1: nn.Conv2d, bn: nn.Module, act: nn.Module, fc2: nn.Conv2d, radix: int,
                 cardinality: int) -> tuple:
    """radix_attention's (w1, b1, norm, w2, b2, act) of the MLP, built now from the live
    parameters: dense (block-diagonal) W1 and W2, W2's rows and b2 in (radix, channel) order."""
    w2, b2 = radix_logit_order(dense_pointwise(fc2.weight, fc2.groups), fc2.bias, radix, cardinality)
    norm = None if type(bn) is nn.Identity else (bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
    return dense_pointwise(fc1.weight, fc1.groups), fc1.bias, norm, w2, b2, mlp_act_kind(act)


def _bn0_refusal(bn: nn.Module) -> str | None:
    """Why SplitAttn's bn0 cannot be the kernels' prologue BatchNorm, or None."""
    if not _plain_batchnorm(bn):
        return f"bn0 ({type(bn).__name__}) is not an nn.BatchNorm2d (or timm's BatchNormAct2d without drop and act)"
    if not bn.affine or bn.running_mean is None or bn.running_var is None:
        return "bn0 is not an affine BatchNorm with running statistics"
    if bn.training:
        return "bn0 is in training mode (batch statistics and their update: run as a module)"
    return None


class SplitAttn(_Planned, reference.SplitAttn):
    __doc__ = reference.SplitAttn.__doc__
    _prologue_name = "bn0"

    def _mlp_layers(self) -> tuple[nn.Module, ...]:
        return self.fc1, self.bn1, self.fc2

    def _prologue_layers(self) -> tuple[nn.Module, ...]:
        return (self.bn0,)

    def _weights_are_views(self) -> bool:
        # dense_pointwise copies grouped weights; radix_logit_order reorders rows for radix and cardinality > 1
        return self.fc1.groups == 1 and self.fc2.groups == 1 and (self.radix == 1 or self.rsoftmax.cardinality == 1)

    def _prologue_is_views(self) -> bool:
        return True  # bn0's own tensors

    def _static_prologue_refusal(self) -> str | None:
        """bn0 → drop → act0 as the kernels' prologue (radix_attention's ``prologue``)."""
        reason = _bn0_refusal(self.bn0)
        if reason is not None:
            return reason
        if type(self.drop) is not nn.Identity:
            return f"drop is a {type(self.drop).__name__}, not nn.Identity"
        if type(self.act0) is not nn.ReLU:
            return f"act0 is a {type(self.act0).__name__}, not nn.ReLU"
        hooked = [name for name, m in (("bn0", self.bn0), ("drop", self.drop), ("act0", self.act0))
                  if any(has_hooks(sub) for sub in m.modules())]
        if hooked:
            return f"hooks on {', '.join(hooked)} (they would be bypassed)"
        return None

    def prologue_args(self) -> tuple:
        """:func:`~tritattn.radix_block.radix_attention`'s ``prologue`` of this block: ("relu",
        bn0's (weight, bias, running mean, running var, eps)), from its current state (when
        :meth:`prologue_refusal` is None)."""
        bn = self.bn0
        return "relu", (bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)

    def _static_attention_refusal(self) -> str | None:
        rsoftmax = self.rsoftmax
        if not radix_mlp.is_radix_softmax(type(rsoftmax)) or has_hooks(rsoftmax):
            return f"rsoftmax is a {type(rsoftmax).__name__} (hooked or not timm's RadixSoftmax)"
        if rsoftmax.radix != self.radix:
            return f"rsoftmax.radix {rsoftmax.radix} != radix {self.radix}"
        return _mlp_refusal(self.fc1, self.bn1, self.act1, self.fc2)

    def attention_weights(self) -> tuple:
        """:func:`~tritattn.radix_block.radix_attention`'s (w1, b1, norm, w2, b2, act) of this
        block, from its current parameters (when :meth:`attention_refusal` is None)."""
        return _mlp_weights(self.fc1, self.bn1, self.act1, self.fc2, self.radix, self.rsoftmax.cardinality)

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self.reference_forward(x)
        if is_symbolic(x):
            return fx_leaf(self, x)
        layers = self._modules  # what self.conv etc. return (Module.__getattr__: ≈ 0.7 µs each)
        conv = layers["conv"]
        check_feature_map(x)
        check_channels(x, conv.in_channels, type(self).__name__)
        # the layers taken as their calls where they apply (tritattn/layer_calls.py)
        as_calls = layer_calls.no_module_hooks(x)
        x = layer_calls.run_conv(x, conv, as_calls)
        # once per call: its state token reads every layer (≈ 10 µs here); not where a gradient
        # flows through the conv's output (grad mode on, and x or the conv requires grad), which
        # refuses both inference passes below (_call_refusal) whatever the plan holds
        plan = None if x.requires_grad else self._plan()
        if plan is not None:
            channels = sizes(x)[1]
            R, C = self.radix, channels // self.radix
            if R * C == channels and C == self.fc1.in_channels and R * C == self.fc2.out_channels:
                c5 = _branches(x, R)
                if self._attention_refusal(plan, c5) is None and self._prologue_refusal(plan, c5) is None:
                    # bn0, drop (an Identity) and act0 inside both kernels: they read the conv output
                    return radix_attention_unchecked(c5, *self._weights(plan), prologue=self._prologue(plan))
        bn0, drop, act0 = layers["bn0"], layers["drop"], layers["act0"]
        if (as_calls and layer_calls.norm_applies(bn0) and layer_calls.identity_applies(drop)
                and layer_calls.act_applies(act0)):
            x = layer_calls.norm_act(x, bn0, act0)
        else:
            x = act0(drop(bn0(x)))
        x5 = _branches(x, self.radix)
        if plan is not None and self._attention_refusal(plan, x5) is None:
            _, R, C = sizes(x5)[:3]
            if C == self.fc1.in_channels and R * C == self.fc2.out_channels:
                return radix_attention_unchecked(x5, *self._weights(plan))
        # x5 and a made here from the module's own layers: the passes run unchecked
        call = radix_step.branches_call(x5)
        pooled = radix_step.pool(x5, call)  # [B, C, 1, 1]
        fc1, bn1, act1, fc2, rsoftmax = layers["fc1"], layers["bn1"], layers["act1"], layers["fc2"], layers["rsoftmax"]
        if (as_calls and radix_mlp.is_radix_softmax(type(rsoftmax)) and rsoftmax.radix == self.radix
                and radix_mlp.applies(fc1, bn1, act1, fc2, rsoftmax)):
            a = radix_mlp.radix_softmax(radix_mlp.logits(pooled, fc1, bn1, act1, fc2), self.radix, rsoftmax.cardinality)
        else:
            a = rsoftmax(fc2(act1(bn1(fc1(pooled)))))
        # a [B, R·C] or [B, R, C] in (radix, channel) order ([B, C, 1, 1] for R = 1), made from
        # pooled: x5's gradient in one launch
        return radix_step.combine(x5, a, call, pooled)


class SelectiveKernelAttn(reference.SelectiveKernelAttn):
    __doc__ = reference.SelectiveKernelAttn.__doc__

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self.reference_forward(x)
        if is_symbolic(x):
            return fx_leaf(self, x)
        check_branches(x, "x")
        shape = sizes(x)
        if shape[1] != self.num_paths:
            raise ValueError(
                f"{type(self).__name__} was built for {self.num_paths} paths but x has {shape[1]} on dim 1 "
                f"(x: shape {shape}; expected [B, {self.num_paths}, C, H, W])"
            )
        if shape[2] != self.fc_reduce.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self.fc_reduce.in_channels} channels but x has {shape[2]} "
                f"on dim 2 (x: shape {shape}; expected [B, {self.num_paths}, {self.fc_reduce.in_channels}, H, W])"
            )
        return self.attention(x, radix_step.branches_call(x), layer_calls.no_module_hooks(x))[0]  # x checked above

    def attention(self, x: Tensor, call: radix_step.BranchesCall | None, as_calls: bool) -> tuple[Tensor, Tensor]:
        """(the attention [B, R, C, 1, 1], the pooled descriptor [B, C, 1, 1] it is made from) of
        valid branches x (unchecked); ``call``: radix_step.branches_call's for x; ``as_calls``:
        ``layer_calls.no_module_hooks(x)`` (the MLP then taken as its layers' calls where they apply)."""
        pooled = radix_step.pool(x, call)
        layers = self._modules
        fc1, bn, act, fc2 = layers["fc_reduce"], layers["bn"], layers["act"], layers["fc_select"]
        if as_calls and radix_mlp.applies(fc1, bn, act, fc2):
            x = radix_mlp.logits(pooled, fc1, bn, act, fc2)  # the modules' calls without their __call__
        else:
            x = fc2(act(bn(fc1(pooled))))
        B, RC = x.shape[:2]
        x = x.view(B, self.num_paths, RC // self.num_paths, 1, 1)
        return x.softmax(dim=1), pooled


class SelectiveKernel(_Planned, reference.SelectiveKernel):
    __doc__ = reference.SelectiveKernel.__doc__
    _prologue_name = "path's BatchNorm"

    @functools.wraps(reference.SelectiveKernel.__init__)  # so inspect.signature shows timm's arguments
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attn.__class__ = SelectiveKernelAttn  # its attention the twin too, as convert makes it (CBAM's twins do so)

    def _mlp_layers(self) -> tuple[nn.Module, ...]:
        attn = self.attn
        return attn.fc_reduce, attn.bn, attn.fc_select

    def _prologue_layers(self) -> tuple[nn.Module, ...]:
        return tuple(path.bn for path in self.paths)

    def _weights_are_views(self) -> bool:
        return self.attn.fc_reduce.groups == 1 and self.attn.fc_select.groups == 1

    def _prologue_is_views(self) -> bool:
        return False  # the paths' BatchNorms concatenated

    def _static_attention_refusal(self) -> str | None:
        attn = self.attn
        if qualified_name(type(attn)) not in _SK_ATTNS and type(attn) is not SelectiveKernelAttn:
            return f"attn is a {type(attn).__name__}, not timm's SelectiveKernelAttn or its twin"
        if has_hooks(attn):
            return "hooks on attn (they would be bypassed)"
        return _mlp_refusal(attn.fc_reduce, attn.bn, attn.act, attn.fc_select)

    def attention_weights(self) -> tuple:
        """:func:`~tritattn.radix_block.radix_attention`'s (w1, b1, norm, w2, b2, act) of
        ``self.attn``, from its current parameters (when :meth:`attention_refusal` is None); the
        paths' logits are fc_select's rows in (path, channel) order already."""
        attn = self.attn
        return _mlp_weights(attn.fc_reduce, attn.bn, attn.act, attn.fc_select, attn.num_paths, 1)

    def _static_prologue_refusal(self) -> str | None:
        """The paths' BatchNorm and ReLU as the kernels' prologue (they read the stacked conv
        outputs as relu(bn_r(c_r)))."""
        for path in self.paths:
            reason = _path_refusal(path)
            if reason is not None:
                return reason
        if len({path.bn.eps for path in self.paths}) > 1:
            return "the paths' BatchNorms have different eps"
        return None

    def prologue_args(self) -> tuple:
        """:func:`~tritattn.radix_block.radix_attention`'s ``prologue``: ("relu", the paths'
        BatchNorms as one of R·C channels, path r's at r·C + c), from their current state."""
        bns = [path.bn for path in self.paths]
        return "relu", (*(torch.cat([getattr(bn, name) for bn in bns])
                          for name in ("weight", "bias", "running_mean", "running_var")), bns[0].eps)

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self.reference_forward(x)
        if is_symbolic(x):
            return fx_leaf(self, x)
        check_feature_map(x)
        check_channels(x, self.in_channels, type(self).__name__)
        inputs = x.split(self.in_channels // self.num_paths, 1) if self.split_input else [x] * self.num_paths
        layers = self._modules  # what self.paths and self.attn return (Module.__getattr__: ≈ 0.7 µs each)
        paths = layers["paths"]
        # the paths taken as their layers' calls where they apply (tritattn/layer_calls.py)
        as_calls = layer_calls.no_module_hooks(x)
        # not where a gradient flows through x: it refuses both inference passes (_call_refusal)
        plan = None if torch.is_grad_enabled() and x.requires_grad else self._plan()
        if plan is not None and self._attention_refusal(plan, x) is None and self._prologue_refusal(plan, x) is None:
            # the paths' BatchNorm and ReLU inside both kernels: they read the stacked conv outputs
            c5 = torch.stack([layer_calls.run_conv(inputs[i], path.conv, as_calls) for i, path in enumerate(paths)], dim=1)
            if sizes(c5)[1:3] == (self.attn.num_paths, self.attn.fc_reduce.in_channels):
                return radix_attention_unchecked(c5, *self._weights(plan), prologue=self._prologue(plan))
        x5 = torch.stack([layer_calls.run_conv_norm_act(inputs[i], path, as_calls) for i, path in enumerate(paths)], dim=1)
        attn = layers["attn"]
        fits = sizes(x5)[1:3] == (attn.num_paths, attn.fc_reduce.in_channels)  # the attention's branches and channels
        if plan is not None and fits and self._attention_refusal(plan, x5) is None:
            return radix_attention_unchecked(x5, *self._weights(plan))
        if fits and type(attn) is SelectiveKernelAttn and not has_hooks(attn) and (as_calls or not global_module_hooks()):
            # the twin's attention called as its forward would (no hook to run): the pooled
            # descriptor comes along, so x5's gradient may be written once (radix_step.combine)
            call = radix_step.branches_call(x5)
            a, pooled = attn.attention(x5, call, as_calls)
            return radix_step.combine(x5, a, call, pooled)
        a = attn(x5)  # [B, R, C, 1, 1]: timm's SelectiveKernelAttn, or the twin with hooks
        # x5 made here; a unchecked only from the attention classes known to make it (another is checked)
        if type(attn) in _ATTENTIONS:
            return radix_step.combine(x5, a, radix_step.branches_call(x5))
        return radix_combine(x5, a.reshape(x5.shape[:3]))


#: reference class → its fast twin (the same parameters and buffers, so a module can be re-classed)
FAST_TWINS = {
    reference.SplitAttn: SplitAttn,
    reference.SelectiveKernelAttn: SelectiveKernelAttn,
    reference.SelectiveKernel: SelectiveKernel,
}
leaf_twins(FAST_TWINS)  # leaves of torch.fx traces; TorchScript runs their reference forwards


#: the attention classes (exactly these: a subclass may return anything) whose output a SelectiveKernel
#: twin combines unchecked — [B, R, C, 1, 1] softmax weights on x5's device; another's is checked
_ATTENTIONS = (SelectiveKernelAttn, reference.SelectiveKernelAttn)
