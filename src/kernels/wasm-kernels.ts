/**
 * Kernels the tfjs 4.22 wasm backend lacks or runs slowly, registered from the project.
 *
 * 1. `UnsortedSegmentSum` — the gradient of `gather` (embedding lookups). wasm has none, so
 *    training an embedding would fail without it. `Identity` shares data instead of copying it.
 * 2. `BatchMatMul` — wasm reaches its XNNPACK kernel only when neither operand is transposed
 *    and both batch sizes are 1 (tfjs-backend-wasm/src/cc/batch_mat_mul_impl.cc); everything
 *    else runs a naive loop 10–13× slower. Almost every training gradient is a transposed
 *    product and attention is batched, so we route every call to the fast kernel:
 *      - a transposed operand is transposed explicitly first (a cheap copy);
 *      - a right operand shared by the whole batch (batch 1) folds the left batch into rows:
 *        [B, M, K]·[K, N] is one [B·M, K]·[K, N] product;
 *      - a true batch runs one 2-D product per batch entry on zero-copy views into the
 *        operands' wasm memory (a view is a tensor id registered at an offset, never malloc'd).
 *    Registering a kernel again under the same name replaces it; `getKernel` fetched before
 *    that gives the original, which remains the path for broadcasting patterns we do not route.
 * 3. `GatherV2` of float32 rows copies them within the heap (row-gather.ts).
 * 4. When the native addon is available (native-addon.ts), `BatchMatMul` (native-matmul.ts),
 *    `Exp` (native-exp.ts), `Sum` (native-sum.ts) and the block copies `Concat`, `Slice`,
 *    `SplitV` (native-copy.ts) run there instead (AVX2/AVX-512, multi-threaded, on the
 *    same heap memory); the XNNPACK route of 2 and wasm's own kernels are the fallback, and
 *    `setMatMulPath` switches between the two sets (tests compare them).
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackendLike } from './wasm-backend.js';
import { loadNativeAddon, type NativeAddon } from './native-addon.js';
import { makeNativeBatchMatMul } from './native-matmul.js';
import { makeNativeExp } from './native-exp.js';
import { makeNativeSum } from './native-sum.js';
import { makeRowGather } from './row-gather.js';
import { makeNativeConcat, makeNativeSlice, makeNativeSplitV } from './native-copy.js';

let registered = false;

/** Which kernel runs `BatchMatMul` on wasm, and why not the native one when it does not. */
export interface MatMulStatus {
  path: 'native' | 'xnnpack';
  /** One line for the backend notice, e.g. `matmul: native AVX-512` or why XNNPACK runs. */
  description: string;
}

/** The kernels each path registers (same kernel names in both), and the native path's status line. */
let matMulConfigs: { xnnpack: KernelConfig[]; native?: KernelConfig[]; nativeLine: string } | undefined;
let matMulStatusNow: MatMulStatus | undefined;

/**
 * Registers the project's wasm kernels once; call after the wasm backend is initialised. Returns
 * which matrix-product path runs (native when the addon loads, else XNNPACK).
 */
export function registerWasmKernels(): MatMulStatus | undefined {
  if (registered) return matMulStatusNow;
  registered = true;
  withQuietRegistration(() => {
    tf.registerKernel(unsortedSegmentSumConfig);
    tf.registerKernel(identityConfig);
    const transpose = tf.getKernel('Transpose', 'wasm');
    if (transpose) tf.registerKernel(makeFastTranspose(transpose.kernelFunc));
    const gather = tf.getKernel('GatherV2', 'wasm');
    if (gather) tf.registerKernel(makeRowGather(gather.kernelFunc));
    const original = tf.getKernel('BatchMatMul', 'wasm');
    if (!original) return;
    // Kernels with a native version: wasm's own is the fallback (and what the 'xnnpack' path keeps).
    const natives: [string, (addon: NativeAddon, original: KernelFunc) => KernelConfig][] = [
      ['Exp', makeNativeExp], ['Sum', makeNativeSum], ['Concat', makeNativeConcat], ['Slice', makeNativeSlice], ['SplitV', makeNativeSplitV],
    ];
    const originals = natives.map(([name]) => tf.getKernel(name, 'wasm')!);
    const native = loadNativeAddon();
    const addon = native.addon;
    matMulConfigs = {
      xnnpack: [makeFastBatchMatMul(original.kernelFunc), ...originals],
      native: addon ? [makeNativeBatchMatMul(addon, original.kernelFunc), ...natives.map(([, make], i) => make(addon, originals[i].kernelFunc))] : undefined,
      nativeLine: native.addon ? `matmul: native ${native.isaName}` : `matmul: ${native.reason}`,
    };
  });
  if (matMulConfigs) setMatMulPath(matMulConfigs.native ? 'native' : 'xnnpack');
  return matMulStatusNow;
}

/**
 * Switches wasm's `BatchMatMul`, `Exp`, `Sum` and the block copies between
 * the native kernels and the wasm backend's own (XNNPACK for products); asking for `native` when
 * the addon is unavailable throws with the reason. Returns the status now.
 */
