"""The inference plan of an EdgeViT model: the whole network on the edgevit CPU ops.

An ``InferencePlan`` is built from a model (``edgevit.inference_plan(model)``, or automatically
by ``model(x)`` for a ``use_fused`` model in eval mode on CPU without autograd). It

1. checks that the model and the input can run this way (``fused_unavailable`` gives the
   reason when they cannot; the model then runs its module tree);
2. prepares every packed weight once through the ``*_prepare`` ops: PatchEmbed's convolution;
   LocalAgg's BatchNorms folded into the 1x1 convolutions after them; SelfAttn's norm1 folded
   into qkv and norm2 into fc1;
3. runs its steps top-down: per stage a ``patch_embed_prepared``, then per block LocalAgg
   (``dwconv``, ``linear_fused_prepared``, ``dwconv``, ``linear_fused_prepared``,
   ``mlp_fused_prepared``) and SelfAttn (``dwconv``, ``lgl_fused_prepared`` for
   ``x + attn(norm1(x))``, ``mlp_fused_prepared`` for ``x + mlp(norm2(x))``). Maps stay
   channels_last, so the token layout of the attention blocks is a view of them;
4. knows when its weights are stale through one key, checked once per call: the identity, data
   pointer and version counter of every parameter and buffer (so in-place updates, optimizer
   steps, ``load_state_dict``, ``p.data = ...`` and ``vector_to_parameters`` are seen), which
   modules are attached, the training flags and hooks of every module, the input's device and
   dtype, autograd, and the CPU ISA. When the key changes the plan rebuilds, preparing again
   only what changed.

The one write it cannot see is an in-place write through ``.data`` (``p.data.mul_(2)``):
PyTorch counts no version for it and the storage stays. After one, call
``edgevit.refresh(model)`` (or ``model.eval()``), which makes the next call prepare everything
again. Configuration changes other than ``set_fused`` (for example a GELU's ``approximate``)
also need ``refresh``.

The plan is never part of the ``state_dict``, of a pickle or of a ``copy.deepcopy``: copies and
loaded models build their own on first use.
"""
from __future__ import annotations

import operator
from typing import Callable, Optional

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules import module as _torch_module

from . import model as _model
from .model import (EdgeVit, GlobalSparseAttn, LGLBlock, LocalAgg, PatchEmbed, SelfAttn,
                    _kernels_unavailable, _load_kernels)

__all__ = ["InferencePlan", "inference_plan", "refresh", "fused_unavailable", "run_features",
           "run_logits", "compiled_features", "compiled_logits"]


def inference_plan(model: EdgeVit) -> "InferencePlan":
    """The plan ``model(x)`` uses (built now if needed); ``plan(x)`` gives the logits.

    Raises ValueError naming the reason when the model cannot run on a plan (see
    ``fused_unavailable``)."""
    reason = fused_unavailable(model)
    if reason is not None:
        raise ValueError(f"edgevit.inference_plan: {reason}")
    if model._inference_plan is None:
        model._inference_plan = InferencePlan(model)
    return model._inference_plan


def refresh(model: EdgeVit) -> EdgeVit:
    """Drop the model's plan: the next call prepares every weight again. Needed only after an
    in-place write through ``.data`` (e.g. ``p.data.mul_(2)``), which no key can see."""
    model._inference_plan = None
    return model


def run_features(model: EdgeVit, x: Tensor, return_stages: bool):
    """``model.forward_features(x, return_stages)`` on the model's plan, or None where the plan
    cannot serve the call (then the module tree runs)."""
    plan, built = _plan_for(model, x)
    return None if built is None else plan._forward_features(built, x, return_stages)


def run_logits(model: EdgeVit, x: Tensor):
    """``model(x)`` (features, pooling, head) on the model's plan, or None where the plan cannot
    serve the call or the model's tail is not the official one (then forward_features and
    forward_head run as usual)."""
    plan, built = _plan_for(model, x)
    return None if built is None or built.head is None else plan._logits(built, x)


def _plan_for(model: EdgeVit, x: Tensor):
    """(the model's plan, its steps for x), made on first use; (None, None) where none serves."""
    plan = model._inference_plan
    if plan is None:
        if fused_unavailable(model, x) is not None:
            return None, None
        plan = model._inference_plan = InferencePlan(model)
    return plan, plan.built_for(x)


