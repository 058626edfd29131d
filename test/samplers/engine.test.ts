import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend.js';
import { parseLlamaConfig } from '../../src/model/config.js';
import { initModel, toRewardModel } from '../../src/model/weights.js';
import { DenseKVCache } from '../../src/model/attention.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { checkManagerInvariants } from './helpers.js';
import { denseKvBytes, SamplingEngine, type SamplingEngineOptions, type SamplingRequest } from '../../samplers/engine.js';

// initializer_range 0.3: large enough that greedy outputs are not one repeated token.
const config = parseLlamaConfig({
  vocab_size: 40, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,
  num_attention_heads: 4, num_key_value_heads: 2, initializer_range: 0.3, max_position_embeddings: 64,
});

/** Runs the engine and collects every logits row by "request/sample/step". */
function run(model: LlamaModel, options: Omit<SamplingEngineOptions, 'model'>, requests: SamplingRequest[], decoding: object) {
  const engine = new SamplingEngine({ model, blockSize: 4, ...options });
  const logits = new Map<string, Float32Array>();
  const result = engine.generate(requests, decoding, {
    onLogits: (e) => logits.set(`${e.requestIndex}/${e.sampleIndex}/${e.step}`, Float32Array.from(e.logits)),
  });
  return { ...result, logits, engine };
}

const tokens = (outputs: { tokenIds: number[] }[][]) => outputs.map((samples) => samples.map((s) => s.tokenIds));

function maxLogitsDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  let max = 0;
  for (const [key, x] of a) {
    const y = b.get(key)!;
    for (let i = 0; i < x.length; i++) max = Math.max(max, Math.abs(x[i]! - y[i]!));
  }
  return max;
}

// Prompt lengths around the block size 4: 11 (partial last block), 8 (exactly two blocks), 3 (less than one).
const requests: SamplingRequest[] = [
  { promptIds: [1, 5, 9, 13, 2, 7, 7, 30, 31, 4, 18], numSamples: 3, seed: 0 },
  { promptIds: [6, 2, 19, 33, 8, 8, 1, 25], numSamples: 2, seed: 50 },
  { promptIds: [3, 4, 5], numSamples: 2, seed: 90 },
];

