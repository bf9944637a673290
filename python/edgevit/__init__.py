"""edgevit: the EdgeViT models (official structure and state_dict keys), with an optional fused
LGL attention through ``torch.ops.edgevit.lgl_fused`` (package ``edgevit_kernels``, imported
lazily: ``import edgevit`` works without it)."""
from .model import (
    CMlp,
    DropPath,
    EdgeVit,
    GlobalSparseAttn,
    LGLBlock,
    LocalAgg,
    Mlp,
    PatchEmbed,
    SelfAttn,
    edgevit_s,
    edgevit_xs,
    edgevit_xxs,
)

__all__ = [
    "EdgeVit", "edgevit_xxs", "edgevit_xs", "edgevit_s", "GlobalSparseAttn", "LocalAgg",
    "SelfAttn", "LGLBlock", "PatchEmbed", "Mlp", "CMlp", "DropPath",
]
