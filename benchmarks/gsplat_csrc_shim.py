"""``gsplat.csrc`` for the GPU machine: gsplat's CUDA extension as an earlier lease built it (``.prebuilt/``).

gsplat 1.5.3 first tries ``from gsplat import csrc`` and only then compiles its extension (about 70 s of each
lease's device time). ``benchmarks/device_env.sh`` copies this file to ``gsplat/csrc.py`` beside the saved
``gsplat_cuda.so`` when the saved build's stamp (torch, CUDA, gsplat, GPU architecture) matches the machine. The
library keeps the name it was built under (``PyInit_gsplat_cuda``), so it is loaded under that name here and its
functions are re-exported. Any failure is raised as ImportError, on which gsplat falls back to its own build.
"""
import importlib.util as _util
import os as _os

try:
    import torch as _torch  # noqa: F401  (the extension links against torch's libraries)

    _path = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "gsplat_cuda.so")
    _spec = _util.spec_from_file_location("gsplat_cuda", _path)
    _module = _util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
except Exception as _error:  # an ABI mismatch, a missing file: gsplat compiles its own
    raise ImportError(f"prebuilt gsplat_cuda: {_error}") from None

globals().update({_k: _v for _k, _v in vars(_module).items() if not _k.startswith("__")})
