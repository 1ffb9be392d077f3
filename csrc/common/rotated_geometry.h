// Exact IoU of two rotated rectangles, shared by the CPU and CUDA kernels of box_iou_rotated and nms_rotated.
//
// rbox = (cx, cy, w, h, angle[rad]); the box-frame offset (dx, dy) sits at
// (cx + dx cos(angle) - dy sin(angle), cy + dx sin(angle) + dy cos(angle)) (DESIGN.md section 2).
//
// Method: box a's corners are written in box b's own frame (origin at b's centre, x along b's width), where b is
// the axis-aligned rectangle |x| <= w_b/2, |y| <= h_b/2. Sutherland-Hodgman clipping of a by b's four half-planes
// gives the intersection polygon; its shoelace area over the union is the IoU. Why this form:
//  - clipping is continuous in the inputs, so identical and near-identical boxes give IoU ~ 1 (detectron2 and mmcv
//    sort candidate vertices by angle, which breaks on duplicate vertices and gives 0.33..0.6 in float32);
//  - only centre differences and the angle difference enter, so coordinates far from the origin lose nothing, and
//    identical boxes are clipped exactly (relative angle exactly 0, corners exactly on b's edges): IoU exactly 1;
//  - every division is by a sum of two numbers of opposite sign or by a positive union: never NaN.
#pragma once

#include <math.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define RDDETR_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define RDDETR_HOST_DEVICE inline
#endif

namespace rotated_ddetr {
namespace geometry {

template <typename T>
struct Point {
  T x;
  T y;
};

// Each clip of an n-gon adds at most one vertex per run of outside vertices, so at most n/2 vertices: 4 -> 6 -> 9
// -> 13 after three clips, even when rounding makes near-collinear vertices flip sides. The fourth clip's output
// is streamed into the area, so 13 slots always suffice (the push guard below never drops a vertex).
constexpr int kMaxClippedVertices = 13;

RDDETR_HOST_DEVICE float cos_of(float x) { return cosf(x); }
RDDETR_HOST_DEVICE double cos_of(double x) { return cos(x); }
RDDETR_HOST_DEVICE float sin_of(float x) { return sinf(x); }
RDDETR_HOST_DEVICE double sin_of(double x) { return sin(x); }
RDDETR_HOST_DEVICE float sqrt_of(float x) { return sqrtf(x); }
RDDETR_HOST_DEVICE double sqrt_of(double x) { return sqrt(x); }

template <typename T>
struct PolygonBuffer {
  Point<T> vertices[kMaxClippedVertices];
  int count = 0;

  RDDETR_HOST_DEVICE void push(const Point<T>& p) {
    if (count < kMaxClippedVertices) vertices[count++] = p;
  }
};

// Accumulates twice the signed area of the polygon pushed vertex by vertex. Cross products are taken relative to
// the first vertex, so the rounding error scales with the polygon's size, not with its distance from b's centre.
template <typename T>
struct ShoelaceArea {
  Point<T> first{T(0), T(0)};
  Point<T> previous{T(0), T(0)};
  int count = 0;
  T twice_area = T(0);

  RDDETR_HOST_DEVICE void push(const Point<T>& p) {
    if (count == 0) {
      first = p;
    } else if (count >= 2) {
      twice_area += (previous.x - first.x) * (p.y - first.y) - (previous.y - first.y) * (p.x - first.x);
    }
    previous = p;
    ++count;
  }

