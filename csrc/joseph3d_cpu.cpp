// CPU loops of the 3D Joseph projector pair; the arithmetic is in joseph3d.h.
//
// No table of rays is stored: each ray's entry is computed from its view's
// frame when it is needed (a few dozen flops against a march of hundreds of
// samples), so the memory is the input plus the output.
//
// Forward: ray-driven; threads take (view, detector row) items.
//
// Adjoint: the literal transpose (scatter along each ray), with the volume cut
// into slabs of slices that threads take one at a time; the slabs depend on the
// volume's size only.  A slab receives the taps of every ray that reaches it,
// in the order (view, row, column, sample) whatever the slab size, so the
// result is bitwise the same for any number of threads (and any slab size),
// and needs neither private buffers nor atomics.  The rays that can
// reach a slab are found by projecting the slab's corners on the detector.
//
// The pixel-driven (gather) form of the adjoint, which the CUDA kernels use,
// runs here too as joseph3d_adjoint_gather, so the CPU tests check its math.
#include "joseph3d_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu_parallel.h"
#include "joseph3d.h"
#include "simd.h"

namespace known_ops {
namespace {

// Slabs of the adjoint (adjoint3d_impl).  Every ray that reaches a slab costs
// one ray set-up there, so thin slabs repeat set-ups, while thick ones fall out
// of cache; measured on one thread (cone beam, 64^3 to 256^3 voxels), 6 to 16
// slices were within noise of each other, 2 and 4 slower, 32 slower at 128^3.
constexpr int64_t kMinSlabs = 8, kMaxSlabThickness = 8;

#define KO_KERNELS "joseph3d_cpu_kernels.inc"
#include "simd_builds.inc"  // namespaces portable and avx2

// The major indices [*i0, *i1] at which all four taps of a sample lie inside
// the volume: positions in [0, n_b - 1) and [0, n_c - 1), shrunk by a margin
// that covers the rounding of alpha + beta m in float32.  Depends on the ray
// alone, so each sample takes the same (SIMD or checked) path in every kernel.
template <typename T>
void interior_range(const T* ray, const Axes3<>& ax, int64_t n_major, int64_t* i0, int64_t* i1) {
  int64_t f0, f1, g0, g1;
  const double ab = ray[ray3::kAlphaB], bb = ray[ray3::kBetaB], ac = ray[ray3::kAlphaC], bc = ray[ray3::kBetaC];
  const double eps_b = 1e-5 * (1.0 + std::abs(ab) + std::abs(bb) * n_major + ax.n_b);
  const double eps_c = 1e-5 * (1.0 + std::abs(ac) + std::abs(bc) * n_major + ax.n_c);
  clip_march_known(ab, bb, eps_b, ax.n_b - 1 - eps_b, n_major, &f0, &f1);
  clip_march_known(ac, bc, eps_c, ax.n_c - 1 - eps_c, n_major, &g0, &g1);
  *i0 = std::max(f0, g0);
  *i1 = std::min(f1, g1);
}

// march3d_interior for float with AVX2 when a sample's two minor-c taps are
// neighbours in memory (stride_c == 1): each pair is one 64-bit element, so
// 8 samples take four 4-element gathers instead of four 8-element ones
// (gathers cost per element on x86).  The arithmetic is march3d_interior's,
// operation for operation, so the result is the same to the bit.
__attribute__((target("avx2,fma"))) float march3d_interior_pairs(const float* vol, const Axes3<>& ax,
                                                                  const float* ray, int64_t m0, int64_t m1) {
  const __m256 alpha_b = _mm256_set1_ps(ray[ray3::kAlphaB]), beta_b = _mm256_set1_ps(ray[ray3::kBetaB]);
  const __m256 alpha_c = _mm256_set1_ps(ray[ray3::kAlphaC]), beta_c = _mm256_set1_ps(ray[ray3::kBetaC]);
  const __m256 lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i stride_m = _mm256_set1_epi32(int32_t(ax.stride_m)), stride_b = _mm256_set1_epi32(int32_t(ax.stride_b));
  const __m256i last = _mm256_set1_epi32(int32_t(m1));
  const auto* pairs = reinterpret_cast<const long long*>(vol);
  const auto* pairs_b = reinterpret_cast<const long long*>(vol + ax.stride_b);
  // (pair lo, pair hi) of 4 samples each -> (first taps, second taps) of the 8 samples
  const auto split = [](__m256i lo, __m256i hi, __m256* first, __m256* second) __attribute__((target("avx2,fma"))) {
    const __m256 x = _mm256_castsi256_ps(lo), y = _mm256_castsi256_ps(hi);
    *first = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(x, y, 0x88)), 0xD8));
    *second = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(x, y, 0xDD)), 0xD8));
  };
  __m256 acc = _mm256_setzero_ps();
  for (int64_t m = m0; m <= m1; m += 8) {
    const __m256 mf = _mm256_add_ps(_mm256_set1_ps(float(m)), lane);
    const __m256 pb = _mm256_fmadd_ps(beta_b, mf, alpha_b), pc = _mm256_fmadd_ps(beta_c, mf, alpha_c);
    const __m256i ib = _mm256_cvttps_epi32(pb), ic = _mm256_cvttps_epi32(pc);
    const __m256 fb = _mm256_sub_ps(pb, _mm256_cvtepi32_ps(ib)), fc = _mm256_sub_ps(pc, _mm256_cvtepi32_ps(ic));
    const __m256i mi = _mm256_add_epi32(_mm256_set1_epi32(int32_t(m)), lane_index);
    const __m256i valid = _mm256_xor_si256(_mm256_cmpgt_epi32(mi, last), _mm256_set1_epi32(-1));
    const __m256i offset =
        _mm256_add_epi32(_mm256_add_epi32(_mm256_mullo_epi32(mi, stride_m), _mm256_mullo_epi32(ib, stride_b)), ic);
    const __m128i off_lo = _mm256_castsi256_si128(offset), off_hi = _mm256_extracti128_si256(offset, 1);
    const __m256i mask_lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(valid));
    const __m256i mask_hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(valid, 1));
    const __m256i zero = _mm256_setzero_si256();
    __m256 v00, v01, v10, v11;
    split(_mm256_mask_i32gather_epi64(zero, pairs, off_lo, mask_lo, 4),
          _mm256_mask_i32gather_epi64(zero, pairs, off_hi, mask_hi, 4), &v00, &v01);
    split(_mm256_mask_i32gather_epi64(zero, pairs_b, off_lo, mask_lo, 4),
          _mm256_mask_i32gather_epi64(zero, pairs_b, off_hi, mask_hi, 4), &v10, &v11);
    const __m256 lower = _mm256_fmadd_ps(fc, _mm256_sub_ps(v01, v00), v00);
    const __m256 upper = _mm256_fmadd_ps(fc, _mm256_sub_ps(v11, v10), v10);
    acc = _mm256_add_ps(acc, _mm256_fmadd_ps(fb, _mm256_sub_ps(upper, lower), lower));
  }
  return simd::Avx2<float>::hsum(acc);
}

