"""Fast attention blocks: the reference modules with their forward on tritattn's kernels.

Each class subclasses its twin in :mod:`tritattn.reference` (so constructor arguments, defaults
and ``state_dict`` keys are timm's / torchvision's) and overrides only ``forward``: the pooling is
:func:`~tritattn.functional.squeeze` / :func:`~tritattn.functional.spatial_pool`, the small
convolutions stay torch, and the gate plus the scaling of x is one
:func:`~tritattn.functional.excite_scale` / :func:`~tritattn.functional.spatial_scale` pass.
A gate without a kernel (anything but sigmoid and hard-sigmoid, torch's or timm's classes) runs
the reference forward, with a one-time warning naming the module and the gate.

A module checks its input once per call (x, and the residual given to ``excite``; a
channel-attention block once per call signature, :class:`KnownCall`): the ops below it take the
checked tensors through the functional ops' unchecked forms
(:func:`~tritattn.functional.squeeze_unchecked`, …) and :func:`tritattn.dispatch.call`, which runs
a custom op's implementation without the dispatcher where nothing needs it (host time:
perf/host_time.py).

The channel-attention blocks (:class:`ChannelExcitation` subclasses) also take a residual and a
ReLU into the same pass: ``block.excite(x, residual, "relu")`` is ``relu(block(x) + residual)``,
the tail of an SE-ResNet block (:mod:`tritattn.fusion`).

On the Triton kernels, a channel-attention block runs as one pipeline
(:mod:`tritattn.excitation_block`): the squeeze and its MLP / channel conv in one kernel, the
scaling in a second; two kernels for the backward. :meth:`ChannelExcitation.block_refusal` says
why a block cannot (a BatchNorm in its MLP in training mode, a hidden activation without a kernel, ECA's
``use_mlp``, ...); such a block, and every block on the eager fallback, takes the per-op path:
the squeeze kernel, the MLP in torch, the scaling kernel.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import cbam_block, dispatch, excitation_block, excitation_step, reference
from .batchnorm import count_batch, update_running_stats
from .checks import check_channels, check_companion, check_feature_map
from .dispatch import call
from .module_plans import cached
from .functional import excite_scale_unchecked, spatial_pool_unchecked, spatial_scale_unchecked, squeeze_unchecked
from .excitation_block import BlockSpec
from .peers import peer_gate_kind, qualified_name
from .producer import Prologue, prologue_of
from .reference import gate_kind
from .tracing import fx_leaf, is_symbolic, leaf_twins, sizes

_warned: set[tuple[str, str]] = set()


def kernel_for_gate(gate: nn.Module | None) -> str | None:
    """The kernel gate that ``gate`` computes: torch's or timm's sigmoid / hard-sigmoid; else None."""
    return gate_kind(gate) or peer_gate_kind(gate)


def kernel_gate(module: nn.Module, gate: nn.Module) -> str | None:
    """The kernel's gate name for ``gate``, or None after warning (once per module class and gate type)."""
    kind = kernel_for_gate(gate)
    if kind is None:
        key = (type(module).__name__, type(gate).__name__)
        if key not in _warned:
            _warned.add(key)
            warnings.warn(
                f"tritattn.{key[0]}: gate {key[1]} has no kernel (sigmoid and hard-sigmoid do); "
                "running the eager reference forward for this module",
                stacklevel=3,
            )
    return kind


#: hidden activation modules the block pipeline computes (exact types: a subclass may differ)
_MLP_ACTS: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.SiLU: "silu", nn.Identity: "identity"}


def mlp_act_kind(act: nn.Module) -> str | None:
    """The block pipeline's name for a hidden activation module, or None: no kernel for it."""
    return _MLP_ACTS.get(type(act))


