"""tritattn: Triton kernels for CNN channel- and spatial-attention blocks (SE, ECA, CBAM, ...).

- :mod:`tritattn.functional`: the ops (``squeeze``, ``excite_scale``, ``spatial_pool``, ``spatial_scale``);
  :mod:`tritattn.radix_block` (``radix_pool``, ``radix_combine``: split attention's pooling and
  weighted sum over radix groups / branches); :mod:`tritattn.context_block` (``context_pool``:
  GCNet's softmax-weighted pooling over H×W)
- :mod:`tritattn.modules`, :mod:`tritattn.split_attention`, :mod:`tritattn.global_context`:
  drop-in blocks with timm's / torchvision's constructors and weights
- :mod:`tritattn.reference`: the eager reference blocks that define the truth
- :func:`convert`: swap a timm / torchvision model's attention blocks for these (:mod:`tritattn.convert`);
  :func:`revert` undoes it
- :func:`backend_for` / :func:`backend_reason`: which implementation runs for a tensor, and why;
  :func:`disabled`: a scope in which no kernel runs (``TRITATTN_DISABLE=1``: the whole process)
- :func:`tune`: tune every kernel a model launches, before CUDA-graph capture or serving

``python -m tritattn`` prints an environment report for bug reports. The library never prints:
what it does is logged on ``logging.getLogger("tritattn")``.
"""
from . import reference
from .backend import backend_for, backend_reason, disabled
from .context_block import context_pool
from .convert import convert, revert
from .functional import excite_scale, spatial_pool, spatial_scale, squeeze
from .global_context import GlobalContext
from .modules import (
    CbamModule,
    CecaModule,
    EcaModule,
    EffectiveSEModule,
    LegacySEModule,
    LightCbamModule,
    SEModule,
    SqueezeExcitation,
    SqueezeExcite,
)
from .radix_block import radix_combine, radix_pool
from .report import ConvertReport, RevertReport
from .split_attention import SelectiveKernel, SelectiveKernelAttn, SplitAttn
from .tune_model import TuneReport, tune

__version__ = "0.1.0"

__all__ = [
    "CbamModule", "CecaModule", "ConvertReport", "EcaModule", "EffectiveSEModule", "GlobalContext", "LegacySEModule",
    "LightCbamModule", "RevertReport", "SEModule", "SelectiveKernel", "SelectiveKernelAttn", "SplitAttn",
    "SqueezeExcitation", "SqueezeExcite", "TuneReport", "backend_for", "backend_reason", "context_pool", "convert",
    "disabled", "excite_scale", "radix_combine", "radix_pool", "reference", "revert", "spatial_pool", "spatial_scale",
    "squeeze", "tune",
]
