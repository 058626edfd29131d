import { beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend.js';
import { parseLlamaConfig, type LlamaConfigInput } from '../../src/model/config.js';
import { DenseKVCache, FullAttention, documentMask, scaledDotProductAttention } from '../../src/model/attention.js';
import { initModel, toHfTensors, toRewardModel } from '../../src/model/weights.js';
import { loadPretrained, savePretrained } from '../../src/model/pretrained.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { referenceLogits, type RefConfig } from './reference-llama.js';

const base = {
  vocab_size: 50,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 128,
  initializer_range: 0.2, // large weights so attention patterns are far from uniform
};

const variants: Record<string, LlamaConfigInput> = {
  'MHA, tied': { ...base, num_attention_heads: 4, tie_word_embeddings: true },
  'GQA, untied, explicit head_dim': { ...base, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 12 },
  'MQA, llama3 rope scaling': {
    ...base,
    num_attention_heads: 4,
    num_key_value_heads: 1,
    rope_theta: 500000,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
  },
};

function logitsOf(model: LlamaModel, ids: number[][]): number[][][] {
  return tf.tidy(() => {
    const ctx = new FullAttention({ batchSize: ids.length, seqLen: ids[0].length });
    const hidden = model.forward(tf.tensor2d(ids, undefined, 'int32'), ctx);
    ctx.dispose();
    return model.logits(hidden).arraySync();
  });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const seq = [3, 17, 42, 8, 8, 23, 1, 49, 30, 12, 5];

describe('Llama forward matches an independent reference', () => {
  beforeAll(async () => {
    await initBackend('cpu', { quiet: true });
  });

  for (const [name, raw] of Object.entries(variants)) {
    it(name, () => {
      const config = parseLlamaConfig(raw);
      const model = initModel(config, 7);
      const got = logitsOf(model, [seq])[0];
      const want = referenceLogits(config as unknown as RefConfig, toHfTensors(model), seq);
      for (let i = 0; i < seq.length; i++) expect(maxAbsDiff(got[i], want[i])).toBeLessThan(1e-4);
      model.dispose();
    });
  }

  it('the newer rope_parameters spelling (with its own rope_theta) equals rope_scaling + rope_theta', () => {
    const older = variants['MQA, llama3 rope scaling'] as Record<string, unknown>;
    const { rope_scaling: scaling, rope_theta: theta, ...rest } = older;
    const newer = parseLlamaConfig({ ...rest, rope_parameters: { ...(scaling as object), rope_theta: theta } });
    const a = initModel(parseLlamaConfig(older), 5);
    const b = initModel(newer, 5);
    const la = logitsOf(a, [seq])[0];
    const lb = logitsOf(b, [seq])[0];
    for (let i = 0; i < seq.length; i++) expect(maxAbsDiff(la[i], lb[i])).toBe(0);
    // and the scaling matters: the same model without it differs
    const plain = initModel(parseLlamaConfig({ ...rest, rope_theta: theta }), 5);
    const lp = logitsOf(plain, [seq])[0];
    expect(maxAbsDiff(la[seq.length - 1], lp[seq.length - 1])).toBeGreaterThan(1e-4);
    [a, b, plain].forEach((m) => m.dispose());
  });

  it('attention in query chunks (long prefills) equals attention in one piece, gradients included', () => {
    const [b, h, hkv, t, d] = [2, 4, 2, 10, 8];
    const q = tf.randomNormal([b, h, t, d], 0, 1, 'float32', 1) as tf.Tensor4D;
    const k = tf.randomNormal([b, hkv, t, d], 0, 1, 'float32', 2) as tf.Tensor4D;
    const v = tf.randomNormal([b, hkv, t, d], 0, 1, 'float32', 3) as tf.Tensor4D;
    const bias = tf.tensor(documentMask({ batchSize: b, seqLen: t }).bias, [b, 1, 1, t, t]);
    const whole = scaledDotProductAttention(q, k, v, bias);
    const chunked = scaledDotProductAttention(q, k, v, bias, 3 * b * h * t); // chunks of 3 queries
    expect(maxAbsDiff(whole.dataSync(), chunked.dataSync())).toBeLessThan(1e-6);
    const grad = (limit?: number) => tf.grad((x: tf.Tensor) => tf.sum(tf.square(scaledDotProductAttention(x as tf.Tensor4D, k, v, bias, limit))))(q);
    expect(maxAbsDiff(grad().dataSync(), grad(3 * b * h * t).dataSync())).toBeLessThan(1e-5);
    tf.dispose([q, k, v, bias, whole, chunked]);
  });

  it('packed rows with document ids equal the documents run alone', () => {
    const config = parseLlamaConfig(variants['GQA, untied, explicit head_dim']);
    const model = initModel(config, 3);
    const docA = [5, 6, 7, 8];
    const docB = [9, 10, 11];
    const packed = [...docA, ...docB, 0]; // last token is padding
    const segmentIds = Int32Array.from([1, 1, 1, 1, 2, 2, 2, 0]);
    const got = tf.tidy(() => {
      const ctx = new FullAttention({ batchSize: 1, seqLen: packed.length, segmentIds });
      const out = model.logits(model.forward(tf.tensor2d([packed], undefined, 'int32'), ctx)).arraySync()[0];
      ctx.dispose();
      return out;
    });
    const aloneA = logitsOf(model, [docA])[0];
    const aloneB = logitsOf(model, [docB])[0];
    for (let i = 0; i < docA.length; i++) expect(maxAbsDiff(got[i], aloneA[i])).toBeLessThan(1e-5);
    for (let i = 0; i < docB.length; i++) expect(maxAbsDiff(got[docA.length + i], aloneB[i])).toBeLessThan(1e-5);
    model.dispose();
  });

  it('incremental decoding through DenseKVCache equals the full forward, with left padding', () => {
    const config = parseLlamaConfig(variants['MQA, llama3 rope scaling']);
    const model = initModel(config, 11);
    const full = logitsOf(model, [seq])[0];
    // Row 0: the sequence; row 1: two padding columns then the sequence's first 6 tokens.
    const cache = new DenseKVCache(config.num_hidden_layers, 2);
    const prompt0 = seq.slice(0, 6);
    const prompt1 = [0, 0, ...seq.slice(0, 4)];
    const first = tf.tidy(() => {
      const ctx = cache.step(6, [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1]);
      return model.logits(model.forward(tf.tensor2d([prompt0, prompt1], undefined, 'int32'), ctx)).arraySync();
    });
    expect(maxAbsDiff(first[0][5], full[5])).toBeLessThan(1e-4);
    expect(maxAbsDiff(first[1][5], full[3])).toBeLessThan(1e-4);
    // Feed row 0 its next tokens one at a time; row 1 follows the same tokens shifted.
    for (let step = 0; step < 4; step++) {
      const next0 = seq[6 + step];
      const next1 = seq[4 + step];
      const logits = tf.tidy(() => {
        const ctx = cache.step(1);
        return model.logits(model.forward(tf.tensor2d([[next0], [next1]], undefined, 'int32'), ctx)).arraySync();
      });
      expect(maxAbsDiff(logits[0][0], full[6 + step])).toBeLessThan(1e-4);
      expect(maxAbsDiff(logits[1][0], full[4 + step])).toBeLessThan(1e-4);
    }
    cache.dispose();
    model.dispose();
  });

  it('reward model reads the last real token; right padding does not change scores', () => {
    const config = parseLlamaConfig(variants['MHA, tied']);
    const causal = initModel(config, 5);
    const rm = toRewardModel(causal, 1);
    const ids = [4, 9, 13, 2];
    const scores = tf.tidy(() => {
      const padded = [ids, [...ids.slice(0, 3), 0]];
      const ctx = new FullAttention({ batchSize: 2, seqLen: 4, segmentIds: Int32Array.from([1, 1, 1, 1, 1, 1, 1, 0]) });
      const r = rm.rewards(rm.forward(tf.tensor2d(padded, undefined, 'int32'), ctx), { lastIndex: [3, 2] }).arraySync();
      ctx.dispose();
      return r;
    });
    const alone = tf.tidy(() => {
      const ctx = new FullAttention({ batchSize: 1, seqLen: 3 });
      const r = rm.rewards(rm.forward(tf.tensor2d([ids.slice(0, 3)], undefined, 'int32'), ctx), { lastIndex: [2] }).arraySync();
      ctx.dispose();
      return r;
    });
    expect(Math.abs(scores[1] - alone[0])).toBeLessThan(1e-5);
    expect(Math.abs(scores[0] - scores[1])).toBeGreaterThan(1e-6);
    causal.dispose();
    rm.dispose();
  });
});

describe('HF folders', () => {
  let dir: string;
  beforeAll(async () => {
    await initBackend('cpu', { quiet: true });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-llama-'));
  });

  it('round-trips F32 exactly, BF16 within bf16 precision, sharded or not', async () => {
    const config = parseLlamaConfig(variants['GQA, untied, explicit head_dim']);
    const model = initModel(config, 2);
    const want = logitsOf(model, [seq])[0];

    await savePretrained(model, path.join(dir, 'f32'), { maxShardBytes: 20_000 });
    expect(fs.existsSync(path.join(dir, 'f32', 'model.safetensors.index.json'))).toBe(true);
    const savedConfig = JSON.parse(fs.readFileSync(path.join(dir, 'f32', 'config.json'), 'utf8'));
    expect(savedConfig.architectures).toEqual(['LlamaForCausalLM']);
    expect(savedConfig.torch_dtype).toBe('float32');
    const loaded = await loadPretrained(path.join(dir, 'f32'));
    const got = logitsOf(loaded, [seq])[0];
    for (let i = 0; i < seq.length; i++) expect(maxAbsDiff(got[i], want[i])).toBe(0);

    await savePretrained(model, path.join(dir, 'bf16'), { dtype: 'BF16' });
    const loadedBf16 = await loadPretrained(path.join(dir, 'bf16'));
    // The bf16 model equals the reference run on the rounded weights.
    const ref = referenceLogits(config as unknown as RefConfig, toHfTensors(loadedBf16), seq);
    const gotBf16 = logitsOf(loadedBf16, [seq])[0];
    for (let i = 0; i < seq.length; i++) expect(maxAbsDiff(gotBf16[i], ref[i])).toBeLessThan(1e-4);
    model.dispose();
    loaded.dispose();
    loadedBf16.dispose();
  });

  it('names the tensor when one is missing or mis-shaped', async () => {
    const config = parseLlamaConfig(variants['MHA, tied']);
    const model = initModel(config, 2);
    await savePretrained(model, path.join(dir, 'bad'));
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'bad', 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(dir, 'bad', 'config.json'), JSON.stringify({ ...cfg, tie_word_embeddings: false }));
    await expect(loadPretrained(path.join(dir, 'bad'))).rejects.toThrow(/tensor lm_head\.weight: missing/);
    fs.writeFileSync(path.join(dir, 'bad', 'config.json'), JSON.stringify({ ...cfg, intermediate_size: 40 }));
    await expect(loadPretrained(path.join(dir, 'bad'))).rejects.toThrow(/tensor model\.layers\.0\.mlp\.gate_proj\.weight: shape \[48,32\], config implies \[40,32\]/);
    fs.writeFileSync(path.join(dir, 'bad', 'config.json'), JSON.stringify({ ...cfg, num_key_value_heads: 3 }));
    await expect(loadPretrained(path.join(dir, 'bad'))).rejects.toThrow(/num_key_value_heads: 3 key\/value heads do not divide 4 attention heads/);
    fs.writeFileSync(path.join(dir, 'bad', 'config.json'), JSON.stringify({ ...cfg, architectures: ['MistralForCausalLM'] }));
    await expect(loadPretrained(path.join(dir, 'bad'))).rejects.toThrow(/unsupported architecture MistralForCausalLM/);
    model.dispose();
  });
});
