"""Device code of tritattn: ``@triton.jit`` kernels and their launch configurations.

Installed as ``tritattn.kernels``. One module per kernel family:

- :mod:`tritattn.kernels.mean_max`     mean / max over one axis: channel squeeze (over H×W) and CBAM spatial pooling (over C)
- :mod:`tritattn.kernels.gated_scale`  y = act(x · gate(s) + residual) along one axis: excitation (per channel) and CBAM spatial scaling (per pixel)
- :mod:`tritattn.kernels.excitation`   the block pipeline of a channel-attention block: squeeze + MLP in one launch, its two-launch backward
- :mod:`tritattn.kernels.cbam_spatial` / :mod:`tritattn.kernels.cbam_spatial_bwd` CBAM's spatial half inside the CBAM pipeline
- :mod:`tritattn.kernels.norm_act`     activations, eval BatchNorm and the producer prologue computed where a kernel loads its input
- :mod:`tritattn.kernels.prologue_norm` the producer BatchNorm's batch statistics and its backward sums
- :mod:`tritattn.kernels.radix_combine` split attention / selective kernel: pooling of the summed branches, their weighted sum, its backward
- :mod:`tritattn.kernels.context_pool` GCNet's softmax-weighted pooling over H×W (one read of x, stable), its backward
- :mod:`tritattn.kernels.gates`         gate functions (sigmoid, hard-sigmoid) and their derivatives
- :mod:`tritattn.kernels.tiling`       tile shapes and launch grids
- :mod:`tritattn.kernels.rounding`     conversion to the output dtype, round-to-nearest-even (also in the interpreter)
- :mod:`tritattn.kernels.program_tiles` the tile a program owns, from its program id

Every kernel views a 4-D tensor [B, C, H, W] as [B, R, K] through three strides (see tiling.py),
so NCHW-contiguous and channels_last inputs are read in place, and all
offsets are computed in int64.
"""
