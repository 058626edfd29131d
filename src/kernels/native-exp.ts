/**
 * `Exp` for the wasm backend on the native addon's vectorised exp (native/elementwise.cc): the
 * wasm kernel calls scalar expf per element (~12 ns each here), and a training step
 * exponentiates every logit twice (log-sum-exp forward, softmax in its gradient: 2 × B·T·V values).
 * Within 2 ulp of expf; ±inf, NaN and subnormal results as IEEE gives them.
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackendLike } from './wasm-backend.js';
import { nativeThreads, type NativeAddon } from './native-addon.js';

export function makeNativeExp(addon: NativeAddon, originalFunc: KernelFunc): KernelConfig {
  return {
    kernelName: 'Exp',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: TensorInfo };
      if (x.dtype !== 'float32') return originalFunc(args);
      const backend = args.backend as unknown as WasmBackendLike;
      const out = backend.makeOutput(x.shape, 'float32');
      const count = x.shape.reduce((a, b) => a * b, 1);
      if (count === 0) return out;
      // Offsets and the heap are read after makeOutput: its malloc may grow (and replace) the buffer.
      const xOffset = backend.dataIdMap.get(x.dataId).memoryOffset;
      const outOffset = backend.dataIdMap.get(out.dataId).memoryOffset;
      addon.exp(backend.wasm.HEAPU8, xOffset, outOffset, count, nativeThreads(addon));
      return out;
    },
  };
}
