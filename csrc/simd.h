// A minimal SIMD vocabulary for the CPU loops: the same algorithm is written
// once against these types and instantiated for plain scalars (Scalar<T>,
// width 1, any CPU) and for AVX2 (Avx2<float> 8 lanes, Avx2<double> 4 lanes),
// which the CPU code picks at run time when the processor has AVX2 and FMA.
//
// Every function of the AVX2 types carries the target attribute, so this file
// needs no -mavx2 flag and the library still runs on CPUs without AVX2.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace known_ops {
namespace simd {

#define KO_AVX2 __attribute__((target("avx2,fma"), always_inline)) inline

// ---- width-1 reference (portable) -------------------------------------------------------------
template <typename T>
struct Scalar {
  static constexpr int width = 1;
  using real = T;
  using index = int32_t;
  using mask = bool;

  static real set(T v) { return v; }
  static real iota() { return T(0); }
  static index iota_index() { return 0; }
  static index set_index(int32_t v) { return v; }
  static real load(const T* p) { return *p; }
  static void store(T* p, real v) { *p = v; }
  static real add(real a, real b) { return a + b; }
  static real sub(real a, real b) { return a - b; }
  static real mul(real a, real b) { return a * b; }
  static real div(real a, real b) { return a / b; }
  static real fma(real a, real b, real c) { return a * b + c; }
  static real min(real a, real b) { return a < b ? a : b; }
  static real max(real a, real b) { return a > b ? a : b; }
  static real abs(real a) { return std::fabs(a); }
  static real floor(real a) { return std::floor(a); }
  static real blend(mask m, real a, real b) { return m ? b : a; }  // m ? b : a
  static mask less(real a, real b) { return a < b; }
  static index truncate(real a) { return int32_t(a); }
  static real to_real(index k) { return T(k); }
  static index add_index(index a, index b) { return a + b; }
  static index sub_index(index a, index b) { return a - b; }
  static index mul_index(index a, index b) { return a * b; }
  static index min_index(index a, index b) { return a < b ? a : b; }
  static index max_index(index a, index b) { return a > b ? a : b; }
  static mask less_equal_index(index a, index b) { return a <= b; }
  static int32_t hmax_index(index a) { return a; }
  static T hsum(real a) { return a; }
  static real gather(const T* base, index idx, mask m) { return m ? base[idx] : T(0); }
  static int32_t hmin_index(index a) { return a; }
  static void store_index(int32_t* p, index a) { *p = a; }
  // Window gathers (see Avx2) are pointless at width 1; these keep the shared
  // kernels compiling and are never called.
  struct window {
    real lo, hi;
  };
  static window load_window(const T* base, int32_t first) { return window{base[first], base[first + 1]}; }
  static window make_window(real lo, real hi) { return window{lo, hi}; }
  static real window_gather(const window& w, index rel, mask m) { return m ? (rel == 0 ? w.lo : w.hi) : T(0); }
  using slot = index;
  static slot window_slot(index rel) { return rel; }
  static real window_pick(const window& w, slot s) { return s == 0 ? w.lo : w.hi; }
  static real select(mask m, real a) { return m ? a : T(0); }
};

// ---- AVX2, float: 8 lanes -----------------------------------------------------------------------
template <typename T>
struct Avx2;

template <>
struct Avx2<float> {
  static constexpr int width = 8;
  using real = __m256;
  using index = __m256i;
  using mask = __m256i;

