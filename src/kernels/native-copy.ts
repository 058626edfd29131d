/**
 * `Concat`, `Slice` and `SplitV` of float32 on the wasm backend as block copies in the native
 * addon (`copyBlock`: one memcpy per contiguous run, straight on the wasm heap). wasm's Concat
 * copies each run through a new `subarray` view and its Slice / SplitV walk every element with a
 * full index: RoPE's rotate-half and its gradient (halves of [8, 6, 256, 64]) took 4–18 ms per
 * call; a JS loop over the heap is no better (a multi-GB typed array leaves V8's fast element
 * path). Other dtypes and rank-0 tensors go to wasm's kernels. (PadV2 stays wasm's: a native
 * version measured no faster.)
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackendLike } from './wasm-backend.js';
import type { NativeAddon } from './native-addon.js';

const sizeOf = (dims: number[]) => dims.reduce((a, b) => a * b, 1);
const zeros = (rank: number) => new Array<number>(rank).fill(0);

/** A new float32 output of `size` holding the block of x at corner `begin`. */
function sliceCopy(addon: NativeAddon, backend: WasmBackendLike, x: TensorInfo, begin: number[], size: number[]): TensorInfo {
  const out = backend.makeOutput(size, 'float32');
  // Offsets and the heap are read after makeOutput: its malloc may grow (and replace) the buffer.
  const src = backend.dataIdMap.get(x.dataId).memoryOffset;
  const dst = backend.dataIdMap.get(out.dataId).memoryOffset;
  addon.copyBlock(backend.wasm.HEAPU8, src, x.shape, begin, dst, size, zeros(size.length), size);
  return out;
}

export function makeNativeSlice(addon: NativeAddon, originalFunc: KernelFunc): KernelConfig {
  return {
    kernelName: 'Slice',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: TensorInfo };
      const { begin, size } = args.attrs as { begin: number | number[]; size: number | number[] };
      if (x.dtype !== 'float32' || x.shape.length === 0) return originalFunc(args);
      const [begin_, size_] = tf.slice_util.parseSliceParams(x as unknown as tf.Tensor, begin, size);
      return sliceCopy(addon, args.backend as unknown as WasmBackendLike, x, begin_, size_);
    },
  };
}

export function makeNativeSplitV(addon: NativeAddon, originalFunc: KernelFunc): KernelConfig {
  return {
    kernelName: 'SplitV',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: TensorInfo };
      const { numOrSizeSplits, axis } = args.attrs as { numOrSizeSplits: number | number[]; axis: number };
      if (x.dtype !== 'float32' || x.shape.length === 0) return originalFunc(args);
      const parsedAxis = tf.util.parseAxisParam(axis, x.shape)[0];
      const splitSizes = tf.backend_util.prepareSplitSize(x as unknown as tf.Tensor, numOrSizeSplits, parsedAxis);
      const backend = args.backend as unknown as WasmBackendLike;
      const begin = zeros(x.shape.length);
      return splitSizes.map((n) => {
        const size = x.shape.map((d, i) => (i === parsedAxis ? n : d)); // the piece: x's shape with n on the split axis
        const out = sliceCopy(addon, backend, x, begin, size);
        begin[parsedAxis] += n;
        return out;
      });
    },
  };
}

export function makeNativeConcat(addon: NativeAddon, originalFunc: KernelFunc): KernelConfig {
  return {
    kernelName: 'Concat',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const inputs = (args.inputs as unknown as TensorInfo[]).filter((t) => sizeOf(t.shape) > 0);
      const { axis } = args.attrs as { axis: number };
      if (inputs.length < 2 || inputs.some((t) => t.dtype !== 'float32' || t.shape.length === 0)) return originalFunc(args);
      const parsedAxis = tf.util.parseAxisParam(axis, inputs[0].shape)[0];
      const rank = inputs[0].shape.length;
      const sameOtherAxes = inputs.every((t) => t.shape.length === rank && t.shape.every((d, i) => i === parsedAxis || d === inputs[0].shape[i]));
      if (!sameOtherAxes) return originalFunc(args); // let wasm report the shape error
      const outShape = tf.backend_util.computeOutShape(inputs.map((t) => t.shape), parsedAxis);
      const backend = args.backend as unknown as WasmBackendLike;
      const out = backend.makeOutput(outShape, 'float32');
      // Offsets and the heap are read after makeOutput: its malloc may grow (and replace) the buffer.
      const dst = backend.dataIdMap.get(out.dataId).memoryOffset;
      const heap = backend.wasm.HEAPU8;
      const corner = zeros(rank);
      for (const t of inputs) {
        addon.copyBlock(heap, backend.dataIdMap.get(t.dataId).memoryOffset, t.shape, zeros(rank), dst, outShape, corner, t.shape);
        corner[parsedAxis] += t.shape[parsedAxis];
      }
      return out;
    },
  };
}
