/**
 * LoRA in the trainers: sft, dpo and rm train write PEFT adapter folders (checkpoints too), train
 * only the adapters (and a reward model's score head), resume exactly, give the 1-worker run with
 * 2 workers, and DPO's reference is the base (adapters off) with no second model.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { loadPretrained, loadWithAdapter } from '../../src/model/pretrained.js';
import { attachedAdapters, LoraAdapters, LoraOptionsSchema } from '../../src/model/lora.js';
import { readSafetensors } from '../../src/model/safetensors.js';
import { sft } from '../../src/trainers/sft.js';
import { dpo } from '../../src/trainers/dpo.js';
import { trainRewardModel } from '../../src/trainers/reward.js';
import { computeReferenceLogps } from '../../src/trainers/reference-logps.js';
import type { LogRecord } from '../../src/train/loop.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { registerModelCommands } from '../../src/cli/model.js';
import { registerSftCommands } from '../../src/cli/sft.js';
import { FullAttention } from '../../src/model/attention.js';
import { runCli } from '../cli/run-cli.js';
import { preferenceWordRows, sftWordRows, writeWordFixtures } from './word-rows.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-lora-trainers-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const sftRows = sftWordRows(12);
const preferenceRows = preferenceWordRows(10);

let baseDir: string;
let sftFile: string;
let prefsFile: string;
const lora = { r: 4, alpha: 8 };

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  ({ baseDir, sftFile, prefsFile } = await writeWordFixtures(root, { sft: sftRows, preferences: preferenceRows }));
});

const readMetrics = (dir: string) => fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as LogRecord);

function maxAbsDiff(a: LlamaModel, b: LlamaModel): number {
  let m = 0;
  for (const [name, p] of a.params) {
    const x = p.dataSync();
    const y = b.params.get(name)!.dataSync();
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
  }
  return m;
}

describe('LoRA SFT', () => {
  it('writes PEFT adapter folders (final and checkpoints), trains only the adapters, and leaves the base folder as it was', async () => {
    const out = path.join(root, 'sft-lora');
    const baseBefore = fs.readFileSync(path.join(baseDir, 'model.safetensors'));
    await sft({ model: baseDir, train: sftFile, out, backend: 'wasm', workers: 1, batchSize: 4, maxSteps: 3, lr: 1e-2, logEvery: 1, saveEvery: 2, maxLength: 64, lora, gradientCheckpointing: true, headChunkTokens: 16 });
    const model = out;
    expect(fs.readdirSync(model).sort()).toEqual(expect.arrayContaining(['adapter_config.json', 'adapter_model.safetensors', 'tokenizer.json']));
    expect(fs.existsSync(path.join(model, 'config.json'))).toBe(false);
    const cfg = JSON.parse(fs.readFileSync(path.join(model, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 4, lora_alpha: 8, base_model_name_or_path: path.resolve(baseDir) });
    // checkpoint-2: the adapter + AdamW state of the 2·7·2 adapter tensors only
    const ckpt = path.join(out, 'checkpoint-2');
    expect(fs.existsSync(path.join(ckpt, 'adapter_model.safetensors'))).toBe(true);
    const optimizer = readSafetensors(path.join(ckpt, 'optimizer.safetensors'));
    const stateNames = [...optimizer.tensors.keys()];
    expect(stateNames).toHaveLength(2 * 7 * 2 * 2);
    expect(stateNames.every((n) => /lora_[AB]\.weight\./.test(n))).toBe(true);
    // the base folder is untouched; the adapter changed the model
    expect(fs.readFileSync(path.join(baseDir, 'model.safetensors')).equals(baseBefore)).toBe(true);
    const base = await loadPretrained(baseDir);
    const merged = await loadPretrained(model);
    expect(maxAbsDiff(merged, base)).toBeGreaterThan(1e-4);
    // only the adapted projections moved: embeddings and norms are the base's
    expect(Array.from(merged.params.get('model.embed_tokens.weight')!.dataSync())).toEqual(Array.from(base.params.get('model.embed_tokens.weight')!.dataSync()));
    expect(Array.from(merged.params.get('model.norm.weight')!.dataSync())).toEqual(Array.from(base.params.get('model.norm.weight')!.dataSync()));
    // and the adapter folder is a model folder for the next stage (the loss went down)
    const train = readMetrics(out).filter((r) => r.split === 'train');
    expect(Number(train[2].loss)).toBeLessThan(Number(train[0].loss));
    base.dispose();
    merged.dispose();
  });

  it('resumes exactly: 2 steps, then resume to 4, equals 4 straight (adapters and AdamW moments restored)', async () => {
    const common = { model: baseDir, train: sftFile, backend: 'wasm' as const, workers: 1, batchSize: 4, lr: 1e-2, lrDecay: 'constant' as const, warmupRatio: 0, logEvery: 1, maxLength: 64, lora: { ...lora, dropout: 0.2 }, saveTotalLimit: 0 };
    const straight = path.join(root, 'sft-straight');
    const resumed = path.join(root, 'sft-resumed');
    await sft({ ...common, out: straight, maxSteps: 4 });
    await sft({ ...common, out: resumed, maxSteps: 2, saveEvery: 2 });
    await sft({ ...common, out: resumed, maxSteps: 4, saveEvery: 2, resume: true });
    const a = readSafetensors(path.join(straight, 'adapter_model.safetensors')).tensors;
    const b = readSafetensors(path.join(resumed, 'adapter_model.safetensors')).tensors;
    let moved = 0;
    for (const [name, t] of a) {
      const u = b.get(name)!;
      for (let i = 0; i < t.data.length; i++) expect(u.data[i]).toBe(t.data[i]);
      if (name.includes('lora_B')) moved = Math.max(moved, ...t.data.map(Math.abs));
    }
    expect(moved).toBeGreaterThan(1e-3);
    expect(readMetrics(resumed).filter((r) => r.split === 'train').map((r) => r.loss)).toEqual(readMetrics(straight).filter((r) => r.split === 'train').map((r) => r.loss));
  });

  it('--workers 2 gives the 1-worker run', async () => {
    const common = { model: baseDir, train: sftFile, backend: 'wasm' as const, batchSize: 4, maxSteps: 3, lr: 1e-2, logEvery: 1, evalFraction: 0.2, maxLength: 64, lora, gradientCheckpointing: true, headChunkTokens: 8 };
    const one = path.join(root, 'sft-w1');
    const two = path.join(root, 'sft-w2');
    await sft({ ...common, out: one, workers: 1 });
    await sft({ ...common, out: two, workers: 2 });
    const m1 = readMetrics(one);
    const m2 = readMetrics(two);
    expect(m2.map((r) => `${r.split}:${r.step}`)).toEqual(m1.map((r) => `${r.split}:${r.step}`));
    m1.forEach((r, i) => expect(Math.abs(Number(m2[i].loss) - Number(r.loss))).toBeLessThan(1e-5 * Math.max(1, Math.abs(Number(r.loss)))));
    const a = readSafetensors(path.join(one, 'adapter_model.safetensors')).tensors;
    const b = readSafetensors(path.join(two, 'adapter_model.safetensors')).tensors;
    let diff = 0;
    let norm = 0;
    for (const [name, t] of a) {
      const u = b.get(name)!;
      for (let i = 0; i < t.data.length; i++) {
        diff += (t.data[i] - u.data[i]) ** 2;
        norm += t.data[i] ** 2;
      }
    }
    // B starts at 0, so AdamW's first update g/(|g|+ε) turns float-rounding differences of
    // near-zero gradients into visible ones; the adapters as a whole agree to ~1e-5 (5e-5 allowed,
    // the per-tensor bound of the full fine-tuning worker tests).
    expect(Math.sqrt(diff / norm)).toBeLessThan(5e-5);
  });
});

describe('LoRA DPO', () => {
  it('the reference is the base with adapters off: step-1 loss is ln 2 + α·NLL, rewards 0, and its log-probs equal the base model\'s', async () => {
    const out = path.join(root, 'dpo-lora');
    const records: LogRecord[] = [];
    let models = 0;
    await dpo(
      { model: baseDir, train: prefsFile, out, backend: 'wasm', workers: 1, batchSize: 4, maxSteps: 2, lr: 1e-2, logEvery: 1, evalFraction: 0, maxLength: 64, referenceMode: 'resident', lora },
      { onLog: (r) => records.push(r), onStart: (info) => (models = info.numModelsLoaded) },
    );
    expect(models).toBe(1);
    const first = records.find((r) => r.split === 'train' && r.step === 1)!;
    expect(Math.abs(Number(first.loss) - (Math.log(2) + 0.2 * Number(first.nll_loss)))).toBeLessThan(1e-5);
    expect(Math.abs(Number(first['rewards/chosen']))).toBeLessThan(1e-6);
    expect(Math.abs(Number(first['rewards/margins']))).toBeLessThan(1e-6);
    const second = records.find((r) => r.split === 'train' && r.step === 2)!;
    expect(Math.abs(Number(second['rewards/margins']))).toBeGreaterThan(1e-4); // the policy moved away from its reference
    expect(JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8')).task_type).toBe('CAUSAL_LM');

    // the disabled-adapter reference of a trained adapter is exactly the base model
    const policy = await loadWithAdapter(baseDir, out);
    const base = await loadPretrained(baseDir);
    const pairs = [{ promptIds: [5, 9, 30, 31], chosenIds: [40, 41, 42], rejectedIds: [50, 51] }];
    const options = { batchSize: 2, padId: 0, formattingTokenIds: [] };
    const viaDisabled = attachedAdapters(policy)!.withDisabled(() => computeReferenceLogps(policy, pairs, options));
    const viaBase = computeReferenceLogps(base, pairs, options);
    expect(Array.from(viaDisabled.chosen)).toEqual(Array.from(viaBase.chosen));
    expect(Array.from(viaDisabled.rejected)).toEqual(Array.from(viaBase.rejected));
    const adapted = computeReferenceLogps(policy, pairs, options);
    expect(Math.abs(adapted.chosen[0] - viaBase.chosen[0])).toBeGreaterThan(1e-4);
    policy.dispose();
    base.dispose();
  });

  it('precomputed references still work with LoRA (same first-step loss as the resident base)', async () => {
    const records: LogRecord[] = [];
    await dpo(
      { model: baseDir, train: prefsFile, out: path.join(root, 'dpo-lora-pre'), backend: 'wasm', workers: 1, batchSize: 4, maxSteps: 1, lr: 1e-2, logEvery: 1, evalFraction: 0, maxLength: 64, lora },
      { onLog: (r) => records.push(r) },
    );
    expect(Math.abs(Number(records[0].loss) - (Math.log(2) + 0.2 * Number(records[0].nll_loss)))).toBeLessThan(1e-5);
  });
});

describe('LoRA reward model', () => {
  it('trains the adapters and the score head, and saves a SEQ_CLS adapter that loads as a reward model', async () => {
    const out = path.join(root, 'rm-lora');
    await trainRewardModel({ model: baseDir, train: prefsFile, out, backend: 'wasm', workers: 1, batchSize: 4, maxSteps: 2, lr: 1e-2, logEvery: 1, evalFraction: 0, maxLength: 64, lora });
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({ task_type: 'SEQ_CLS', modules_to_save: ['score'] });
    const rm = await loadPretrained(out);
    expect(rm.dims.isRewardModel).toBe(true);
    rm.dispose();
  });
});

describe('adapters and the step engine', () => {
  it('adapters on tiny.json at r 2 are under 5% of the model, and detaching frees them all', async () => {
    const model = await loadPretrained(baseDir);
    const before = tf.memory().numTensors;
    const adapters = LoraAdapters.create(model, LoraOptionsSchema.parse({ r: 2 }), 1);
    expect(adapters.numParameters() / model.numParameters()).toBeLessThan(0.05);
    adapters.detach();
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });
});


describe('tfalign sft --lora and tfalign model merge', () => {
  it('merges a trained adapter into a plain HF folder whose logits equal base + adapter within 1e-5', async () => {
    const out = path.join(root, 'cli-sft-lora');
    await runCli(registerSftCommands, ['sft', '--model', baseDir, '--train', sftFile, '--out', out, '--backend', 'wasm', '--workers', '1', '--batch-size', '4', '--max-steps', '2',
      '--lr', '1e-2', '--lora-r', '8', '--lora-alpha', '4', '--gradient-checkpointing', '--head-chunk-tokens', '32', '--set', 'maxLength=64']);
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({ r: 8, lora_alpha: 4 });
    const mergedDir = path.join(root, 'merged');
    await runCli(registerModelCommands, ['model', 'merge', '--base', baseDir, '--adapter', out, '--out', mergedDir, '--backend', 'wasm']);
    expect(fs.existsSync(path.join(mergedDir, 'config.json'))).toBe(true);
    expect(fs.existsSync(path.join(mergedDir, 'adapter_config.json'))).toBe(false);
    const merged = await loadPretrained(mergedDir);
    const adapted = await loadWithAdapter(baseDir, out);
    const base = await loadPretrained(baseDir);
    const ids = [[1, 40, 77, 5, 200, 13, 9, 150]];
    const logits = (m: LlamaModel) => tf.tidy(() => m.logits(m.forward(tf.tensor2d(ids, undefined, 'int32'), new FullAttention({ batchSize: 1, seqLen: 8 }))).dataSync());
    const [lm, la, lb] = [logits(merged), logits(adapted), logits(base)];
    let diff = 0;
    let moved = 0;
    for (let i = 0; i < lm.length; i++) {
      diff = Math.max(diff, Math.abs(lm[i] - la[i]));
      moved = Math.max(moved, Math.abs(la[i] - lb[i]));
    }
    expect(diff).toBeLessThan(1e-5);
    expect(moved).toBeGreaterThan(1e-3);
    for (const m of [merged, adapted, base]) m.dispose();
  });
});

describe('LoRA per stage in a run config', () => {
  it('reads a lora section (with defaults) for the sft and dpo stages and leaves the reward model full', async () => {
    const { readRunConfig } = await import('../../src/rounds/runner.js');
    const file = path.join(process.cwd(), 'test', 'rounds', 'fixtures', 'tiny-run.yaml');
    const config = readRunConfig(file, ['sft.lora.r=8', 'dpo.lora.alpha=64', 'dpo.gradientCheckpointing=true']);
    expect(config.sft.lora).toEqual({ r: 8, alpha: 32, dropout: 0, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] });
    expect(config.dpo.lora).toMatchObject({ r: 16, alpha: 64 });
    expect(config.dpo.gradientCheckpointing).toBe(true);
    expect(config.rewardModel.lora).toBeUndefined();
    expect(() => readRunConfig(file, ['sft.lora.targetModules=["qkv"]'])).toThrow(/tiny-run\.yaml: sft\.lora\.targetModules\.0: Invalid enum value/);
  });
});
