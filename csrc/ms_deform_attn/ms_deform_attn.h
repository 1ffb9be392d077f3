// Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, eq. 3): what the CPU and CUDA kernels share.
// In: value (B,S,M,D), level shapes, sampling locations and attention weights; out: (B,Q,M*D). This header holds
// the one definition of where a location is read (bilinear, zeros outside the map, exactly grid_sample with
// align_corners=False); the input checks every kernel runs first are in ms_deform_attn_checks.h.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace rotated_ddetr::msda {

// Where a normalised location lands on one level: pixel (x*W - 0.5, y*H - 0.5), between four neighbours. This is
// the bilinear sampling of x_l at phi_l(p_hat_q) + Delta p_mlqk in eq. 3 of the paper.
template <typename T>
struct Bilinear {
  int x0, y0;  // top-left neighbour; -1 when the location lies left of / above the first pixel centre
  T fx, fy;    // position between the neighbours: the bilinear weight of the right / lower ones
  bool any;    // false when no neighbour is inside the map: nothing is read, every gradient is zero
};

template <typename T>
C10_HOST_DEVICE inline Bilinear<T> locate(T loc_x, T loc_y, int64_t height, int64_t width) {
  // Pixel centres sit at integer + 0.5 in normalised units scaled by the map size (align_corners=False).
  const T x = loc_x * static_cast<T>(width) - T(0.5);
  const T y = loc_y * static_cast<T>(height) - T(0.5);
  Bilinear<T> s{-1, -1, T(0), T(0), false};
  // Some neighbour is inside iff x in [-1, W) and y in [-1, H). The test is also false for NaN and keeps the
  // integer conversions below in range; truncation equals floor on [0, W), and floor is -1 on [-1, 0).
  if (!(x >= T(-1) && y >= T(-1) && x < static_cast<T>(width) && y < static_cast<T>(height))) return s;
  s.x0 = x >= T(0) ? static_cast<int>(x) : -1;
  s.y0 = y >= T(0) ? static_cast<int>(y) : -1;
  s.fx = x - static_cast<T>(s.x0);
  s.fy = y - static_cast<T>(s.y0);
  s.any = true;
  return s;
}

// Neighbour `c` (0: top-left, 1: top-right, 2: bottom-left, 3: bottom-right) of a located sample.
template <typename T>
struct Corner {
  int64_t token;  // row inside the level (y * W + x); meaningful only when the corner is inside
  T weight;       // bilinear weight
  T dweight_dx;   // d weight / d x in pixels
  T dweight_dy;   // d weight / d y in pixels
};

// Fills `out` and returns true when neighbour `c` lies inside the H x W map (outside pixels read as zero).
template <typename T>
C10_HOST_DEVICE inline bool corner(const Bilinear<T>& s, int c, int64_t height, int64_t width, Corner<T>& out) {
  const int dx = c & 1;
  const int dy = c >> 1;
  const int64_t x = s.x0 + dx;
  const int64_t y = s.y0 + dy;
  if (x < 0 || y < 0 || x >= width || y >= height) return false;
  const T wx = dx ? s.fx : T(1) - s.fx;
  const T wy = dy ? s.fy : T(1) - s.fy;
  out.token = y * width + x;
  out.weight = wx * wy;
  out.dweight_dx = dx ? wy : -wy;
  out.dweight_dy = dy ? wx : -wx;
  return true;
}

}  // namespace rotated_ddetr::msda
