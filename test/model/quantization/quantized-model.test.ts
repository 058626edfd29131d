import { beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../../src/backend.js';
import { parseLlamaConfig } from '../../../src/model/config.js';
import { FullAttention } from '../../../src/model/attention.js';
import { initModel, toHfTensors, toRewardModel } from '../../../src/model/weights.js';
import { loadPretrained, savePretrained } from '../../../src/model/pretrained.js';
import { readSafetensorsHeader, writeSafetensors } from '../../../src/model/safetensors.js';
import type { LlamaModel } from '../../../src/model/llama.js';
import { dequantizedTwin, quantizationOf, quantizeModel, weightBytes } from '../../../src/model/quantization/quantize-model.js';
import { quantizedLinear, quantizeWeight } from '../../../src/model/quantization/quantized-linear.js';
import { SamplingEngine } from '../../../samplers/engine.js';
import { Rng } from '../../../src/util/rng.js';

// 4 layers, so the Llama 3 rule (first and last layers kept) quantizes layers 1 and 2.
const config = parseLlamaConfig(
  {
    vocab_size: 64,
    hidden_size: 32,
    intermediate_size: 80,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 128,
    tie_word_embeddings: true,
    initializer_range: 0.3, // large weights: far-from-uniform logits, so greedy paths are meaningful
  },
  'test config',
);

function logitsOf(model: LlamaModel, ids: number[][]): Float32Array {
  const out = tf.tidy(() => {
    const ctx = new FullAttention({ batchSize: ids.length, seqLen: ids[0]!.length });
    const hidden = model.forward(tf.tensor2d(ids, undefined, 'int32'), ctx);
    ctx.dispose();
    return model.logits(hidden);
  });
  const values = out.dataSync() as Float32Array;
  out.dispose();
  return values;
}

function greedy(model: LlamaModel, promptIds: number[], numTokens = 24): number[] {
  const engine = new SamplingEngine({ model, kvCache: 'paged' });
  const result = engine.generate([{ promptIds, numSamples: 1, seed: 0 }], { temperature: 0, topK: 0, topP: 1, maxNewTokens: numTokens, stopTokenIds: [] });
  return result.outputs[0]![0]!.tokenIds;
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-quant-'));
}

const ids = [[1, 5, 9, 13, 2, 40, 33, 7]];

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
});

