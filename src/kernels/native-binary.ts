/**
 * `Add`, `Sub`, `Multiply` and `RealDiv` of float32 on the wasm backend in the native addon, with
 * broadcasting, straight on the wasm heap. wasm's binary kernels take a general index path as soon
 * as one side broadcasts (a bias, a norm's per-row scale, the softmax gradient's [B, T, 1] factor)
 * and a training step makes ~1,100 such calls. The shapes are first collapsed: axes of size 1 in
 * the output are dropped and neighbouring axes that broadcast the same way are merged, so
 * [2048, 1] · [2048, 384] becomes rows of 384 times one scalar each. IEEE single operations, so
 * results are bit-identical to wasm's. Other dtypes, more than 8 collapsed axes and innermost runs
 * shorter than 4 go to wasm's kernels.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackendLike } from './wasm-backend.js';
import { nativeThreads, type NativeAddon } from './native-addon.js';

/** The addon's op codes (native/elementwise.h, BinaryOp). */
const OP_CODES = { Add: 0, Sub: 1, Multiply: 2, RealDiv: 3 } as const;

export type BinaryKernelName = keyof typeof OP_CODES;

export const NATIVE_BINARY_KERNELS = Object.keys(OP_CODES) as BinaryKernelName[];

/** Collapsed broadcast layout: output dims and each operand's element strides (0 = broadcast). */
export interface BroadcastLayout {
  shape: number[];
  aStrides: number[];
  bStrides: number[];
}

/**
 * Collapses a broadcast of `aShape` with `bShape` into the fewest axes (see the file comment).
 * E.g. [8, 255, 1] with [8, 255, 8192] → shape [2040, 8192], aStrides [1, 0], bStrides [8192, 1].
 */
export function collapseBroadcast(aShape: number[], bShape: number[], outShape: number[]): BroadcastLayout {
  const rank = outShape.length;
  const pad = (s: number[]) => [...new Array<number>(rank - s.length).fill(1), ...s];
  const a = pad(aShape);
  const b = pad(bShape);
  const dims: { size: number; aFull: boolean; bFull: boolean }[] = [];
  for (let i = 0; i < rank; i++) {
    if (outShape[i] === 1) continue; // contributes nothing
    const axis = { size: outShape[i], aFull: a[i] !== 1, bFull: b[i] !== 1 };
    const last = dims[dims.length - 1];
    if (last && last.aFull === axis.aFull && last.bFull === axis.bFull) last.size *= axis.size;
    else dims.push(axis);
  }
  if (dims.length === 0) dims.push({ size: 1, aFull: false, bFull: false });
  const aStrides = new Array<number>(dims.length);
  const bStrides = new Array<number>(dims.length);
  let aRun = 1;
  let bRun = 1;
  for (let i = dims.length - 1; i >= 0; i--) {
    aStrides[i] = dims[i].aFull ? aRun : 0;
    bStrides[i] = dims[i].bFull ? bRun : 0;
    if (dims[i].aFull) aRun *= dims[i].size;
    if (dims[i].bFull) bRun *= dims[i].size;
  }
  return { shape: dims.map((d) => d.size), aStrides, bStrides };
}

export function makeNativeBinary(name: BinaryKernelName, addon: NativeAddon, originalFunc: KernelFunc): KernelConfig {
  const op = OP_CODES[name];
  return {
    kernelName: name,
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
      if (a.dtype !== 'float32' || b.dtype !== 'float32') return originalFunc(args);
      const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
      const layout = collapseBroadcast(a.shape, b.shape, outShape);
      const rank = layout.shape.length;
      const total = outShape.reduce((p, q) => p * q, 1);
      if (rank > 8 || (layout.shape[rank - 1] < 4 && total > 1)) return originalFunc(args);
      const backend = args.backend as unknown as WasmBackendLike;
      const out = backend.makeOutput(outShape, 'float32');
      if (total === 0) return out;
      // Offsets and the heap are read after makeOutput: its malloc may grow (and replace) the buffer.
      const aOffset = backend.dataIdMap.get(a.dataId).memoryOffset;
      const bOffset = backend.dataIdMap.get(b.dataId).memoryOffset;
      const outOffset = backend.dataIdMap.get(out.dataId).memoryOffset;
      addon.binary(backend.wasm.HEAPU8, op, aOffset, layout.aStrides, bOffset, layout.bStrides, outOffset, layout.shape, nativeThreads(addon));
      return out;
    },
  };
}
