/**
 * `Sum` for the wasm backend on the native addon (native/elementwise.cc). wasm's Sum reduces only
 * innermost axes, so any other reduction first runs wasm's general transpose (an index computed per
 * element): a bias-style gradient, Σ over the rows of a [2048, 384] tensor, took ~7 ms that way.
 * The native kernel sums any contiguous block of axes in place — x viewed as [A, R, C], the sum
 * over R — with 8-lane vectors. Non-contiguous axis sets, non-float32 inputs and empty axis lists
 * go to wasm's kernel.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackendLike } from './wasm-backend.js';
import { nativeThreads, type NativeAddon } from './native-addon.js';

export function makeNativeSum(addon: NativeAddon, originalFunc: KernelFunc): KernelConfig {
  return {
    kernelName: 'Sum',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: TensorInfo };
      const { axis, keepDims } = args.attrs as { axis: number | number[]; keepDims: boolean };
      if (x.dtype !== 'float32') return originalFunc(args);
      const axes = tf.util.parseAxisParam(axis, x.shape).sort((p, q) => p - q);
      if (axes.length === 0 || axes.some((a, i) => a !== axes[0] + i)) return originalFunc(args); // not one contiguous block
      const first = axes[0];
      const last = axes[axes.length - 1];
      const size = (dims: number[]) => dims.reduce((p, q) => p * q, 1);
      const numOuter = size(x.shape.slice(0, first)); // A
      const numReduced = size(x.shape.slice(first, last + 1)); // R
      const numInner = size(x.shape.slice(last + 1)); // C
      const outShape = keepDims ? x.shape.map((d, i) => (i >= first && i <= last ? 1 : d)) : x.shape.filter((_, i) => i < first || i > last);
      const backend = args.backend as unknown as WasmBackendLike;
      const out = backend.makeOutput(outShape, 'float32');
      if (numOuter * numInner === 0) return out;
      // Offsets and the heap are read after makeOutput: its malloc may grow (and replace) the buffer.
      const xOffset = backend.dataIdMap.get(x.dataId).memoryOffset;
      const outOffset = backend.dataIdMap.get(out.dataId).memoryOffset;
      addon.sum(backend.wasm.HEAPU8, xOffset, outOffset, numOuter, numReduced, numInner, nativeThreads(addon)); // [A, R, C] → [A, C]
      return out;
    },
  };
}
