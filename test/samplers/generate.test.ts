import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend.js';
import { parseLlamaConfig } from '../../src/model/config.js';
import { initModel } from '../../src/model/weights.js';
import { generate } from '../../samplers/generate.js';
import { DecodingOptionsSchema, filteredDistribution, sampleToken } from '../../samplers/decoding.js';
import { Rng } from '../../src/util/rng.js';

const config = parseLlamaConfig({
  vocab_size: 40, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,
  num_attention_heads: 4, num_key_value_heads: 2, initializer_range: 0.3, max_position_embeddings: 64,
});

describe('generate: dense KV cache vs full recompute', () => {
  beforeAll(async () => {
    await initBackend('wasm', { quiet: true });
  });

  it('greedy: identical token ids, logits within 1e-4 at every step', () => {
    const model = initModel(config, 9);
    const prompt = [1, 5, 9, 13, 2, 7, 7, 30, 31, 4, 18];
    const decoding = DecodingOptionsSchema.parse({ temperature: 0, maxNewTokens: 12 });
    const logitsBy: Record<string, Float32Array[]> = { dense: [], none: [] };
    const out: Record<string, number[][]> = {};
    for (const kvCache of ['dense', 'none'] as const) {
      const numBefore = tf.memory().numTensors;
      out[kvCache] = generate(model, prompt, {
        numSamples: 2, decoding, seed: 0, kvCache,
        onLogits: (_s, l) => logitsBy[kvCache].push(Float32Array.from(l)),
      }).map((s) => s.tokenIds);
      expect(tf.memory().numTensors).toBe(numBefore); // the cache and every step's tensors are released
    }
    expect(out.dense).toEqual(out.none);
    expect(out.dense[0]).toHaveLength(12);
    for (let s = 0; s < logitsBy.none.length; s++) {
      let m = 0;
      for (let i = 0; i < logitsBy.none[s].length; i++) m = Math.max(m, Math.abs(logitsBy.none[s][i] - logitsBy.dense[s][i]));
      expect(m).toBeLessThan(1e-4);
    }
    model.dispose();
  });

  it('sampling: sample i uses seed + i, so results do not depend on K', () => {
    const model = initModel(config, 4);
    const decoding = DecodingOptionsSchema.parse({ temperature: 1, topK: 10, maxNewTokens: 6 });
    const four = generate(model, [3, 4, 5], { numSamples: 4, decoding, seed: 100, kvCache: 'dense' });
    const two = generate(model, [3, 4, 5], { numSamples: 2, decoding, seed: 100, kvCache: 'dense' });
    const shifted = generate(model, [3, 4, 5], { numSamples: 1, decoding, seed: 102, kvCache: 'none' });
    expect(two.map((s) => s.tokenIds)).toEqual(four.slice(0, 2).map((s) => s.tokenIds));
    expect(shifted[0].tokenIds).toEqual(four[2].tokenIds);
    expect(new Set(four.map((s) => s.tokenIds.join(','))).size).toBeGreaterThan(1);
    model.dispose();
  });

  it('stops at a stop token and reports why', () => {
    const model = initModel(config, 9);
    const greedy = generate(model, [1, 2, 3], { numSamples: 1, decoding: DecodingOptionsSchema.parse({ temperature: 0, maxNewTokens: 8 }), seed: 0, kvCache: 'dense' });
    const firstToken = greedy[0].tokenIds[0];
    const stopped = generate(model, [1, 2, 3], {
      numSamples: 1, decoding: DecodingOptionsSchema.parse({ temperature: 0, maxNewTokens: 8, stopTokenIds: [firstToken] }), seed: 0, kvCache: 'dense',
    });
    expect(stopped[0]).toEqual({ tokenIds: [firstToken], finishReason: 'stop' });
    expect(greedy[0].finishReason).toBe('length');
    model.dispose();
  });
});

describe('decoding filters', () => {
  // logits ln(4), ln(3), ln(2), ln(1) → probabilities 0.4, 0.3, 0.2, 0.1
  const logits = [Math.log(4), Math.log(3), Math.log(2), Math.log(1)];
  it('top-k keeps k tokens renormalised', () => {
    const d = filteredDistribution(logits, { temperature: 1, topK: 2, topP: 1 });
    expect(d.ids).toEqual([0, 1]);
    expect(d.probs[0]).toBeCloseTo(4 / 7, 10);
  });
  it('top-p keeps the smallest prefix reaching p', () => {
    // cumulative 0.4, 0.7, 0.9 → p = 0.75 keeps three tokens
    const d = filteredDistribution(logits, { temperature: 1, topK: 0, topP: 0.75 });
    expect(d.ids).toEqual([0, 1, 2]);
    expect(d.probs[2]).toBeCloseTo(2 / 9, 10);
  });
  it('temperature 0.5 squares the odds', () => {
    const d = filteredDistribution(logits, { temperature: 0.5, topK: 0, topP: 1 });
    expect(d.probs[0] / d.probs[1]).toBeCloseTo(16 / 9, 10);
  });
  it('sampling frequencies follow the distribution', () => {
    const rng = new Rng(1);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 20000; i++) counts[sampleToken(logits, { temperature: 1, topK: 0, topP: 1 }, rng)]++;
    expect(counts[0] / 20000).toBeCloseTo(0.4, 1);
    expect(counts[3] / 20000).toBeCloseTo(0.1, 1);
  });
});
