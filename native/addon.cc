// N-API entry points of tfalign_native: matrix products straight on the wasm backend's heap.
// JS passes the heap (a Uint8Array over WebAssembly.Memory's buffer) and byte offsets of the
// operands, so no tensor is copied in or out; see src/kernels/native-matmul.ts.
#include <node_api.h>
#include <sched.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "elementwise.h"
#include "sgemm.h"

namespace {

/** Threads (main or workers) that loaded the addon and have not exited: they share the cores. */
std::atomic<int> g_numInstances{0};

napi_value throwError(napi_env env, const std::string& message) {
  napi_throw_error(env, nullptr, message.c_str());
  return nullptr;
}

bool getNumber(napi_env env, napi_value v, double* out) { return napi_get_value_double(env, v, out) == napi_ok; }

napi_value makeInt(napi_env env, int64_t v) {
  napi_value out;
  napi_create_int64(env, v, &out);
  return out;
}

napi_value Isa(napi_env env, napi_callback_info) { return makeInt(env, tfalign::detectIsa()); }

napi_value SetIsa(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  double isa = 0;
  if (argc < 1 || !getNumber(env, argv[0], &isa)) return throwError(env, "native: setIsa(isa: number)");
  return makeInt(env, tfalign::setIsa(static_cast<int>(isa)));
}

napi_value NumInstances(napi_env env, napi_callback_info) { return makeInt(env, g_numInstances.load()); }

napi_value NumCores(napi_env env, napi_callback_info) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return makeInt(env, CPU_COUNT(&set));
  return makeInt(env, std::max(1u, std::thread::hardware_concurrency()));
}

/**
 * matmul(heap, batch, m, n, k, aOffset, aBatchStride, transposeA, bOffset, bBatchStride, transposeB, cOffset, numThreads)
 * Offsets are bytes into `heap`, batch strides are elements (0: one operand shared by the batch).
 * A is stored [m, k] ([k, m] when transposeA), B [k, n] ([n, k] when transposeB), C [batch, m, n].
 */
napi_value Matmul(napi_env env, napi_callback_info info) {
  size_t argc = 13;
  napi_value argv[13];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc != 13) return throwError(env, "native: matmul expects 13 arguments");
  bool isTyped = false;
  napi_is_typedarray(env, argv[0], &isTyped);
  if (!isTyped) return throwError(env, "native: matmul: heap must be a Uint8Array");
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_value buffer;
  size_t byteOffset = 0;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, &buffer, &byteOffset) != napi_ok || type != napi_uint8_array)
    return throwError(env, "native: matmul: heap must be a Uint8Array");
  double v[12];
  for (int i = 0; i < 12; i++) {
    napi_valuetype t;
    napi_typeof(env, argv[i + 1], &t);
    if (t == napi_boolean) {
      bool b;
      napi_get_value_bool(env, argv[i + 1], &b);
      v[i] = b ? 1 : 0;
    } else if (!getNumber(env, argv[i + 1], &v[i]) || v[i] < 0) {
      return throwError(env, "native: matmul: argument " + std::to_string(i + 2) + " must be a non-negative number");
    }
  }
  const int64_t batch = v[0], m = v[1], n = v[2], k = v[3];
  const int64_t aOff = v[4], aStride = v[5], bOff = v[7], bStride = v[8], cOff = v[10];
  const bool transA = v[6] != 0, transB = v[9] != 0;
  const int numThreads = std::max(1, static_cast<int>(v[11]));
  if (tfalign::detectIsa() == 0) return throwError(env, "native: matmul: this CPU has neither AVX2+FMA nor AVX-512");
  if (aOff % 4 || bOff % 4 || cOff % 4) return throwError(env, "native: matmul: offsets must be multiples of 4 bytes");
  // Every byte touched must lie inside the heap.
  auto fits = [&](int64_t off, int64_t stride, int64_t size) {
    const int64_t last = batch == 0 ? 0 : off + ((batch - 1) * stride + size) * 4;
    return last <= static_cast<int64_t>(length);
  };
  if (!fits(aOff, aStride, m * k) || !fits(bOff, bStride, k * n) || !fits(cOff, m * n, m * n))
    return throwError(env, "native: matmul: an operand lies outside the heap");
  auto* base = static_cast<uint8_t*>(data);
  std::vector<tfalign::Gemm> gemms(batch);
  for (int64_t i = 0; i < batch; i++) {
    tfalign::Gemm& g = gemms[i];
    g.a = reinterpret_cast<const float*>(base + aOff) + i * aStride;
    g.rsa = transA ? 1 : k;
    g.csa = transA ? m : 1;
    g.b = reinterpret_cast<const float*>(base + bOff) + i * bStride;
    g.rsb = transB ? 1 : n;
    g.csb = transB ? k : 1;
    g.c = reinterpret_cast<float*>(base + cOff) + i * m * n;
    g.ldc = n;
    g.m = m;
    g.n = n;
    g.k = k;
  }
  tfalign::runGemms(gemms.data(), batch, numThreads);
  return nullptr;
}

