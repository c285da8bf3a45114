// A minimal SIMD vocabulary for the CPU loops: the same algorithm is written
// once against these types and instantiated for plain scalars (Scalar<T>,
// width 1, any CPU) and for AVX2 (Avx2<float> 8 lanes, Avx2<double> 4 lanes),
// which the CPU code picks at run time when the processor has AVX2 and FMA.
//
// Every function of the AVX2 types carries the target attribute, so this file
// needs no -mavx2 flag and the library still runs on CPUs without AVX2.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

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
  static real fma(real a, real b, real c) { return a * b + c; }
  static index truncate(real a) { return int32_t(a); }
  static real to_real(index k) { return T(k); }
  static index add_index(index a, index b) { return a + b; }
  static index mul_index(index a, index b) { return a * b; }
  static mask less_equal_index(index a, index b) { return a <= b; }
  static T hsum(real a) { return a; }
  static void store_index(int32_t* p, index a) { *p = a; }
  static real gather(const T* base, index idx, mask m) { return m ? base[idx] : T(0); }
  // max / min return b when a is NaN, as the AVX2 instructions do
  static real max(real a, real b) { return a > b ? a : b; }
  static real min(real a, real b) { return a < b ? a : b; }
  static mask and_mask(mask a, mask b) { return a && b; }
  static index load_index(const int32_t* p) { return *p; }
  static bool any(mask m) { return m; }
  static real keep(mask m, real a) { return m ? a : T(0); }  // a where m, else 0
  static index keep_index(mask m, index k) { return m ? k : 0; }
  // Pairs (a[lane], b[lane]) stored at pairs + 2 s for s in [0, width), lane = pair_lane[s];
  // add_pair adds one such pair to two neighbouring values.
  static constexpr int pair_lane[1] = {0};
  static void store_pairs(T* pairs, real a, real b) {
    pairs[0] = a;
    pairs[1] = b;
  }
  static void add_pair(T* dst, const T* pair) {
    dst[0] += pair[0];
    dst[1] += pair[1];
  }
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
  KO_AVX2 static real fma(real a, real b, real c) { return _mm256_fmadd_ps(a, b, c); }
  KO_AVX2 static index truncate(real a) { return _mm256_cvttps_epi32(a); }
  KO_AVX2 static real to_real(index k) { return _mm256_cvtepi32_ps(k); }
  KO_AVX2 static index add_index(index a, index b) { return _mm256_add_epi32(a, b); }
  KO_AVX2 static index mul_index(index a, index b) { return _mm256_mullo_epi32(a, b); }
  KO_AVX2 static mask less_equal_index(index a, index b) {
    return _mm256_xor_si256(_mm256_cmpgt_epi32(a, b), _mm256_set1_epi32(-1));
  }
  KO_AVX2 static void store_index(int32_t* p, index a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), a); }
  KO_AVX2 static float hsum(real a) {  // fixed pairwise order: deterministic
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  KO_AVX2 static real gather(const float* base, index idx, mask m) {
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, idx, _mm256_castsi256_ps(m), 4);
  }
  KO_AVX2 static real max(real a, real b) { return _mm256_max_ps(a, b); }
  KO_AVX2 static real min(real a, real b) { return _mm256_min_ps(a, b); }
  KO_AVX2 static mask and_mask(mask a, mask b) { return _mm256_and_si256(a, b); }
  KO_AVX2 static index load_index(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  KO_AVX2 static bool any(mask m) { return !_mm256_testz_si256(m, m); }
  KO_AVX2 static real keep(mask m, real a) { return _mm256_and_ps(_mm256_castsi256_ps(m), a); }
  KO_AVX2 static index keep_index(mask m, index k) { return _mm256_and_si256(m, k); }
  static constexpr int pair_lane[8] = {0, 1, 4, 5, 2, 3, 6, 7};  // the unpack instructions' order
  KO_AVX2 static void store_pairs(float* pairs, real a, real b) {
    _mm256_storeu_ps(pairs, _mm256_unpacklo_ps(a, b));
    _mm256_storeu_ps(pairs + 8, _mm256_unpackhi_ps(a, b));
  }
  KO_AVX2 static void add_pair(float* dst, const float* pair) {  // one 64-bit load, add and store
    const __m128 sum = _mm_add_ps(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(dst))),
                                  _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(pair))));
    _mm_store_sd(reinterpret_cast<double*>(dst), _mm_castps_pd(sum));
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
  KO_AVX2 static real fma(real a, real b, real c) { return _mm256_fmadd_pd(a, b, c); }
  KO_AVX2 static index truncate(real a) { return _mm256_cvttpd_epi32(a); }
  KO_AVX2 static real to_real(index k) { return _mm256_cvtepi32_pd(k); }
  KO_AVX2 static index add_index(index a, index b) { return _mm_add_epi32(a, b); }
  KO_AVX2 static index mul_index(index a, index b) { return _mm_mullo_epi32(a, b); }
  KO_AVX2 static mask less_equal_index(index a, index b) {
    return _mm_xor_si128(_mm_cmpgt_epi32(a, b), _mm_set1_epi32(-1));
  }
  KO_AVX2 static void store_index(int32_t* p, index a) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), a); }
  KO_AVX2 static double hsum(real a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
  }
  KO_AVX2 static real gather(const double* base, index idx, mask m) {
    return _mm256_mask_i32gather_pd(_mm256_setzero_pd(), base, idx, _mm256_castsi256_pd(_mm256_cvtepi32_epi64(m)), 8);
  }
  KO_AVX2 static real max(real a, real b) { return _mm256_max_pd(a, b); }
  KO_AVX2 static real min(real a, real b) { return _mm256_min_pd(a, b); }
  KO_AVX2 static mask and_mask(mask a, mask b) { return _mm_and_si128(a, b); }
  KO_AVX2 static index load_index(const int32_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
  KO_AVX2 static bool any(mask m) { return !_mm_testz_si128(m, m); }
  KO_AVX2 static real keep(mask m, real a) { return _mm256_and_pd(_mm256_castsi256_pd(_mm256_cvtepi32_epi64(m)), a); }
  KO_AVX2 static index keep_index(mask m, index k) { return _mm_and_si128(m, k); }
  static constexpr int pair_lane[4] = {0, 2, 1, 3};  // the unpack instructions' order
  KO_AVX2 static void store_pairs(double* pairs, real a, real b) {
    _mm256_storeu_pd(pairs, _mm256_unpacklo_pd(a, b));
    _mm256_storeu_pd(pairs + 4, _mm256_unpackhi_pd(a, b));
  }
  KO_AVX2 static void add_pair(double* dst, const double* pair) {  // one 128-bit load, add and store
    _mm_storeu_pd(dst, _mm_add_pd(_mm_loadu_pd(dst), _mm_loadu_pd(pair)));
  }
};

// True when this CPU can run the Avx2<> instantiations.
inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

// Whether the CPU loops use their AVX2 builds: when the CPU has AVX2 and FMA,
// unless the environment sets KNOWN_OPS_SIMD=0 (forces the portable loops).
inline bool use_avx2() {
  static const bool enabled = [] {
    const char* env = std::getenv("KNOWN_OPS_SIMD");
    return cpu_has_avx2() && !(env != nullptr && std::strcmp(env, "0") == 0);
  }();
  return enabled;
}

}  // namespace simd
}  // namespace known_ops
