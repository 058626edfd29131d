import { beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend.js';
import { parseLlamaConfig } from '../../src/model/config.js';
import { initModel, toRewardModel } from '../../src/model/weights.js';
import { loadPretrained, loadWithAdapter, saveAdapterFolder, savePretrained } from '../../src/model/pretrained.js';
import { attachedAdapters, freezeBaseForLora, LoraAdapters, LoraOptionsSchema, numLoraParameters, trainingParameters } from '../../src/model/lora.js';
import { readSafetensors } from '../../src/model/safetensors.js';
import { FullAttention } from '../../src/model/attention.js';
import { padRows } from '../../data/collate.js';
import { computeGradients, disposeGrads } from '../../src/train/grad-accumulator.js';
import { causalLmLoss, causalLmUnits } from '../../src/tasks/causal-lm.js';
import { normalizedLoss } from '../../src/train/objective.js';
import type { LlamaModel } from '../../src/model/llama.js';

const config = parseLlamaConfig({
  vocab_size: 40,
  hidden_size: 24,
  intermediate_size: 40,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  tie_word_embeddings: true,
  initializer_range: 0.2,
});
const ids = [[3, 17, 12, 8, 8, 23, 1, 39, 30, 12], [5, 6, 7, 2, 9, 9, 11, 0, 0, 0]];
const batch = padRows(
  [
    { ids: ids[0], targetMask: [0, 0, 0, 1, 1, 1, 1, 1, 1, 1] },
    { ids: ids[1].slice(0, 7), targetMask: [0, 0, 1, 1, 1, 1, 1] },
  ],
  0,
);

function logits(model: LlamaModel): Float32Array {
  return tf.tidy(() => {
    const ctx = new FullAttention({ batchSize: 2, seqLen: 10 });
    return model.logits(model.forward(tf.tensor2d(ids, undefined, 'int32'), ctx)).dataSync() as Float32Array;
  });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Sets every lora_B to seeded non-zero values (a trained adapter). */
function perturb(adapters: LoraAdapters, seed: number): void {
  let k = seed;
  for (const [name, v] of adapters.params) {
    if (!name.includes('lora_B')) continue;
    const values = Float32Array.from({ length: v.size }, () => ((k = (k * 48271) % 2147483647) / 2147483647 - 0.5) * 0.4);
    tf.tidy(() => v.assign(tf.tensor(values, v.shape)));
  }
}

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-lora-'));

/** A fresh folder with a random-initialised model saved in `base/` (and the model, still loaded). */
async function savedBase(): Promise<{ dir: string; baseDir: string; model: LlamaModel }> {
  const dir = tmp();
  const baseDir = path.join(dir, 'base');
  const model = initModel(config, 4);
  await savePretrained(model, baseDir);
  return { dir, baseDir, model };
}

describe('LoRA adapters', () => {
  beforeAll(async () => {
    await initBackend('cpu', { quiet: true });
  });

  it('starts as the identity: A ~ U(−1/√in, 1/√in), B = 0, logits equal the base bit for bit', () => {
    const model = initModel(config, 1);
    const before = logits(model);
    const adapters = LoraAdapters.create(model, LoraOptionsSchema.parse({ r: 4, alpha: 8 }), 3);
    const a = adapters.params.get('model.layers.0.mlp.down_proj.lora_A.weight')!; // [in = 40, r]
    expect(a.shape).toEqual([40, 4]);
    const values = a.dataSync();
    expect(Math.max(...values.map(Math.abs))).toBeLessThanOrEqual(1 / Math.sqrt(40));
    expect(Math.max(...values.map(Math.abs))).toBeGreaterThan(0.8 / Math.sqrt(40));
    expect(adapters.params.get('model.layers.0.mlp.down_proj.lora_B.weight')!.shape).toEqual([4, 24]);
    expect(adapters.scaling).toBe(2);
    expect(maxAbsDiff(logits(model), before)).toBe(0);
    // 2 layers × (q 24+24, k 24+12, v 24+12, o 24+24, gate 24+40, up 24+40, down 40+24) × r 4
    expect(adapters.numParameters()).toBe(2 * 4 * (48 + 36 + 36 + 48 + 64 + 64 + 64));
    expect(numLoraParameters(model.dims, adapters.options)).toBe(adapters.numParameters());
    adapters.detach();
    model.dispose();
  });

  it('computes W x + (α/r)·B A x: one projection by hand, the model against its merged weights, and withDisabled against the base', () => {
    const model = initModel(config, 2);
    const base = logits(model);
    const adapters = LoraAdapters.create(model, LoraOptionsSchema.parse({ r: 2, alpha: 6, targetModules: ['q_proj', 'down_proj'] }), 5);
    perturb(adapters, 11);
    // one projection, by hand: x·W + 3·(x·A)·B
    const name = 'model.layers.1.mlp.down_proj.weight';
    const x = tf.randomNormal([3, 40], 0, 1, 'float32', 9) as tf.Tensor2D;
    const got = model.linearOverrides.get(name)!(x, model.params.get(name)).arraySync();
    const w = model.params.get(name)!.arraySync() as number[][];
    const a = adapters.params.get('model.layers.1.mlp.down_proj.lora_A.weight')!.arraySync() as number[][];
    const b = adapters.params.get('model.layers.1.mlp.down_proj.lora_B.weight')!.arraySync() as number[][];
    const xv = x.arraySync();
    for (let n = 0; n < 3; n++) {
      for (let o = 0; o < 24; o++) {
        let want = 0;
        for (let i = 0; i < 40; i++) want += xv[n][i] * w[i][o];
        for (let k = 0; k < 2; k++) {
          let low = 0;
          for (let i = 0; i < 40; i++) low += xv[n][i] * a[i][k];
          want += 3 * low * b[k][o];
        }
        expect(got[n][o]).toBeCloseTo(want, 4);
      }
    }
    const adapted = logits(model);
    expect(maxAbsDiff(adapted, base)).toBeGreaterThan(1e-2);
    expect(maxAbsDiff(adapters.withDisabled(() => logits(model)), base)).toBe(0);
    expect(adapters.enabled).toBe(true);
    adapters.mergeIntoBase();
    expect(attachedAdapters(model)).toBeUndefined();
    expect(model.linearOverrides.size).toBe(0);
    expect(maxAbsDiff(logits(model), adapted)).toBeLessThan(1e-5);
    x.dispose();
    model.dispose();
  });

  it('round-trips a PEFT folder: names, shapes, config; loads onto its base; loadPretrained merges it', async () => {
    const { dir, baseDir, model } = await savedBase();
    const adapters = LoraAdapters.create(model, LoraOptionsSchema.parse({ r: 4, alpha: 16, dropout: 0.1 }), 6);
    perturb(adapters, 13);
    const adapted = logits(model);
    saveAdapterFolder(model, adapters, path.join(dir, 'adapter'), { baseModel: baseDir });
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter', 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({
      peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 4, lora_alpha: 16, lora_dropout: 0.1, bias: 'none',
      target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], base_model_name_or_path: path.resolve(baseDir),
    });
    const { tensors } = readSafetensors(path.join(dir, 'adapter', 'adapter_model.safetensors'));
    expect(tensors.size).toBe(2 * 7 * 2);
    expect(tensors.get('base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight')!.shape).toEqual([4, 24]); // [r, in]
    expect(tensors.get('base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight')!.shape).toEqual([12, 4]); // [out, r]
    // PEFT's lora_A [r, in] is our A transposed
    const ours = adapters.params.get('model.layers.1.self_attn.k_proj.lora_A.weight')!.arraySync() as number[][];
    expect(tensors.get('base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight')!.data[1 * 24 + 5]).toBe(ours[5][1]);

    const reloaded = await loadWithAdapter(baseDir, path.join(dir, 'adapter'));
    expect(maxAbsDiff(logits(reloaded), adapted)).toBe(0);
    expect(attachedAdapters(reloaded)!.options.dropout).toBe(0.1);
    const merged = await loadPretrained(path.join(dir, 'adapter'));
    expect(attachedAdapters(merged)).toBeUndefined();
    expect(maxAbsDiff(logits(merged), adapted)).toBeLessThan(1e-5);
    for (const m of [model, reloaded, merged]) m.dispose();
  });

  it('refuses a bad adapter folder with one line naming the file and field', async () => {
    const { dir, baseDir, model } = await savedBase();
    const adapters = LoraAdapters.create(model, LoraOptionsSchema.parse({ r: 4 }), 6);
    const adapterDir = path.join(dir, 'adapter');
    saveAdapterFolder(model, adapters, adapterDir, { baseModel: baseDir });
    const file = path.join(adapterDir, 'adapter_config.json');
    const good = JSON.parse(fs.readFileSync(file, 'utf8'));
    fs.writeFileSync(file, JSON.stringify({ ...good, r: 8 }));
    await expect(loadPretrained(adapterDir)).rejects.toThrow(/adapter_model\.safetensors: tensor base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight: shape \[4,24\], adapter_config and base model imply \[8,24\]/);
    fs.writeFileSync(file, JSON.stringify({ ...good, target_modules: ['qkv_proj'] }));
    await expect(loadPretrained(adapterDir)).rejects.toThrow(/adapter_config\.json: target_modules: 'qkv_proj' is not a Llama projection/);
    fs.writeFileSync(file, JSON.stringify({ ...good, bias: 'all' }));
    await expect(loadPretrained(adapterDir)).rejects.toThrow(/adapter_config\.json: bias: /);
    model.dispose();
  });

  it('a reward-model adapter saves the score head (modules_to_save) and loads onto the causal base', async () => {
    const { dir, baseDir, model: causal } = await savedBase();
    const rm = toRewardModel(causal, 8);
    const adapters = LoraAdapters.create(rm, LoraOptionsSchema.parse({ r: 2 }), 6);
    perturb(adapters, 17);
    freezeBaseForLora(rm);
    const trainable = [...trainingParameters(rm)].filter(([, v]) => v.trainable).map(([n]) => n);
    expect(trainable).toEqual(['score.weight', ...adapters.params.keys()]);
    const rewards = () => tf.tidy(() => rm.rewards(rm.forward(tf.tensor2d(ids, undefined, 'int32'), new FullAttention({ batchSize: 2, seqLen: 10 })), { lastIndex: [9, 6] }).dataSync());
    const want = rewards();
    saveAdapterFolder(rm, adapters, path.join(dir, 'rm'), { baseModel: baseDir });
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'rm', 'adapter_config.json'), 'utf8'));
    expect(cfg.task_type).toBe('SEQ_CLS');
    expect(cfg.modules_to_save).toEqual(['score']);
    expect(readSafetensors(path.join(dir, 'rm', 'adapter_model.safetensors')).tensors.get('base_model.model.score.weight')!.shape).toEqual([1, 24]);
    const merged = await loadPretrained(path.join(dir, 'rm'));
    expect(merged.dims.isRewardModel).toBe(true);
    const got = tf.tidy(() => merged.rewards(merged.forward(tf.tensor2d(ids, undefined, 'int32'), new FullAttention({ batchSize: 2, seqLen: 10 })), { lastIndex: [9, 6] }).dataSync());
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-5);
    for (const m of [causal, rm, merged]) m.dispose();
  });
});