  RDDETR_HOST_DEVICE T area() const { return fabs(twice_area) * T(0.5); }
};

// Clips the polygon (polygon[0..count)) by the half-plane sign * coordinate <= half_extent, where coordinate is x
// (axis 0) or y (axis 1), and pushes the result into `out`. A vertex is inside when its margin is >= 0.
template <typename T, typename Sink>
RDDETR_HOST_DEVICE void clip_by_half_plane(const Point<T>* polygon, int count, int axis, T sign, T half_extent,
                                           Sink& out) {
  if (count == 0) return;
  Point<T> previous = polygon[count - 1];
  T previous_margin = half_extent - sign * (axis == 0 ? previous.x : previous.y);
  for (int k = 0; k < count; ++k) {
    const Point<T> current = polygon[k];
    const T margin = half_extent - sign * (axis == 0 ? current.x : current.y);
    const bool inside = margin >= T(0);
    if (inside != (previous_margin >= T(0))) {
      // The margins have opposite signs, so the denominator is nonzero and t lies in [0, 1].
      const T t = previous_margin / (previous_margin - margin);
      out.push({previous.x + t * (current.x - previous.x), previous.y + t * (current.y - previous.y)});
    }
    if (inside) out.push(current);
    previous = current;
    previous_margin = margin;
  }
}

// Area of the intersection of rboxes a and b (each 5 values), both with positive width and height.
template <typename T>
RDDETR_HOST_DEVICE T intersection_area(const T* a, const T* b) {
  // Centre of a in b's frame: rotate the centre difference by -angle_b.
  const T cos_b = cos_of(b[4]);
  const T sin_b = sin_of(b[4]);
  const T ex = a[0] - b[0];
  const T ey = a[1] - b[1];
  const T cx = cos_b * ex + sin_b * ey;
  const T cy = -sin_b * ex + cos_b * ey;
  // The angle difference is taken in double so that large float32 angles do not lose the small difference.
  const T relative_angle = static_cast<T>(static_cast<double>(a[4]) - static_cast<double>(b[4]));
  const T cos_r = cos_of(relative_angle);
  const T sin_r = sin_of(relative_angle);
  const T signs_x[4] = {T(-0.5), T(0.5), T(0.5), T(-0.5)};
  const T signs_y[4] = {T(-0.5), T(-0.5), T(0.5), T(0.5)};
  Point<T> corners[4];
  for (int k = 0; k < 4; ++k) {
    const T dx = signs_x[k] * a[2];
    const T dy = signs_y[k] * a[3];
    corners[k] = {cx + dx * cos_r - dy * sin_r, cy + dx * sin_r + dy * cos_r};
  }
  const T half_w = T(0.5) * b[2];
  const T half_h = T(0.5) * b[3];
  PolygonBuffer<T> first;
  PolygonBuffer<T> second;
  clip_by_half_plane(corners, 4, 0, T(1), half_w, first);
  clip_by_half_plane(first.vertices, first.count, 0, T(-1), half_w, second);
  first.count = 0;
  clip_by_half_plane(second.vertices, second.count, 1, T(1), half_h, first);
  ShoelaceArea<T> area;
  clip_by_half_plane(first.vertices, first.count, 1, T(-1), half_h, area);
  return area.area();
}

// IoU of rboxes a and b (each 5 values) in [0, 1]: 0 when either has zero area or when they are disjoint.
template <typename T>
RDDETR_HOST_DEVICE T rotated_iou(const T* a, const T* b) {
  const T area_a = a[2] * a[3];
  const T area_b = b[2] * b[3];
  // Written so that NaN areas also return 0.
  if (!(area_a > T(0)) || !(area_b > T(0))) return T(0);
  // Boxes whose circumscribed circles do not meet cannot overlap: skip the trigonometry and the clipping.
  const T ex = a[0] - b[0];
  const T ey = a[1] - b[1];
  const T reach = T(0.5) * (sqrt_of(a[2] * a[2] + a[3] * a[3]) + sqrt_of(b[2] * b[2] + b[3] * b[3]));
  if (ex * ex + ey * ey > reach * reach) return T(0);
  const T smaller_area = area_a < area_b ? area_a : area_b;
  T inter = intersection_area(a, b);
  inter = inter < smaller_area ? inter : smaller_area;
  const T iou = inter / (area_a + area_b - inter);
  // Comparisons rather than fmin/fmax so that a NaN (from infinite inputs) also maps to 0.
  return iou > T(0) ? (iou < T(1) ? iou : T(1)) : T(0);
}

}  // namespace geometry
}  // namespace rotated_ddetr
