/**
 * `GatherV2` and `Concat` for float32 on the wasm backend as plain copies of contiguous runs
 * within the wasm heap (`Float32Array.copyWithin`, no allocation per run):
 *   - wasm's Gather computes an index per element and asserts each id through a closure: the
 *     embedding lookup of a training step (2,048 rows of 384 from [8192, 384]) took ~25 ms;
 *   - wasm's Concat copies each run through a new `subarray` view: RoPE's rotate-half (two
 *     [8, 6, 256, 32] halves into [8, 6, 256, 64]) took ~18 ms.
 * Runs shorter than 8 floats, batched gathers and other dtypes go to wasm's kernels.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackendLike } from './wasm-backend.js';

const MIN_RUN = 8;

const sizeOf = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

/** The heap as floats (a fresh view: the buffer is replaced when the heap grows). */
function heapFloats(backend: WasmBackendLike): Float32Array {
  const heap = backend.wasm.HEAPU8;
  return new Float32Array(heap.buffer, heap.byteOffset, heap.byteLength >> 2);
}

export function makeCopyGather(originalFunc: KernelFunc): KernelConfig {
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
      const src = backend.dataIdMap.get(x.dataId).memoryOffset >> 2;
      const dst = backend.dataIdMap.get(out.dataId).memoryOffset >> 2;
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

export function makeCopyConcat(originalFunc: KernelFunc): KernelConfig {
  return {
    kernelName: 'Concat',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const inputs = (args.inputs as unknown as TensorInfo[]).filter((t) => sizeOf(t.shape) > 0);
      const { axis } = args.attrs as { axis: number };
      if (inputs.length < 2 || inputs.some((t) => t.dtype !== 'float32')) return originalFunc(args);
      const parsedAxis = tf.util.parseAxisParam(axis, inputs[0].shape)[0];
      const runLengths = inputs.map((t) => sizeOf(t.shape.slice(parsedAxis))); // floats per input per outer index
      if (runLengths.some((n) => n < MIN_RUN)) return originalFunc(args);
      const numOuter = sizeOf(inputs[0].shape.slice(0, parsedAxis));
      if (inputs.some((t) => sizeOf(t.shape.slice(0, parsedAxis)) !== numOuter)) return originalFunc(args); // let wasm report the shape error
      const outShape = tf.backend_util.computeOutShape(inputs.map((t) => t.shape), parsedAxis);
      const backend = args.backend as unknown as WasmBackendLike;
      const out = backend.makeOutput(outShape, 'float32');
      // Offsets and the heap are read after makeOutput: its malloc may grow (and replace) the buffer.
      const srcs = inputs.map((t) => backend.dataIdMap.get(t.dataId).memoryOffset >> 2);
      const dst = backend.dataIdMap.get(out.dataId).memoryOffset >> 2;
      const heap = heapFloats(backend);
      const rowLength = runLengths.reduce((a, b) => a + b, 0);
      for (let o = 0; o < numOuter; o++) {
        let to = dst + o * rowLength;
        for (let i = 0; i < srcs.length; i++) {
          const from = srcs[i] + o * runLengths[i];
          heap.copyWithin(to, from, from + runLengths[i]);
          to += runLengths[i];
        }
      }
      return out;
    },
  };
}