describe.each([
  ['int8-absmax', 'per-row'],
  ['int8-absmax', 'per-tensor'],
  ['fp8-rowwise', 'per-row'],
] as const)('%s (%s weights)', (scheme, weightGrouping) => {
  it('replaces exactly the Llama 3 selection, holds 1 byte per value plus the scales, and stays close to the float model', () => {
    const float = initModel(config, 3);
    const model = initModel(config, 3);
    const q = quantizeModel(model, { scheme, weightGrouping });
    expect([...q.weights.keys()]).toEqual([1, 2].flatMap((l) => ['gate_proj', 'up_proj', 'down_proj'].map((p) => `model.layers.${l}.mlp.${p}.weight`)));
    for (const name of q.weights.keys()) expect(model.params.has(name)).toBe(false);
    expect(model.params.has('model.layers.0.mlp.up_proj.weight')).toBe(true);
    expect(model.params.has('model.layers.1.self_attn.q_proj.weight')).toBe(true);
    const bytes = weightBytes(model);
    // 1 byte per value plus 4 per scale, exactly: (1 + 4/in)/4 of float32 per row (0.275 at this toy
    // width of 32; the benchmark checks ≤ 0.27 at real widths)
    const numValues = 6 * 32 * 80;
    const numScales = weightGrouping === 'per-tensor' ? 6 : 2 * (80 + 80 + 32);
    expect(bytes.quantizedBytes).toBe(numValues + 4 * numScales);
    expect(bytes.quantizedAsFloatBytes).toBe(4 * numValues);
    expect(bytes.quantizedBytes / bytes.quantizedAsFloatBytes).toBeLessThanOrEqual(0.25 + 1 / 32);

    const a = logitsOf(float, ids);
    const b = logitsOf(model, ids);
    let maxDiff = 0;
    let maxAbs = 0;
    for (let i = 0; i < a.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
      maxAbs = Math.max(maxAbs, Math.abs(a[i]!));
    }
    expect(maxDiff).toBeGreaterThan(0); // it did quantize
    expect(maxDiff / maxAbs).toBeLessThan(0.1);
    float.dispose();
    model.dispose();
  });

  it('weights only: greedy output and logits equal those of its dequantized-float twin', () => {
    const model = initModel(config, 4);
    quantizeModel(model, { scheme, weightGrouping, activations: 'none', keepFirstAndLastLayers: false, projections: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] });
    const twin = dequantizedTwin(model);
    expect(Array.from(logitsOf(model, ids))).toEqual(Array.from(logitsOf(twin, ids)));
    const out = greedy(model, [1, 2, 3]);
    expect(out.length).toBe(24);
    expect(new Set(out).size).toBeGreaterThan(3); // not a degenerate repeat of one token
    expect(out).toEqual(greedy(twin, [1, 2, 3]));
    model.dispose();
    twin.dispose();
  });

  it('weights and activations: greedy output equals the twin that quantizes its inputs the same way', () => {
    const model = initModel(config, 5);
    quantizeModel(model, { scheme, weightGrouping, keepFirstAndLastLayers: false });
    const twin = dequantizedTwin(model, { keepActivationQuantization: true });
    const plainTwin = dequantizedTwin(model);
    expect(Array.from(logitsOf(model, ids))).toEqual(Array.from(logitsOf(twin, ids)));
    // … and activation quantization does change the numbers
    expect(Array.from(logitsOf(model, ids))).not.toEqual(Array.from(logitsOf(plainTwin, ids)));
    expect(greedy(model, [4, 5, 6])).toEqual(greedy(twin, [4, 5, 6]));
    model.dispose();
    twin.dispose();
    plainTwin.dispose();
  });

  it('saves as an HF folder with 8-bit tensors and scales, and loads back computing the same logits', async () => {
    const model = initModel(config, 6);
    quantizeModel(model, { scheme, weightGrouping });
    const dir = path.join(tmpDir(), 'q');
    await savePretrained(model, dir, { command: 'quantize' });
    const saved = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    const header = readSafetensorsHeader(path.join(dir, 'model.safetensors'));
    const w = header.tensors.get('model.layers.1.mlp.up_proj.weight')!;
    const s = header.tensors.get('model.layers.1.mlp.up_proj.weight_scale')!;
    expect(w.shape).toEqual([80, 32]); // HF [out, in]
    if (scheme === 'fp8-rowwise') {
      expect(saved.quantization_config).toMatchObject({ quant_method: 'fbgemm_fp8', activation_scale_ub: 1200 });
      expect(saved.quantization_config.modules_to_not_convert).toContain('model.layers.0.mlp.up_proj');
      expect(saved.quantization_config.modules_to_not_convert).toContain('model.layers.1.self_attn.q_proj');
      expect(saved.quantization_config.modules_to_not_convert).toContain('lm_head');
      expect(saved.quantization_config.modules_to_not_convert).not.toContain('model.layers.1.mlp.up_proj');
      expect(w.dtype).toBe('F8_E4M3');
      expect(header.tensors.get('model.layers.1.mlp.up_proj.input_scale_ub')!.shape).toEqual([1]);
    } else {
      expect(saved.quantization_config).toMatchObject({ quant_method: 'compressed-tensors', format: 'int-quantized' });
      expect(saved.quantization_config.config_groups.group_0.weights.strategy).toBe(weightGrouping === 'per-row' ? 'channel' : 'tensor');
      expect(w.dtype).toBe('I8');
    }
    expect(s.shape).toEqual(weightGrouping === 'per-tensor' ? [1] : [80, 1]);
    expect(s.dtype).toBe('F32');
    // 8-bit weights take 1 byte per value on disk
    expect(w.dataOffsets[1] - w.dataOffsets[0]).toBe(80 * 32);

    const loaded = await loadPretrained(dir);
    expect(quantizationOf(loaded)?.options).toEqual(quantizationOf(model)?.options);
    expect(Array.from(logitsOf(loaded, ids))).toEqual(Array.from(logitsOf(model, ids)));
    expect(weightBytes(loaded)).toEqual(weightBytes(model));
    // and saves again byte for byte
    const dir2 = path.join(path.dirname(dir), 'q2');
    await savePretrained(loaded, dir2, { command: 'quantize' });
    expect(fs.readFileSync(path.join(dir2, 'model.safetensors')).equals(fs.readFileSync(path.join(dir, 'model.safetensors')))).toBe(true);
    model.dispose();
    loaded.dispose();
  });
});

