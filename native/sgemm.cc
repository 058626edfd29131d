// See sgemm.h. Loop order (Goto, "Anatomy of High-Performance Matrix Multiplication", 2008):
//   jc over NC columns → pc over KC depth: pack B[KC, NC] into NR-wide strips
//     → ic over MC rows: pack A[MC, KC] into MR-tall strips
//       → jr over NR strips → ir over MR strips: micro-kernel, an MR × NR tile of C in registers.
// The packed A block stays in L2 and one B strip (KC × NR) in L1 while the ir loop sweeps it.
#include "sgemm.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace tfalign {
namespace {

constexpr int64_t KC = 256;   // depth of a packed panel: a 32-wide B strip is 32 KB (L1)
constexpr int64_t MC = 144;   // rows of a packed A block: 144 × 256 floats = 144 KB (L2); a multiple of 6 and 12
constexpr int64_t NC = 4096;  // columns of a packed B panel: 4 MB at most (L3)

std::atomic<int> g_isa{-1};

/** Reusable 64-byte-aligned scratch per thread (packing buffers). */
struct Scratch {
  float* data = nullptr;
  size_t size = 0;
  float* get(size_t n) {
    if (n > size) {
      std::free(data);
      data = static_cast<float*>(std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64));
      size = n;
    }
    return data;
  }
  ~Scratch() { std::free(data); }
};

/** Packs rows [i0, i0 + mc) × depth [p0, p0 + kc) of op(A) into MR-tall strips, zero-padded. */
template <int MR>
void packA(const Gemm& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* dst) {
  for (int64_t s = 0; s < mc; s += MR) {
    const int64_t rows = std::min<int64_t>(MR, mc - s);
    float* out = dst + s * kc;  // [kc, MR]
    if (g.rsa == 1) {           // op(A) column-contiguous (a transposed operand): copy runs of MR
      for (int64_t p = 0; p < kc; p++) {
        const float* src = g.a + (i0 + s) + (p0 + p) * g.csa;
        for (int r = 0; r < rows; r++) out[p * MR + r] = src[r];
        for (int r = rows; r < MR; r++) out[p * MR + r] = 0.f;
      }
    } else {
      for (int r = 0; r < rows; r++) {
        const float* src = g.a + (i0 + s + r) * g.rsa + p0 * g.csa;
        for (int64_t p = 0; p < kc; p++) out[p * MR + r] = src[p * g.csa];
      }
      for (int r = rows; r < MR; r++)
        for (int64_t p = 0; p < kc; p++) out[p * MR + r] = 0.f;
    }
  }
}

/** Packs depth [p0, p0 + kc) × columns [j0, j0 + nc) of op(B) into NR-wide strips, zero-padded. */
template <int NR>
void packB(const Gemm& g, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  for (int64_t s = 0; s < nc; s += NR) {
    const int64_t cols = std::min<int64_t>(NR, nc - s);
    float* out = dst + s * kc;  // [kc, NR]
    if (g.csb == 1) {           // rows of op(B) contiguous
      for (int64_t p = 0; p < kc; p++) {
        const float* src = g.b + (p0 + p) * g.rsb + (j0 + s);
        std::memcpy(out + p * NR, src, cols * sizeof(float));
        for (int c = cols; c < NR; c++) out[p * NR + c] = 0.f;
      }
    } else {  // a transposed operand: column j of op(B) is contiguous
      for (int c = 0; c < cols; c++) {
        const float* src = g.b + p0 * g.rsb + (j0 + s + c) * g.csb;
        for (int64_t p = 0; p < kc; p++) out[p * NR + c] = src[p * g.rsb];
      }
      for (int64_t p = 0; p < kc; p++)
        for (int c = cols; c < NR; c++) out[p * NR + c] = 0.f;
    }
  }
}

/** AVX-512 micro-kernel: a 12 × 32 tile of C (24 zmm accumulators) over kc packed steps. */
__attribute__((target("avx512f"))) void kernel512(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, bool accumulate) {
  constexpr int MR = 12;
  __m512 acc[MR][2];
#pragma GCC unroll 12
  for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; p++) {
    const __m512 b0 = _mm512_load_ps(B + p * 32);
    const __m512 b1 = _mm512_load_ps(B + p * 32 + 16);
    const float* a = A + p * MR;
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
      const __m512 ar = _mm512_set1_ps(a[r]);
      acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; r++) {
    float* c = C + r * ldc;
    if (accumulate) {
      acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_loadu_ps(c));
      acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_loadu_ps(c + 16));
    }
    _mm512_storeu_ps(c, acc[r][0]);
    _mm512_storeu_ps(c + 16, acc[r][1]);
  }
}

/** AVX2 + FMA micro-kernel: a 6 × 16 tile of C (12 ymm accumulators). */
__attribute__((target("avx2,fma"))) void kernel256(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, bool accumulate) {
  constexpr int MR = 6;
  __m256 acc[MR][2];
#pragma GCC unroll 6
  for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_load_ps(B + p * 16);
    const __m256 b1 = _mm256_load_ps(B + p * 16 + 8);
    const float* a = A + p * MR;
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
      const __m256 ar = _mm256_broadcast_ss(a + r);
      acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; r++) {
    float* c = C + r * ldc;
    if (accumulate) {
      acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_loadu_ps(c));
      acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_loadu_ps(c + 8));
    }
    _mm256_storeu_ps(c, acc[r][0]);
    _mm256_storeu_ps(c + 8, acc[r][1]);
  }
}

