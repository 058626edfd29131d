/** Shared setup of the native-kernel tests: the addon, the wasm backend, and reading a result once. */
import * as tf from '@tensorflow/tfjs';
import { beforeAll } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { loadNativeAddon } from '../../src/kernels/native-addon.js';

export const native = loadNativeAddon();

/** Runs `make` and reads its result; the tensors it made are disposed. (Read outside tf.tidy: tidy walks a returned typed array element by element.) */
export function readOnce(make: () => tf.Tensor): Float32Array {
  const t = tf.tidy(make);
  const values = t.dataSync() as Float32Array;
  t.dispose();
  return values;
}

/** Starts the wasm backend before the file's tests. */
export function useWasmBackend(): void {
  beforeAll(async () => {
    await initBackend('wasm', { quiet: true });
  });
}
