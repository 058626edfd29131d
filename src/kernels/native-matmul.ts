/**
 * `BatchMatMul` for the wasm backend on the native SGEMM (native-addon.ts): XNNPACK (128-bit wasm
 * SIMD, one thread) peaks near 20 GFLOP/s here; the native kernel reaches ~50–80 per core, reads
 * transposed operands in place (its packing handles either layout) and splits the work across
 * threads.
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackendLike } from './wasm-backend.js';
import { nativeThreads, type NativeAddon } from './native-addon.js';

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
      const numThreads = nativeThreads(addon);
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
