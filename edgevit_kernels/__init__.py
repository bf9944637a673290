"""edgevit-kernels: fused EdgeViT ops: ``torch.ops.edgevit.lgl_fused`` (GlobalSparseAttn),
``mlp_fused`` (the blocks' MLP), ``patch_embed`` (PatchEmbed), ``dwconv`` (depthwise conv) and ``linear_fused``
(Linear + residual).

Importing this package loads the C++ extension (operator schemas and CPU kernels), registers the
fake kernel and autograd formula, and -- when Triton is installed -- the CUDA kernel. If the
extension cannot be loaded the import raises one ImportError saying why and how to rebuild.
"""
import torch  # (loads libtorch, which _C links against)

try:
    # (not `from . import _C`: when the file is missing that says "circular import")
    import edgevit_kernels._C as _C  # noqa: F401  (registers the edgevit operators)
except Exception as _e:  # ImportError, OSError (undefined symbol, ...), errors of registration
    import glob as _glob
    import os as _os

    _found = _glob.glob(_os.path.join(_os.path.dirname(__file__), "_C*.so"))
    _cause = (f"the file {_os.path.basename(_found[0])} exists but does not load: it was probably "
              f"built against another torch than the installed torch {torch.__version__} (the "
              "extension must be built against the torch it runs with)"
              if _found else
              "the extension was not built (no _C*.so next to edgevit_kernels/__init__.py); "
              f"installed torch is {torch.__version__}")
    raise ImportError(
        f"edgevit_kernels: could not load its C++ extension edgevit_kernels._C "
        f"({type(_e).__name__}: {_e}). Likely cause: {_cause}. Fix: from the edgevit-kernels "
        "repository root run `pip install --no-build-isolation -e .` (or reinstall the package) "
        "with the torch you use installed. `import edgevit` works without it (unfused models).",
        name="edgevit_kernels._C",
    ) from None

from . import ops
from .ops import (cpu_info, cpu_isa, dwconv, lgl_fused, lgl_fused_prepared, lgl_prepare, linear_fused,
                  linear_fused_prepared, linear_prepare, mlp_fused,
                  mlp_fused_prepared, mlp_prepare, patch_embed, patch_embed_prepare,
                  patch_embed_prepared, set_cpu_isa, supported_cpu_isas, lgl_weight_cache_clear,
                  lgl_weight_cache_info)
from .reference import (dwconv_reference, lgl_block_reference, lgl_reference, linear_reference,
                        mlp_reference, patch_embed_reference)

__all__ = ["lgl_fused", "lgl_prepare", "lgl_fused_prepared", "lgl_reference",
           "lgl_block_reference", "mlp_fused",
           "mlp_prepare", "mlp_fused_prepared", "mlp_reference", "patch_embed",
           "patch_embed_prepare", "patch_embed_prepared", "patch_embed_reference", "dwconv",
           "dwconv_reference", "linear_fused", "linear_prepare", "linear_fused_prepared",
           "linear_reference", "cpu_info", "cpu_isa", "set_cpu_isa", "supported_cpu_isas", "lgl_weight_cache_info",
           "lgl_weight_cache_clear", "ops"]
__version__ = "0.1.0"
