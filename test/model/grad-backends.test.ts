import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend.js';
import { parseLlamaConfig } from '../../src/model/config.js';
import { FullAttention } from '../../src/model/attention.js';
import { initModel } from '../../src/model/weights.js';

/**
 * One full training step (forward, next-token cross-entropy, gradients of every parameter) of
 * a tiny GQA model with packed documents and padding, on wasm (with tfalign's kernels:
 * UnsortedSegmentSum for the embedding gradient, the routed BatchMatMul) and on the pure-JS cpu
 * backend as oracle.
 */
async function trainingStep(backend: 'wasm' | 'cpu') {
  await initBackend(backend, { quiet: true });
  const config = parseLlamaConfig({
    vocab_size: 64, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, initializer_range: 0.1, tie_word_embeddings: true,
  });
  const model = initModel(config, 42);
  const b = 2;
  const t = 12;
  const ids = Int32Array.from({ length: b * t }, (_, i) => (i * 37 + 11) % 64);
  const segmentIds = Int32Array.from({ length: b * t }, (_, i) => (i < t ? (i < 7 ? 1 : 2) : i - t < 10 ? 1 : 0));
  const ctx = new FullAttention({ batchSize: b, seqLen: t, segmentIds });
  const names = [...model.params.keys()].sort();
  const { value, grads } = tf.variableGrads(() => {
    const inputs = tf.tensor2d(ids, [b, t], 'int32');
    const logits = model.logits(model.forward(inputs, ctx)); // [B, T, V]
    const logp = tf.logSoftmax(tf.slice(logits, [0, 0, 0], [b, t - 1, 64])); // [B, T-1, V]
    const labels = tf.slice(inputs, [0, 1], [b, t - 1]); // [B, T-1]
    const mask = tf.tensor2d(Int32Array.from({ length: b * (t - 1) }, (_, i) => {
      const r = Math.floor(i / (t - 1));
      const j = (i % (t - 1)) + 1;
      return segmentIds[r * t + j] !== 0 && segmentIds[r * t + j] === segmentIds[r * t + j - 1] ? 1 : 0;
    }), [b, t - 1]).toFloat();
    const picked = tf.sum(tf.mul(logp, tf.oneHot(labels, 64)), -1); // [B, T-1]
    return tf.neg(tf.div(tf.sum(tf.mul(picked, mask)), tf.sum(mask))) as tf.Scalar;
  }, names.map((n) => model.params.get(n)!));
  ctx.dispose();
  const loss = value.dataSync()[0];
  const gradValues = new Map<string, Float32Array>();
  names.forEach((n) => gradValues.set(n, grads[model.params.get(n)!.name].dataSync() as Float32Array));
  model.dispose();
  return { loss, gradValues };
}

describe('a training step on wasm equals the cpu oracle', () => {
  it('loss and every gradient agree (relative error < 1e-4)', async () => {
    const wasm = await trainingStep('wasm');
    const cpu = await trainingStep('cpu');
    expect(Math.abs(wasm.loss - cpu.loss) / Math.abs(cpu.loss)).toBeLessThan(1e-4);
    expect(wasm.gradValues.size).toBe(cpu.gradValues.size);
    for (const [name, g] of cpu.gradValues) {
      const w = wasm.gradValues.get(name)!;
      let diff = 0;
      let norm = 0;
      for (let i = 0; i < g.length; i++) {
        diff += (w[i] - g[i]) ** 2;
        norm += g[i] ** 2;
      }
      expect(norm, name).toBeGreaterThan(0);
      expect(Math.sqrt(diff / norm), name).toBeLessThan(1e-4);
    }
  });
});