# ---------------------------------------------------------------------------------------------
# Under torch.compile.
#
# Dynamo cannot trace the plan's staleness key (data pointers, version counters, hooks, slot
# identities) and guards on none of it, so neither tracing the steps with the prepared weights as
# graph constants nor preparing inside the graph keeps the eager contract: the first goes stale
# after an optimizer step, the second repacks every weight on every call. Instead the whole plan
# (key check, rebuild when stale, the steps) is one opaque op of the graph, edgevit::plan_features,
# which runs the model's plan eagerly: every fused op, weights prepared once, and exactly the
# staleness contract of eager calls. What the graph specialises on is what dynamo guards anyway:
# the model's handle, its training flag, grad mode, requires_grad, the input's device, dtype and
# sizes. The rest (head, pooling) is compiled as usual.


def compiled_features(model: EdgeVit, x: Tensor, return_stages: bool):
    """``model.forward_features(x, return_stages)`` while torch.compile traces it: the model's
    plan as the one op ``edgevit::plan_features``, or None where the module tree must be traced
    (torch.export, training, autograd, non-CPU or unsupported inputs)."""
    if _is_exporting() or _compile_unavailable(model, x):
        return None
    out = torch.ops.edgevit.plan_features(x, model._plan_handle, return_stages)
    return out if return_stages else out[0]


def compiled_logits(model: EdgeVit, x: Tensor):
    """``model(x)`` while torch.compile traces it: the plan with its fused tail (``_head_step``)
    as the one op ``edgevit::plan_logits``, so the compiled model gives the eager fused model's
    logits bit for bit; None where the tail is not the official one or the plan cannot serve
    (then forward_features and forward_head are traced)."""
    if _is_exporting() or _compile_unavailable(model, x) or not _official_tail(model):
        return None
    return torch.ops.edgevit.plan_logits(x, model._plan_handle)


def _official_tail(model: EdgeVit) -> bool:
    return (model.global_pool == "avg" and isinstance(model.pre_logits, nn.Identity)
            and isinstance(model.head, nn.Linear) and _is_folding_batchnorm(model.norm))


def _is_exporting() -> bool:
    # torch.export must keep the module tree: the graph would name a live model otherwise.
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return is_exporting is not None and is_exporting()


def _compile_unavailable(model: EdgeVit, x) -> bool:
    """What the graph must not take plan_features for; only what dynamo can trace and guard.
    Whatever else stops the plan (a hook, a module in training) is met at run time by the op,
    which then runs the module tree eagerly, as a call without torch.compile does."""
    if model.training or _load_kernels() is None or not isinstance(x, Tensor):
        return True
    if x.device.type != "cpu" or x.dim() != 4 or x.shape[2] < 32 or x.shape[3] < 32:
        return True
    if x.dtype not in (torch.float32, torch.float64) or x.dtype != model.patch_embed1.proj.weight.dtype:
        return True
    # The op has no autograd formula: where a gradient is wanted the module tree is traced.
    return torch.is_grad_enabled() and (x.requires_grad
                                        or any(p.requires_grad for p in model.parameters()))


def _channels_last_strides(shape) -> tuple:
    B, C, H, W = shape
    return (H * W * C, 1, W * C, C)


def _plan_features_shapes(model: EdgeVit, x: Tensor, return_stages: bool) -> list:
    B, H, W = x.shape[0], x.shape[2], x.shape[3]
    shapes = []
    for embed in _embeds(model):
        p = embed.proj.kernel_size
        H, W = H // p[0], W // p[1]
        shapes.append((B, embed.proj.out_channels, H, W))
    return shapes if return_stages else shapes[-1:]


def _model_of(handle: int) -> EdgeVit:
    model = _model._PLAN_MODELS.get(handle)
    if model is None:
        raise RuntimeError(f"edgevit::plan_features: model {handle} no longer exists")
    return model


