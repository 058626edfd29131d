/**
 * `GatherV2` of float32 slices on the wasm backend as `copyWithin` runs inside the wasm heap:
 * wasm's Gather computes an index per element and asserts each id through a closure, so the
 * embedding lookup of a training step (2,048 rows of 384 from [8192, 384]) took ~25 ms; as row
 * copies it takes ~2 ms. Slices shorter than 64 floats (a `copyWithin` call costs ~0.5 µs),
 * batched gathers and other dtypes go to wasm's kernel.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackendLike } from './wasm-backend.js';

const MIN_RUN = 64;

const sizeOf = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

/** The heap as floats (a fresh view: the buffer is replaced when the heap grows). */
function heapFloats(backend: WasmBackendLike): Float32Array {
  const heap = backend.wasm.HEAPU8;
  return new Float32Array(heap.buffer, heap.byteOffset, heap.byteLength >>> 2);
}

export function makeRowGather(originalFunc: KernelFunc): KernelConfig {
  return {
    kernelName: 'GatherV2',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { x, indices } = args.inputs as { x: TensorInfo; indices: TensorInfo };
      const { axis, batchDims } = args.attrs as { axis: number; batchDims: number };
      if (x.dtype !== 'float32' || indices.dtype !== 'int32' || batchDims !== 0) return originalFunc(args);
      const parsedAxis = tf.util.parseAxisParam(axis, x.shape)[0];
      const numOuter = sizeOf(x.shape.slice(0, parsedAxis));
      const axisDim = x.shape[parsedAxis];
      const runLength = sizeOf(x.shape.slice(parsedAxis + 1)); // floats per gathered slice
      if (runLength < MIN_RUN) return originalFunc(args);
      const backend = args.backend as unknown as WasmBackendLike;
      const ids = backend.typedArrayFromHeap(indices) as Int32Array;
      for (let i = 0; i < ids.length; i++) {
        const index = ids[i];
        if (index < 0 || index > axisDim - 1) throw new Error(`GatherV2: the index value ${index} is not in [0, ${axisDim - 1}]`);
      }
      const numIds = ids.length;
      const outShape = [...x.shape.slice(0, parsedAxis), ...indices.shape, ...x.shape.slice(parsedAxis + 1)]; // [outer…, ids…, inner…]
      const out = backend.makeOutput(outShape, 'float32');
      if (numOuter * numIds * runLength === 0) return out;
      // Offsets, ids and the heap are read after makeOutput: its malloc may grow (and replace) the buffer.
      const idsNow = backend.typedArrayFromHeap(indices) as Int32Array;
      const src = backend.dataIdMap.get(x.dataId).memoryOffset / 4;
      const dst = backend.dataIdMap.get(out.dataId).memoryOffset / 4;
      const heap = heapFloats(backend);
      for (let o = 0; o < numOuter; o++) {
        const srcBase = src + o * axisDim * runLength;
        const dstBase = dst + o * numIds * runLength;
        for (let i = 0; i < numIds; i++) {
          const from = srcBase + idsNow[i] * runLength;
          heap.copyWithin(dstBase + i * runLength, from, from + runLength);
        }
      }
      return out;
    },
  };
}
