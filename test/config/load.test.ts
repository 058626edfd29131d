/**
 * Config loading and the numeric-limit layer (issue 11: items 3, 10, 15 and the JSON BOM of 18):
 * one strict-unknown-keys rule for every config (trainer configs, `--set`, a run config's stage
 * sections), no prototype pollution through `--set`, and every size, count and step bounded in
 * the schemas or against the machine before anything is allocated.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { applyOverrides, loadConfig, readConfigFile, strictSchema, validateConfig } from '../../src/config/load.js';
import { checkWorkers, numCores, WASM_HEAP_BYTES } from '../../src/config/limits.js';
import { checkTrainingFits } from '../../src/train/fits.js';
import { RunConfigSchema } from '../../src/rounds/run-config.js';
import { SftConfigSchema } from '../../src/trainers/sft.js';
import { DpoConfigSchema } from '../../src/trainers/dpo.js';
import { RewardConfigSchema } from '../../src/trainers/reward.js';
import { readRunConfig } from '../../src/rounds/runner.js';
import type { ModelDims } from '../../src/model/config.js';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const TINY_RUN = path.join(REPO, 'test', 'rounds', 'fixtures', 'tiny-run.yaml');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-config-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const sftBase = { model: 'm', train: 't.jsonl', out: 'o' };

describe('unknown keys (item 10)', () => {
  it('refuses a misspelt field in a trainer config, naming it', () => {
    expect(() => validateConfig(SftConfigSchema, { ...sftBase, learningRate: 0.1 }, 'sft.yaml')).toThrow(/^sft\.yaml: \(root\): Unrecognized key\(s\) in object: 'learningRate'$/);
    expect(() => validateConfig(DpoConfigSchema, { ...sftBase, bta: 0.2 }, 'dpo config')).toThrow(/Unrecognized key\(s\) in object: 'bta'/);
    expect(() => validateConfig(RewardConfigSchema, { ...sftBase, margn: true }, 'rm config')).toThrow(/Unrecognized key\(s\) in object: 'margn'/);
    expect(validateConfig(SftConfigSchema, { ...sftBase, lr: 0.1 }, 'sft.yaml').lr).toBe(0.1);
  });

  it('refuses an unknown --set on a trainer command', () => {
    expect(() => loadConfig(SftConfigSchema, { flags: sftBase, sets: ['evalEvry=5'] })).toThrow(/^config: \(root\): Unrecognized key\(s\) in object: 'evalEvry'$/);
    expect(loadConfig(SftConfigSchema, { flags: sftBase, sets: ['evalEvery=5'] }).evalEvery).toBe(5);
  });

  it('refuses unknown fields in the stage sections of a run config, at any depth', () => {
    expect(() => readRunConfig(TINY_RUN, ['rewardModel.learningRate=0.1'])).toThrow(/tiny-run\.yaml: rewardModel: Unrecognized key\(s\) in object: 'learningRate'/);
    expect(() => readRunConfig(TINY_RUN, ['sft.packng=true'])).toThrow(/sft: Unrecognized key\(s\) in object: 'packng'/);
    expect(() => readRunConfig(TINY_RUN, ['sampling.engine.kvCach=paged'])).toThrow(/sampling\.engine: Unrecognized key\(s\) in object: 'kvCach'/);
    // Fields the round fills in are not stage fields either.
    expect(() => readRunConfig(TINY_RUN, ['dpo.out=/tmp/x'])).toThrow(/dpo: Unrecognized key\(s\) in object: 'out'/);
    expect(readRunConfig(TINY_RUN, ['rewardModel.lr=0.1']).rewardModel.lr).toBe(0.1);
  });

  it('is applied by the loader, so fields a schema gains later are known and passthrough objects stay open', () => {
    const later = z.object({ a: z.object({ b: z.number().default(1), c: z.number().optional() }).default({}) });
    expect(validateConfig(later, { a: { c: 2 } }, 's')).toEqual({ a: { b: 1, c: 2 } });
    expect(() => validateConfig(later, { a: { d: 2 } }, 's')).toThrow("s: a: Unrecognized key(s) in object: 'd'");
    const open = z.object({ free: z.object({}).passthrough(), options: z.record(z.unknown()) });
    expect(validateConfig(open, { free: { x: 1 }, options: { y: 2 } }, 's')).toEqual({ free: { x: 1 }, options: { y: 2 } });
    expect(strictSchema(later)).toBe(strictSchema(later)); // one copy per schema
    // The run config's judge options stay free-form.
    expect(readRunConfig(TINY_RUN, ['preferences.judgeOptions.anything=3']).preferences.judgeOptions).toEqual({ anything: 3 });
  });
});

describe('--set and config files (items 15, 18)', () => {
  it('refuses __proto__, constructor and prototype keys and leaves Object.prototype alone', () => {
    for (const set of ['__proto__.polluted=1', 'a.__proto__.polluted=1', 'constructor.prototype.polluted=1']) {
      expect(() => applyOverrides({}, [set])).toThrow(/is not a config field/);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
  });

  it('reads a JSON config with a UTF-8 BOM, like YAML and JSONL', () => {
    const json = path.join(dir, 'bom.json');
    fs.writeFileSync(json, '\ufeff{"lr": 0.5}');
    expect(readConfigFile(json)).toEqual({ lr: 0.5 });
    const yaml = path.join(dir, 'bom.yaml');
    fs.writeFileSync(yaml, '\ufefflr: 0.5\n');
    expect(readConfigFile(yaml)).toEqual({ lr: 0.5 });
  });

  it('says what is wrong with a JSON config without echoing its bytes', () => {
    const file = path.join(dir, 'binary.json');
    fs.writeFileSync(file, 'SECRET-TOKEN-abc123 not json');
    const message = (() => {
      try {
        readConfigFile(file);
        return '';
      } catch (err) {
        return (err as Error).message;
      }
    })();
    expect(message).toBe(`${file}: invalid JSON: unexpected character`);
    const bad = path.join(dir, 'latin1.yaml');
    fs.writeFileSync(bad, Buffer.from([0x6c, 0x72, 0x3a, 0x20, 0xe9, 0x0a])); // "lr: é" in Latin-1
    expect(() => readConfigFile(bad)).toThrow(`${bad}:1: invalid UTF-8 (0xE9 at byte 5 of the line); save the file as UTF-8`);
  });
});

describe('numeric limits (item 3)', () => {
  it('bounds sizes, counts and steps in the schemas, naming the field', () => {
    expect(() => validateConfig(SftConfigSchema, { ...sftBase, batchSize: 1_000_000_000 }, 'sft.yaml')).toThrow(
      'sft.yaml: batchSize: must be at most 1,048,576 (rows in one batch)',
    );
    expect(() => validateConfig(SftConfigSchema, { ...sftBase, maxLength: 1e12 }, 'sft.yaml')).toThrow(/maxLength: must be at most 1,048,576 \(tokens in one sequence\)/);
    expect(() => validateConfig(SftConfigSchema, { ...sftBase, seed: 1e300 }, 'sft.yaml')).toThrow(/seed: must be at most/);
    expect(() => validateConfig(SftConfigSchema, { ...sftBase, epochs: 1e9 }, 'sft.yaml')).toThrow(/epochs: must be at most 10,000/);
    expect(() => readRunConfig(TINY_RUN, ['rounds=1000000000'])).toThrow(/tiny-run\.yaml: rounds: must be at most 1,000 \(rounds of a run\)/);
    expect(() => readRunConfig(TINY_RUN, ['sampling.k=100000000'])).toThrow(/sampling\.k: must be at most 4,096/);
    expect(() => validateConfig(RunConfigSchema, { ...readRunConfig(TINY_RUN), prompts: { train: { synthetic: 1e12 }, heldout: { synthetic: 8 } } }, 'run')).toThrow(/prompts\.train/);
  });

  const tiny: ModelDims = {
    vocabSize: 512, hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16,
    maxPositions: 512, rmsNormEps: 1e-5, tied: true, isRewardModel: false,
  };
  const fits = { backend: 'wasm', length: 512, lengthField: 'maxLength', sequencesPerRow: 1 };

  it('refuses more workers than cores unless forced', () => {
    const cores = numCores();
    expect(() => checkWorkers(cores + 62, false, 'sft.yaml')).toThrow(
      `sft.yaml: workers: ${cores + 62} is more than the ${cores} cores of this machine (each worker holds a full copy of the model and computes on one core); use at most ${cores}, or set forceWorkers: true (--force-workers) to run them anyway`,
    );
    expect(() => checkWorkers(cores, false, 'sft.yaml')).not.toThrow();
    expect(() => checkWorkers(cores + 62, true, 'sft.yaml')).not.toThrow();
    expect(() => checkTrainingFits({ batchSize: 8, workers: 64 }, tiny, fits, 'sft config')).toThrow(/sft config: workers: 64 is more than/);
  });

  it('refuses a step whose activations cannot fit, naming the field that sets it', () => {
    expect(() => checkTrainingFits({ batchSize: 8, workers: 1 }, tiny, fits, 'sft config')).not.toThrow();
    // 2^20 rows × 512 tokens × (2·512 logits + layers…) × 4 bytes ≈ 3 TiB: far beyond a 4 GiB wasm heap.
    expect(() => checkTrainingFits({ batchSize: 1 << 20, workers: 1 }, tiny, fits, 'sft config')).toThrow(
      /^sft config: batchSize: one pass of 1,048,576 rows × maxLength 512 tokens needs about [\d.]+ TiB per replica .*the wasm backend holds 4\.0 GiB per replica.*set microBatchSize to accumulate/,
    );
    // Accumulation over small passes fits; a large micro-batch is named instead.
    expect(() => checkTrainingFits({ batchSize: 1 << 20, microBatchSize: 4, workers: 1 }, tiny, fits, 'sft config')).not.toThrow();
    expect(() => checkTrainingFits({ batchSize: 1 << 20, microBatchSize: 1 << 16, workers: 1 }, tiny, fits, 'sft config')).toThrow(/^sft config: microBatchSize: /);
    // A model whose weights and AdamW state alone exceed the heap is named as the model.
    const huge: ModelDims = { ...tiny, vocabSize: 128_256, hiddenSize: 4096, intermediateSize: 14_336, numLayers: 32, numHeads: 32, numKvHeads: 8, headDim: 128, tied: false };
    expect(() => checkTrainingFits({ batchSize: 1, workers: 1 }, huge, fits, 'sft config')).toThrow(/^sft config: model: [\d,]+ parameters needs about/);
    expect(WASM_HEAP_BYTES).toBe(4294901760);
  });
});
