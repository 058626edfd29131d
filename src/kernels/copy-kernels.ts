/**
 * `GatherV2`, `Concat`, `Slice`, `SplitV` and `PadV2` for float32 on the wasm backend as plain
 * copies of contiguous runs within the wasm heap (no allocation per run):
 *   - wasm's Gather computes an index per element and asserts each id through a closure: the
 *     embedding lookup of a training step (2,048 rows of 384 from [8192, 384]) took ~25 ms;
 *   - wasm's Concat copies each run through a new `subarray` view, and its Slice / SplitV / PadV2
 *     walk every element with a full index: RoPE's rotate-half and its gradient (halves of
 *     [8, 6, 256, 64]) took 15–25 ms per call.
 * Runs shorter than 8 floats, batched gathers and other dtypes go to wasm's kernels.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackendLike } from './wasm-backend.js';

const MIN_RUN = 8;

const sizeOf = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

/** Copies `length` floats within the heap: a loop for short runs (copyWithin's call costs ~0.5 µs), copyWithin for long ones. */
function copyRun(heap: Float32Array, to: number, from: number, length: number): void {
  if (length < 128) {
    for (let i = 0; i < length; i++) heap[to + i] = heap[from + i];
  } else {
    heap.copyWithin(to, from, from + length);
  }
}

const stridesOf = (shape: number[]) => shape.map((_, i) => sizeOf(shape.slice(i + 1)));

/**
 * Copies the block `blockShape` of the row-major tensor at float index `src` (shape `srcShape`,
 * block corner `srcBegin`) to the tensor at `dst` (shape `dstShape`, corner `dstBegin`). Axes after
 * the last one where the block is narrower than either tensor are whole, so each step of the
 * remaining outer axes copies one contiguous run.
 */
function copyBlock(heap: Float32Array, src: number, srcShape: number[], srcBegin: number[], dst: number, dstShape: number[], dstBegin: number[], blockShape: number[]): void {
  const rank = blockShape.length;
  if (sizeOf(blockShape) === 0) return;
  let k = rank - 1; // innermost axis that is not whole in both tensors
  while (k > 0 && blockShape[k] === srcShape[k] && blockShape[k] === dstShape[k]) k--;
  const srcStrides = stridesOf(srcShape);
  const dstStrides = stridesOf(dstShape);
  const run = blockShape[k] * srcStrides[k]; // = blockShape[k] · dstStrides[k]: axes after k are whole
  const index = new Array<number>(k).fill(0); // odometer over axes 0 … k−1 of the block
  for (;;) {
    let from = src + srcBegin[k] * srcStrides[k];
    let to = dst + dstBegin[k] * dstStrides[k];
    for (let a = 0; a < k; a++) {
      from += (srcBegin[a] + index[a]) * srcStrides[a];
      to += (dstBegin[a] + index[a]) * dstStrides[a];
    }
    copyRun(heap, to, from, run);
    let a = k - 1;
    while (a >= 0 && ++index[a] === blockShape[a]) index[a--] = 0;
    if (a < 0) return;
  }
}

/** The heap as floats (a fresh view: the buffer is replaced when the heap grows). */
function heapFloats(backend: WasmBackendLike): Float32Array {
  const heap = backend.wasm.HEAPU8;
  return new Float32Array(heap.buffer, heap.byteOffset, heap.byteLength >>> 2);
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
      const src = backend.dataIdMap.get(x.dataId).memoryOffset / 4;
      const dst = backend.dataIdMap.get(out.dataId).memoryOffset / 4;
      const heap = heapFloats(backend);
      for (let o = 0; o < numOuter; o++) {
        const srcBase = src + o * axisDim * runLength;
        const dstBase = dst + o * numIds * runLength;
        for (let i = 0; i < numIds; i++) {
          copyRun(heap, dstBase + i * runLength, srcBase + idsNow[i] * runLength, runLength);
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
      const srcs = inputs.map((t) => backend.dataIdMap.get(t.dataId).memoryOffset / 4);
      const dst = backend.dataIdMap.get(out.dataId).memoryOffset / 4;
      const heap = heapFloats(backend);
      const rowLength = runLengths.reduce((a, b) => a + b, 0);
      for (let o = 0; o < numOuter; o++) {
        let to = dst + o * rowLength;
        for (let i = 0; i < srcs.length; i++) {
          copyRun(heap, to, srcs[i] + o * runLengths[i], runLengths[i]);
          to += runLengths[i];
        }
      }
      return out;
    },
  };
}

