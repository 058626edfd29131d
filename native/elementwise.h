// Element-wise kernels on the wasm heap for tfalign (see src/kernels/native-elementwise.ts).
#pragma once
#include <cstdint>

namespace tfalign {

/** out[i] = exp(x[i]) for i < count, on up to numThreads threads; within 2 ulp of expf, IEEE for ±inf and NaN. */
void expArray(const float* x, float* out, int64_t count, int numThreads);

/**
 * out[a, c] = Σ_r x[a, r, c] for x of shape [A, R, C] (a sum over a contiguous block of axes), on
 * up to numThreads threads. Rows (C = 1) are summed in 32 interleaved partial sums; columns in
 * order of r.
 */
void sumMiddleAxis(const float* x, float* out, int64_t A, int64_t R, int64_t C, int numThreads);

}  // namespace tfalign