// Sum along a ray over [m0, m1] (weighted by w): the interior with the SIMD
// (or portable) loop, the ends with the checked loop.
template <typename T>
T ray_sum(bool simd, const T* vol, const Axes3<>& ax, const T* ray, int64_t n_major, int64_t m0, int64_t m1) {
  if (m0 > m1) return T(0);
  int64_t i0, i1;
  interior_range(ray, ax, n_major, &i0, &i1);
  i0 = std::max(i0, m0);
  i1 = std::min(i1, m1);
  if (i0 > i1) return march3d(vol, ax, ray, m0, m1);
  T inner;
  if constexpr (std::is_same_v<T, float>) {
    if (simd && ax.stride_c == 1)
      inner = march3d_interior_pairs(vol, ax, ray, i0, i1);
    else
      inner = simd ? avx2::march3d_interior<simd::Avx2<T>, T>(vol, ax, ray, i0, i1)
                   : portable::march3d_interior<simd::Scalar<T>, T>(vol, ax, ray, i0, i1);
  } else {
    inner = simd ? avx2::march3d_interior<simd::Avx2<T>, T>(vol, ax, ray, i0, i1)
                 : portable::march3d_interior<simd::Scalar<T>, T>(vol, ax, ray, i0, i1);
  }
  return march3d(vol, ax, ray, m0, i0 - 1) + inner * ray[ray3::kW] + march3d(vol, ax, ray, i1 + 1, m1);
}