/** The heap's bytes, or nullptr after throwing (argument 0 must be a Uint8Array). */
uint8_t* heapOf(napi_env env, napi_value value, size_t* length) {
  bool isTyped = false;
  napi_is_typedarray(env, value, &isTyped);
  napi_typedarray_type type;
  void* data = nullptr;
  napi_value buffer;
  size_t byteOffset = 0;
  if (!isTyped || napi_get_typedarray_info(env, value, &type, length, &data, &buffer, &byteOffset) != napi_ok || type != napi_uint8_array) {
    throwError(env, "native: heap must be a Uint8Array");
    return nullptr;
  }
  return static_cast<uint8_t*>(data);
}

/** exp(heap, xOffset, outOffset, count, numThreads): out = exp(x) elementwise; offsets in bytes. */
napi_value Exp(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc != 5) return throwError(env, "native: exp expects 5 arguments");
  size_t length = 0;
  uint8_t* base = heapOf(env, argv[0], &length);
  if (!base) return nullptr;
  double v[4];
  for (int i = 0; i < 4; i++)
    if (!getNumber(env, argv[i + 1], &v[i]) || v[i] < 0) return throwError(env, "native: exp: argument " + std::to_string(i + 2) + " must be a non-negative number");
  const int64_t xOff = v[0], outOff = v[1], count = v[2];
  if (xOff % 4 || outOff % 4) return throwError(env, "native: exp: offsets must be multiples of 4 bytes");
  if (xOff + count * 4 > static_cast<int64_t>(length) || outOff + count * 4 > static_cast<int64_t>(length))
    return throwError(env, "native: exp: an operand lies outside the heap");
  if (tfalign::detectIsa() == 0) return throwError(env, "native: exp: this CPU lacks AVX2+FMA");
  tfalign::expArray(reinterpret_cast<const float*>(base + xOff), reinterpret_cast<float*>(base + outOff), count, std::max(1, static_cast<int>(v[3])));
  return nullptr;
}

/** sum(heap, xOffset, outOffset, A, R, C, numThreads): out[a, c] = Σ_r x[a, r, c]; offsets in bytes. */
napi_value Sum(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc != 7) return throwError(env, "native: sum expects 7 arguments");
  size_t length = 0;
  uint8_t* base = heapOf(env, argv[0], &length);
  if (!base) return nullptr;
  double v[6];
  for (int i = 0; i < 6; i++)
    if (!getNumber(env, argv[i + 1], &v[i]) || v[i] < 0) return throwError(env, "native: sum: argument " + std::to_string(i + 2) + " must be a non-negative number");
  const int64_t xOff = v[0], outOff = v[1], A = v[2], R = v[3], C = v[4];
  if (xOff % 4 || outOff % 4) return throwError(env, "native: sum: offsets must be multiples of 4 bytes");
  if (xOff + A * R * C * 4 > static_cast<int64_t>(length) || outOff + A * C * 4 > static_cast<int64_t>(length))
    return throwError(env, "native: sum: an operand lies outside the heap");
  if (tfalign::detectIsa() == 0) return throwError(env, "native: sum: this CPU lacks AVX2+FMA");
  tfalign::sumMiddleAxis(reinterpret_cast<const float*>(base + xOff), reinterpret_cast<float*>(base + outOff), A, R, C, std::max(1, static_cast<int>(v[5])));
  return nullptr;
}

/** Reads a JS array of at most 8 non-negative integers; false (after throwing) otherwise. */
bool getDims(napi_env env, napi_value value, std::vector<int64_t>* out, const char* what) {
  bool isArray = false;
  napi_is_array(env, value, &isArray);
  uint32_t n = 0;
  if (!isArray || napi_get_array_length(env, value, &n) != napi_ok || n > 8) {
    throwError(env, std::string("native: ") + what + " must be an array of at most 8 numbers");
    return false;
  }
  out->resize(n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    double d = -1;
    napi_get_element(env, value, i, &e);
    if (!getNumber(env, e, &d) || d < 0) {
      throwError(env, std::string("native: ") + what + " must hold non-negative numbers");
      return false;
    }
    (*out)[i] = static_cast<int64_t>(d);
  }
  return true;
}

