"""tritattn: Triton kernels for CNN channel- and spatial-attention blocks (SE, ECA, CBAM, ...)."""
from .backend import backend_for
from .functional import excite_scale, spatial_pool, spatial_scale, squeeze

__all__ = ["backend_for", "excite_scale", "spatial_pool", "spatial_scale", "squeeze"]