def hidden_layer_refusal(act: nn.Module, fc1: nn.Module) -> str | None:
    """Why an fc -> act -> fc MLP cannot run in a kernel (the block pipeline, the radix squeeze), or
    None: its hidden activation has no kernel, or its hidden width is over MAX_HIDDEN."""
    if mlp_act_kind(act) is None:
        return f"hidden activation {type(act).__name__} has no kernel (ReLU, SiLU and Identity do)"
    if fc1.out_channels > excitation_block.MAX_HIDDEN:  # read at call time: tests lower it
        return f"hidden width {fc1.out_channels} > {excitation_block.MAX_HIDDEN}"
    return None


def _fc_act_fc(pool: str, fc1: nn.Conv2d, act: nn.Module, fc2: nn.Conv2d) -> BlockSpec:
    return BlockSpec(pool, "fc_act_fc", mlp_act_kind(act), fc1.weight.flatten(1), fc1.bias, fc2.weight.flatten(1), fc2.bias)


def _pooled(x: Tensor, add_maxpool: bool) -> Tensor:
    """timm's SE pooling: the mean over H×W, or (mean + max) / 2 with add_maxpool; [B, C, 1, 1]."""
    if add_maxpool:
        mean, maximum = squeeze_unchecked(x, "mean_max")
        return (0.5 * mean + 0.5 * maximum)[:, :, None, None]
    return squeeze_unchecked(x, "mean")[:, :, None, None]


@dataclasses.dataclass(frozen=True)
class ExcitationPlan:
    """What a channel-attention block's call reads from its module (kept by module_plans)."""

    #: the kernel gate, or None: no kernel (the block runs its reference forward)
    gate: str | None
    #: why the block cannot run as one pipeline, or None
    refusal: str | None
    #: the block's excitation for the pipeline, where it has a gate kernel and no refusal
    spec: BlockSpec | None
    #: the channel count the block takes (its :attr:`~ChannelExcitation.channels_attr` conv's), or None
    channels: int | None
    #: call signature (excitation_step.call_key) → the :class:`KnownCall` decided for it under this plan
    calls: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)


class KnownCall(NamedTuple):
    """What a call signature decided under a plan: its path, and the short host path prepared for
    it (excitation_step.Step) where the path takes it."""

    path: str
    step: excitation_step.Step | None


#: call signatures a plan keeps; beyond this it starts again (a model meets a few shapes)
MAX_KNOWN_CALLS = 64