/**
 * copyBlock(heap, srcOffset, srcShape, srcBegin, dstOffset, dstShape, dstBegin, blockShape):
 * copies the float32 block `blockShape` at corner srcBegin of the row-major tensor at srcOffset
 * (bytes) to corner dstBegin of the tensor at dstOffset, one memcpy per contiguous run.
 */
napi_value CopyBlock(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc != 8) return throwError(env, "native: copyBlock expects 8 arguments");
  size_t length = 0;
  uint8_t* base = heapOf(env, argv[0], &length);
  if (!base) return nullptr;
  double srcOff = -1, dstOff = -1;
  if (!getNumber(env, argv[1], &srcOff) || !getNumber(env, argv[4], &dstOff) || srcOff < 0 || dstOff < 0)
    return throwError(env, "native: copyBlock: offsets must be non-negative numbers");
  std::vector<int64_t> srcShape, srcBegin, dstShape, dstBegin, block;
  if (!getDims(env, argv[2], &srcShape, "srcShape") || !getDims(env, argv[3], &srcBegin, "srcBegin") || !getDims(env, argv[5], &dstShape, "dstShape") ||
      !getDims(env, argv[6], &dstBegin, "dstBegin") || !getDims(env, argv[7], &block, "blockShape"))
    return nullptr;
  const size_t rank = block.size();
  if (srcShape.size() != rank || srcBegin.size() != rank || dstShape.size() != rank || dstBegin.size() != rank)
    return throwError(env, "native: copyBlock: shapes and corners must have the same rank");
  int64_t srcSize = 1, dstSize = 1, blockSize = 1;
  for (size_t a = 0; a < rank; a++) {
    if (srcBegin[a] + block[a] > srcShape[a] || dstBegin[a] + block[a] > dstShape[a]) return throwError(env, "native: copyBlock: the block does not fit");
    srcSize *= srcShape[a];
    dstSize *= dstShape[a];
    blockSize *= block[a];
  }
  if (static_cast<int64_t>(srcOff) % 4 || static_cast<int64_t>(dstOff) % 4) return throwError(env, "native: copyBlock: offsets must be multiples of 4 bytes");
  if (srcOff + srcSize * 4 > length || dstOff + dstSize * 4 > length) return throwError(env, "native: copyBlock: a tensor lies outside the heap");
  if (blockSize == 0) return nullptr;
  const float* src = reinterpret_cast<const float*>(base + static_cast<int64_t>(srcOff));
  float* dst = reinterpret_cast<float*>(base + static_cast<int64_t>(dstOff));
  if (rank == 0) {
    dst[0] = src[0];
    return nullptr;
  }
  std::vector<int64_t> srcStrides(rank, 1), dstStrides(rank, 1);
  for (size_t a = rank - 1; a-- > 0;) {
    srcStrides[a] = srcStrides[a + 1] * srcShape[a + 1];
    dstStrides[a] = dstStrides[a + 1] * dstShape[a + 1];
  }
  // Axes after k are whole in both tensors, so each step over axes 0 … k−1 copies one run.
  size_t k = rank - 1;
  while (k > 0 && block[k] == srcShape[k] && block[k] == dstShape[k]) k--;
  const int64_t run = block[k] * srcStrides[k];
  std::vector<int64_t> index(k, 0);
  for (;;) {
    int64_t from = srcBegin[k] * srcStrides[k], to = dstBegin[k] * dstStrides[k];
    for (size_t a = 0; a < k; a++) {
      from += (srcBegin[a] + index[a]) * srcStrides[a];
      to += (dstBegin[a] + index[a]) * dstStrides[a];
    }
    std::memcpy(dst + to, src + from, run * sizeof(float));
    size_t a = k;
    while (a > 0 && ++index[a - 1] == block[a - 1]) index[--a] = 0;
    if (a == 0) break;
  }
  return nullptr;
}

void onEnvExit(void*) { g_numInstances--; }

}  // namespace

NAPI_MODULE_INIT() {
  g_numInstances++;
  napi_add_env_cleanup_hook(env, onEnvExit, nullptr);
  const napi_property_descriptor props[] = {
      {"isa", nullptr, Isa, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setIsa", nullptr, SetIsa, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"numInstances", nullptr, NumInstances, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"numCores", nullptr, NumCores, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"matmul", nullptr, Matmul, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"exp", nullptr, Exp, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"sum", nullptr, Sum, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"copyBlock", nullptr, CopyBlock, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}
