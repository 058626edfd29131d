// Single-precision matrix products C = op(A) · op(B) for tfalign's wasm backend: packed,
// cache-blocked (Goto/BLIS loop order), register-tiled micro-kernels for AVX-512 (12 × 32) and
// AVX2 + FMA (6 × 16), chosen at run time; threads split the output, each packing its own panels.
#pragma once
#include <cstdint>

namespace tfalign {

/** One 2-D product: element (i, p) of op(A) is a[i * rsa + p * csa]; (p, j) of op(B) is b[p * rsb + j * csb]. */
struct Gemm {
  const float* a;
  int64_t rsa, csa;
  const float* b;
  int64_t rsb, csb;
  float* c;  // row-major [m, n], leading dimension ldc
  int64_t ldc;
  int64_t m, n, k;
};

/** Which instruction set the micro-kernel uses: 0 none (caller must fall back), 1 AVX2+FMA, 2 AVX-512F. */
int detectIsa();

/** Forces an instruction set (≤ detectIsa()); returns the one now used. */
int setIsa(int isa);

/** Runs `count` products (e.g. the entries of a batch) on up to `numThreads` threads. */
void runGemms(const Gemm* gemms, int64_t count, int numThreads);

}  // namespace tfalign
