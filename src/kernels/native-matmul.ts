/**
 * Matrix products in native code for the wasm backend: the `tfalign_native` N-API addon
 * (native/sgemm.cc, built by node-gyp at `npm ci`) runs packed, cache-blocked AVX2+FMA or AVX-512
 * SGEMM on several threads straight on the wasm heap — the operands are read and the product
 * written at their offsets in WebAssembly.Memory's buffer, so nothing is copied. XNNPACK (128-bit
 * wasm SIMD, one thread) peaks near 20 GFLOP/s here; the native kernel reaches ~50 per core.
 *
 * The addon is optional: when it did not build (no compiler, no Node headers), the CPU lacks AVX2
 * and FMA, or `TFALIGN_NATIVE_MATMUL=0` is set, `loadNativeMatMul` says why and the caller keeps
 * the XNNPACK route (wasm-kernels.ts).
 *
 * Threads: every thread (main or worker) that loads the addon counts as one user of the cores, so
 * a product runs on ⌊cores / users⌋ threads (at least 1): one process alone uses every core, while
 * two data-parallel replicas on two cores use one each. `TFALIGN_NATIVE_THREADS=N` fixes the count.
 */
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackendLike } from './wasm-backend.js';

/** The functions of `build/Release/tfalign_native.node` (native/addon.cc). */
export interface NativeAddon {
  /** Best instruction set of this CPU: 0 none, 1 AVX2+FMA, 2 AVX-512F. */
  isa(): number;
  /** Restricts the micro-kernel to an instruction set ≤ `isa()` (tests compare both); returns the one used. */
  setIsa(isa: number): number;
  /** Threads of this process that loaded the addon and have not exited. */
  numInstances(): number;
  /** Cores this process may run on (its CPU affinity mask). */
  numCores(): number;
  /** C[batch, m, n] = op(A) · op(B) on `heap`; offsets in bytes, batch strides in elements (0: shared). */
  matmul(
    heap: Uint8Array, batch: number, m: number, n: number, k: number,
    aOffset: number, aBatchStride: number, transposeA: boolean,
    bOffset: number, bBatchStride: number, transposeB: boolean,
    cOffset: number, numThreads: number,
  ): void;
}

export type NativeLoad = { addon: NativeAddon; isaName: string } | { addon: undefined; reason: string };

const ADDON_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'build', 'Release', 'tfalign_native.node');

let loaded: NativeLoad | undefined;

/** Loads the addon once per thread; says why not when it cannot be used. */
export function loadNativeMatMul(): NativeLoad {
  if (loaded) return loaded;
  if (process.env.TFALIGN_NATIVE_MATMUL === '0') return (loaded = { addon: undefined, reason: 'native matmul off (TFALIGN_NATIVE_MATMUL=0)' });
  let addon: NativeAddon;
  try {
    addon = createRequire(import.meta.url)(ADDON_PATH) as NativeAddon;
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND';
    const why = missing ? 'addon not built; `npm run build:native` builds it' : `addon failed to load: ${(err as Error).message.split('\n')[0]}`;
    return (loaded = { addon: undefined, reason: `native matmul unavailable (${why}), using XNNPACK` });
  }
  const isa = addon.isa();
  if (isa === 0) return (loaded = { addon: undefined, reason: 'native matmul unavailable (CPU lacks AVX2+FMA), using XNNPACK' });
  return (loaded = { addon, isaName: isa === 2 ? 'AVX-512' : 'AVX2' });
}

/** Threads one product may use now (see the file comment). */
export function nativeMatMulThreads(addon: NativeAddon): number {
  const fixed = Number(process.env.TFALIGN_NATIVE_THREADS);
  if (Number.isInteger(fixed) && fixed >= 1) return fixed;
  return Math.max(1, Math.floor(addon.numCores() / Math.max(1, addon.numInstances())));
}

/**
 * `BatchMatMul` on the native kernel. Transposed operands are read in place (the kernel packs
 * either layout), a right operand shared by the batch folds the batch into rows, and a batch runs
 * as one call whose entries the threads share. Broadcasting patterns other than "same batch" or
 * "one side has batch 1" go to `originalFunc`.
 */
export function makeNativeBatchMatMul(addon: NativeAddon, originalFunc: KernelFunc): KernelConfig {
  return {
    kernelName: 'BatchMatMul',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const backend = args.backend as unknown as WasmBackendLike;
      const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
      const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
      if (a.dtype !== 'float32' || b.dtype !== 'float32') return originalFunc(args);
      const aRank = a.shape.length;
      const bRank = b.shape.length;
      const outerA = a.shape.slice(0, -2);
      const outerB = b.shape.slice(0, -2);
      const batchA = outerA.reduce((x, y) => x * y, 1);
      const batchB = outerB.reduce((x, y) => x * y, 1);
      const sameBatch = batchA === batchB && outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
      if (!(batchA === 1 || batchB === 1 || sameBatch)) return originalFunc(args); // general broadcasting: not routed
      const m = transposeA ? a.shape[aRank - 1] : a.shape[aRank - 2];
      const k = transposeA ? a.shape[aRank - 2] : a.shape[aRank - 1];
      const n = transposeB ? b.shape[bRank - 2] : b.shape[bRank - 1];
      const kB = transposeB ? b.shape[bRank - 1] : b.shape[bRank - 2];
      if (k !== kB) return originalFunc(args); // let the original report the shape error

      const outShape = [...(outerA.length >= outerB.length ? outerA : outerB), m, n]; // [...batch, m, n]
      const out = backend.makeOutput(outShape, 'float32');
      if (m * n === 0) return out;
      // Offsets and the heap are read after makeOutput: its malloc may grow (and replace) the buffer.
      const aOffset = backend.dataIdMap.get(a.dataId).memoryOffset;
      const bOffset = backend.dataIdMap.get(b.dataId).memoryOffset;
      const outOffset = backend.dataIdMap.get(out.dataId).memoryOffset;
      const heap = backend.wasm.HEAPU8;
      const numThreads = nativeMatMulThreads(addon);
      if (batchB === 1 && !transposeA) {
        // [batchA, m, k]·[k, n] is one [batchA·m, k]·[k, n] product
        addon.matmul(heap, 1, batchA * m, n, k, aOffset, 0, false, bOffset, 0, transposeB, outOffset, numThreads);
      } else {
        const batch = Math.max(batchA, batchB);
        addon.matmul(heap, batch, m, n, k, aOffset, batchA === 1 ? 0 : m * k, transposeA, bOffset, batchB === 1 ? 0 : k * n, transposeB, outOffset, numThreads);
      }
      return out;
    },
  };
}