class ChannelExcitation(nn.Module):
    """Base of the fast channel-attention blocks: ``x · gate(logits(x))[b, c]``, one kernel pass.

    A subclass sets :attr:`gate_attr` (the attribute holding its gate module; None: no gate
    module is used) and :attr:`channels_attr` (the conv whose ``in_channels`` is C, or None), and
    defines :meth:`logits`; it comes first among the bases, before its reference class, whose
    ``forward`` is the fallback.
    """

    gate_attr: str | None = "gate"
    channels_attr: str | None = None
    #: the kernel gate the block always applies, whatever its gate module (None: ask the module)
    fixed_gate: str | None = None

    def logits(self, x: Tensor) -> Tensor:
        """The excitation logits [B, C] (or [B, C, 1, 1]) for x, before the gate (per-op path)."""
        raise NotImplementedError

    def block_refusal(self) -> str | None:
        """Why this block cannot run as one pipeline (and takes the per-op path), or None."""
        return None

    def block_spec(self) -> BlockSpec:
        """The block's excitation for the pipeline (when :meth:`block_refusal` is None)."""
        raise NotImplementedError

    #: the block's own plain attributes its plan reads (module_plans: a change builds it again)
    plan_attrs: tuple[str, ...] = ()

    def uses_block_pipeline(self, x: Tensor) -> bool:
        """Whether ``self(x)`` runs as one pipeline: Triton kernels for x, no refusal, not switched off."""
        return self._runs_pipeline(x, self._plan())

    def _runs_pipeline(self, x: Tensor, plan: ExcitationPlan) -> bool:
        return plan.refusal is None and excitation_block.runs_for(x)

    def kernel_gate_name(self) -> str | None:
        """The kernel gate this block applies, or None (after a one-time warning): no kernel."""
        return self._plan().gate

    def _plan(self) -> ExcitationPlan:
        """This module's gate, refusal and spec, built once while the module is unchanged (module_plans)."""
        d = self.__dict__
        return cached(self, self._build_plan, (excitation_block.MAX_HIDDEN, *(d[a] for a in self.plan_attrs)))

    def _build_plan(self) -> ExcitationPlan:
        gate = self.fixed_gate or kernel_gate(self, getattr(self, self.gate_attr))
        refusal = self.block_refusal()
        spec = self.block_spec() if gate is not None and refusal is None else None
        channels = getattr(self, self.channels_attr).in_channels if self.channels_attr is not None else None
        return ExcitationPlan(gate, refusal, spec, channels)

    def excite(self, x: Tensor, residual: Tensor | None = None, act: str = "identity") -> Tensor:
        """``act(self(x) + residual)`` in one pass over x (act: "identity" or "relu"). With a
        prologue (:mod:`tritattn.prologue`), x is the producer BatchNorm's input and the block's
        input is act(bn(x)), computed by the kernels where they can.

        x (and the residual) are checked here, once per call signature: a signature met before
        under the module's plan (excitation_step.call_key: sizes, strides, dtype, device, ...)
        passed them, and takes the path and the prepared short path decided then; the ops
        below trust them."""
        plan = self._plan()
        prologue = prologue_of(self)
        key = excitation_step.call_key(x, residual, act) if prologue is None else None
        if key is not None:
            known = plan.calls.get(key)
            if known is not None:
                return self._run(plan, known, x, residual, act)
        check_feature_map(x)
        if plan.channels is not None:
            check_channels(x, plan.channels, type(self).__name__)
        if residual is not None:
            check_companion(residual, "residual", x, sizes(x))
        if prologue is not None:
            return self._excite_after(plan, prologue, x, residual, act)
        return self._excite_input(plan, x, residual, act, key)

    def _excite_after(self, plan: ExcitationPlan, prologue: Prologue, c: Tensor, residual: Tensor | None,
                      act: str) -> Tensor:
        gate = plan.gate
        if gate is None or residual is not None or act != "identity" or 0 in sizes(c) or not self._runs_pipeline(c, plan):
            return self._excite_input(plan, prologue.eager(c), residual, act)
        norm = prologue.norm
        check_channels(c, norm.num_features, type(norm).__name__)
        factor = count_batch(norm, sizes(c)) if norm.training else 0.0
        batch_stats = norm.training or norm.running_mean is None
        y, stats = excitation_block.excitation_with_stats(
            c, plan.spec, gate, prologue=(prologue.kind, prologue.norm_args()), batch_stats=batch_stats)
        if norm.training and norm.running_mean is not None:
            update_running_stats(norm.running_mean, norm.running_var, stats[0::2], factor)
        return y

    def _excite_input(self, plan: ExcitationPlan, x: Tensor, residual: Tensor | None, act: str,
                      key: tuple | None = None) -> Tensor:
        """The call on the block's input x, its path decided now (and kept under ``key``, a
        :func:`~tritattn.excitation_step.call_key`, where given)."""
        spec = plan.spec if plan.spec is not None and self._runs_pipeline(x, plan) else None
        path = self.block_path(x, spec, plan.gate, residual, act, plan)
        step = None
        if path in excitation_block.KERNEL_PATHS and excitation_step.applies(x, spec, residual, path):
            step = excitation_step.Step(x, spec, plan.gate, residual, act, path)
        known = KnownCall(path, step)
        if key is not None:
            key = excitation_step.call_key(x, residual, act)  # a decision made now began a new epoch (paths.call_state)
            if len(plan.calls) >= MAX_KNOWN_CALLS:
                plan.calls.clear()
            plan.calls[key] = known
        return self._run(plan, known, x, residual, act)

    def _run(self, plan: ExcitationPlan, known: KnownCall, x: Tensor, residual: Tensor | None, act: str) -> Tensor:
        """The call on ``known``'s path: its prepared short path where the modes allow it now
        (dispatch.direct), else the block op, the per-op path or the reference forward."""
        path, step = known
        if step is not None and dispatch.no_mode():  # a Step is made only for a plain x off the meta device
            return step(x, residual)
        if path == "eager":
            y = super().forward(x)  # the reference class's forward
            if residual is not None:
                y = y + residual
            return F.relu(y) if act == "relu" else y
        if path != "per-op":
            return excitation_block.excitation(x, plan.spec, plan.gate, residual, act, path=path)
        return excite_scale_unchecked(x, self.logits(x), plan.gate, residual, act)

    def block_path(self, x: Tensor, spec: BlockSpec | None, gate: str | None, residual: Tensor | None = None,
                   act: str = "identity", plan: ExcitationPlan | None = None) -> str:
        """The path ``self.excite(x, residual, act)`` takes (tritattn/paths.py), given the gate's
        kernel name (None: none) and ``spec``, :meth:`block_spec` where the block pipeline runs for
        x (None elsewhere): "eager" without a gate kernel, "per-op" off the pipeline, else the
        fastest of "one-launch", "split", "per-op" and "eager" for the shape
        (excitation_block.block_path: estimated, or measured by ``tritattn.tune``, which calls
        the block with ``plan``, :meth:`_plan` by default)."""
        if gate is None:
            return "eager"
        if spec is None:
            return "per-op"
        return excitation_block.block_path(x, spec, gate, residual, act,
                                           run=lambda: self._excite_input(plan or self._plan(), x, residual, act))

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self.reference_forward(x)
        if is_symbolic(x):
            return fx_leaf(self, x)
        return self.excite(x)