describe('quantized models, other checks', () => {
  it('a quantized forward leaves no tensor behind across steps', () => {
    const model = initModel(config, 7);
    quantizeModel(model, { scheme: 'fp8-rowwise' });
    logitsOf(model, ids);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) logitsOf(model, ids);
    greedy(model, [1, 2], 4);
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });

  it('a quantized reward model scores like its twin, through a saved folder', async () => {
    const rm = toRewardModel(initModel(config, 8), 1);
    quantizeModel(rm, { scheme: 'int8-absmax', activations: 'none' });
    const dir = path.join(tmpDir(), 'rm');
    await savePretrained(rm, dir, { command: 'quantize' });
    const loaded = await loadPretrained(dir);
    const twin = dequantizedTwin(rm);
    const rewardsOf = (m: LlamaModel) =>
      tf.tidy(() => {
        const ctx = new FullAttention({ batchSize: 1, seqLen: ids[0]!.length });
        const r = m.rewards(m.forward(tf.tensor2d(ids, undefined, 'int32'), ctx), [ids[0]!.length - 1]).arraySync();
        ctx.dispose();
        return r;
      });
    expect(rewardsOf(loaded)).toEqual(rewardsOf(twin));
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).quantization_config.ignore).toContain('score');
    rm.dispose();
    loaded.dispose();
    twin.dispose();
  });

  it('refuses an empty selection, a second quantization, and inconsistent checkpoints with one line naming the tensor', async () => {
    const small = initModel(parseLlamaConfig({ ...config, num_hidden_layers: 2 }, 'two layers'), 0);
    expect(() => quantizeModel(small, { scheme: 'fp8-rowwise' })).toThrow(/no projection selected \(2 layers, first and last kept/);
    quantizeModel(small, { scheme: 'fp8-rowwise', keepFirstAndLastLayers: false });
    expect(() => quantizeModel(small, { scheme: 'fp8-rowwise' })).toThrow('already quantized');

    const model = initModel(config, 9);
    quantizeModel(model, { scheme: 'fp8-rowwise' });
    const dir = path.join(tmpDir(), 'bad');
    await savePretrained(model, dir, { command: 'quantize' });
    const cfgPath = path.join(dir, 'config.json');
    const cfg = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
    // 1) FP8 bytes, but the config claims INT8
    fs.writeFileSync(cfgPath, JSON.stringify({ ...cfg, quantization_config: { ...cfg.quantization_config, tfalign: { ...cfg.quantization_config.tfalign, scheme: 'int8-absmax' } } }));
    await expect(loadPretrained(dir)).rejects.toThrow(`checkpoint: ${dir}: tensor model.layers.1.mlp.down_proj.weight: dtype F8_E4M3, but quantization_config says int8-absmax (I8)`);
    // 2) no quantization_config at all
    const { quantization_config: _q, ...plain } = cfg;
    fs.writeFileSync(cfgPath, JSON.stringify(plain));
    await expect(loadPretrained(dir)).rejects.toThrow(/tensor model\.layers\.1\.mlp\.down_proj\.weight is F8_E4M3, but config\.json has no quantization_config/);
    // 3) a missing scale
    fs.writeFileSync(cfgPath, JSON.stringify(cfg));
    const file = path.join(dir, 'model.safetensors');
    const { readSafetensors } = await import('../../../src/model/safetensors.js');
    const contents = readSafetensors(file);
    contents.tensors.delete('model.layers.2.mlp.gate_proj.weight_scale');
    writeSafetensors(file, contents.tensors, { byteTensors: contents.byteTensors });
    await expect(loadPretrained(dir)).rejects.toThrow(`checkpoint: ${dir}: tensor model.layers.2.mlp.gate_proj.weight_scale: missing (the scales of 8-bit model.layers.2.mlp.gate_proj.weight)`);
    // no float copy of 8-bit weights to export, average or train from
    expect(() => toHfTensors(model)).toThrow('model: model.layers.1.mlp.gate_proj.weight has no float weight (a quantized model?)');
    await expect(savePretrained(model, path.join(tmpDir(), 'bf16'), { dtype: 'BF16' })).rejects.toThrow('a quantized model is saved with float32 scales and parts; BF16 is not available for it');
    // a reward model cannot start from 8-bit weights (they have no float copy to start from)
    expect(() => toRewardModel(model)).toThrow('toRewardModel: model.layers.1.mlp.gate_proj.weight has no float weight (a quantized model?)');
    model.dispose();
    small.dispose();
  });

  it('the activation-scale upper bound: one outlier token wipes out its other values when unbounded, not when bounded', () => {
    // A token whose channel 0 carries a massive activation (1e6; "massive activations" of LLMs are
    // outliers of this kind, orders of magnitude above the rest) that this projection ignores (its weight row is zero), and ordinary values ~N(0, 1)
    // elsewhere. The exact output depends only on the ordinary values.
    const [numIn, numOut] = [64, 16];
    const rng = new Rng(11);
    const hfWeight = Float32Array.from({ length: numOut * numIn }, (_, i) => (i % numIn === 0 ? 0 : rng.normal() * 0.1)); // [out, in]
    const x = Float32Array.from({ length: numIn }, (_, c) => (c === 0 ? 1e6 : rng.normal()));
    const exact = new Float64Array(numOut);
    for (let o = 0; o < numOut; o++) for (let c = 0; c < numIn; c++) exact[o]! += hfWeight[o * numIn + c]! * x[c]!;
    const relativeError = (upperBound: number | undefined) => {
      const w = quantizeWeight(hfWeight, numOut, numIn, 'fp8-rowwise', { activations: { kind: 'fp8', upperBound } });
      const y = tf.tidy(() => quantizedLinear(w)(tf.tensor2d(x, [1, numIn]), undefined).dataSync());
      let num = 0;
      let den = 0;
      for (let o = 0; o < numOut; o++) {
        num += (y[o]! - exact[o]!) ** 2;
        den += exact[o]! ** 2;
      }
      return Math.sqrt(num / den);
    };
    // Unbounded: scale = 1e6/448 ≈ 2232, so |x| ~ 1 becomes ~0.00045, below half the smallest
    // subnormal step (2^−10 ≈ 0.00098): every ordinary value rounds to 0 and the output is ~0.
    const unbounded = relativeError(undefined);
    // Bounded at 1200: scale = 1200/448 ≈ 2.7, ordinary values keep E4M3's ~3 significant bits.
    const bounded = relativeError(1200);
    expect(unbounded).toBeGreaterThan(0.9);
    expect(bounded).toBeLessThan(0.06);
  });
});
