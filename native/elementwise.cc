// Vectorised exp: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two parts so n·ln2 is exact),
// exp(r) by Cephes' degree-6 minimax polynomial (expf.c, S. Moshier), 2^n built in the exponent
// bits — in two factors so that results down to the subnormal range stay exact.
#include "elementwise.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

namespace tfalign {
namespace {

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kMaxX = 88.7228394f;  // expf(x) overflows above this
constexpr float kMinX = -104.0f;      // expf(x) rounds to 0 below this

__attribute__((target("avx2,fma"))) inline __m256 exp8(__m256 x) {
  const __m256 isNan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  const __m256 overflow = _mm256_cmp_ps(x, _mm256_set1_ps(kMaxX), _CMP_GT_OQ);
  __m256 xc = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(kMaxX)), _mm256_set1_ps(kMinX));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(1.9875691500E-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
  const __m256 r2 = _mm256_mul_ps(r, r);
  p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));  // 1 + r + r²·P(r)
  // 2^n = 2^n1 · 2^n2 with n1 = ⌊n/2⌋, n2 = n − n1: each factor a normal float for n in [−150, 128].
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), overflow);
  return _mm256_blendv_ps(y, x, isNan);
}

__attribute__((target("avx2,fma"))) void expRange(const float* x, float* out, int64_t begin, int64_t end) {
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) _mm256_storeu_ps(out + i, exp8(_mm256_loadu_ps(x + i)));
  if (i < end) {  // tail: through a padded lane buffer
    alignas(32) float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::copy(x + i, x + end, buf);
    _mm256_store_ps(buf, exp8(_mm256_load_ps(buf)));
    std::copy(buf, buf + (end - i), out + i);
  }
}

/** Σ of n contiguous floats: 4 × 8 lanes of partial sums, then the lanes, then the tail. */
__attribute__((target("avx2,fma"))) float sumContiguous(const float* x, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm256_add_ps(acc0, _mm256_loadu_ps(x + i));
    acc1 = _mm256_add_ps(acc1, _mm256_loadu_ps(x + i + 8));
    acc2 = _mm256_add_ps(acc2, _mm256_loadu_ps(x + i + 16));
    acc3 = _mm256_add_ps(acc3, _mm256_loadu_ps(x + i + 24));
  }
  const __m256 acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  for (; i < n; i++) total += x[i];
  return total;
}

/** Columns [c0, c1) of out[a, :] = Σ_r x[a, r, :] for a in [a0, a1). */
__attribute__((target("avx2,fma"))) void sumColumns(const float* x, float* out, int64_t a0, int64_t a1, int64_t R, int64_t C, int64_t c0, int64_t c1) {
  for (int64_t a = a0; a < a1; a++) {
    float* o = out + a * C;
    const float* base = x + a * R * C;
    for (int64_t c = c0; c < c1; c++) o[c] = 0.f;
    for (int64_t r = 0; r < R; r++) {
      const float* row = base + r * C;
      int64_t c = c0;
      for (; c + 8 <= c1; c += 8) _mm256_storeu_ps(o + c, _mm256_add_ps(_mm256_loadu_ps(o + c), _mm256_loadu_ps(row + c)));
      for (; c < c1; c++) o[c] += row[c];
    }
  }
}

void sumRange(const float* x, float* out, int64_t a0, int64_t a1, int64_t R, int64_t C, int64_t c0, int64_t c1) {
  if (C == 1) {
    for (int64_t a = a0; a < a1; a++) out[a] = sumContiguous(x + a * R, R);
  } else {
    sumColumns(x, out, a0, a1, R, C, c0, c1);
  }
}

}  // namespace

void sumMiddleAxis(const float* x, float* out, int64_t A, int64_t R, int64_t C, int numThreads) {
  const int64_t total = A * R * C;
  int64_t numParts = std::max<int64_t>(1, std::min<int64_t>(numThreads, total / (1 << 18)));
  // Split the outer index when there are enough of them, else the columns (in 8-wide groups).
  const bool splitOuter = A >= numParts;
  if (!splitOuter) numParts = std::max<int64_t>(1, std::min<int64_t>(numParts, C / 8));
  if (numParts == 1) return sumRange(x, out, 0, A, R, C, 0, C);
  std::vector<std::thread> helpers;
  auto bounds = [&](int64_t p, int64_t extent, int64_t unit) {
    const int64_t units = (extent + unit - 1) / unit;
    return std::make_pair(std::min(extent, units * p / numParts * unit), std::min(extent, units * (p + 1) / numParts * unit));
  };
  for (int64_t p = 0; p < numParts; p++) {
    auto [lo, hi] = bounds(p, splitOuter ? A : C, splitOuter ? 1 : 8);
    if (lo >= hi) continue;
    if (splitOuter) helpers.emplace_back(sumRange, x, out, lo, hi, R, C, 0, C);
    else helpers.emplace_back(sumRange, x, out, 0, A, R, C, lo, hi);
  }
  for (auto& h : helpers) h.join();
}

void expArray(const float* x, float* out, int64_t count, int numThreads) {
  // Below ~256 K values a thread start costs more than it saves.
  const int64_t numParts = std::max<int64_t>(1, std::min<int64_t>(numThreads, count / (1 << 18)));
  if (numParts == 1) return expRange(x, out, 0, count);
  std::vector<std::thread> helpers;
  const int64_t chunk = ((count / numParts + 7) / 8) * 8;
  for (int64_t p = 1; p < numParts; p++) helpers.emplace_back(expRange, x, out, std::min(count, p * chunk), std::min(count, (p + 1) * chunk));
  expRange(x, out, 0, std::min(count, chunk));
  for (auto& h : helpers) h.join();
}

}  // namespace tfalign
