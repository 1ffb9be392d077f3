// CUDA kernel of rotated_ddetr::box_iou_rotated: (N,5) x (M,5) rboxes -> (N,M) IoU, or (N,) when aligned.
// Matrix mode is tiled: each block owns 256 columns (one boxes2 box per thread, kept in registers) and walks tiles
// of 32 boxes1 rows staged in shared memory, so every row box is read from global memory once per block and every
// warp writes 32 consecutive outputs.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "common/rboxes_checks.h"
#include "common/rotated_geometry.h"

namespace rotated_ddetr {
namespace {

constexpr int kColumnsPerBlock = 256;
constexpr int kRowsPerTile = 32;
constexpr int64_t kMaxGridY = 65535;

template <typename scalar_t>
__global__ void box_iou_rotated_matrix_kernel(const scalar_t* __restrict__ boxes1, const scalar_t* __restrict__ boxes2,
                                              int64_t rows, int64_t cols, scalar_t* __restrict__ ious) {
  __shared__ scalar_t row_tile[kRowsPerTile * 5];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kColumnsPerBlock + threadIdx.x;
  scalar_t column_box[5];
  if (col < cols) {
    for (int k = 0; k < 5; ++k) column_box[k] = boxes2[5 * col + k];
  }
  // Grid-stride over row tiles: gridDim.y is capped at 65535.
  for (int64_t row0 = static_cast<int64_t>(blockIdx.y) * kRowsPerTile; row0 < rows;
       row0 += static_cast<int64_t>(gridDim.y) * kRowsPerTile) {
    const int tile_rows = static_cast<int>(rows - row0 < kRowsPerTile ? rows - row0 : kRowsPerTile);
    __syncthreads();  // the previous tile is no longer read
    for (int k = threadIdx.x; k < tile_rows * 5; k += blockDim.x) row_tile[k] = boxes1[5 * row0 + k];
    __syncthreads();
    if (col < cols) {
      for (int r = 0; r < tile_rows; ++r) {
        ious[(row0 + r) * cols + col] = geometry::rotated_iou(row_tile + 5 * r, column_box);
      }
    }
  }
}

template <typename scalar_t>
__global__ void box_iou_rotated_aligned_kernel(const scalar_t* __restrict__ boxes1,
                                               const scalar_t* __restrict__ boxes2, int64_t count,
                                               scalar_t* __restrict__ ious) {
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < count;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    ious[k] = geometry::rotated_iou(boxes1 + 5 * k, boxes2 + 5 * k);
  }
}

at::Tensor box_iou_rotated_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2, bool aligned) {
  check_rboxes(boxes1, "boxes1", c10::DeviceType::CUDA);
  check_rboxes(boxes2, "boxes2", c10::DeviceType::CUDA);
  TORCH_CHECK(boxes1.device() == boxes2.device(), "boxes1 and boxes2 must be on the same device, got ",
              boxes1.device(), " and ", boxes2.device());
  TORCH_CHECK(boxes1.scalar_type() == boxes2.scalar_type(), "boxes1 and boxes2 must have the same dtype, got ",
              boxes1.scalar_type(), " and ", boxes2.scalar_type());
  const int64_t rows = boxes1.size(0);
  const int64_t cols = boxes2.size(0);
  TORCH_CHECK(!aligned || rows == cols, "aligned=True needs as many boxes1 as boxes2, got ", rows, " and ", cols);
  const c10::cuda::CUDAGuard device_guard(boxes1.device());
  const at::Tensor b1 = boxes1.contiguous();
  const at::Tensor b2 = boxes2.contiguous();
  at::Tensor ious = aligned ? at::empty({rows}, b1.options()) : at::empty({rows, cols}, b1.options());
  if (ious.numel() == 0) return ious;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "box_iou_rotated_cuda", [&] {
    if (aligned) {
      const int64_t blocks = std::min<int64_t>((rows + 255) / 256, 65535);
      box_iou_rotated_aligned_kernel<scalar_t><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
          b1.const_data_ptr<scalar_t>(), b2.const_data_ptr<scalar_t>(), rows, ious.mutable_data_ptr<scalar_t>());
    } else {
      const dim3 grid(static_cast<unsigned>((cols + kColumnsPerBlock - 1) / kColumnsPerBlock),
                      static_cast<unsigned>(std::min((rows + kRowsPerTile - 1) / kRowsPerTile, kMaxGridY)));
      box_iou_rotated_matrix_kernel<scalar_t><<<grid, kColumnsPerBlock, 0, stream>>>(
          b1.const_data_ptr<scalar_t>(), b2.const_data_ptr<scalar_t>(), rows, cols,
          ious.mutable_data_ptr<scalar_t>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return ious;
}

}  // namespace
}  // namespace rotated_ddetr

TORCH_LIBRARY_IMPL(rotated_ddetr, CUDA, m) { m.impl("box_iou_rotated", &rotated_ddetr::box_iou_rotated_cuda); }
