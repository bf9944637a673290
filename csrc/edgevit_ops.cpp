// The one place the edgevit operator schemas are defined. Kernels are registered per dispatch
// key next to their implementations (lgl_fused_cpu.cpp, dwconv_cpu.cpp; CUDA from
// edgevit_kernels/triton); the fake kernels and autograd formulas live in edgevit_kernels/ops.py.
#include <Python.h>
#include <torch/library.h>

#include "lgl_fused_cpu.h"

// Importing edgevit_kernels._C runs the static registrations below; the module itself is empty.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(edgevit, m) {
  m.def(
      "lgl_fused(Tensor x, SymInt H, SymInt W, int num_heads, int sr_ratio, float scale, "
      "Tensor qkv_weight, Tensor? qkv_bias, Tensor? prop_weight, Tensor? prop_bias, "
      "Tensor? norm_weight, Tensor? norm_bias, float norm_eps, Tensor proj_weight, "
      "Tensor? proj_bias) -> Tensor");
  // lgl_fused in two steps, for repeated calls with unchanged weights (inference): phase 0
  // (packing and folding the weights) once, then the op on any x. CPU only. Optionally with
  // SelfAttn's LayerNorm before it and residual after it: out = [x +] lgl(pre_norm ? LN(x) : x),
  // the LayerNorm's affine folded into the prepared qkv.
  m.def(
      "lgl_prepare(Tensor qkv_weight, Tensor? qkv_bias, Tensor? prop_weight, Tensor? prop_bias, "
      "Tensor? norm_weight, Tensor? norm_bias, Tensor proj_weight, Tensor? proj_bias, "
      "int sr_ratio, bool pre_norm=False, Tensor? pre_norm_weight=None, "
      "Tensor? pre_norm_bias=None) -> Tensor");
  m.def(
      "lgl_fused_prepared(Tensor x, SymInt H, SymInt W, int num_heads, int sr_ratio, "
      "float scale, float norm_eps, Tensor prepared, float pre_norm_eps=1e-05, "
      "bool residual=False) -> Tensor");
  // Depthwise k x k convolution (stride 1, padding k/2) of a [B, C, H, W] map, plus x when
  // residual; returns a channels_last tensor. CPU only.
  m.def("dwconv(Tensor x, Tensor weight, Tensor? bias, bool residual) -> Tensor");
  m.def("lgl_prepared_numel(int C, int sr_ratio, ScalarType dtype) -> int",
        &edgevit::lgl_prepared_numel);
  // The transformer MLP as one op: out = [x +] fc2(GELU(fc1([LayerNorm](x)))), x = [..., C].
  // mlp_prepare / mlp_fused_prepared split it like lgl_fused. CPU only, inference only.
  m.def(
      "mlp_fused(Tensor x, Tensor fc1_weight, Tensor? fc1_bias, Tensor fc2_weight, "
      "Tensor? fc2_bias, bool layer_norm, Tensor? norm_weight, Tensor? norm_bias, "
      "float norm_eps, bool residual) -> Tensor");
  m.def(
      "mlp_prepare(Tensor fc1_weight, Tensor? fc1_bias, Tensor fc2_weight, Tensor? fc2_bias, "
      "bool layer_norm, Tensor? norm_weight, Tensor? norm_bias) -> Tensor");
  m.def("mlp_fused_prepared(Tensor x, Tensor prepared, float norm_eps, bool residual) -> Tensor");
  m.def("mlp_prepared_numel(int C, int hidden, ScalarType dtype) -> int",
        &edgevit::mlp_prepared_numel);
  // EdgeViT's PatchEmbed as one op: a p x p, stride-p convolution, then LayerNorm over the
  // output channels; the output is channels_last. patch_embed_prepare / patch_embed_prepared
  // split it like lgl_fused. CPU only, inference only.
  m.def(
      "patch_embed(Tensor x, Tensor weight, Tensor? bias, bool layer_norm, Tensor? norm_weight, "
      "Tensor? norm_bias, float norm_eps) -> Tensor");
  m.def("patch_embed_prepare(Tensor weight, Tensor? bias) -> Tensor");
  m.def(
      "patch_embed_prepared(Tensor x, Tensor prepared, int out_channels, int patch, "
      "bool layer_norm, Tensor? norm_weight, Tensor? norm_bias, float norm_eps) -> Tensor");
  m.def("patch_embed_prepared_numel(int Cin, int Cout, int patch, ScalarType dtype) -> int",
        &edgevit::patch_embed_prepared_numel);
  // A Linear layer on rows with the residual added in the same pass: out = x W^T + b [+ residual]
  // (LocalAgg's 1x1 convolutions on channels_last maps). linear_prepare / linear_fused_prepared
  // split it like lgl_fused. CPU only, inference only.
  m.def("linear_fused(Tensor x, Tensor weight, Tensor? bias, Tensor? residual) -> Tensor");
  m.def("linear_prepare(Tensor weight, Tensor? bias) -> Tensor");
  m.def(
      "linear_fused_prepared(Tensor x, Tensor prepared, int out_features, Tensor? residual) "
      "-> Tensor");
  m.def("linear_prepared_numel(int in_features, int out_features, ScalarType dtype) -> int",
        &edgevit::linear_prepared_numel);
  m.def("cpu_isa() -> str", &edgevit::cpu_isa);
  m.def("supported_cpu_isas() -> str", &edgevit::supported_cpu_isas);
  // The run-time override of the ISA (EDGEVIT_CPU_ISA is read once, at load): returns the ISA
  // now in use. Not an op on tensors: eager only, never traced.
  m.def("set_cpu_isa(str? name) -> str", &edgevit::set_cpu_isa);
  m.def("cpu_info() -> str", &edgevit::cpu_info);
  // lgl_fused's weight cache on CPU (csrc/lgl_weight_cache.h).
  m.def("lgl_weight_cache_clear() -> ()", &edgevit::lgl_weight_cache_clear);
  m.def("lgl_weight_cache_info() -> int[]", &edgevit::lgl_weight_cache_info);
}