export function setMatMulPath(path: 'native' | 'xnnpack'): MatMulStatus {
  if (!matMulConfigs) throw new Error('kernels: setMatMulPath before the wasm backend was initialised (initBackend("wasm"))');
  const configs = matMulConfigs;
  if (path === 'native' && !configs.native) throw new Error(`kernels: ${configs.nativeLine}`);
  for (const config of path === 'native' ? configs.native! : configs.xnnpack) {
    tf.unregisterKernel(config.kernelName, 'wasm'); // then registering again does not warn
    tf.registerKernel(config);
  }
  matMulStatusNow = {
    path,
    description: path === 'native' ? configs.nativeLine : configs.native ? 'matmul: XNNPACK (native path switched off)' : configs.nativeLine,
  };
  return matMulStatusNow;
}

/** The matrix-product path of wasm now (undefined before the wasm backend is initialised). */
export function matMulStatus(): MatMulStatus | undefined {
  return matMulStatusNow;
}

function withQuietRegistration(body: () => void): void {
  const quiet = tf.env().getBool('IS_TEST') ? undefined : silenceKernelWarnings();
  try {
    body();
  } finally {
    quiet?.();
  }
}

/** tfjs warns when a kernel is registered twice; we do it on purpose. Returns the restorer. */
function silenceKernelWarnings(): () => void {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes('is already registered')) return;
    warn(...args);
  };
  return () => {
    console.warn = warn;
  };
}

/**
 * `Identity` without a copy. The engine clones every tensor it saves for the backward pass, and
 * wasm's Identity memcpy's it (seconds per training step at 12M parameters); sharing the data
 * with a reference count is what the cpu backend does and is safe because tensor data is never
 * written in place (a variable's assign swaps its data id).
 */