class SEModule(ChannelExcitation, reference.SEModule):
    __doc__ = reference.SEModule.__doc__
    channels_attr = "fc1"
    plan_attrs = ("add_maxpool",)

    def logits(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.bn(self.fc1(_pooled(x, self.add_maxpool)))))

    def block_refusal(self) -> str | None:
        bn = self.bn
        if type(bn) is not nn.Identity:
            if not _plain_batchnorm(bn) or not bn.affine or bn.running_mean is None:
                return f"a {type(bn).__name__} in the MLP other than an affine BatchNorm with running statistics"
            if bn.training:
                return "a BatchNorm in the MLP in training mode (batch statistics: per op; in eval it runs inside the pipeline)"
        return hidden_layer_refusal(self.act, self.fc1)

    def block_spec(self) -> BlockSpec:
        spec = _fc_act_fc("mean_max_avg" if self.add_maxpool else "mean", self.fc1, self.act, self.fc2)
        bn = self.bn
        if type(bn) is nn.Identity:
            return spec
        return dataclasses.replace(spec, norm=(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps))


class EffectiveSEModule(ChannelExcitation, reference.EffectiveSEModule):
    __doc__ = reference.EffectiveSEModule.__doc__
    channels_attr = "fc"
    plan_attrs = ("add_maxpool",)

    def logits(self, x: Tensor) -> Tensor:
        return self.fc(_pooled(x, self.add_maxpool))

    def block_refusal(self) -> str | None:
        limit = excitation_block.MAX_HIDDEN
        return f"{self.fc.in_channels} channels > {limit}" if self.fc.in_channels > limit else None

    def block_spec(self) -> BlockSpec:
        pool = "mean_max_avg" if self.add_maxpool else "mean"
        return BlockSpec(pool, "fc", w2=self.fc.weight.flatten(1), b2=self.fc.bias)