def _plan_features(x: Tensor, model: int, return_stages: bool) -> list:
    """``forward_features`` of the EdgeVit numbered ``model`` (``EdgeVit._plan_handle``) run
    eagerly: on its inference plan where that can serve the call, else its module tree."""
    m = _model_of(model)
    with torch.no_grad():
        out = m.forward_features(x, return_stages)
    outs = list(out) if return_stages else [out]
    # The graph was compiled for the fake kernel's strides (channels_last); a layout the eager
    # path chose otherwise (size-1 dimensions, the module tree) is copied into them.
    return [t if t.stride() == _channels_last_strides(t.shape)
            else torch.empty_strided(t.shape, _channels_last_strides(t.shape), dtype=t.dtype).copy_(t)
            for t in outs]


def _plan_features_fake(x, model, return_stages):
    return [x.new_empty_strided(s, _channels_last_strides(s))
            for s in _plan_features_shapes(_model_of(model), x, return_stages)]


# A plain definition rather than torch.library.custom_op, whose Python wrappers cost ~0.1 ms a
# call (1-2% of XXS at B = 1); no autograd formula (the graph takes the op only without autograd).
_lib = torch.library.Library("edgevit", "FRAGMENT")
_lib.define("plan_features(Tensor x, int model, bool return_stages) -> Tensor[]")
_lib.impl("plan_features", _plan_features, "CompositeExplicitAutograd")
torch.library.register_fake("edgevit::plan_features", _plan_features_fake, lib=_lib)


def _plan_logits(x: Tensor, model: int) -> Tensor:
    """``model(x)`` of the EdgeVit numbered ``model``, run eagerly (plan and fused tail where
    they can serve the call, else the module tree)."""
    with torch.no_grad():
        return _model_of(model)(x).contiguous()


def _plan_logits_fake(x, model):
    return x.new_empty((x.shape[0], _model_of(model).head.out_features))


_lib.define("plan_logits(Tensor x, int model) -> Tensor")
_lib.impl("plan_logits", _plan_logits, "CompositeExplicitAutograd")
torch.library.register_fake("edgevit::plan_logits", _plan_logits_fake, lib=_lib)


# ---------------------------------------------------------------------------------------------
# Eligibility.


def fused_unavailable(model: nn.Module, x: Optional[Tensor] = None) -> Optional[str]:
    """None if ``model`` (and ``x``, when given) can run on an inference plan, else the reason."""
    if not isinstance(model, EdgeVit):
        return f"the model is a {type(model).__name__}, not an EdgeVit"
    if model.training or any(m.training for m in model.modules()):
        return "the model (or one of its modules) is in training mode"
    if torch.compiler.is_compiling():
        return "torch.compile traces the module tree"
    reason = _input_unavailable(model, x) if x is not None else None
    if reason is None and _has_hooks(model):
        reason = "a module has a forward hook or pre-hook (the plan calls no module)"
    return reason or _params_unavailable(model) or _structure_unavailable(model)


def _has_hooks(model: nn.Module) -> bool:
    return (bool(_torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks)
            or any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()))


def _params_unavailable(model: EdgeVit) -> Optional[str]:
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type != "cpu" for t in tensors):
        return "the model has parameters or buffers off the CPU (the plan runs on CPU)"
    if any(t.is_inference() for t in tensors):
        return "the model has inference-tensor parameters or buffers (no version counter)"
    if _load_kernels() is None:
        return f"edgevit_kernels could not be imported ({_model._kernels_error})"
    return None


def _input_unavailable(model: EdgeVit, x) -> Optional[str]:
    if not isinstance(x, Tensor):
        return f"the input is a {type(x).__name__}, not a tensor"
    if x.device.type != "cpu":
        return f"the input is on '{x.device.type}' (the plan runs on CPU)"
    if x.dim() != 4 or x.shape[2] < 32 or x.shape[3] < 32:
        return f"the input is not a [B, C, H, W] map of at least 32 x 32 (shape {tuple(x.shape)})"
    reason = _kernels_unavailable(x, model.patch_embed1.proj.weight.dtype)
    if reason is not None:
        return reason
    if _needs_grad(x, list(model.parameters())):
        return "autograd is on and the input or a parameter requires grad"
    return None


def _needs_grad(x: Tensor, params) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(map(_REQUIRES_GRAD, params)))