  KO_AVX2 static real set(float v) { return _mm256_set1_ps(v); }
  KO_AVX2 static real iota() { return _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7); }
  KO_AVX2 static index iota_index() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  KO_AVX2 static index set_index(int32_t v) { return _mm256_set1_epi32(v); }
  KO_AVX2 static real load(const float* p) { return _mm256_loadu_ps(p); }
  KO_AVX2 static void store(float* p, real v) { _mm256_storeu_ps(p, v); }
  KO_AVX2 static real add(real a, real b) { return _mm256_add_ps(a, b); }
  KO_AVX2 static real sub(real a, real b) { return _mm256_sub_ps(a, b); }
  KO_AVX2 static real mul(real a, real b) { return _mm256_mul_ps(a, b); }
  KO_AVX2 static real div(real a, real b) { return _mm256_div_ps(a, b); }
  KO_AVX2 static real fma(real a, real b, real c) { return _mm256_fmadd_ps(a, b, c); }
  KO_AVX2 static real min(real a, real b) { return _mm256_min_ps(a, b); }
  KO_AVX2 static real max(real a, real b) { return _mm256_max_ps(a, b); }
  KO_AVX2 static real abs(real a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  KO_AVX2 static real floor(real a) { return _mm256_floor_ps(a); }
  KO_AVX2 static real blend(mask m, real a, real b) { return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(m)); }
  KO_AVX2 static mask less(real a, real b) { return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
  KO_AVX2 static index truncate(real a) { return _mm256_cvttps_epi32(a); }
  KO_AVX2 static real to_real(index k) { return _mm256_cvtepi32_ps(k); }
  KO_AVX2 static index add_index(index a, index b) { return _mm256_add_epi32(a, b); }
  KO_AVX2 static index sub_index(index a, index b) { return _mm256_sub_epi32(a, b); }
  KO_AVX2 static index mul_index(index a, index b) { return _mm256_mullo_epi32(a, b); }
  KO_AVX2 static index min_index(index a, index b) { return _mm256_min_epi32(a, b); }
  KO_AVX2 static index max_index(index a, index b) { return _mm256_max_epi32(a, b); }
  KO_AVX2 static mask less_equal_index(index a, index b) {
    return _mm256_xor_si256(_mm256_cmpgt_epi32(a, b), _mm256_set1_epi32(-1));
  }
  KO_AVX2 static int32_t hmax_index(index a) {
    __m128i m = _mm_max_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(m);
  }
  KO_AVX2 static float hsum(real a) {  // fixed pairwise order: deterministic
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  KO_AVX2 static real gather(const float* base, index idx, mask m) {
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, idx, _mm256_castsi256_ps(m), 4);
  }
  KO_AVX2 static void store_index(int32_t* p, index a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), a); }
  KO_AVX2 static int32_t hmin_index(index a) {
    __m128i m = _mm_min_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    m = _mm_min_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = _mm_min_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(m);
  }
  // Hardware gathers are slow on many x86 cores; when the indices of all lanes
  // fall in a window of 16 consecutive elements, two loads and two in-register
  // permutes do the same job.  `rel` is the index relative to the window start.
  struct window {
    __m256 lo, hi;
  };
  KO_AVX2 static window load_window(const float* base, int32_t first) {
    return window{_mm256_loadu_ps(base + first), _mm256_loadu_ps(base + first + 8)};
  }
  KO_AVX2 static window make_window(real lo, real hi) { return window{lo, hi}; }
  // window_gather split in two: the slot decomposition, shared by several picks.
  struct slot {
    __m256i within, upper;
  };
  KO_AVX2 static slot window_slot(index rel) {
    return slot{_mm256_and_si256(rel, _mm256_set1_epi32(7)), _mm256_cmpgt_epi32(rel, _mm256_set1_epi32(7))};
  }
  KO_AVX2 static real window_pick(const window& w, const slot& s) {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(w.lo, s.within), _mm256_permutevar8x32_ps(w.hi, s.within),
                            _mm256_castsi256_ps(s.upper));
  }
  KO_AVX2 static real select(mask m, real a) { return _mm256_and_ps(a, _mm256_castsi256_ps(m)); }
  KO_AVX2 static real window_gather(const window& w, index rel, mask m) {
    const __m256i within = _mm256_and_si256(rel, _mm256_set1_epi32(7));
    const __m256 a = _mm256_permutevar8x32_ps(w.lo, within);
    const __m256 b = _mm256_permutevar8x32_ps(w.hi, within);
    const __m256i upper = _mm256_cmpgt_epi32(rel, _mm256_set1_epi32(7));
    return _mm256_and_ps(_mm256_blendv_ps(a, b, _mm256_castsi256_ps(upper)), _mm256_castsi256_ps(m));
  }
};

// ---- AVX2, double: 4 lanes (int32 indices in a 128-bit register) ------------------------------
template <>
struct Avx2<double> {
  static constexpr int width = 4;
  using real = __m256d;
  using index = __m128i;
  using mask = __m128i;