// Transpose of ray_sum over [m0, m1], writing only the taps whose minor-b
// index lies in [b_lo, b_hi) (the caller's slab).  Which samples take the
// SIMD loop depends on the ray alone, never on the slab, so every sample's
// weights are the same whatever the slabs (bitwise thread-count independence).
template <typename T>
void ray_scatter(bool simd, T* vol, const Axes3<>& ax, const T* ray, int64_t n_major, int64_t m0, int64_t m1, T value,
                 int64_t b_lo, int64_t b_hi) {
  if (m0 > m1) return;
  int64_t i0, i1;
  interior_range(ray, ax, n_major, &i0, &i1);
  i0 = std::max(i0, m0);
  i1 = std::min(i1, m1);
  if (i0 > i1) return scatter3d(vol, ax, ray, m0, m1, value, b_lo, b_hi);
  scatter3d(vol, ax, ray, m0, i0 - 1, value, b_lo, b_hi);
  const T wv = value * ray[ray3::kW];
  if (simd)
    avx2::scatter3d_interior<simd::Avx2<T>, T>(vol, ax, ray, i0, i1, wv, b_lo, b_hi);
  else
    portable::scatter3d_interior<simd::Scalar<T>, T>(vol, ax, ray, i0, i1, wv, b_lo, b_hi);
  scatter3d(vol, ax, ray, i1 + 1, m1, value, b_lo, b_hi);
}

int64_t volume_size(const int64_t* n) { return n[0] * n[1] * n[2]; }

// Copies each volume (nz, ny, nx) into `swapped` as (nz, nx, ny): x and y
// exchanged, by tiles so that both sides stay in cache.
template <typename T>
void swap_xy(const T* vol, T* swapped, int64_t batch, const int64_t* n) {
  constexpr int64_t kTile = 32;
  at::parallel_for(0, batch * n[0], 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* src = vol + p * n[1] * n[2];
      T* dst = swapped + p * n[1] * n[2];
      for (int64_t i0 = 0; i0 < n[1]; i0 += kTile)
        for (int64_t j0 = 0; j0 < n[2]; j0 += kTile)
          for (int64_t j = j0; j < std::min(j0 + kTile, n[2]); ++j)
            for (int64_t i = i0; i < std::min(i0 + kTile, n[1]); ++i) dst[j * n[1] + i] = src[i * n[2] + j];
    }
  });
}