def _structure_unavailable(model: EdgeVit) -> Optional[str]:
    """The first module (by name) that has no step on the edgevit ops, with why."""
    for name, m in model.named_modules():
        reason = _module_unavailable(m)
        if reason is not None:
            return f"{name}: {reason}"
    for i, blocks in enumerate(_stages(model), 1):
        if not all(isinstance(b, LGLBlock) for b in blocks):
            return f"blocks{i} holds a module that is not an LGLBlock"
    return None


def _module_unavailable(m: nn.Module) -> Optional[str]:
    if isinstance(m, PatchEmbed):
        return _patch_embed_unavailable(m)
    if isinstance(m, LGLBlock):
        if not isinstance(m.LocalAgg, (LocalAgg, nn.Identity)):
            return f"LocalAgg is a {type(m.LocalAgg).__name__}"
        if not isinstance(m.SelfAttn, SelfAttn):
            return f"SelfAttn is a {type(m.SelfAttn).__name__}"
    if isinstance(m, LocalAgg):
        if not all(map(_is_folding_batchnorm, (m.norm1, m.norm2))):
            return "norm1 / norm2 are not affine BatchNorm2d with running statistics"
        if not _is_exact_gelu(m.mlp.act):
            return "mlp.act is not nn.GELU(approximate='none') (what mlp_fused computes)"
    if isinstance(m, SelfAttn):
        if not all(map(_is_affine_layernorm, (m.norm1, m.norm2))):
            return "norm1 / norm2 are not affine nn.LayerNorm"
        if not _is_exact_gelu(m.mlp.act):
            return "mlp.act is not nn.GELU(approximate='none') (what mlp_fused computes)"
        if not isinstance(m.attn, GlobalSparseAttn) or not m.attn.use_fused:
            return "attn is not a GlobalSparseAttn with use_fused"
    return None


def _patch_embed_unavailable(m: PatchEmbed) -> Optional[str]:
    proj = m.proj
    p = proj.kernel_size
    if not (p[0] == p[1] and proj.stride == p and proj.padding == (0, 0)
            and proj.dilation == (1, 1) and proj.groups == 1 and proj.padding_mode == "zeros"):
        return "proj is not a non-overlapping square patch convolution (what patch_embed computes)"
    if not _is_affine_layernorm(m.norm):
        return "norm is not an affine nn.LayerNorm"
    return None


def _is_exact_gelu(act: nn.Module) -> bool:
    return isinstance(act, nn.GELU) and act.approximate == "none"


def _is_affine_layernorm(norm: nn.Module) -> bool:
    return (isinstance(norm, nn.LayerNorm) and norm.weight is not None and norm.bias is not None
            and len(norm.normalized_shape) == 1)


def _is_folding_batchnorm(bn: nn.Module) -> bool:
    return (isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.running_mean is not None
            and bn.running_var is not None)


# ---------------------------------------------------------------------------------------------
# The plan.


_VERSION = operator.attrgetter("_version")
_TRAINING = operator.attrgetter("training")
_USE_FUSED = operator.attrgetter("use_fused")
_REQUIRES_GRAD = operator.attrgetter("requires_grad")
_DATA_PTR = Tensor.data_ptr


