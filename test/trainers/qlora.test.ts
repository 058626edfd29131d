/**
 * QLoRA (Dettmers et al. 2023): LoRA adapters over frozen 8-bit weights. The adapters compose with
 * the quantized projections' own overrides, so a quantized model with adapters computes what the
 * float model holding the dequantized weights computes with the same adapters (values and adapter
 * gradients); `sft --lora` trains it end to end into a PEFT folder over the 8-bit base, which loads
 * back with its adapters attached; what cannot work is refused with one line.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend.js';
import { trainByteLevelBpe, buildTokenizerConfig, writeTokenizerFolder } from '../../src/tokenizer/bpe-trainer.js';
import { createModel } from '../../src/model/create.js';
import { loadPretrained } from '../../src/model/pretrained.js';
import { attachedAdapters, LoraAdapters, LoraOptionsSchema } from '../../src/model/lora.js';
import { quantizeFolder } from '../../src/model/quantization/quantize-folder.js';
import { dequantizedTwin, quantizationOf } from '../../src/model/quantization/quantize-model.js';
import { quantizedParameterCount } from '../../src/model/quantization/hf-format.js';
import { loadConfig } from '../../src/model/pretrained.js';
import { estimateTrainingMemory, checkTrainingFits } from '../../src/train/fits.js';
import { modelDims, parseLlamaConfig } from '../../src/model/config.js';
import { computeGradients, disposeGrads } from '../../src/train/grad-accumulator.js';
import { causalLmLoss, causalLmUnits } from '../../src/tasks/causal-lm.js';
import { normalizedLoss } from '../../src/train/objective.js';
import { batchTokenLogprobs } from '../../src/inference/token-logprobs.js';
import { padRows } from '../../data/collate.js';
import { sft } from '../../src/trainers/sft.js';
import type { LogRecord } from '../../src/train/loop.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { sftWordRows } from './word-rows.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-qlora-'));
const rows = sftWordRows(12);
const ALL_PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
const lora = { r: 4, alpha: 8 };

let baseDir: string;
let int8Dir: string; // weights only, every projection of every layer
let w8a8Dir: string; // activations quantized per token too
let train: string;

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  const tokDir = path.join(root, 'tok');
  const tokenizerJson = trainByteLevelBpe([rows.flatMap((r) => [r.prompt, r.response]).join('\n')], { vocabSize: 300 });
  writeTokenizerFolder(tokDir, { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson) });
  baseDir = path.join(root, 'base');
  (await createModel({ configFile: 'configs/models/tiny.json', tokenizerDir: tokDir, out: baseDir, seed: 5 })).dispose();
  int8Dir = path.join(root, 'int8');
  await quantizeFolder({ model: baseDir, out: int8Dir, options: { scheme: 'int8-absmax', activations: 'none', projections: [...ALL_PROJECTIONS], keepFirstAndLastLayers: false } });
  w8a8Dir = path.join(root, 'w8a8');
  await quantizeFolder({ model: baseDir, out: w8a8Dir, options: { scheme: 'int8-absmax', activations: 'per-token', projections: [...ALL_PROJECTIONS], keepFirstAndLastLayers: false } });
  train = path.join(root, 'train.jsonl');
  fs.writeFileSync(train, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
});

/** Sets every lora_B to the same non-zero values (B starts at zero, which would hide the adapters). */
function perturb(adapters: LoraAdapters): void {
  let k = 17;
  for (const [name, v] of adapters.params) {
    if (!name.includes('lora_B')) continue;
    const values = Float32Array.from({ length: v.size }, () => ((k = (k * 48271) % 2147483647) / 2147483647 - 0.5) * 0.4);
    tf.tidy(() => v.assign(tf.tensor(values, v.shape)));
  }
}

const batch = padRows([{ ids: [1, 5, 9, 12, 7, 3, 2], targetMask: [0, 0, 1, 1, 1, 1, 1] }, { ids: [4, 8, 15, 16, 23], targetMask: [0, 1, 1, 1, 1] }], 0);

function lossAndAdapterGrads(model: LlamaModel): { loss: number; grads: Map<string, Float32Array> } {
  const adapters = attachedAdapters(model)!;
  const { loss, grads } = computeGradients(adapters.params, () => normalizedLoss(causalLmLoss(model, batch).sums, causalLmUnits(batch)));
  const values = new Map([...grads].map(([n, g]) => [n, g.dataSync() as Float32Array]));
  disposeGrads(grads);
  return { loss, grads: values };
}