// x-major rays read a copy of the volume with x and y exchanged, in which
// their minor-c (y) taps are neighbours in memory as those of the other rays
// are in the volume itself, so every ray takes the pair-gather loop (float).
// The copy costs the input's size in memory and one pass over it.
template <typename T>
void forward3d_impl(const T* vol, const double* frames, T* out, int64_t batch, int64_t n_views, int64_t n_rows,
                    int64_t n_cols, const int64_t* n) {
  const int64_t vol_size = volume_size(n), proj_size = n_views * n_rows * n_cols;
  const bool simd = simd::use_avx2() && vol_size < std::numeric_limits<int32_t>::max();  // int32 gather offsets
  const bool use_pairs = simd && std::is_same_v<T, float>;
  std::vector<T> swapped(use_pairs ? batch * vol_size : 0);
  if (use_pairs) swap_xy(vol, swapped.data(), batch, n);
  const int64_t stride[3] = {n[1] * n[2], n[2], 1}, stride_swapped[3] = {n[1] * n[2], 1, n[1]};
  parallel_items(n_views * n_rows, [&](int64_t t0, int64_t t1) {
    T ray[RAY3_FIELDS];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t v = t / n_rows, row = t % n_rows;
      const double* f = frames + v * FRAME3_FIELDS;
      for (int64_t col = 0; col < n_cols; ++col) {
        make_ray3d_as(f, row, col, ray);
        const int major = int(ray[ray3::kMajor]);
        const bool use_swapped = use_pairs && major == 2;
        const Axes3<> ax = axes_of(major, n, use_swapped ? stride_swapped : stride);
        const T* src = use_swapped ? swapped.data() : vol;
        int64_t m0, m1;
        march_range(ray, n[major], &m0, &m1);
        for (int64_t b = 0; b < batch; ++b)
          out[b * proj_size + t * n_cols + col] = ray_sum(simd, src + b * vol_size, ax, ray, n[major], m0, m1);
      }
    }
  });
}

// The frames in the data's precision (the detector boxes are computed in it).
template <typename T>
std::vector<T> frames_as(const double* frames, int64_t n_views) {
  return std::vector<T>(frames, frames + n_views * FRAME3_FIELDS);
}

template <typename T>
void adjoint3d_impl(const T* proj, const double* frames, T* out, int64_t batch, int64_t n_views, int64_t n_rows,
                    int64_t n_cols, const int64_t* n) {
  const int64_t vol_size = volume_size(n), proj_size = n_views * n_rows * n_cols;
  std::fill(out, out + batch * vol_size, T(0));
  // The split depends on the volume alone, never on the thread count: at
  // least kMinSlabs slabs to share, at most kMaxSlabThickness slices thick.
  const int64_t thickness = std::min(kMaxSlabThickness, (n[0] + kMinSlabs - 1) / kMinSlabs);
  const int64_t n_slabs = (n[0] + thickness - 1) / thickness;
  const std::vector<T> frames_t = frames_as<T>(frames, n_views);
  const bool simd = simd::use_avx2() && vol_size < std::numeric_limits<int32_t>::max();  // int32 offsets
  parallel_items(n_slabs, [&](int64_t s0, int64_t s1) {
    T ray[RAY3_FIELDS];
    for (int64_t slab = s0; slab < s1; ++slab) {
      const int64_t k0 = slab * thickness, k1 = std::min(n[0], k0 + thickness);
      // Every sample with a tap in slices [k0, k1) lies in this box (index coordinates).
      T corners[8][3];
      for (int q = 0; q < 8; ++q) {
        corners[q][0] = T((q & 1) ? k1 : k0 - 1);
        corners[q][1] = T((q & 2) ? n[1] : -1);
        corners[q][2] = T((q & 4) ? n[2] : -1);
      }
      for (int64_t v = 0; v < n_views; ++v) {
        const double* f = frames + v * FRAME3_FIELDS;
        T clo, chi, rlo, rhi;
        detector_box(frames_t.data() + v * FRAME3_FIELDS, corners, &clo, &chi, &rlo, &rhi);
        int64_t c0, c1, r0, r1;
        index_range(clo, chi, n_cols, &c0, &c1);
        index_range(rlo, rhi, n_rows, &r0, &r1);
        for (int64_t row = r0; row <= r1; ++row) {
          for (int64_t col = c0; col <= c1; ++col) {
            make_ray3d_as(f, row, col, ray);
            const int major = int(ray[ray3::kMajor]);
            const Axes3<> ax = axes_of(major, n);
            int64_t m0, m1;
            march_range(ray, n[major], &m0, &m1);
            if (m0 > m1) continue;  // a ray that misses the volume
            int64_t b_lo = 0, b_hi = ax.n_b;
            if (major == 0) {  // the ray steps through the slices: keep this slab's
              m0 = std::max(m0, k0);
              m1 = std::min(m1, k1 - 1);
            } else {  // the slice index is the minor axis b: keep samples with a tap in [k0, k1)
              int64_t f0, f1;
              clip_march_known(double(ray[ray3::kAlphaB]), double(ray[ray3::kBetaB]), double(k0) - 1.01,
                               double(k1) + 0.01, n[major], &f0, &f1);
              m0 = std::max(m0, f0);
              m1 = std::min(m1, f1);
              b_lo = k0;
              b_hi = k1;
            }
            if (m0 > m1) continue;
            const int64_t pixel = (v * n_rows + row) * n_cols + col;
            for (int64_t b = 0; b < batch; ++b)
              ray_scatter(simd, out + b * vol_size, ax, ray, n[major], m0, m1, proj[b * proj_size + pixel], b_lo, b_hi);
          }
        }
      }
    }
  });
}

