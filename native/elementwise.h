// Element-wise kernels on the wasm heap for tfalign (see src/kernels/native-elementwise.ts).
#pragma once
#include <cstdint>

namespace tfalign {

/** out[i] = exp(x[i]) for i < count, on up to numThreads threads; within 2 ulp of expf, IEEE for ±inf and NaN. */
void expArray(const float* x, float* out, int64_t count, int numThreads);

}  // namespace tfalign