class InferencePlan:
    """One model's network on the edgevit CPU ops, on weights prepared once (module docstring).

    ``plan(x)`` gives the logits and ``plan.forward_features(x, return_stages)`` what
    ``EdgeVit.forward_features`` gives; both raise ValueError naming the reason where the model
    or ``x`` cannot run on the plan."""

    def __init__(self, model: EdgeVit):
        self.model = model
        self._built: Optional[_Built] = None

    def __call__(self, x: Tensor) -> Tensor:
        """The logits, as ``model(x)`` gives them (no autograd: the plan runs in inference
        mode)."""
        with torch.no_grad():
            built = self._require(x)
        return self._logits(built, x)

    def _logits(self, built: "_Built", x: Tensor) -> Tensor:
        with torch.no_grad():
            with torch.inference_mode():
                if built.head is not None:
                    y = built.head(built.run(x)[-1])
                else:
                    y = self.model.forward_head(self._features(built, x))
        return y if torch.is_inference_mode_enabled() else y.clone()

    def forward_features(self, x: Tensor, return_stages: bool = False):
        """What ``model.forward_features(x, return_stages)`` gives (no autograd)."""
        with torch.no_grad():
            return self._forward_features(self._require(x), x, return_stages)

    def built_for(self, x: Tensor) -> Optional["_Built"]:
        """The steps for ``x``, rebuilt when the key changed; None where the model or ``x``
        cannot run on the plan."""
        built = self._built
        try:
            if built is not None and built.key(x) == built.built_key:
                return built
        except RuntimeError:  # a parameter's data became an inference tensor (no version)
            pass
        if fused_unavailable(self.model, x) is not None:
            return None
        # A rebuild reuses the prepared weights of every module whose tensors did not change.
        built = self._built = _Built(self.model, x, previous=built)
        return built

    def _require(self, x: Tensor) -> "_Built":
        built = self.built_for(x)
        if built is None:
            raise ValueError(f"edgevit InferencePlan: {fused_unavailable(self.model, x)}")
        return built

    def _forward_features(self, built: "_Built", x: Tensor, return_stages: bool):
        if torch.is_inference_mode_enabled():
            return built.run(x) if return_stages else self._features(built, x)
        # No gradient is needed (the key says so), so the ops run in inference mode, which
        # skips the autograd wrappers and view metadata; the results leave as normal tensors.
        with torch.inference_mode():
            out = built.run(x) if return_stages else [self._features(built, x)]
        out = [t.clone() for t in out]
        return out if return_stages else out[0]

    def _features(self, built: "_Built", x: Tensor) -> Tensor:
        return self.model.pre_logits(self.model.norm(built.run(x)[-1]))


class _Built:
    """The steps and prepared weights of one state of the model, and that state's key."""

    def __init__(self, model: EdgeVit, x: Tensor, previous: Optional["_Built"]):
        self.isa, self.dtype = _cpu_isa(), x.dtype
        self._watch(model)
        self.prepared: dict = {}
        self._previous = previous.prepared if previous is not None else {}
        self.stages = [[_patch_embed_step(self, embed)]
                       + [step for blk in blocks for step in _block_steps(self, blk)]
                       for embed, blocks in zip(_embeds(model), _stages(model))]
        self.head = _head_step(self, model)
        del self._previous
        self.built_key = self.key(x)

    def run(self, x: Tensor) -> list:
        """The four stage outputs (channels_last maps)."""
        outs = []
        for steps in self.stages:
            for step in steps:
                x = step(x)
            outs.append(x)
        return outs

    # -- staleness ----------------------------------------------------------------------------
    def _watch(self, model: EdgeVit) -> None:
        """Flat lists of what the key reads, so that it is computed by C-level map() passes."""
        self.modules = list(model.modules())
        self.attns = [m for m in self.modules if isinstance(m, GlobalSparseAttn)]
        self.hook_dicts = [h for m in self.modules for h in (m._forward_hooks, m._forward_pre_hooks)]
        slots = [(d, name, obj) for m in self.modules
                 for d in (m._modules, m._parameters, m._buffers) for name, obj in d.items()]
        self.slot_dicts = [d for d, _, _ in slots]
        self.slot_names = [name for _, name, _ in slots]
        self.slot_objs = [obj for _, _, obj in slots]
        self.tensors = [t for m in self.modules
                        for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]

    def key(self, x: Tensor) -> tuple:
        """The state this plan depends on. While every module, parameter and buffer is the one
        it was built with (``slots_same``), ``self.tensors`` are the model's, so their data
        pointers and versions stand for the model's."""
        slots_same = all(map(operator.is_, map(dict.get, self.slot_dicts, self.slot_names),
                             self.slot_objs))
        return (slots_same, x.device.type, x.dtype, x.dim() == 4 and min(x.shape[-2:]) >= 32,
                _needs_grad(x, self.tensors), torch.compiler.is_compiling(),
                _cpu_isa(), any(map(_TRAINING, self.modules)),
                any(self.hook_dicts), bool(_torch_module._global_forward_hooks
                                           or _torch_module._global_forward_pre_hooks),
                tuple(map(_USE_FUSED, self.attns)), tuple(map(_DATA_PTR, self.tensors)),
                tuple(map(_VERSION, self.tensors)))

    # -- preparation --------------------------------------------------------------------------
    def prepare(self, module: nn.Module, kind: str, tensors: list, build: Callable):
        """``build(kernels)`` under no_grad, or the previous build's result while ``tensors``
        are unchanged (same objects, storage and versions; same ISA and dtype)."""
        key = (id(module), kind, self.isa, self.dtype,
               tuple((id(t), t.data_ptr(), t._version) for t in tensors))
        value = self._previous.get(key)
        if value is None:
            with torch.no_grad():
                value = build(_load_kernels())
        self.prepared[key] = value
        return value


