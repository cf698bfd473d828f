"""tritattn: Triton kernels for CNN channel- and spatial-attention blocks (SE, ECA, CBAM, ...).

- :mod:`tritattn.functional`: the ops (``squeeze``, ``excite_scale``, ``spatial_pool``, ``spatial_scale``)
- :mod:`tritattn.modules`: drop-in blocks with timm's / torchvision's constructors and weights
- :mod:`tritattn.reference`: the eager reference blocks that define the truth
- :func:`convert`: swap a timm / torchvision model's attention blocks for these (:mod:`tritattn.convert`)
- :func:`backend_for`: which implementation runs for a tensor
"""
from . import reference
from .backend import backend_for
from .convert import ConvertReport, convert
from .functional import excite_scale, spatial_pool, spatial_scale, squeeze
from .modules import (
    CbamModule,
    CecaModule,
    EcaModule,
    EffectiveSEModule,
    LightCbamModule,
    SEModule,
    SqueezeExcitation,
    SqueezeExcite,
)

__all__ = [
    "CbamModule", "CecaModule", "ConvertReport", "EcaModule", "EffectiveSEModule", "LightCbamModule", "SEModule",
    "SqueezeExcitation", "SqueezeExcite", "backend_for", "convert", "excite_scale", "reference", "spatial_pool",
    "spatial_scale", "squeeze",
]