template <typename T>
void adjoint3d_gather_impl(const T* proj, const double* frames, T* out, int64_t batch, int64_t n_views,
                           int64_t n_rows, int64_t n_cols, const int64_t* n) {
  const int64_t vol_size = volume_size(n), view_size = n_rows * n_cols;
  // The ray table of every view and the set of major axes in each, as the CUDA kernel builds them.
  std::vector<T> rays(n_views * view_size * RAY3_FIELDS);
  std::vector<int> majors(n_views, 0);
  at::parallel_for(0, n_views, 1, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v)
      for (int64_t p = 0; p < view_size; ++p) {
        T* ray = rays.data() + (v * view_size + p) * RAY3_FIELDS;
        make_ray3d_as(frames + v * FRAME3_FIELDS, p / n_cols, p % n_cols, ray);
        majors[v] |= 1 << int(ray[ray3::kMajor]);
      }
  });
  const std::vector<T> frames_t = frames_as<T>(frames, n_views);
  at::parallel_for(0, batch * n[0] * n[1], 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / (n[0] * n[1]), k = (t / n[1]) % n[0], i = t % n[1];
      for (int64_t j = 0; j < n[2]; ++j) {
        T acc = T(0);
        for (int64_t v = 0; v < n_views; ++v)
          acc += gather_view3d(frames_t.data() + v * FRAME3_FIELDS, rays.data() + v * view_size * RAY3_FIELDS,
                               proj + (b * n_views + v) * view_size, n_rows, n_cols, majors[v], k, i, j);
        out[b * vol_size + (k * n[1] + i) * n[2] + j] = acc;
      }
    }
  });
}

void check_frames(const at::Tensor& data, const at::Tensor& frames, const char* name) {
  TORCH_CHECK(data.scalar_type() == at::kFloat || data.scalar_type() == at::kDouble, "joseph3d: ", name,
              " must be float32 or float64, got ", data.scalar_type());
  TORCH_CHECK(frames.dim() == 2 && frames.size(1) == FRAME3_FIELDS, "joseph3d: frames must have shape (n_views, ",
              FRAME3_FIELDS, "), got ", frames.sizes());
  TORCH_CHECK(frames.scalar_type() == at::kDouble, "joseph3d: frames must be float64, got ", frames.scalar_type());
  TORCH_CHECK(frames.device() == data.device(), "joseph3d: ", name, " and frames must be on the same device");
}