describe('SamplingEngine: paged vs recompute', () => {
  let model: LlamaModel;
  beforeAll(async () => {
    await initBackend('wasm', { quiet: true });
    model = initModel(config, 9);
  });

  it('greedy: the same token ids as `none`, logits within 1e-4 at every step, with and without cascade', () => {
    const decoding = { temperature: 0, maxNewTokens: 13 }; // 11 + 12 stored tokens: six blocks of 4
    const reference = run(model, { kvCache: 'none' }, requests, decoding);
    for (const cascadeAttention of [true, false]) {
      const paged = run(model, { kvCache: 'paged', cascadeAttention }, requests, decoding);
      expect(tokens(paged.outputs)).toEqual(tokens(reference.outputs));
      expect(maxLogitsDiff(paged.logits, reference.logits)).toBeLessThan(1e-4);
      expect(paged.stats.numPrefillTokens).toBe(11 + 8 + 3); // each prompt once
      expect(paged.stats.numForwardPasses).toBe(3 + 12); // three prefills, then 12 steps with every sequence
    }
    expect(reference.outputs[0]![0]!.tokenIds).toHaveLength(13);
    expect(new Set(reference.outputs[0]![0]!.tokenIds).size).toBeGreaterThan(3); // not degenerate
  });

  it('a prefix-cache hit (within a call, across calls, and a full hit) gives the same tokens and logits', () => {
    const decoding = { temperature: 0, maxNewTokens: 6 };
    const shared = [1, 5, 9, 13, 2, 7, 7, 30];
    const first: SamplingRequest[] = [
      { promptIds: [...shared, 31, 4, 18], numSamples: 2, seed: 0 },
      { promptIds: [...shared, 12, 12], numSamples: 2, seed: 0 }, // hits the 2 blocks of the request before it
    ];
    const engine = new SamplingEngine({ model, kvCache: 'paged', blockSize: 4 });
    const reference = run(model, { kvCache: 'none' }, first, decoding);
    const logits = new Map<string, Float32Array>();
    const out1 = engine.generate(first, decoding, { onLogits: (e) => logits.set(`${e.requestIndex}/${e.sampleIndex}/${e.step}`, Float32Array.from(e.logits)) });
    expect(tokens(out1.outputs)).toEqual(tokens(reference.outputs));
    expect(maxLogitsDiff(logits, reference.logits)).toBeLessThan(1e-4);
    // 8 of 21 prompt tokens came from the cache.
    expect(out1.stats.prefixCacheHitRate).toBeCloseTo(8 / 21, 12);
    expect(out1.stats.numPrefillTokens).toBe(11 + 2);

    // Across calls: the same prompts again are full hits (all blocks before the last token), so
    // only the partial last blocks (3 and 2 tokens) are recomputed.
    const out2 = engine.generate(first, decoding);
    expect(tokens(out2.outputs)).toEqual(tokens(reference.outputs));
    expect(out2.stats.numPrefillTokens).toBe(3 + 2);
    expect(out2.stats.prefixCacheHitRate).toBeCloseTo(16 / 21, 12);

    // After the weights change the cache is emptied: the first call's blocks are not hit any
    // more, only the second request's hit on the first request of the same call remains.
    engine.resetPrefixCache();
    const out3 = engine.generate(first, decoding);
    expect(out3.stats.prefixCacheHitRate).toBeCloseTo(8 / 21, 12);
    expect(out3.stats.numPrefillTokens).toBe(11 + 2);
    expect(tokens(out3.outputs)).toEqual(tokens(reference.outputs));
    // The cache manager owns the counts; each call reported its own share of them.
    expect(engine.cache!.manager.stats()).toMatchObject({ numPromptTokens: 3 * 21, numCachedPromptTokens: 8 + 16 + 8, numSequences: 0 });
  });

  it('forks that drift apart inside a shared partial block keep their own tokens', () => {
    // Prompt of 5 tokens: its second block holds 1 token and is shared by 4 forks, which then
    // sample different tokens into it (copy-on-write). Each must match the recompute exactly.
    const decoding = { temperature: 1, maxNewTokens: 9 };
    const drift: SamplingRequest[] = [{ promptIds: [11, 3, 27, 3, 8], numSamples: 4, seed: 7 }];
    const paged = run(model, { kvCache: 'paged' }, drift, decoding);
    const reference = run(model, { kvCache: 'none' }, drift, decoding);
    expect(tokens(paged.outputs)).toEqual(tokens(reference.outputs));
    expect(maxLogitsDiff(paged.logits, reference.logits)).toBeLessThan(1e-4);
    const firstTokens = new Set(paged.outputs[0]!.map((s) => s.tokenIds[0]));
    expect(firstTokens.size).toBeGreaterThan(1); // they did drift apart inside the shared block
  });

  it('sample i uses seed + i: results do not depend on batch composition, maxNumSeqs or the pool', () => {
    const decoding = { temperature: 1, topK: 10, maxNewTokens: 10 };
    const target: SamplingRequest = { promptIds: [2, 9, 9, 4, 31, 17, 5], numSamples: 3, seed: 300 };
    const alone = run(model, { kvCache: 'paged' }, [target], decoding).outputs[0];
    const crowded = run(model, { kvCache: 'paged' }, [requests[0]!, target, requests[2]!], decoding).outputs[1];
    const oneAtATime = run(model, { kvCache: 'paged', maxNumSeqs: 1 }, [requests[1]!, target], decoding).outputs[1];
    const dense = run(model, { kvCache: 'dense' }, [target], decoding).outputs[0];
    const shifted = run(model, { kvCache: 'paged' }, [{ ...target, numSamples: 1, seed: 302 }], decoding).outputs[0];
    expect(crowded).toEqual(alone);
    expect(oneAtATime).toEqual(alone);
    expect(dense).toEqual(alone);
    expect(shifted![0]).toEqual(alone![2]);
    expect(new Set(alone!.map((s) => s.tokenIds.join(','))).size).toBeGreaterThan(1);
  });

  it('a full pool makes prompts wait (counted) instead of failing, and everything completes', () => {
    const decoding = { temperature: 1, maxNewTokens: 10 };
    const many: SamplingRequest[] = [0, 1, 2, 3].map((p) => ({ promptIds: [p + 1, 7, 3, 20, 5, p + 2], numSamples: 3, seed: 10 * p }));
    const roomy = run(model, { kvCache: 'paged' }, many, decoding);
    expect(roomy.stats.numWaits).toBe(0);
    // One group needs ⌈6/4⌉ = 2 prompt blocks + 3 samples × (⌈15/4⌉ − 1) = 11 blocks: 14 blocks hold one at a time.
    const tight = run(model, { kvCache: 'paged', numBlocks: 14 }, many, decoding);
    expect(tight.outputs).toEqual(roomy.outputs);
    expect(tight.stats.numWaits).toBeGreaterThan(0);
    expect(tight.stats.peakKvBytes).toBeLessThanOrEqual(14 * 4 * 256);
    expect(tight.engine.cache!.manager.stats().numSequences).toBe(0);
    checkManagerInvariants(tight.engine.cache!.manager);
    // 8 blocks cannot hold all 3 samples of one prompt (2 + 3·3 = 11): they are split 2 + 1.
    const split = run(model, { kvCache: 'paged', numBlocks: 8 }, many, decoding);
    expect(split.outputs).toEqual(roomy.outputs);
    // One new token: a sample needs 2 + 1 blocks, so 4 blocks take 2 samples of a prompt at a time;
    // they finish at their first token, and the next chunk must find the whole pool free again.
    const oneToken = run(model, { kvCache: 'paged', numBlocks: 4 }, many, { temperature: 1, maxNewTokens: 1 });
    expect(oneToken.outputs).toEqual(run(model, { kvCache: 'none' }, many, { temperature: 1, maxNewTokens: 1 }).outputs);
    expect(oneToken.stats.numForwardPasses).toBe(4 * 2); // two prefills a prompt, no decode step
    // 4 blocks cannot hold even one sample (2 + 3): an error, not a hang.
    expect(() => run(model, { kvCache: 'paged', numBlocks: 4 }, many, decoding)).toThrow(
      'samplers/engine: requests[0]: one sample needs 5 KV blocks but the pool has 4; raise numBlocks/kvCacheBytes or lower maxNewTokens',
    );
  });

  it('reports peak and ideal KV bytes (hand-worked) and dense bytes as DenseKVCache counts them', () => {
    // bytes per token: 2 (K, V) · 2 layers · 2 kv heads · 8 dims · 4 bytes = 256; per block of 4: 1024.
    // Prompt of 8 = 2 full blocks shared; 2 samples of 5 tokens store 4 each (the last is never fed):
    // one private block each → peak 4 blocks = 4096 bytes; ideal (8 + 2·4) · 256 = 4096.
    const decoding = { temperature: 0, maxNewTokens: 5 };
    const one: SamplingRequest[] = [{ promptIds: [6, 2, 19, 33, 8, 8, 1, 25], numSamples: 2, seed: 0 }];
    const paged = run(model, { kvCache: 'paged' }, one, decoding).stats;
    expect(paged.kvBytesPerToken).toBe(256);
    expect(paged.peakKvBytes).toBe(4096);
    expect(paged.idealKvBytes).toBe(4096);
    expect(paged.peakNumSeqs).toBe(2);
    expect(paged.numGeneratedTokens).toBe(10);
    // A call reports its own peak, not the largest since the engine was built.
    const engine = new SamplingEngine({ model, kvCache: 'paged', blockSize: 4 });
    expect(engine.generate(requests, decoding).stats.peakKvBytes).toBeGreaterThan(4096);
    expect(engine.generate(one, decoding).stats.peakKvBytes).toBe(4096); // its first block now a prefix-cache hit: still 4 blocks held
    // dense: 2 rows × (8 + 4) columns × 256.
    const dense = run(model, { kvCache: 'dense' }, one, decoding).stats;
    expect(dense.peakKvBytes).toBe(2 * 12 * 256);
    const cache = new DenseKVCache(model.dims.numLayers, 2);
    tf.tidy(() => {
      model.forward(tf.tensor2d([[...one[0]!.promptIds], [...one[0]!.promptIds]], [2, 8], 'int32'), cache.step(8));
      for (let i = 0; i < 4; i++) model.forward(tf.tensor2d([[1], [2]], [2, 1], 'int32'), cache.step(1));
    });
    expect(cache.bytes()).toBe(denseKvBytes(model, 2, 12));
    cache.dispose();
    expect(run(model, { kvCache: 'none' }, one, decoding).stats.peakKvBytes).toBe(0);
  });

  it('stops at a stop token, reports log-probabilities, and leaks no tensors across calls', () => {
    const greedy = run(model, { kvCache: 'paged' }, [requests[0]!], { temperature: 0, maxNewTokens: 8 });
    const firstToken = greedy.outputs[0]![0]!.tokenIds[0]!;
    const stopped = run(model, { kvCache: 'paged' }, [requests[0]!], { temperature: 0, maxNewTokens: 8, stopTokenIds: [firstToken] });
    expect(stopped.outputs[0]![0]).toEqual({ tokenIds: [firstToken], finishReason: 'stop' });
    expect(greedy.outputs[0]![0]!.finishReason).toBe('length');

    const withLogprobs = run(model, { kvCache: 'paged', returnLogprobs: true }, [requests[1]!], { temperature: 1, maxNewTokens: 6 });
    withLogprobs.outputs[0]!.forEach((sample, i) => {
      let expected = 0;
      sample.tokenIds.forEach((token, step) => {
        const row = withLogprobs.logits.get(`0/${i}/${step}`)!;
        const max = Math.max(...row);
        const logSumExp = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
        expected += row[token]! - logSumExp;
      });
      expect(sample.logprobSum).toBeCloseTo(expected, 5);
    });

    for (const kvCache of ['paged', 'dense', 'none'] as const) {
      const engine = new SamplingEngine({ model, kvCache, blockSize: 4 });
      engine.generate(requests, { temperature: 1, maxNewTokens: 4 });
      const numTensors = tf.memory().numTensors;
      engine.generate(requests, { temperature: 1, maxNewTokens: 4 });
      engine.generate(requests.slice(1), { temperature: 0, maxNewTokens: 3 });
      expect(tf.memory().numTensors).toBe(numTensors);
    }
  });

  it('rejects bad requests and options with one-line errors', () => {
    const engine = new SamplingEngine({ model, blockSize: 4 });
    expect(() => engine.generate([{ promptIds: [], numSamples: 1, seed: 0 }], {})).toThrow('samplers/engine: requests[0].promptIds: empty prompt');
    expect(() => engine.generate([{ promptIds: [1, 40], numSamples: 1, seed: 0 }], {})).toThrow('samplers/engine: requests[0].promptIds[1]: 40 is outside the vocabulary [0, 40)');
    expect(() => engine.generate([{ promptIds: [1], numSamples: 0, seed: 0 }], {})).toThrow('samplers/engine: requests[0].numSamples: 0 must be a positive integer');
    expect(() => engine.generate([{ promptIds: new Array(60).fill(1), numSamples: 1, seed: 0 }], { maxNewTokens: 5 })).toThrow(
      'samplers/engine: requests[0]: prompt (60 tokens) + max new tokens (5) exceeds the context of 64',
    );
    expect(() => new SamplingEngine({ model, blockSize: 0 })).toThrow('samplers/engine: options: blockSize: Number must be greater than 0');
    const rewardModel = toRewardModel(model, 1);
    expect(() => new SamplingEngine({ model: rewardModel })).toThrow('samplers/engine: options: model: a reward model cannot generate; give a causal LM');
    rewardModel.dispose();
  });
});