class EcaModule(ChannelExcitation, reference.EcaModule):
    __doc__ = reference.EcaModule.__doc__

    def logits(self, x: Tensor) -> Tensor:
        B, C = x.shape[:2]
        y = self.conv(squeeze_unchecked(x, "mean").view(B, 1, C))
        if self.conv2 is not None:
            y = self.conv2(self.act(y))
        return y.view(B, C)

    def block_refusal(self) -> str | None:
        return "use_mlp (conv -> act -> conv2) has no pipeline" if self.conv2 is not None else None

    def block_spec(self) -> BlockSpec:
        return BlockSpec("mean", "taps_zero", w1=self.conv.weight.flatten(), b2=self.conv.bias)


class CecaModule(ChannelExcitation, reference.CecaModule):
    __doc__ = reference.CecaModule.__doc__

    def logits(self, x: Tensor) -> Tensor:
        B, C = x.shape[:2]
        y = F.pad(squeeze_unchecked(x, "mean").view(B, 1, C), (self.padding, self.padding), mode="circular")
        return self.conv(y).view(B, C)

    def _runs_pipeline(self, x: Tensor, plan: ExcitationPlan) -> bool:
        # circular padding wraps at most once (F.pad refuses more: the per-op path raises its error)
        return sizes(x)[1] >= self.padding and super()._runs_pipeline(x, plan)

    def block_spec(self) -> BlockSpec:
        return BlockSpec("mean", "taps_circular", w1=self.conv.weight.flatten(), b2=self.conv.bias)


class ChannelAttn(ChannelExcitation, reference.ChannelAttn):
    __doc__ = reference.ChannelAttn.__doc__
    channels_attr = "fc1"

    def _mlp(self, v: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(v[:, :, None, None])))

    def logits(self, x: Tensor) -> Tensor:
        mean, maximum = squeeze_unchecked(x, "mean_max")
        return self._mlp(mean) + self._mlp(maximum)

    #: CBAM's channel pooling: the MLP of the mean plus the MLP of the max
    block_pool = "mean_max_both"

    def block_refusal(self) -> str | None:
        return hidden_layer_refusal(self.act, self.fc1)

    def block_spec(self) -> BlockSpec:
        return _fc_act_fc(self.block_pool, self.fc1, self.act, self.fc2)


class LightChannelAttn(ChannelAttn, reference.LightChannelAttn):
    __doc__ = reference.LightChannelAttn.__doc__
    gate_attr = None  # timm builds self.gate but never uses it
    fixed_gate = "sigmoid"  # timm: always F.sigmoid, whatever self.gate is

    block_pool = "mean_max_avg"  # the MLP of 0.5 · mean + 0.5 · max

    def logits(self, x: Tensor) -> Tensor:
        mean, maximum = squeeze_unchecked(x, "mean_max")
        return self._mlp(0.5 * mean + 0.5 * maximum)


