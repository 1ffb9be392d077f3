// The op schemas of rotated_ddetr, registered once under TORCH_LIBRARY(rotated_ddetr, m).
// Kernels register themselves per dispatch key (CPU in *_cpu.cpp, CUDA in *_cuda.cu) with TORCH_LIBRARY_IMPL;
// autograd and fake (meta) implementations are registered from Python in rotated_ddetr/ops/.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(rotated_ddetr, m) {
  // (N,5) x (M,5) rboxes (cx, cy, w, h, angle[rad]) -> (N,M) IoU, or (N,) when aligned (N == M).
  m.def("box_iou_rotated(Tensor boxes1, Tensor boxes2, bool aligned=False) -> Tensor");
  // Greedy NMS over (N,5) rboxes by decreasing score (ties: lower index first). With labels (N,) int64, boxes of
  // different labels never suppress each other. Returns int64 indices of the kept boxes, by decreasing score.
  m.def("nms_rotated(Tensor boxes, Tensor scores, Tensor? labels, float iou_threshold) -> Tensor");
  // Multi-scale deformable attention (Deformable DETR eq. 3). value (B,S,M,D); spatial_shapes (L,2) int64 [H,W];
  // level_start_index (L,) int64; sampling_locations (B,Q,M,L,P,2) (x,y) in [0,1]; attention_weights (B,Q,M,L,P).
  // Returns (B,Q,M*D) in value's dtype.
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, Tensor sampling_locations, "
      "Tensor attention_weights, int im2col_step) -> Tensor");
  // Gradients of ms_deform_attn w.r.t. (value, sampling_locations, attention_weights).
  m.def(
      "ms_deform_attn_backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, Tensor grad_output, int im2col_step) "
      "-> (Tensor, Tensor, Tensor)");
  // The level-table check the CUDA kernels run before launching (ms_deform_attn_checks.h), on any device: asserts,
  // without a host sync, that spatial_shapes (L,2) and level_start_index (L,) describe exactly `tokens` tokens.
  // Exposed so that tests can run it on CPU tensors, where the assert fails at once.
  m.def("_ms_deform_attn_assert_levels(Tensor spatial_shapes, Tensor level_start_index, int tokens) -> ()");
}

#ifndef ROTATED_DDETR_CUDA_ARCHS
#define ROTATED_DDETR_CUDA_ARCHS ""
#endif

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_C", "Compiled kernels of rotated_ddetr (ops are reached through torch.ops).", -1,
    nullptr};

// A plain Python module: importing it runs the static registrations above. Two constants describe the build.
PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#ifdef WITH_CUDA
  PyModule_AddObject(module, "with_cuda", Py_NewRef(Py_True));
#else
  PyModule_AddObject(module, "with_cuda", Py_NewRef(Py_False));
#endif
  PyModule_AddStringConstant(module, "cuda_archs", ROTATED_DDETR_CUDA_ARCHS);
  return module;
}