// The frames must have been built for this volume and detector, and hold
// numbers the kernels can use (frame3d_problem, in the data's precision).
// Checked where the frames are readable without a device synchronisation
// (CPU); on CUDA the Python layer builds frames and shapes together, and the
// kernels skip rays they cannot march (make_ray3d).
void check_frames_shapes(const at::Tensor& frames, at::ScalarType dtype, int64_t nz, int64_t ny, int64_t nx,
                         int64_t n_rows, int64_t n_cols) {
  if (!frames.device().is_cpu()) return;
  auto fr = frames.contiguous();
  const double* f = fr.data_ptr<double>();
  for (int64_t v = 0; v < fr.size(0); ++v, f += FRAME3_FIELDS) {
    TORCH_CHECK(f[frame3::kShape] == double(nz) && f[frame3::kShape + 1] == double(ny) &&
                    f[frame3::kShape + 2] == double(nx),
                "joseph3d: the frames were built for another volume shape than (", nz, ", ", ny, ", ", nx, ")");
    TORCH_CHECK(f[frame3::kDetShape] == double(n_rows) && f[frame3::kDetShape + 1] == double(n_cols),
                "joseph3d: the frames were built for another detector shape than (", n_rows, ", ", n_cols, ")");
    const char* problem = dtype == at::kFloat ? frame3d_problem<float>(f, nz, ny, nx, n_rows, n_cols)
                                              : frame3d_problem<double>(f, nz, ny, nx, n_rows, n_cols);
    TORCH_CHECK(problem == nullptr, "joseph3d: frame ", v, " cannot be used: ", problem,
                " (frames come from joseph3d_frames, as known_ops.RayTransform builds them)");
  }
}

template <typename Impl>
at::Tensor run_adjoint(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny, int64_t nx,
                       const char* name, Impl impl_of_type) {
  check_joseph3d_adjoint_inputs(proj, frames, nz, ny, nx);
  TORCH_CHECK(proj.device().is_cpu(), name, ": expected CPU tensors");
  const int64_t batch = proj.size(0), n_views = proj.size(1), n_rows = proj.size(2), n_cols = proj.size(3);
  auto p = proj.contiguous();
  auto fr = frames.contiguous();
  auto out = at::empty({batch, nz, ny, nx}, proj.options());
  if (out.numel() == 0 || p.numel() == 0) return out.zero_();
  const int64_t n[3] = {nz, ny, nx};
  AT_DISPATCH_FLOATING_TYPES(proj.scalar_type(), "joseph3d_adjoint_cpu", [&] {
    impl_of_type(scalar_t(0))(p.data_ptr<scalar_t>(), fr.data_ptr<double>(), out.data_ptr<scalar_t>(), batch,
                              n_views, n_rows, n_cols, n);
  });
  return out;
}

}  // namespace

at::Tensor joseph3d_frames(const at::Tensor& vectors, int64_t kind, int64_t n_rows, int64_t n_cols, int64_t nz,
                           int64_t ny, int64_t nx, at::ArrayRef<double> spacing_offset) {
  TORCH_CHECK(vectors.dim() == 2 && vectors.size(1) == VEC3_FIELDS,
              "joseph3d_frames: vectors must have shape (n_views, 12)");
  TORCH_CHECK(vectors.scalar_type() == at::kDouble && vectors.device().is_cpu(),
              "joseph3d_frames: vectors must be a float64 CPU tensor");
  TORCH_CHECK(kind >= kParallel && kind <= kFanCurved, "joseph3d_frames: unknown geometry kind ", kind);
  TORCH_CHECK(n_rows >= 1 && n_cols >= 1 && nz >= 1 && ny >= 1 && nx >= 1, "joseph3d_frames: sizes must be positive");
  TORCH_CHECK(spacing_offset.size() == 6, "joseph3d_frames: expected [sz, sy, sx, oz, oy, ox]");
  for (int q = 0; q < 6; ++q)
    TORCH_CHECK(std::isfinite(spacing_offset[q]) && (q >= 3 || spacing_offset[q] > 0),
                "joseph3d_frames: the voxel spacing [sz, sy, sx] must be positive and finite and the offset [oz, oy, "
                "ox] finite, got ", spacing_offset[q], " at position ", q);
  {
    auto vec = vectors.contiguous();
    const double* p = vec.data_ptr<double>();
    for (int64_t q = 0; q < vec.numel(); ++q)
      TORCH_CHECK(std::isfinite(p[q]), "joseph3d_frames: the vectors must be finite, got a non-finite value in view ",
                  q / VEC3_FIELDS);
  }
  const Grid3D grid{{nz, ny, nx},
                    {spacing_offset[0], spacing_offset[1], spacing_offset[2]},
                    {spacing_offset[3], spacing_offset[4], spacing_offset[5]}};
  auto vec = vectors.contiguous();
  const int64_t n_views = vec.size(0);
  auto frames = at::empty({n_views, FRAME3_FIELDS}, vec.options());
  for (int64_t v = 0; v < n_views; ++v)
    make_frame3d(kind, vec.data_ptr<double>() + v * VEC3_FIELDS, n_rows, n_cols, grid,
                 frames.data_ptr<double>() + v * FRAME3_FIELDS);
  // Vectors whose lengths are extreme beside the voxel spacing overflow here
  // (known_ops bounds the geometry's lengths, so that its frames never do).
  for (int64_t v = 0; v < n_views; ++v) {
    const char* problem = frame3d_setup_problem<double>(frames.data_ptr<double>() + v * FRAME3_FIELDS, n_rows, n_cols);
    TORCH_CHECK(problem == nullptr, "joseph3d_frames: the frame of view ", v, " cannot be used: ", problem,
                " (the geometry's lengths are too large, or the voxel spacing too small, for the other; or its vectors "
                "are degenerate)");
  }
  return frames;
}