  KO_AVX2 static real set(double v) { return _mm256_set1_pd(v); }
  KO_AVX2 static real iota() { return _mm256_setr_pd(0, 1, 2, 3); }
  KO_AVX2 static index iota_index() { return _mm_setr_epi32(0, 1, 2, 3); }
  KO_AVX2 static index set_index(int32_t v) { return _mm_set1_epi32(v); }
  KO_AVX2 static real load(const double* p) { return _mm256_loadu_pd(p); }
  KO_AVX2 static void store(double* p, real v) { _mm256_storeu_pd(p, v); }
  KO_AVX2 static real add(real a, real b) { return _mm256_add_pd(a, b); }
  KO_AVX2 static real sub(real a, real b) { return _mm256_sub_pd(a, b); }
  KO_AVX2 static real mul(real a, real b) { return _mm256_mul_pd(a, b); }
  KO_AVX2 static real div(real a, real b) { return _mm256_div_pd(a, b); }
  KO_AVX2 static real fma(real a, real b, real c) { return _mm256_fmadd_pd(a, b, c); }
  KO_AVX2 static real min(real a, real b) { return _mm256_min_pd(a, b); }
  KO_AVX2 static real max(real a, real b) { return _mm256_max_pd(a, b); }
  KO_AVX2 static real abs(real a) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), a); }
  KO_AVX2 static real floor(real a) { return _mm256_floor_pd(a); }
  KO_AVX2 static real blend(mask m, real a, real b) {
    return _mm256_blendv_pd(a, b, _mm256_castsi256_pd(_mm256_cvtepi32_epi64(m)));
  }
  KO_AVX2 static mask less(real a, real b) {
    // 4 x 64-bit compare result -> 4 x 32-bit lanes
    const __m256 c = _mm256_castpd_ps(_mm256_cmp_pd(a, b, _CMP_LT_OQ));
    const __m256i picked = _mm256_permutevar8x32_epi32(_mm256_castps_si256(c), _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0));
    return _mm256_castsi256_si128(picked);
  }
  KO_AVX2 static index truncate(real a) { return _mm256_cvttpd_epi32(a); }
  KO_AVX2 static real to_real(index k) { return _mm256_cvtepi32_pd(k); }
  KO_AVX2 static index add_index(index a, index b) { return _mm_add_epi32(a, b); }
  KO_AVX2 static index sub_index(index a, index b) { return _mm_sub_epi32(a, b); }
  KO_AVX2 static index mul_index(index a, index b) { return _mm_mullo_epi32(a, b); }
  KO_AVX2 static index min_index(index a, index b) { return _mm_min_epi32(a, b); }
  KO_AVX2 static index max_index(index a, index b) { return _mm_max_epi32(a, b); }
  KO_AVX2 static mask less_equal_index(index a, index b) {
    return _mm_xor_si128(_mm_cmpgt_epi32(a, b), _mm_set1_epi32(-1));
  }
  KO_AVX2 static int32_t hmax_index(index a) {
    __m128i m = _mm_max_epi32(a, _mm_shuffle_epi32(a, _MM_SHUFFLE(1, 0, 3, 2)));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(m);
  }
  KO_AVX2 static double hsum(real a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
  }
  KO_AVX2 static real gather(const double* base, index idx, mask m) {
    return _mm256_mask_i32gather_pd(_mm256_setzero_pd(), base, idx, _mm256_castsi256_pd(_mm256_cvtepi32_epi64(m)), 8);
  }
  KO_AVX2 static void store_index(int32_t* p, index a) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), a); }
  KO_AVX2 static int32_t hmin_index(index a) {
    __m128i m = _mm_min_epi32(a, _mm_shuffle_epi32(a, _MM_SHUFFLE(1, 0, 3, 2)));
    m = _mm_min_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(m);
  }
  // As Avx2<float>::window_gather, over 8 consecutive doubles.
  struct window {
    __m256d lo, hi;
  };
  KO_AVX2 static window load_window(const double* base, int32_t first) {
    return window{_mm256_loadu_pd(base + first), _mm256_loadu_pd(base + first + 4)};
  }
  KO_AVX2 static window make_window(real lo, real hi) { return window{lo, hi}; }
  struct slot {
    __m256i words, upper;
  };
  KO_AVX2 static slot window_slot(index rel) {
    // Element r of 4 doubles = 32-bit words (2r, 2r + 1).
    const __m256i r64 = _mm256_cvtepi32_epi64(_mm_and_si128(rel, _mm_set1_epi32(3)));
    const __m256i twice = _mm256_slli_epi64(r64, 1);
    const __m256i words = _mm256_or_si256(twice, _mm256_slli_epi64(_mm256_add_epi64(twice, _mm256_set1_epi64x(1)), 32));
    return slot{words, _mm256_cvtepi32_epi64(_mm_cmpgt_epi32(rel, _mm_set1_epi32(3)))};
  }
  KO_AVX2 static real window_pick(const window& w, const slot& s) {
    const __m256d a = _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(w.lo), s.words));
    const __m256d b = _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(w.hi), s.words));
    return _mm256_blendv_pd(a, b, _mm256_castsi256_pd(s.upper));
  }
  KO_AVX2 static real select(mask m, real a) { return _mm256_and_pd(a, _mm256_castsi256_pd(_mm256_cvtepi32_epi64(m))); }
  KO_AVX2 static real window_gather(const window& w, index rel, mask m) {
    // Element r of 4 doubles = 32-bit words (2r, 2r + 1).
    const __m256i r64 = _mm256_cvtepi32_epi64(_mm_and_si128(rel, _mm_set1_epi32(3)));
    const __m256i twice = _mm256_slli_epi64(r64, 1);
    const __m256i words = _mm256_or_si256(twice, _mm256_slli_epi64(_mm256_add_epi64(twice, _mm256_set1_epi64x(1)), 32));
    const __m256d a = _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(w.lo), words));
    const __m256d b = _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(w.hi), words));
    const __m256i upper = _mm256_cvtepi32_epi64(_mm_cmpgt_epi32(rel, _mm_set1_epi32(3)));
    const __m256i keep = _mm256_cvtepi32_epi64(m);
    return _mm256_and_pd(_mm256_blendv_pd(a, b, _mm256_castsi256_pd(upper)), _mm256_castsi256_pd(keep));
  }
};

// True when this CPU can run the Avx2<> instantiations.
inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

}  // namespace simd
}  // namespace known_ops
