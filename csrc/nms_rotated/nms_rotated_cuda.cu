// CUDA kernel of rotated_ddetr::nms_rotated: (N,5) rboxes, (N,) scores, optional (N,) int64 labels -> int64 indices
// of the kept boxes by decreasing score. Bitmask NMS: boxes are sorted by score (stable), then
//  1. mask kernel: block (row block, column block) of 64 x 64 boxes; thread t computes the IoU of row box t against
//     the 64 column boxes staged in shared memory and writes a 64-bit word of "suppresses" bits;
//  2. reduction kernel: one block walks the boxes in order and ORs the mask rows of the kept ones, exactly the
//     sequential greedy rule, so the result is deterministic and equals the CPU kernel's.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "common/rboxes_checks.h"
#include "common/rotated_geometry.h"

namespace rotated_ddetr {
namespace {

constexpr int kBlockBoxes = 64;  // one bit per box in a 64-bit mask word
constexpr int64_t kMaxBlocks = 65535;  // gridDim.y limit
constexpr int kReductionThreads = 256;
constexpr int64_t kDefaultSharedBytes = 48 * 1024;

template <typename scalar_t>
__global__ void nms_rotated_mask_kernel(const scalar_t* __restrict__ boxes, const int64_t* __restrict__ labels,
                                        int64_t count, int64_t blocks, scalar_t threshold,
                                        unsigned long long* __restrict__ mask) {
  const int64_t row_block = blockIdx.y;
  const int64_t col_block = blockIdx.x;
  // Only pairs (i, j > i) matter: blocks left of the diagonal have nothing to do and are never read.
  if (col_block < row_block) return;
  const int row_count = static_cast<int>(min(count - row_block * kBlockBoxes, static_cast<int64_t>(kBlockBoxes)));
  const int col_count = static_cast<int>(min(count - col_block * kBlockBoxes, static_cast<int64_t>(kBlockBoxes)));
  __shared__ scalar_t col_boxes[kBlockBoxes * 5];
  __shared__ int64_t col_labels[kBlockBoxes];
  const int t = threadIdx.x;
  if (t < col_count) {
    for (int k = 0; k < 5; ++k) col_boxes[5 * t + k] = boxes[5 * (col_block * kBlockBoxes + t) + k];
    col_labels[t] = labels != nullptr ? labels[col_block * kBlockBoxes + t] : 0;
  }
  __syncthreads();
  if (t >= row_count) return;
  const int64_t i = row_block * kBlockBoxes + t;
  scalar_t row_box[5];
  for (int k = 0; k < 5; ++k) row_box[k] = boxes[5 * i + k];
  const int64_t row_label = labels != nullptr ? labels[i] : 0;
  unsigned long long bits = 0;
  for (int k = row_block == col_block ? t + 1 : 0; k < col_count; ++k) {
    if (col_labels[k] == row_label && geometry::rotated_iou(row_box, col_boxes + 5 * k) > threshold) {
      bits |= 1ULL << k;
    }
  }
  mask[i * blocks + col_block] = bits;
}

// One block. `removed` (one word per block of 64 boxes, zeroed) is either the dynamic shared memory or, for very
// many boxes, a global buffer; __syncthreads makes both kinds of write visible to the whole block.
__global__ void nms_rotated_reduce_kernel(const unsigned long long* __restrict__ mask, int64_t count, int64_t blocks,
                                          unsigned long long* removed_global, bool* __restrict__ keep) {
  extern __shared__ unsigned long long removed_shared[];
  unsigned long long* removed = removed_global != nullptr ? removed_global : removed_shared;
  if (removed_global == nullptr) {
    for (int64_t b = threadIdx.x; b < blocks; b += blockDim.x) removed[b] = 0;
  }
  __syncthreads();
  for (int64_t block = 0; block < blocks; ++block) {
    unsigned long long removed_here = removed[block];
    __syncthreads();  // everyone has read the word before it is updated below
    const int in_block = static_cast<int>(min(count - block * kBlockBoxes, static_cast<int64_t>(kBlockBoxes)));
    for (int bit = 0; bit < in_block; ++bit) {
      if (removed_here & (1ULL << bit)) continue;
      const int64_t i = block * kBlockBoxes + bit;
      if (threadIdx.x == 0) keep[i] = true;
      const unsigned long long* row = mask + i * blocks;
      for (int64_t b = block + threadIdx.x; b < blocks; b += blockDim.x) removed[b] |= row[b];
      __syncthreads();
      removed_here = removed[block];
      __syncthreads();
    }
  }
}

at::Tensor nms_rotated_cuda(const at::Tensor& boxes, const at::Tensor& scores, const std::optional<at::Tensor>& labels,
                            double iou_threshold) {
  const bool with_labels = check_nms_inputs(boxes, scores, labels, c10::DeviceType::CUDA);
  const int64_t count = boxes.size(0);
  if (count == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const int64_t blocks = (count + kBlockBoxes - 1) / kBlockBoxes;
  TORCH_CHECK(blocks <= kMaxBlocks, "nms_rotated on CUDA handles at most ", kMaxBlocks * kBlockBoxes,
              " boxes, got ", count);
  const c10::cuda::CUDAGuard device_guard(boxes.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // Stable descending sort: equal scores keep the lower index first, as on the CPU.
  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted_boxes = boxes.index_select(0, order).contiguous();
  const at::Tensor sorted_labels = with_labels ? labels->index_select(0, order).contiguous() : at::Tensor();
  at::Tensor mask = at::empty({count * blocks}, boxes.options().dtype(at::kLong));
  auto* mask_data = reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>());
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_rotated_cuda", [&] {
    const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(blocks));
    nms_rotated_mask_kernel<scalar_t><<<grid, kBlockBoxes, 0, stream>>>(
        sorted_boxes.const_data_ptr<scalar_t>(), with_labels ? sorted_labels.const_data_ptr<int64_t>() : nullptr,
        count, blocks, static_cast<scalar_t>(iou_threshold), mask_data);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  at::Tensor keep = at::zeros({count}, boxes.options().dtype(at::kBool));
  const int64_t removed_bytes = blocks * static_cast<int64_t>(sizeof(unsigned long long));
  const bool in_shared = removed_bytes <= kDefaultSharedBytes;
  at::Tensor removed = in_shared ? at::Tensor() : at::zeros({blocks}, boxes.options().dtype(at::kLong));
  nms_rotated_reduce_kernel<<<1, kReductionThreads, in_shared ? removed_bytes : 0, stream>>>(
      mask_data, count, blocks,
      in_shared ? nullptr : reinterpret_cast<unsigned long long*>(removed.mutable_data_ptr<int64_t>()),
      keep.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // Positions in the sorted order are increasing, so the indices come out by decreasing score.
  return order.index_select(0, at::nonzero(keep).squeeze(1));
}

}  // namespace
}  // namespace rotated_ddetr

TORCH_LIBRARY_IMPL(rotated_ddetr, CUDA, m) { m.impl("nms_rotated", &rotated_ddetr::nms_rotated_cuda); }