const identityConfig: KernelConfig = {
  kernelName: 'Identity',
  backendName: 'wasm',
  kernelFunc: ({ inputs, backend }) => {
    const { x } = inputs as { x: TensorInfo };
    (backend as unknown as { incRef(dataId: object): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  },
};

/**
 * `Transpose` of the last two axes ([B, R, C] → [B, C, R]) as a cache-blocked loop in JS over the
 * wasm heap: wasm's kernel computes a full index per element (measured 16.7 ms against ~4 ms here
 * for 2048 × 1024), and the routed BatchMatMul runs one such transpose per transposed operand.
 * Every other permutation goes to the original kernel (faster when the last axis stays in place).
 */
function makeFastTranspose(originalFunc: KernelFunc): KernelConfig {
  return {
    kernelName: 'Transpose',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const backend = args.backend as unknown as WasmBackendLike;
      const { x } = args.inputs as { x: TensorInfo };
      const perm = (args.attrs as { perm: number[] }).perm;
      const rank = x.shape.length;
      const swapsLastTwo = rank >= 2 && perm[rank - 1] === rank - 2 && perm[rank - 2] === rank - 1 && perm.slice(0, rank - 2).every((p, i) => p === i);
      if (x.dtype !== 'float32' || !swapsLastTwo) return originalFunc(args);
      const out = backend.makeOutput(perm.map((p) => x.shape[p]), 'float32');
      // Views are taken after makeOutput: its malloc may grow (and detach) the wasm heap.
      const src = backend.typedArrayFromHeap(x) as Float32Array;
      const dst = backend.typedArrayFromHeap(out) as Float32Array;
      const rows = x.shape[rank - 2];
      const cols = x.shape[rank - 1];
      const batch = src.length / (rows * cols);
      // Inner loop writes contiguously; an 8-wide tile keeps the strided reads in cache without
      // the set conflicts large power-of-two strides cause with bigger tiles (measured here).
      const tile = 8;
      for (let b = 0; b < batch; b++) {
        const base = b * rows * cols;
        for (let j0 = 0; j0 < cols; j0 += tile) {
          const jEnd = Math.min(j0 + tile, cols);
          for (let i0 = 0; i0 < rows; i0 += tile) {
            const iEnd = Math.min(i0 + tile, rows);
            for (let j = j0; j < jEnd; j++) {
              const dstBase = base + j * rows;
              for (let i = i0; i < iEnd; i++) dst[dstBase + i] = src[base + i * cols + j];
            }
          }
        }
      }
      return out;
    },
  };
}

const unsortedSegmentSumConfig: KernelConfig = {
  kernelName: 'UnsortedSegmentSum',
  backendName: 'wasm',
  kernelFunc: ({ inputs, backend, attrs }) => {
    const wasm = backend as unknown as WasmBackendLike;
    const { x, segmentIds } = inputs as { x: TensorInfo; segmentIds: TensorInfo };
    const numSegments = (attrs as NamedAttrMap).numSegments as number;
    const numRows = segmentIds.shape.reduce((a, b) => a * b, 1);
    const rowSize = x.shape.slice(segmentIds.shape.length).reduce((a, b) => a * b, 1);
    const outShape = [numSegments, ...x.shape.slice(segmentIds.shape.length)];
    const out = wasm.makeOutput(outShape, x.dtype);
    // Views are taken after makeOutput: a malloc may grow (and detach) the wasm heap.
    const xs = wasm.typedArrayFromHeap(x);
    const ids = wasm.typedArrayFromHeap(segmentIds);
    const outValues = wasm.typedArrayFromHeap(out);
    outValues.fill(0);
    for (let r = 0; r < numRows; r++) {
      const seg = ids[r];
      if (seg < 0 || seg >= numSegments) continue; // TF drops out-of-range ids
      const src = r * rowSize;
      const dst = seg * rowSize;
      for (let j = 0; j < rowSize; j++) outValues[dst + j] += xs[src + j];
    }
    return out;
  },
};

function makeFastBatchMatMul(originalFunc: KernelFunc): KernelConfig {
  let wasmBatchMatMul: ((...args: unknown[]) => void) | undefined;
  const transposeFunc = tf.getKernel('Transpose', 'wasm')!.kernelFunc;
  const reshapeFunc = tf.getKernel('Reshape', 'wasm')!.kernelFunc;

  /** A tensor id for `size` floats at byte `offset` of the wasm heap; no allocation. */
  function registerView(backend: WasmBackendLike, offset: number, size: number): number {
    const id = backend.dataIdNextNumber++;
    backend.wasm.tfjs.registerTensor(id, size, offset);
    return id;
  }

  function shapeBytes(shape: number[]): Uint8Array {
    return new Uint8Array(new Int32Array(shape).buffer);
  }

  return {
    kernelName: 'BatchMatMul',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const backend = args.backend as unknown as WasmBackendLike;
      const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
      const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
      if (a.dtype !== 'float32' || b.dtype !== 'float32') return originalFunc(args);
      wasmBatchMatMul ??= backend.wasm.cwrap('BatchMatMul', null, [
        'number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number',
      ]);
      const aRank = a.shape.length;
      const bRank = b.shape.length;
      const outerA = a.shape.slice(0, -2);
      const outerB = b.shape.slice(0, -2);
      const batchA = outerA.reduce((x, y) => x * y, 1);
      const batchB = outerB.reduce((x, y) => x * y, 1);
      const sameBatch = batchA === batchB && (aRank === bRank || batchA === 1) && outerA.every((d, i) => d === outerB[i]);
      if (!(batchB === 1 || sameBatch)) return originalFunc(args); // general broadcasting: not routed

      const m = transposeA ? a.shape[aRank - 1] : a.shape[aRank - 2];
      const k = transposeA ? a.shape[aRank - 2] : a.shape[aRank - 1];
      const n = transposeB ? b.shape[bRank - 2] : b.shape[bRank - 1];
      const kB = transposeB ? b.shape[bRank - 1] : b.shape[bRank - 2];
      if (k !== kB) return originalFunc(args); // let the original report the shape error

      const temps: TensorInfo[] = [];
      const swapLast = (t: TensorInfo, batch: number, rows: number, cols: number): TensorInfo => {
        // [batch, rows, cols] -> [batch, cols, rows]
        const t3 = reshapeFunc({ inputs: { x: t }, backend: args.backend, attrs: { shape: [batch, rows, cols] } }) as TensorInfo;
        const tt = transposeFunc({ inputs: { x: t3 }, backend: args.backend, attrs: { perm: [0, 2, 1] } }) as TensorInfo;
        temps.push(t3, tt);
        return tt;
      };
      const aPlain = transposeA ? swapLast(a, batchA, k, m) : a; // [batchA, m, k]
      const bPlain = transposeB ? swapLast(b, batchB, n, k) : b; // [batchB, k, n]

      const batch = Math.max(batchA, batchB);
      const outShape = [...(outerA.length >= outerB.length ? outerA : outerB), m, n];
      const out = backend.makeOutput(outShape, 'float32');
      const aOffset = backend.dataIdMap.get(aPlain.dataId).memoryOffset;
      const bOffset = backend.dataIdMap.get(bPlain.dataId).memoryOffset;
      const outOffset = backend.dataIdMap.get(out.dataId).memoryOffset;
      const f = wasmBatchMatMul;
      const run = (aOff: number, rows: number, bOff: number, oOff: number) => {
        const aId = registerView(backend, aOff, rows * k);
        const bId = registerView(backend, bOff, k * n);
        const oId = registerView(backend, oOff, rows * n);
        f(aId, shapeBytes([1, rows, k]), 3, bId, shapeBytes([1, k, n]), 3, false, false, oId);
        backend.wasm.tfjs.disposeData(aId);
        backend.wasm.tfjs.disposeData(bId);
        backend.wasm.tfjs.disposeData(oId);
      };
      if (batchB === 1) {
        run(aOffset, batchA * m, bOffset, outOffset); // [batchA·m, k]·[k, n]
      } else if (batchA === 1) {
        for (let i = 0; i < batch; i++) run(aOffset, m, bOffset + i * k * n * 4, outOffset + i * m * n * 4);
      } else {
        for (let i = 0; i < batch; i++) run(aOffset + i * m * k * 4, m, bOffset + i * k * n * 4, outOffset + i * m * n * 4);
      }
      for (const t of temps) backend.disposeData(t.dataId);
      return out;
    },
  };
}