def _cpu_isa() -> Optional[str]:
    kernels = _load_kernels()
    return kernels.cpu_isa() if kernels is not None else None


def _embeds(model: EdgeVit):
    return [model.patch_embed1, model.patch_embed2, model.patch_embed3, model.patch_embed4]


def _stages(model: EdgeVit):
    return [model.blocks1, model.blocks2, model.blocks3, model.blocks4]


# ---------------------------------------------------------------------------------------------
# The steps: each prepares its weights through ``built.prepare`` and returns x -> x.

_ops = torch.ops.edgevit


def _patch_embed_step(built: _Built, embed: PatchEmbed):
    """conv + LayerNorm as one ``patch_embed_prepared``; the result is channels_last."""
    w, b, norm = embed.proj.weight, embed.proj.bias, embed.norm
    prepared = built.prepare(embed, "proj", [w, b], lambda k: k.patch_embed_prepare(w, b))
    C, p, eps = w.shape[0], w.shape[2], float(norm.eps)

    def patch_embed(x):
        return _ops.patch_embed_prepared(x, prepared, C, p, True, norm.weight, norm.bias, eps)
    return patch_embed


def _block_steps(built: _Built, blk: LGLBlock) -> list:
    steps = [] if isinstance(blk.LocalAgg, nn.Identity) else [_local_agg_step(built, blk.LocalAgg)]
    return steps + [_self_attn_step(built, blk.SelfAttn)]


def _local_agg_step(built: _Built, la: LocalAgg):
    """LocalAgg with both BatchNorms folded into the 1x1 convolutions after them; the 1x1
    convolutions run as Linear on the [B, H, W, C] view of the channels_last map (no copies)."""
    conv1, conv2, mlp = built.prepare(la, "folded", _local_agg_tensors(la), _local_agg_build(la))
    pos, attn, C = la.pos_embed, la.attn, la.conv1.out_channels

    def local_agg(x):
        x = _ops.dwconv(x, pos.weight, pos.bias, True)  # x + pos_embed(x)
        xt = x.permute(0, 2, 3, 1)
        u = _ops.linear_fused_prepared(xt, conv1, C, None)  # conv1(norm1(x))
        u = _ops.dwconv(u.permute(0, 3, 1, 2), attn.weight, attn.bias, False)  # attn (5x5)
        xt = _ops.linear_fused_prepared(u.permute(0, 2, 3, 1), conv2, C, xt)  # x + conv2(u)
        return _ops.mlp_fused_prepared(xt, mlp, 0.0, True).permute(0, 3, 1, 2)  # x + mlp(norm2(x))
    return local_agg


def _local_agg_tensors(la: LocalAgg) -> list:
    n1, n2, fc1, fc2 = la.norm1, la.norm2, la.mlp.fc1, la.mlp.fc2
    return [n1.weight, n1.bias, n1.running_mean, n1.running_var, la.conv1.weight, la.conv1.bias,
            la.conv2.weight, la.conv2.bias, n2.weight, n2.bias, n2.running_mean, n2.running_var,
            fc1.weight, fc1.bias, fc2.weight, fc2.bias]


def _local_agg_build(la: LocalAgg) -> Callable:
    """The build of LocalAgg's prepared weights: conv1 with norm1 folded in, conv2, and the MLP
    with norm2 folded into fc1."""
    def build(kernels):
        w1, b1 = _fold_bn_into_1x1(la.norm1, la.conv1)
        wf1, bf1 = _fold_bn_into_1x1(la.norm2, la.mlp.fc1)
        return (kernels.linear_prepare(w1, b1),
                kernels.linear_prepare(la.conv2.weight.flatten(1), la.conv2.bias),
                kernels.mlp_prepare(wf1, bf1, la.mlp.fc2.weight.flatten(1), la.mlp.fc2.bias))
    return build