using Kernel = void (*)(int64_t, const float*, const float*, float*, int64_t, bool);

/** C[i0:i1, j0:j1] of one product, single-threaded. */
template <int MR, int NR>
void gemmBlock(const Gemm& g, int64_t i0, int64_t i1, int64_t j0, int64_t j1, Kernel kernel) {
  static thread_local Scratch packedA, packedB;
  alignas(64) float tile[MR * NR];
  if (g.k == 0) {
    for (int64_t i = i0; i < i1; i++) std::fill(g.c + i * g.ldc + j0, g.c + i * g.ldc + j1, 0.f);
    return;
  }
  const int64_t ncMax = std::min<int64_t>(NC, ((j1 - j0 + NR - 1) / NR) * NR);
  const int64_t mcMax = std::min<int64_t>(MC, ((i1 - i0 + MR - 1) / MR) * MR);
  float* bp = packedB.get(KC * ncMax);
  float* ap = packedA.get(KC * mcMax);
  for (int64_t jc = j0; jc < j1; jc += NC) {
    const int64_t nc = std::min<int64_t>(NC, j1 - jc);
    for (int64_t pc = 0; pc < g.k; pc += KC) {
      const int64_t kc = std::min<int64_t>(KC, g.k - pc);
      const bool accumulate = pc > 0;
      packB<NR>(g, pc, kc, jc, nc, bp);
      for (int64_t ic = i0; ic < i1; ic += MC) {
        const int64_t mc = std::min<int64_t>(MC, i1 - ic);
        packA<MR>(g, ic, mc, pc, kc, ap);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int64_t cols = std::min<int64_t>(NR, nc - jr);
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int64_t rows = std::min<int64_t>(MR, mc - ir);
            float* c = g.c + (ic + ir) * g.ldc + (jc + jr);
            if (rows == MR && cols == NR) {
              kernel(kc, ap + ir * kc, bp + jr * kc, c, g.ldc, accumulate);
            } else {  // edge tile: compute whole, write the valid part
              kernel(kc, ap + ir * kc, bp + jr * kc, tile, NR, false);
              for (int64_t r = 0; r < rows; r++)
                for (int64_t q = 0; q < cols; q++) c[r * g.ldc + q] = accumulate ? c[r * g.ldc + q] + tile[r * NR + q] : tile[r * NR + q];
            }
          }
        }
      }
    }
  }
}

struct Task {
  int64_t gemm, i0, i1, j0, j1;
};

template <int MR, int NR>
void runTasks(const Gemm* gemms, const std::vector<Task>& tasks, int numThreads, Kernel kernel) {
  std::atomic<size_t> next{0};
  auto work = [&]() {
    for (size_t t = next++; t < tasks.size(); t = next++) {
      const Task& task = tasks[t];
      gemmBlock<MR, NR>(gemms[task.gemm], task.i0, task.i1, task.j0, task.j1, kernel);
    }
  };
  std::vector<std::thread> helpers;
  for (int t = 1; t < numThreads; t++) helpers.emplace_back(work);
  work();
  for (auto& h : helpers) h.join();
}

template <int MR, int NR>
void runAll(const Gemm* gemms, int64_t count, int numThreads, Kernel kernel) {
  double flops = 0;
  for (int64_t i = 0; i < count; i++) flops += 2.0 * gemms[i].m * gemms[i].n * gemms[i].k;
  // Below ~4 MFLOP a thread start (tens of µs) costs more than it saves.
  if (flops < 4e6) numThreads = 1;
  std::vector<Task> tasks;
  // Enough pieces per product that every thread has work: split the longer side of C in whole tiles.
  const int64_t piecesPerGemm = count >= numThreads ? 1 : (numThreads + count - 1) / count;
  for (int64_t i = 0; i < count; i++) {
    const Gemm& g = gemms[i];
    if (g.m == 0 || g.n == 0) continue;
    const bool splitRows = g.m / MR >= g.n / NR;
    const int64_t unit = splitRows ? MR : NR;
    const int64_t extent = splitRows ? g.m : g.n;
    const int64_t numUnits = (extent + unit - 1) / unit;
    const int64_t pieces = std::max<int64_t>(1, std::min(piecesPerGemm, numUnits));
    for (int64_t p = 0; p < pieces; p++) {
      const int64_t lo = std::min(extent, (numUnits * p / pieces) * unit);
      const int64_t hi = std::min(extent, (numUnits * (p + 1) / pieces) * unit);
      if (lo >= hi) continue;
      tasks.push_back(splitRows ? Task{i, lo, hi, 0, g.n} : Task{i, 0, g.m, lo, hi});
    }
  }
  runTasks<MR, NR>(gemms, tasks, std::max(1, std::min<int>(numThreads, static_cast<int>(tasks.size()))), kernel);
}

}  // namespace

int detectIsa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return 2;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
  return 0;
}

int setIsa(int isa) {
  g_isa = std::max(0, std::min(isa, detectIsa()));
  return g_isa;
}

void runGemms(const Gemm* gemms, int64_t count, int numThreads) {
  if (g_isa < 0) g_isa = detectIsa();
  if (g_isa == 2) runAll<12, 32>(gemms, count, numThreads, kernel512);
  else if (g_isa == 1) runAll<6, 16>(gemms, count, numThreads, kernel256);
  else std::abort();  // the JS side never calls without a supported instruction set
}

}  // namespace tfalign
