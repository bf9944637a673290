"""edgevit-kernels: the fused EdgeViT op ``torch.ops.edgevit.lgl_fused``.

Importing this package loads the C++ extension (operator schemas and CPU kernels), registers the
fake kernel and autograd formula, and -- when Triton is installed -- the CUDA kernel.
"""
import torch  # noqa: F401  (loads libtorch, which _C links against)

from . import _C  # noqa: F401  (registers the edgevit operators with the dispatcher)
from . import ops
from .ops import cpu_isa, lgl_fused, supported_cpu_isas
from .reference import lgl_reference

__all__ = ["lgl_fused", "lgl_reference", "cpu_isa", "supported_cpu_isas", "ops"]
__version__ = "0.1.0"