/** The innermost run a block copy of `blockShape` out of `shape` would use (see copyBlock). */
function innerRun(shape: number[], blockShape: number[]): number {
  let k = blockShape.length - 1;
  while (k > 0 && blockShape[k] === shape[k]) k--;
  return sizeOf(blockShape.slice(k));
}

/** Slices x (float32) into a new output of `size` at corner `begin`. */
function sliceCopy(backend: WasmBackendLike, x: TensorInfo, begin: number[], size: number[]): TensorInfo {
  const out = backend.makeOutput(size, 'float32');
  // Offsets and the heap are read after makeOutput: its malloc may grow (and replace) the buffer.
  const heap = heapFloats(backend);
  const src = backend.dataIdMap.get(x.dataId).memoryOffset / 4;
  const dst = backend.dataIdMap.get(out.dataId).memoryOffset / 4;
  copyBlock(heap, src, x.shape, begin, dst, size, size.map(() => 0), size);
  return out;
}

export function makeCopySlice(originalFunc: KernelFunc): KernelConfig {
  return {
    kernelName: 'Slice',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: TensorInfo };
      const { begin, size } = args.attrs as { begin: number | number[]; size: number | number[] };
      if (x.dtype !== 'float32' || x.shape.length === 0) return originalFunc(args);
      const [begin_, size_] = tf.slice_util.parseSliceParams(x as unknown as tf.Tensor, begin, size);
      if (innerRun(x.shape, size_) < MIN_RUN) return originalFunc(args);
      return sliceCopy(args.backend as unknown as WasmBackendLike, x, begin_, size_);
    },
  };
}

export function makeCopySplitV(originalFunc: KernelFunc): KernelConfig {
  return {
    kernelName: 'SplitV',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: TensorInfo };
      const { numOrSizeSplits, axis } = args.attrs as { numOrSizeSplits: number | number[]; axis: number };
      if (x.dtype !== 'float32') return originalFunc(args);
      const parsedAxis = tf.util.parseAxisParam(axis, x.shape)[0];
      const splitSizes = tf.backend_util.prepareSplitSize(x as unknown as tf.Tensor, numOrSizeSplits, parsedAxis);
      const pieces = splitSizes.map((n) => x.shape.map((d, i) => (i === parsedAxis ? n : d)));
      if (pieces.some((p) => innerRun(x.shape, p) < MIN_RUN)) return originalFunc(args);
      const backend = args.backend as unknown as WasmBackendLike;
      const begin = x.shape.map(() => 0);
      return pieces.map((size) => {
        const out = sliceCopy(backend, x, begin, size);
        begin[parsedAxis] += size[parsedAxis];
        return out;
      });
    },
  };
}

export function makeCopyPad(originalFunc: KernelFunc): KernelConfig {
  return {
    kernelName: 'PadV2',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: TensorInfo };
      const { paddings, constantValue } = args.attrs as { paddings: [number, number][]; constantValue: number };
      if (x.dtype !== 'float32' || x.shape.length === 0 || sizeOf(x.shape) === 0) return originalFunc(args);
      const outShape = x.shape.map((d, i) => paddings[i][0] + d + paddings[i][1]);
      if (innerRun(outShape, x.shape) < MIN_RUN) return originalFunc(args);
      const backend = args.backend as unknown as WasmBackendLike;
      const out = backend.makeOutput(outShape, 'float32');
      // Offsets and the heap are read after makeOutput: its malloc may grow (and replace) the buffer.
      const heap = heapFloats(backend);
      const src = backend.dataIdMap.get(x.dataId).memoryOffset / 4;
      const dst = backend.dataIdMap.get(out.dataId).memoryOffset / 4;
      heap.fill(constantValue, dst, dst + sizeOf(outShape));
      copyBlock(heap, src, x.shape, x.shape.map(() => 0), dst, outShape, paddings.map((p) => p[0]), x.shape);
      return out;
    },
  };
}
