// CUDA kernel of rotated_ddetr::nms_rotated: (N,5) rboxes, (N,) scores, optional (N,) int64 labels -> int64 indices
// of the kept boxes by decreasing score. Boxes are sorted by score (stable), then processed in chunks of
// kChunkBoxes (4096) in order, each chunk in three launches on the stream:
//  1. mask kernel: the chunk's boxes against each other, in blocks of 64 x 64: thread t of block (row, column)
//     computes the IoU of row box t against the 64 column boxes staged in shared memory and writes a 64-bit word
//     of "suppresses" bits (upper triangle only);
//  2. reduction kernel: one block walks the chunk's boxes in order, starting from the boxes earlier chunks removed,
//     and ORs the mask rows of the kept ones: the sequential greedy rule inside the chunk;
//  3. suppression kernel: every later box not yet removed is tested against the chunk's kept boxes and removed
//     when one of them suppresses it.
// A box is kept iff no earlier kept box suppresses it, exactly as the CPU kernel's greedy loop decides (same IoU
// code, same argument order), so the result is deterministic and equal to it. Memory: the chunk's mask is a fixed
// 4096 x 64 words (2 MiB) and the rest is O(N) (a bit per box for `removed`, a byte for `keep`, the sorted copies),
// instead of the N x N/64 words (1.25 GB at 100k boxes) of an unchunked mask.
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

constexpr int kBlockBoxes = 64;   // one bit per box in a 64-bit mask word; threads per block of the kernels
constexpr int kChunkBlocks = 64;  // mask words per row of a chunk
constexpr int64_t kChunkBoxes = static_cast<int64_t>(kBlockBoxes) * kChunkBlocks;  // 4096 boxes per chunk

// Step 1 for one chunk of `count` <= kChunkBoxes boxes (pointers offset to its first box): mask row i holds
// `blocks` words, bit k of word c set when box i suppresses box 64 c + k > i (same label, IoU above threshold).
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

// Step 2: one block of kChunkBlocks threads for one chunk of `count` <= kChunkBoxes boxes, whose mask rows hold
// `blocks` words. `removed_before` holds the chunk's bits of the boxes earlier chunks removed; the walk keeps its
// own copy in shared memory (later chunks never read these words again) and sets keep[i] for the kept boxes.
__global__ void nms_rotated_reduce_kernel(const unsigned long long* __restrict__ mask, int64_t count, int blocks,
                                          const unsigned long long* __restrict__ removed_before,
                                          bool* __restrict__ keep) {
  __shared__ unsigned long long removed[kChunkBlocks];
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) removed[b] = removed_before[b];
  __syncthreads();
  for (int block = 0; block < blocks; ++block) {
    unsigned long long removed_here = removed[block];
    __syncthreads();  // everyone has read the word before it is updated below
    const int in_block = static_cast<int>(min(count - block * kBlockBoxes, static_cast<int64_t>(kBlockBoxes)));
    for (int bit = 0; bit < in_block; ++bit) {
      if (removed_here & (1ULL << bit)) continue;
      const int64_t i = static_cast<int64_t>(block) * kBlockBoxes + bit;
      if (threadIdx.x == 0) keep[i] = true;
      const unsigned long long* row = mask + i * blocks;
      for (int b = block + threadIdx.x; b < blocks; b += blockDim.x) removed[b] |= row[b];
      __syncthreads();
      removed_here = removed[block];
      __syncthreads();
    }
  }
}

// Step 3: one block of kBlockBoxes threads per 64 later boxes, the boxes after the chunk [first, first + chunk):
// thread t tests later box j against the chunk's kept boxes, staged 64 at a time in shared memory, and the block
// ORs the bits of the suppressed ones into removed[word]. `first + chunk` is a multiple of 64, so word `word`
// belongs to this block alone. Boxes already removed are skipped: a removed box is never kept, whatever else
// suppresses it.
template <typename scalar_t>
__global__ void nms_rotated_suppress_kernel(const scalar_t* __restrict__ boxes, const int64_t* __restrict__ labels,
                                            int64_t first, int64_t chunk, int64_t count, scalar_t threshold,
                                            const bool* __restrict__ keep, unsigned long long* __restrict__ removed) {
  __shared__ scalar_t kept_boxes[kBlockBoxes * 5];
  __shared__ int64_t kept_labels[kBlockBoxes];
  __shared__ bool kept[kBlockBoxes];
  __shared__ unsigned long long suppressed;
  const int t = threadIdx.x;
  const int64_t word = (first + chunk) / kBlockBoxes + blockIdx.x;
  const int64_t j = word * kBlockBoxes + t;
  const bool active = j < count && !((removed[word] >> t) & 1ULL);
  if (t == 0) suppressed = 0;
  if (__syncthreads_or(active) == 0) return;  // the whole block leaves together: nothing left to test
  scalar_t box[5];
  for (int k = 0; k < 5; ++k) box[k] = active ? boxes[5 * j + k] : scalar_t(0);
  const int64_t label = active && labels != nullptr ? labels[j] : 0;
  bool hit = false;
  for (int64_t tile = first; tile < first + chunk; tile += kBlockBoxes) {
    const int tile_count = static_cast<int>(min(first + chunk - tile, static_cast<int64_t>(kBlockBoxes)));
    __syncthreads();  // everyone is done with the previous tile
    if (t < tile_count) {
      kept[t] = keep[tile + t];
      for (int k = 0; k < 5; ++k) kept_boxes[5 * t + k] = boxes[5 * (tile + t) + k];
      kept_labels[t] = labels != nullptr ? labels[tile + t] : 0;
    }
    __syncthreads();
    // The earlier box first, as in the CPU kernel: rotated_iou works in its second argument's frame.
    for (int k = 0; active && !hit && k < tile_count; ++k) {
      hit = kept[k] && kept_labels[k] == label && geometry::rotated_iou(kept_boxes + 5 * k, box) > threshold;
    }
  }
  if (hit) atomicOr(&suppressed, 1ULL << t);
  __syncthreads();
  if (t == 0 && suppressed != 0) removed[word] |= suppressed;
}

