/**
 * Leak check shared by the loss tests: a loss may leave behind exactly the tensors it returns.
 */
import * as tf from '@tensorflow/tfjs';
import { expect } from 'vitest';

function countTensors(value: unknown): number {
  if (value instanceof tf.Tensor) return 1;
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + countTensors(v), 0);
  if (value !== null && typeof value === 'object') return Object.values(value).reduce((n: number, v) => n + countTensors(v), 0);
  return 0;
}

/**
 * 1. Called bare, `fn` adds exactly as many live tensors as it returns, and disposing them
 *    restores the count (no intermediate escaped).
 * 2. Called inside `tf.tidy`, the count is unchanged afterwards.
 */
export function expectNoLeak(fn: () => unknown): void {
  const before = tf.memory().numTensors;
  const out = fn();
  const numReturned = countTensors(out);
  expect(numReturned).toBeGreaterThan(0);
  expect(tf.memory().numTensors - before).toBe(numReturned);
  tf.dispose(out as tf.TensorContainer);
  expect(tf.memory().numTensors).toBe(before);
  tf.tidy(() => {
    fn();
  });
  expect(tf.memory().numTensors).toBe(before);
}