at::Tensor joseph3d_forward_cpu(const at::Tensor& volume, const at::Tensor& frames, int64_t n_rows, int64_t n_cols) {
  check_joseph3d_forward_inputs(volume, frames, n_rows, n_cols);
  TORCH_CHECK(volume.device().is_cpu(), "joseph3d_forward_cpu: expected CPU tensors");
  const int64_t batch = volume.size(0), n_views = frames.size(0);
  const int64_t n[3] = {volume.size(1), volume.size(2), volume.size(3)};
  auto vol = volume.contiguous();
  auto fr = frames.contiguous();
  auto out = at::empty({batch, n_views, n_rows, n_cols}, volume.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(volume.scalar_type(), "joseph3d_forward_cpu", [&] {
    forward3d_impl<scalar_t>(vol.data_ptr<scalar_t>(), fr.data_ptr<double>(), out.data_ptr<scalar_t>(), batch,
                             n_views, n_rows, n_cols, n);
  });
  return out;
}

at::Tensor joseph3d_adjoint_cpu(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny, int64_t nx) {
  return run_adjoint(proj, frames, nz, ny, nx, "joseph3d_adjoint_cpu",
                     [](auto zero) { return adjoint3d_impl<decltype(zero)>; });
}

at::Tensor joseph3d_adjoint_gather_cpu(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny,
                                       int64_t nx) {
  return run_adjoint(proj, frames, nz, ny, nx, "joseph3d_adjoint_gather_cpu",
                     [](auto zero) { return adjoint3d_gather_impl<decltype(zero)>; });
}

void check_joseph3d_forward_inputs(const at::Tensor& volume, const at::Tensor& frames, int64_t n_rows,
                                   int64_t n_cols) {
  TORCH_CHECK(volume.dim() == 4, "joseph3d: volume must have shape (batch, nz, ny, nx), got ", volume.sizes());
  check_frames(volume, frames, "volume");
  TORCH_CHECK(n_rows >= 1 && n_cols >= 1, "joseph3d: detector size must be positive");
  check_frames_shapes(frames, volume.scalar_type(), volume.size(1), volume.size(2), volume.size(3), n_rows, n_cols);
}

void check_joseph3d_adjoint_inputs(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny,
                                   int64_t nx) {
  TORCH_CHECK(proj.dim() == 4, "joseph3d: projections must have shape (batch, n_views, n_rows, n_cols), got ",
              proj.sizes());
  check_frames(proj, frames, "projections");
  TORCH_CHECK(frames.size(0) == proj.size(1), "joseph3d: projections have ", proj.size(1), " views but frames ",
              frames.size(0));
  TORCH_CHECK(nz >= 1 && ny >= 1 && nx >= 1, "joseph3d: volume size must be positive");
  check_frames_shapes(frames, proj.scalar_type(), nz, ny, nx, proj.size(2), proj.size(3));
}

}  // namespace known_ops