// The kept positions (in the sorted order) of `count` sorted boxes: the three launches per chunk of the file
// comment, all on the current stream.
template <typename scalar_t>
at::Tensor chunked_nms(const at::Tensor& sorted_boxes, const int64_t* labels, int64_t count, double iou_threshold) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto options = sorted_boxes.options();
  const scalar_t* boxes = sorted_boxes.const_data_ptr<scalar_t>();
  const scalar_t threshold = static_cast<scalar_t>(iou_threshold);
  const int64_t words = (count + kBlockBoxes - 1) / kBlockBoxes;
  at::Tensor removed_tensor = at::zeros({words}, options.dtype(at::kLong));
  at::Tensor keep_tensor = at::zeros({count}, options.dtype(at::kBool));
  at::Tensor mask_tensor = at::empty({std::min(count, kChunkBoxes) * std::min(words, int64_t{kChunkBlocks})},
                                     options.dtype(at::kLong));
  auto* removed = reinterpret_cast<unsigned long long*>(removed_tensor.mutable_data_ptr<int64_t>());
  auto* mask = reinterpret_cast<unsigned long long*>(mask_tensor.mutable_data_ptr<int64_t>());
  bool* keep = keep_tensor.mutable_data_ptr<bool>();
  for (int64_t first = 0; first < count; first += kChunkBoxes) {
    const int64_t chunk = std::min(kChunkBoxes, count - first);
    const int blocks = static_cast<int>((chunk + kBlockBoxes - 1) / kBlockBoxes);
    const int64_t* chunk_labels = labels != nullptr ? labels + first : nullptr;
    nms_rotated_mask_kernel<scalar_t><<<dim3(blocks, blocks), kBlockBoxes, 0, stream>>>(
        boxes + 5 * first, chunk_labels, chunk, blocks, threshold, mask);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    nms_rotated_reduce_kernel<<<1, kChunkBlocks, 0, stream>>>(mask, chunk, blocks, removed + first / kBlockBoxes,
                                                               keep + first);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    // Only chunks before the last have later boxes, and those chunks end on a multiple of 64 (kChunkBoxes is).
    const int64_t later_words = first + chunk < count ? words - (first + chunk) / kBlockBoxes : 0;
    if (later_words > 0) {
      nms_rotated_suppress_kernel<scalar_t><<<static_cast<unsigned>(later_words), kBlockBoxes, 0, stream>>>(
          boxes, labels, first, chunk, count, threshold, keep, removed);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
  return keep_tensor;
}

at::Tensor nms_rotated_cuda(const at::Tensor& boxes, const at::Tensor& scores, const std::optional<at::Tensor>& labels,
                            double iou_threshold) {
  const bool with_labels = check_nms_inputs(boxes, scores, labels, c10::DeviceType::CUDA);
  const int64_t count = boxes.size(0);
  if (count == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  // The suppression launch has a block per 64 boxes in gridDim.x (at most 2^31 - 1).
  TORCH_CHECK(count <= static_cast<int64_t>(INT32_MAX) * kBlockBoxes, "nms_rotated on CUDA handles at most ",
              static_cast<int64_t>(INT32_MAX) * kBlockBoxes, " boxes, got ", count);
  const c10::cuda::CUDAGuard device_guard(boxes.device());
  // Stable descending sort: equal scores keep the lower index first, as on the CPU.
  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted_boxes = boxes.index_select(0, order).contiguous();
  const at::Tensor sorted_labels = with_labels ? labels->index_select(0, order).contiguous() : at::Tensor();
  const int64_t* label_data = with_labels ? sorted_labels.const_data_ptr<int64_t>() : nullptr;
  at::Tensor keep;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_rotated_cuda", [&] {
    keep = chunked_nms<scalar_t>(sorted_boxes, label_data, count, iou_threshold);
  });
  // Positions in the sorted order are increasing, so the indices come out by decreasing score.
  return order.index_select(0, at::nonzero(keep).squeeze(1));
}

}  // namespace
}  // namespace rotated_ddetr

TORCH_LIBRARY_IMPL(rotated_ddetr, CUDA, m) { m.impl("nms_rotated", &rotated_ddetr::nms_rotated_cuda); }
