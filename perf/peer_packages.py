"""timm and torchvision, the real installed packages, importable beside a CPU-only torch (for
perf/models.py and the tests; the test and perf extras install ``timm`` and a ``torchvision``).

On a CPU-only torch, PyPI's torchvision wheel (a CUDA build) cannot load its C++ extension, and
its package ``__init__`` then fails while registering fake kernels for that extension's ops
("operator torchvision::nms does not exist"). The model definitions and ``torchvision.ops.misc``
are pure Python and need none of it. So when ``import torchvision`` fails, the package is
registered as a bare package over its installed folder, without running its ``__init__``: every
submodule (``torchvision.models.efficientnet``, ``torchvision.ops.misc``, ...) is then imported
from its real source, and ``import timm`` works as usual.
"""
from __future__ import annotations

import importlib.util
import sys
import types


def _import_torchvision() -> types.ModuleType:
    try:
        import torchvision
    except (ImportError, RuntimeError, OSError):
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        spec = importlib.util.find_spec("torchvision")
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError("torchvision is not installed: pip install -e '.[test]' (or '.[perf]')") from None
        torchvision = types.ModuleType("torchvision")
        torchvision.__path__ = list(spec.submodule_search_locations)
        torchvision.__spec__ = spec
        torchvision.__file__ = spec.origin
        sys.modules["torchvision"] = torchvision
    return torchvision


torchvision = _import_torchvision()

import timm  # noqa: E402
import torchvision.models  # noqa: E402
import torchvision.ops.misc  # noqa: E402

__all__ = ["timm", "torchvision"]