class SpatialScaling:
    """The forward shared by the CBAM spatial branches: pool over C, ``descriptor``, conv, then
    the gate and the scaling of x in one :func:`~tritattn.functional.spatial_scale` pass."""

    gate_attr = "gate"

    def descriptor(self, pooled: Tensor) -> Tensor:
        """The conv's input, from the [B, 2, H, W] (mean over C, max over C)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self.reference_forward(x)
        if is_symbolic(x):
            return fx_leaf(self, x)
        check_feature_map(x)
        gate = kernel_gate(self, self.gate)
        if gate is None:
            return super().forward(x)
        return spatial_scale_unchecked(x, self.conv(self.descriptor(spatial_pool_unchecked(x))), gate)


class SpatialAttn(SpatialScaling, reference.SpatialAttn):
    __doc__ = reference.SpatialAttn.__doc__

    def descriptor(self, pooled: Tensor) -> Tensor:
        return pooled


class LightSpatialAttn(SpatialScaling, reference.LightSpatialAttn):
    __doc__ = reference.LightSpatialAttn.__doc__

    def descriptor(self, pooled: Tensor) -> Tensor:
        return 0.5 * pooled[:, 0:1] + 0.5 * pooled[:, 1:2]


def _plain_batchnorm(bn: nn.Module) -> bool:
    """torch's BatchNorm2d, or timm's BatchNormAct2d with identity drop and act (ConvNormAct's
    ``apply_act=False``, as in timm's CBAM)."""
    if type(bn) is nn.BatchNorm2d:
        return True
    return (qualified_name(type(bn)) == "timm.layers.norm_act.BatchNormAct2d"
            and all(type(child) is nn.Identity for child in bn.children()))


class CbamPipeline:
    """The forward shared by CBAM and light CBAM: one pipeline of 4 kernels forward and 4 backward
    (:mod:`tritattn.cbam_block`), in training as in inference; otherwise the channel part, then
    the spatial part."""

    #: the fast class of the channel part
    channel_twin: type[ChannelAttn]

    def pipeline_refusal(self) -> str | None:
        """Why this CBAM cannot take the pipeline (and runs its two parts), or None."""
        return self.refusal(self)

    @classmethod
    def refusal(cls, module: nn.Module) -> str | None:
        """:meth:`pipeline_refusal` of ``module``, this class or its timm peer (convert asks before
        re-classing): reads only the parts twin and peer share."""
        channel_refusal = cls.channel_twin.block_refusal(module.channel)
        if channel_refusal is not None:
            return f"channel part: {channel_refusal}"
        if kernel_gate_as(module.channel, cls.channel_twin) is None or kernel_for_gate(module.spatial.gate) is None:
            return "a gate without a kernel"
        conv, bn = module.spatial.conv.conv, module.spatial.conv.bn
        k = conv.kernel_size[0]
        if (conv.bias is not None or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1
                or conv.kernel_size != (k, k) or conv.padding != ((k - 1) // 2,) * 2 or k % 2 == 0):
            return "the spatial conv is not a k×k 'same' conv without bias"
        extras = [child for name, child in module.spatial.conv.named_children() if name not in ("conv", "bn")]
        if any(type(child) is not nn.Identity for child in extras):
            return "the spatial conv block holds more than a conv and a BatchNorm"
        if not _plain_batchnorm(bn):
            return f"the spatial norm {type(bn).__name__} is not a plain BatchNorm2d"
        if not bn.affine or bn.running_mean is None:
            return "the spatial BatchNorm keeps no running statistics"
        if bn.momentum is None:
            return "the spatial BatchNorm keeps a cumulative average (momentum=None)"
        return None

    def uses_pipeline(self, x: Tensor) -> bool:
        """Whether ``self(x)`` runs as the pipeline: Triton kernels for x, nothing refused, the
        pipelines switched on."""
        return excitation_block.runs_for(x) and self.pipeline_refusal() is None

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self.reference_forward(x)
        if is_symbolic(x):
            return fx_leaf(self, x)
        check_feature_map(x)
        check_channels(x, self.channel.fc1.in_channels, type(self).__name__)
        if not self.uses_pipeline(x):
            return self.spatial(self.channel(x))
        spec = self.channel.block_spec()
        bn = self.spatial.conv.bn
        factor = count_batch(bn, (sizes(x)[0], 1, *sizes(x)[2:])) if bn.training else 0.0
        y, _, _, affine = call(
            cbam_block.cbam_block,
            x, spec.w1, spec.b1, spec.w2, spec.b2, spec.pool, spec.act, self.channel.kernel_gate_name(),
            self.spatial.conv.conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps, bn.training,
            kernel_for_gate(self.spatial.gate),
        )
        if bn.training:
            update_running_stats(bn.running_mean, bn.running_var, affine[2::2], factor)
        return y


class CbamModule(CbamPipeline, reference.CbamModule):
    """CBAM on tritattn's kernels: the reference :class:`~tritattn.reference.CbamModule` with fast
    :class:`ChannelAttn` and :class:`SpatialAttn` parts (same parameters, same keys), run as one
    pipeline."""

    channel_twin = ChannelAttn

    @functools.wraps(reference.CbamModule.__init__)  # so inspect.signature shows timm's arguments
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channel.__class__ = ChannelAttn
        self.spatial.__class__ = SpatialAttn


class LightCbamModule(CbamPipeline, reference.LightCbamModule):
    """Light CBAM on tritattn's kernels: fast :class:`LightChannelAttn` and :class:`LightSpatialAttn`,
    run as one pipeline."""

    channel_twin = LightChannelAttn

    @functools.wraps(reference.LightCbamModule.__init__)
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channel.__class__ = LightChannelAttn
        self.spatial.__class__ = LightSpatialAttn


class SqueezeExcite(ChannelExcitation, reference.SqueezeExcite):
    __doc__ = reference.SqueezeExcite.__doc__
    channels_attr = "conv_reduce"

    def logits(self, x: Tensor) -> Tensor:
        return self.conv_expand(self.act1(self.conv_reduce(squeeze_unchecked(x, "mean")[:, :, None, None])))

    def block_refusal(self) -> str | None:
        return hidden_layer_refusal(self.act1, self.conv_reduce)

    def block_spec(self) -> BlockSpec:
        return _fc_act_fc("mean", self.conv_reduce, self.act1, self.conv_expand)


class SqueezeExcitation(ChannelExcitation, reference.SqueezeExcitation):
    __doc__ = reference.SqueezeExcitation.__doc__
    gate_attr = "scale_activation"
    channels_attr = "fc1"

    def logits(self, input: Tensor) -> Tensor:
        return self.fc2(self.activation(self.fc1(squeeze_unchecked(input, "mean")[:, :, None, None])))

    def block_refusal(self) -> str | None:
        return hidden_layer_refusal(self.activation, self.fc1)

    def block_spec(self) -> BlockSpec:
        return _fc_act_fc("mean", self.fc1, self.activation, self.fc2)

    def forward(self, input: Tensor) -> Tensor:  # torchvision's argument name
        if torch.jit.is_scripting():
            return self.reference_forward(input)
        if is_symbolic(input):
            return fx_leaf(self, input)
        return self.excite(input)


class LegacySEModule(ChannelExcitation, reference.LegacySEModule):
    __doc__ = reference.LegacySEModule.__doc__
    gate_attr = "sigmoid"
    channels_attr = "fc1"

    def logits(self, x: Tensor) -> Tensor:
        return self.fc2(self.relu(self.fc1(squeeze_unchecked(x, "mean")[:, :, None, None])))

    def block_refusal(self) -> str | None:
        return hidden_layer_refusal(self.relu, self.fc1)

    def block_spec(self) -> BlockSpec:
        return _fc_act_fc("mean", self.fc1, self.relu, self.fc2)


def kernel_gate_as(module: nn.Module, twin: type[nn.Module]) -> str | None:
    """The kernel gate ``module`` applies as a ``twin`` (once re-classed, or already), without
    warning; None when its gate has no kernel or ``twin`` has no gate of its own (CBAM)."""
    fixed_gate = getattr(twin, "fixed_gate", None)
    if fixed_gate is not None:
        return fixed_gate
    gate_attr = getattr(twin, "gate_attr", None)
    return kernel_for_gate(getattr(module, gate_attr)) if gate_attr else None


#: reference class → its fast twin (the same parameters and buffers, so a module can be re-classed)
FAST_TWINS: dict[type[nn.Module], type[nn.Module]] = {
    getattr(reference, cls.__name__): cls
    for cls in (
        SEModule, EffectiveSEModule, EcaModule, CecaModule, ChannelAttn, LightChannelAttn, SpatialAttn,
        LightSpatialAttn, CbamModule, LightCbamModule, SqueezeExcite, SqueezeExcitation, LegacySEModule,
    )
}
leaf_twins(FAST_TWINS)  # leaves of torch.fx traces; TorchScript runs their reference forwards