def _fold_bn_into_1x1(bn: nn.BatchNorm2d, conv: nn.Conv2d):
    """conv(bn(x)) for an eval-mode BatchNorm followed by a 1x1 convolution, as one affine map on
    channels: returns (weight [out, in], bias [out]) of the equivalent Linear."""
    s = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    t = bn.bias - bn.running_mean * s
    w = conv.weight.flatten(1)  # [out, in]
    b = conv.bias if conv.bias is not None else torch.zeros_like(w[:, 0])
    return (w * s).contiguous(), b + w @ t


def _self_attn_step(built: _Built, sa: SelfAttn):
    """SelfAttn as dwconv (x + pos_embed(x)), one lgl_fused_prepared (x + attn(norm1(x)), norm1
    folded into qkv) and one mlp_fused_prepared (x + mlp(norm2(x)), norm2 folded into fc1); the
    tokens are the [B, H*W, C] view of the channels_last map, and the result is one again."""
    a, n1, n2, fc1, fc2 = sa.attn, sa.norm1, sa.norm2, sa.mlp.fc1, sa.mlp.fc2
    weights, eps = a.op_weights()
    heads, r, scale = int(a.num_heads), int(a.sr), float(a.scale)
    attn = built.prepare(a, "lgl", [w for w in weights if w is not None] + [n1.weight, n1.bias],
                         lambda k: k.lgl_prepare(*weights, r, True, n1.weight, n1.bias))
    mlp = built.prepare(sa, "mlp", [n2.weight, n2.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias],
                        lambda k: k.mlp_prepare(fc1.weight, fc1.bias, fc2.weight, fc2.bias, True,
                                                n2.weight, n2.bias))
    pos, eps1, eps2 = sa.pos_embed, float(n1.eps), float(n2.eps)

    def self_attn(x):
        x = _ops.dwconv(x, pos.weight, pos.bias, True)
        B, C, H, W = x.shape
        t = _ops.lgl_fused_prepared(x.flatten(2).transpose(1, 2), H, W, heads, r, scale, eps,
                                    attn, eps1, True)
        t = _ops.mlp_fused_prepared(t, mlp, eps2, True)
        return t.reshape(B, H, W, C).permute(0, 3, 1, 2)
    return self_attn


def _head_step(built: _Built, model: EdgeVit):
    """BatchNorm, average pooling and the classifier as pooling + one ``linear_fused_prepared``
    with the BatchNorm folded into the classifier (an affine map commutes with the mean), or
    None where the tail is not that (then forward_head runs). Why not the ATen ops: BatchNorm's
    and addmm's OpenMP regions leave OpenMP's workers spinning for milliseconds, on the cores the
    edgevit pool's workers need next (XXS B = 1 went from ~8 to ~15 ms)."""
    norm, head = model.norm, model.head
    if not _official_tail(model):
        return None

    def build(kernels):
        s = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        t = norm.bias - norm.running_mean * s
        b = head.weight @ t + (head.bias if head.bias is not None else 0)
        return kernels.linear_prepare((head.weight * s).contiguous(), b)

    prepared = built.prepare(head, "head", [norm.weight, norm.bias, norm.running_mean,
                                            norm.running_var, head.weight, head.bias], build)
    n_out = head.out_features

    def step(x: Tensor) -> Tensor:
        return _ops.linear_fused_prepared(_mean_tokens(x), prepared, n_out, None)

    return step


def _mean_tokens(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, C], the mean over H, W; in batch chunks under ATen's parallel grain
    (32768 elements), so that ATen runs it serially and wakes no OpenMP thread (see above)."""
    per_image = x[0].numel()
    chunk = max(1, 32768 // max(1, per_image))
    if x.shape[0] <= chunk:
        return x.mean((2, 3))
    return torch.cat([c.mean((2, 3)) for c in x.split(chunk)])