describe('LoRA over 8-bit weights (QLoRA)', () => {
  it('computes the values and adapter gradients of the same adapters over the dequantized float weights', async () => {
    const quantized = await loadPretrained(int8Dir);
    expect(quantizationOf(quantized)!.weights.size).toBe(2 * 7); // every projection is 8-bit: no float copy
    expect(quantized.params.has('model.layers.0.self_attn.q_proj.weight')).toBe(false);
    const twin = dequantizedTwin(quantized);
    const options = LoraOptionsSchema.parse(lora);
    perturb(LoraAdapters.create(quantized, options, 3));
    perturb(LoraAdapters.create(twin, options, 3));
    const q = lossAndAdapterGrads(quantized);
    const f = lossAndAdapterGrads(twin);
    expect(Math.abs(q.loss - f.loss)).toBeLessThan(1e-5);
    expect(q.grads.size).toBe(2 * 7 * 2);
    for (const [name, g] of f.grads) {
      const scale = Math.max(1e-3, ...g.map(Math.abs));
      const mine = q.grads.get(name)!;
      let worst = 0;
      for (let i = 0; i < g.length; i++) worst = Math.max(worst, Math.abs(mine[i] - g[i]) / scale);
      expect(worst, name).toBeLessThan(1e-4);
    }
    // the adapters change the output, and detaching them restores the 8-bit projections
    const withAdapters = tf.tidy(() => batchTokenLogprobs(quantized, batch).dataSync());
    attachedAdapters(quantized)!.detach();
    const without = tf.tidy(() => batchTokenLogprobs(quantized, batch).dataSync());
    expect(Math.max(...withAdapters.map((v, i) => Math.abs(v - without[i])))).toBeGreaterThan(1e-3);
    const plain = await loadPretrained(int8Dir);
    const reference = tf.tidy(() => batchTokenLogprobs(plain, batch).dataSync());
    expect(Array.from(without)).toEqual(Array.from(reference));
    // an adapter cannot be folded into 8-bit weights
    const again = LoraAdapters.create(plain, options, 3);
    expect(() => again.mergeIntoBase()).toThrow(/stored in 8 bits; merge the adapter onto the full-precision base/);
    for (const m of [quantized, twin, plain]) m.dispose();
  });

  it('sft --lora trains an 8-bit model into a PEFT folder over it, which loads with its adapters attached', async () => {
    const out = path.join(root, 'sft-qlora');
    const result = await sft({ model: int8Dir, train, out, backend: 'wasm', batchSize: 4, maxSteps: 6, lr: 2e-2, logEvery: 1, evalFraction: 0, maxLength: 64, lora });
    expect(result.modelDir).toBe(out);
    const losses = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as LogRecord).filter((r) => r.split === 'train').map((r) => Number(r.loss));
    expect(losses).toHaveLength(6);
    expect(losses.at(-1)!).toBeLessThan(losses[0]! - 0.05); // it learns
    const adapterConfig = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
    expect(adapterConfig).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8, base_model_name_or_path: path.resolve(int8Dir) });
    expect(fs.existsSync(path.join(out, 'config.json'))).toBe(false);
    const tuned = await loadPretrained(out);
    expect(quantizationOf(tuned)).toBeDefined(); // still 8-bit, adapters on top
    expect(attachedAdapters(tuned)).toBeDefined();
    const base = await loadPretrained(int8Dir);
    const a = tf.tidy(() => batchTokenLogprobs(tuned, batch).dataSync());
    const b = tf.tidy(() => batchTokenLogprobs(base, batch).dataSync());
    expect(Math.max(...a.map((v, i) => Math.abs(v - b[i])))).toBeGreaterThan(1e-3);
    tuned.dispose();
    base.dispose();
  });

  it('refuses what cannot train: no adapters, quantized activations, worker replicas', async () => {
    const common = { train, backend: 'wasm' as const, batchSize: 4, maxSteps: 1, maxLength: 64 };
    await expect(sft({ ...common, model: int8Dir, out: path.join(root, 'r1') })).rejects.toThrow(/quantized \(8-bit weights are frozen\); set lora/);
    await expect(sft({ ...common, model: w8a8Dir, out: path.join(root, 'r2'), lora })).rejects.toThrow(/needs weight-only quantization \(tfalign quantize --weights-only\)/);
    await expect(sft({ ...common, model: int8Dir, out: path.join(root, 'r3'), lora, workers: 2, forceWorkers: true })).rejects.toThrow(/replicas of an 8-bit \(QLoRA\) model are not supported/);
  });

  it('the memory pre-check counts 8-bit weights as one layer of float copies: Llama-3.2-1B LoRA fits the wasm heap once its projections are 8-bit', () => {
    expect(quantizedParameterCount(loadConfig(int8Dir), int8Dir)).toBe(2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 176)); // tiny: q, o 64×64; k, v 64×32; gate, up, down 64×176
    expect(quantizedParameterCount(loadConfig(baseDir), baseDir)).toBe(0);
    const dims = modelDims(parseLlamaConfig(JSON.parse(fs.readFileSync('configs/models/llama-3.2-1b.json', 'utf8'))));
    // every projection of its 16 layers: 16 × (2·2048² + 2·2048·512 + 3·2048·8192)
    const projections = 16 * (2 * 2048 * 2048 + 2 * 2048 * 512 + 3 * 2048 * 8192);
    expect(projections).toBe(973_078_528);
    const shape = { batchSize: 1, workers: 1, lora: { r: 16, targetModules: [...ALL_PROJECTIONS] }, gradientCheckpointing: true, headChunkTokens: 'auto' as const };
    const opts = { backend: 'wasm', length: 512, lengthField: 'maxLength', sequencesPerRow: 1 };
    expect(() => checkTrainingFits(shape, dims, opts, 'sft config')).toThrow(/needs about .* per replica/);
    const float = estimateTrainingMemory(shape, dims, opts, 1);
    const int8 = estimateTrainingMemory(shape, dims, { ...opts, quantizedParameters: projections }, 1);
    // the projections leave the heap but for one layer's dequantized copy, twice (products and tape)
    expect(float.weights - int8.weights).toBe(4 * (projections - (2 * projections) / 16));
    expect(() => checkTrainingFits(shape, dims, { ...opts, quantizedParameters: projections }, 'sft config')).not.toThrow();
  });
});
