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
  // (packing and folding the weights) once, then the op on any x. CPU only.
  m.def(
      "lgl_prepare(Tensor qkv_weight, Tensor? qkv_bias, Tensor? prop_weight, Tensor? prop_bias, "
      "Tensor? norm_weight, Tensor? norm_bias, Tensor proj_weight, Tensor? proj_bias, "
      "int sr_ratio) -> Tensor");
  m.def(
      "lgl_fused_prepared(Tensor x, SymInt H, SymInt W, int num_heads, int sr_ratio, "
      "float scale, float norm_eps, Tensor prepared) -> Tensor");
  // Depthwise k x k convolution (stride 1, padding k/2) of a [B, C, H, W] map, plus x when
  // residual; returns a channels_last tensor. CPU only.
  m.def("dwconv(Tensor x, Tensor weight, Tensor? bias, bool residual) -> Tensor");
  m.def("lgl_prepared_numel(int C, int sr_ratio, ScalarType dtype) -> int",
        &edgevit::lgl_prepared_numel);
  m.def("cpu_isa() -> str", &edgevit::cpu_isa);
  m.def("supported_cpu_isas() -> str", &edgevit::supported_cpu_isas);
}