describe('gradient checkpointing', () => {
  beforeAll(async () => {
    await initBackend('cpu', { quiet: true });
  });

  function lossAndGrads(model: LlamaModel): { loss: number; grads: Map<string, Float32Array> } {
    const { loss, grads } = computeGradients(trainingParameters(model), () => normalizedLoss(causalLmLoss(model, batch).sums, causalLmUnits(batch)));
    const values = new Map([...grads].map(([n, g]) => [n, g.dataSync() as Float32Array]));
    disposeGrads(grads);
    return { loss, grads: values };
  }

  for (const lora of [false, true]) {
    it(`gives the same loss and gradients as the plain path (${lora ? 'LoRA with dropout, frozen base' : 'full fine-tuning'}), without leaking tensors`, () => {
      const model = initModel(config, 3);
      if (lora) {
        const adapters = LoraAdapters.create(model, LoraOptionsSchema.parse({ r: 4, dropout: 0.3 }), 5);
        perturb(adapters, 19);
        adapters.dropoutSeed = 12345;
        freezeBaseForLora(model);
      }
      const plain = lossAndGrads(model);
      model.gradientCheckpointing = true;
      const before = tf.memory().numTensors;
      const checkpointed = lossAndGrads(model);
      lossAndGrads(model);
      expect(tf.memory().numTensors).toBe(before);
      expect(checkpointed.loss).toBeCloseTo(plain.loss, 5);
      expect([...checkpointed.grads.keys()].sort()).toEqual([...plain.grads.keys()].sort());
      expect(plain.grads.size).toBe(lora ? 2 * 7 * 2 : model.params.size);
      for (const [name, g] of plain.grads) {
        const scale = Math.max(1e-3, ...g.map(Math.abs));
        expect(maxAbsDiff(checkpointed.grads.get(name)!, g) / scale, name).toBeLessThan(1e-4);
      }
      // with dropout the loss differs from an eval pass (no tape) — dropout acts in training only
      if (lora) {
        const evalLoss = tf.tidy(() => normalizedLoss(causalLmLoss(model, batch).sums, causalLmUnits(batch)).dataSync()[0]);
        expect(Math.abs(evalLoss - plain.loss)).toBeGreaterThan(1e-4);
      }
      model.dispose();
    });
  }
});
