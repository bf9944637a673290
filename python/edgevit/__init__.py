"""edgevit: the EdgeViT models (official structure and state_dict keys), with an optional fused
LGL attention through ``torch.ops.edgevit.lgl_fused`` (package ``edgevit_kernels``, imported
lazily: ``import edgevit`` works without it).

``inference_plan(model)`` gives the model's inference plan (the whole network on the edgevit CPU
ops, on weights packed once; ``plan(x)`` gives the logits), which ``model(x)`` of a
``use_fused`` model in eval mode on CPU without autograd uses by itself; ``refresh(model)``
rebuilds it after an in-place write through ``.data``. ``load_checkpoint(model, path)`` loads the
official training script's checkpoints and birder's (and ``edgevit_xs(pretrained=path)`` does it
for you). ``edgevit_xs(features_only=True)`` is a backbone; ``register_timm()`` adds the models to
timm's registry (done here already when timm was imported first)."""
import sys

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
    FeatureInfo,
    default_cfgs,
    register_timm,
)
from .checkpoint import load_checkpoint
from .inference import InferencePlan, fused_unavailable, inference_plan, refresh

__all__ = [
    "EdgeVit", "edgevit_xxs", "edgevit_xs", "edgevit_s", "GlobalSparseAttn", "LocalAgg",
    "SelfAttn", "LGLBlock", "PatchEmbed", "Mlp", "CMlp", "DropPath",
    "InferencePlan", "inference_plan", "refresh", "fused_unavailable", "load_checkpoint",
    "FeatureInfo", "default_cfgs", "register_timm",
]

# Importing timm here would make `import edgevit` slow and need timm's own dependencies; once
# the user has imported it, registering is cheap.
if "timm" in sys.modules:
    register_timm()
