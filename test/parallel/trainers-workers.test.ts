/**
 * `--workers` on sft, rm train and dpo: the split of a reward-model and a DPO micro-batch keeps
 * the loss and metrics of the whole (checked against the unsplit computation), and each trainer
 * run with 2 workers gives the 1-worker run's per-step losses, metrics and final weights.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { parseLlamaConfig } from '../../src/model/config.js';
import { loadPretrained } from '../../src/model/pretrained.js';
import { initModel, toRewardModel } from '../../src/model/weights.js';
import { evaluateObjective } from '../../src/train/objective.js';
import type { LogRecord } from '../../src/train/loop.js';
import { WorkerStepEngine } from '../../src/parallel/worker-engine.js';
import { squaredDiffAndNorm } from './compare-weights.js';
import { resolveTask } from '../../src/tasks/index.js';
import { trainRewardModel } from '../../src/trainers/reward.js';
import { collatePreferences, rewardModelLoss, rewardModelUnits, type PreferenceBatch } from '../../src/tasks/reward-model.js';
import { splitPreferenceBatch } from '../../src/tasks/reward-model.js';
import { dpo } from '../../src/trainers/dpo.js';
import { collatePairs, dpoLoss, dpoUnits, numChosenTargets, type DpoBatch } from '../../src/tasks/dpo.js';
import { splitDpoBatch, dpoTaskOptions } from '../../src/tasks/dpo.js';
import { sft } from '../../src/trainers/sft.js';
import { registerSftCommands } from '../../src/cli/sft.js';
import { registerRmCommands } from '../../src/cli/rm.js';
import { registerDpoCommands } from '../../src/cli/dpo.js';
import { DPO_LOSSES } from '../../losses/dpo.js';
import { runCli } from '../cli/run-cli.js';
import { preferenceWordRows, sftWordRows, writeWordFixtures } from '../trainers/word-rows.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-trainers-workers-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** SFT rows of different lengths (so micro-batches pad and target counts differ by row). */
const sftRows = sftWordRows(12);

/** Preference rows, every third with an edited response (ranked edited > chosen > rejected). */
const preferenceRows = preferenceWordRows(12, { edited: true });

let baseDir: string;
let sftFile: string;
let prefsFile: string;

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  ({ baseDir, sftFile, prefsFile } = await writeWordFixtures(root, { sft: sftRows, preferences: preferenceRows }));
});

function expectClose(actual: number, expected: number, tolerance: number, what: string): void {
  expect(Math.abs(actual - expected), `${what}: ${actual} vs ${expected}`).toBeLessThanOrEqual(tolerance * Math.max(1, Math.abs(expected)));
}

describe('splitting reward-model and DPO micro-batches', () => {
  const config = parseLlamaConfig({
    vocab_size: 40, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 1,
    num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64,
  });
  const ids = (seed: number, n: number) => Array.from({ length: n }, (_, i) => (seed * 7 + i * 3) % 40);

  it('preference rows stay whole: 5 rows (2 with an edit) → 3 + 2 rows, 8 + 4 sequences, and the parts give the whole loss and metrics', () => {
    const causal = initModel(config, 2);
    const model = toRewardModel(causal, 3);
    causal.dispose();
    const rows = [3, 2, 3, 2, 2].map((numResponses, p) => ({
      promptIds: ids(p, 3 + p),
      responses: Array.from({ length: numResponses }, (_, r) => ids(10 * p + r, 2 + r + p)),
      hasEdited: numResponses === 3,
      strength: 'better' as const,
    }));
    const batch = collatePreferences(rows, 0);
    expect(batch.numRanks).toBe(3);
    expect(batch.numPairs).toBe(3 + 1 + 3 + 1 + 1);
    const parts = splitPreferenceBatch(batch, 2);
    expect(parts.map((p) => p.numRows)).toEqual([3, 2]);
    expect(parts.map((p) => p.sequences.batchSize)).toEqual([3 + 2 + 3, 2 + 2]);
    expect(parts.map((p) => p.numPairs)).toEqual([7, 2]);
    // part 1's rows are rows 3 and 4 (2 responses each, the edit column masked): sequences 0..3
    expect(Array.from(parts[1].rankSequence)).toEqual([0, 0, 1, 2, 2, 3]);
    expect(Array.from(parts[1].validMask)).toEqual([0, 1, 1, 0, 1, 1]);
    expect(Array.from(parts[1].sequences.inputIds)).toEqual(Array.from(batch.sequences.inputIds.subarray(8 * batch.sequences.seqLen)));
    const options = { margin: false, centeringCoefficient: 0.01 };
    const objective = { loss: (b: PreferenceBatch) => rewardModelLoss(model, b, options), unitsOf: rewardModelUnits };
    const whole = evaluateObjective(objective, [batch]);
    const combined = evaluateObjective(objective, parts);
    expect(combined.units).toEqual({ pairs: 9, rows: 5, best_tokens: 20 }); // best_tokens: the logprob head's NLL unit, counted whatever the head
    expectClose(combined.loss, whole.loss, 1e-6, 'loss');
    // accuracy is a mean over rows, the loss over pairs (7 and 2 pairs for 3 and 2 rows)
    expectClose(combined.metrics.accuracy, whole.metrics.accuracy, 1e-9, 'accuracy');
    expectClose(combined.metrics.margin, whole.metrics.margin, 1e-6, 'margin');
    model.dispose();
  });

  it('DPO pairs stay whole: chosen i and rejected i travel together, and parts of unequal chosen lengths give the whole loss with the NLL term', async () => {
    const model = initModel(config, 4);
    const pairs = Array.from({ length: 5 }, (_, i) => ({ promptIds: ids(i, 3), chosenIds: ids(20 + i, 2 + 2 * i), rejectedIds: ids(30 + i, 4) }));
    const batch = collatePairs(pairs, { chosen: [-3, -4, -5, -6, -7], rejected: [-5, -5, -5, -5, -5] }, 0);
    const parts = splitDpoBatch(batch, 2);
    expect(parts.map((p) => p.numPairs)).toEqual([3, 2]);
    const t = batch.tokens.seqLen;
    const row = (b: DpoBatch, r: number) => Array.from(b.tokens.inputIds.subarray(r * t, (r + 1) * t));
    // part 1 = pairs 3 and 4: chosen rows 3, 4 then rejected rows 8, 9 of the whole
    expect([0, 1, 2, 3].map((r) => row(parts[1], r))).toEqual([3, 4, 8, 9].map((r) => row(batch, r)));
    expect(Array.from(parts[1].refChosenLogps)).toEqual([-6, -7]);
    // chosen target counts 2+4+6 | 8+10: the NLL is a mean over 30 tokens, not over pairs
    expect(parts.map(numChosenTargets)).toEqual([12, 18]);
    expect(parts.map(dpoUnits)).toEqual([{ pairs: 3, chosen_tokens: 12 }, { pairs: 2, chosen_tokens: 18 }]);
    const task = await resolveTask<DpoBatch>({ kind: 'dpo' });
    const opts = { loss: DPO_LOSSES.sigmoid, beta: 0.1, labelSmoothing: 0, nllCoefficient: 0.2, formattingTokenIds: [5] };
    const lossFn = await task.buildLoss({ model, options: dpoTaskOptions(opts) });
    const whole = evaluateObjective({ loss: (b: DpoBatch) => dpoLoss(model, b, opts), unitsOf: dpoUnits }, [batch]);
    const combined = evaluateObjective({ loss: lossFn, unitsOf: task.unitsOf }, parts);
    expectClose(combined.loss, whole.loss, 1e-6, 'loss');
    for (const key of Object.keys(whole.metrics)) expectClose(combined.metrics[key], whole.metrics[key], 1e-6, key);
    // averaging each part's NLL over its own tokens, then by pairs, would give a different number
    const perPart = parts.map((part) => evaluateObjective({ loss: lossFn, unitsOf: task.unitsOf }, [part]).metrics.nll_loss);
    expect(Math.abs((3 * perPart[0] + 2 * perPart[1]) / 5 - whole.metrics.nll_loss)).toBeGreaterThan(1e-4);
    model.dispose();
  });
});


const readMetrics = (dir: string) => fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as LogRecord);

/**
 * Same records (steps, splits), every number within 1e-5 relative, and the same final weights:
 * the whole model within 1e-5 relative (√(Σ‖Δw‖² / Σ‖w‖²)), each tensor within 5e-5. The
 * gradients of the two runs agree to float32 rounding (~1e-7 relative); AdamW's m̂/√v̂ magnifies
 * that on the few elements whose gradient nearly cancels across steps, so single small tensors
 * (v_proj: 2048 values) can show ~1e-5 where the model as a whole shows ~1e-6.
 */
async function expectSameRuns(oneDir: string, twoDir: string): Promise<void> {
  const one = readMetrics(oneDir);
  const two = readMetrics(twoDir);
  expect(two.map((r) => `${r.split}:${r.step}`)).toEqual(one.map((r) => `${r.split}:${r.step}`));
  one.forEach((record, i) => {
    for (const [key, value] of Object.entries(record)) {
      if (typeof value !== 'number' || key === 'tokens_per_s' || key === 'step') continue;
      expectClose(Number(two[i][key]), value, 1e-5, `${record.split} step ${record.step} ${key}`);
    }
  });
  const a = await loadPretrained(oneDir);
  const b = await loadPretrained(twoDir);
  try {
    expect([...b.params.keys()].sort()).toEqual([...a.params.keys()].sort());
    let modelDiff = 0;
    let modelNorm = 0;
    for (const [name, p] of a.params) {
      const x = p.dataSync();
      const y = b.params.get(name)!.dataSync();
      const { diff, norm } = squaredDiffAndNorm(x, y);
      expect(Math.sqrt(diff / norm), name).toBeLessThan(5e-5);
      modelDiff += diff;
      modelNorm += norm;
    }
    expect(Math.sqrt(modelDiff / modelNorm)).toBeLessThan(1e-5);
  } finally {
    a.dispose();
    b.dispose();
  }
}

/** Runs `body` with `WorkerStepEngine.create` spied on; returns the options of each call. */
async function engineCalls(body: () => Promise<unknown>): Promise<{ numWorkers: number; task: { kind: string; options?: Record<string, unknown> } }[]> {
  const create = vi.spyOn(WorkerStepEngine, 'create');
  try {
    await body();
    return create.mock.calls.map((c) => c[0] as { numWorkers: number; task: { kind: string } });
  } finally {
    create.mockRestore();
  }
}

describe('trainers with 2 workers give the 1-worker run', () => {
  it('sft --workers 2 (4 rows per step, each micro-batch split 2 + 2)', async () => {
    const common = { model: baseDir, train: sftFile, backend: 'wasm' as const, batchSize: 4, maxSteps: 3, lr: 1e-3, logEvery: 1, evalFraction: 0.2, maxLength: 64 };
    const oneDir = path.join(root, 'sft-1');
    expect(await engineCalls(() => sft({ ...common, out: oneDir, workers: 1 }))).toEqual([]);
    const twoDir = path.join(root, 'sft-2');
    const calls = await engineCalls(() =>
      runCli(registerSftCommands, ['sft', '--model', baseDir, '--train', sftFile, '--out', twoDir, '--backend', 'wasm', '--batch-size', '4', '--max-steps', '3', '--lr', '1e-3',
        '--set', 'logEvery=1', '--set', 'evalFraction=0.2', '--set', 'maxLength=64', '--workers', '2']),
    );
    expect(calls).toMatchObject([{ numWorkers: 2, task: { kind: 'causal-lm' } }]);
    await expectSameRuns(oneDir, twoDir);
  });

  it('rm train --workers 2 with accumulation (6 rows per step as 3 micro-batches of 2, each split by rows; edited rows included)', async () => {
    const common = { model: baseDir, train: prefsFile, backend: 'wasm' as const, batchSize: 6, microBatchSize: 2, maxSteps: 3, lr: 1e-3, logEvery: 1, evalFraction: 0, maxLength: 64, centeringCoefficient: 0.01, seed: 2 };
    const oneDir = path.join(root, 'rm-1');
    await trainRewardModel({ ...common, out: oneDir, workers: 1 });
    const twoDir = path.join(root, 'rm-2');
    const calls = await engineCalls(() =>
      runCli(registerRmCommands, ['rm', 'train', '--model', baseDir, '--train', prefsFile, '--out', twoDir, '--backend', 'wasm', '--batch-size', '6', '--micro-batch-size', '2',
        '--max-steps', '3', '--lr', '1e-3', '--log-every', '1', '--seed', '2', '--max-length', '64', '--centering-coefficient', '0.01', '--set', 'evalFraction=0', '--workers', '2']),
    );
    expect(calls).toMatchObject([{ numWorkers: 2, task: { kind: 'reward-model', options: { margin: false, centeringCoefficient: 0.01 } } }]);
    expect(readMetrics(oneDir).filter((r) => r.split === 'train')).toHaveLength(3);
    await expectSameRuns(oneDir, twoDir);
  });

  it('dpo --workers 2 (5 pairs per step split 3 + 2, NLL term on) and with a resident reference', async () => {
    const common = { model: baseDir, train: prefsFile, backend: 'wasm' as const, batchSize: 5, maxSteps: 3, lr: 1e-3, logEvery: 1, evalFraction: 0.2, maxLength: 64 };
    const oneDir = path.join(root, 'dpo-1');
    await dpo({ ...common, out: oneDir, workers: 1 });
    const twoDir = path.join(root, 'dpo-2');
    const calls = await engineCalls(() =>
      runCli(registerDpoCommands, ['dpo', '--model', baseDir, '--train', prefsFile, '--out', twoDir, '--backend', 'wasm', '--batch-size', '5', '--max-steps', '3', '--lr', '1e-3',
        '--set', 'logEvery=1', '--set', 'evalFraction=0.2', '--set', 'maxLength=64', '--workers', '2']),
    );
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ numWorkers: 2, task: { kind: 'dpo', options: { lossType: 'sigmoid', beta: 0.1, nllCoefficient: 0.2, labelSmoothing: 0 } } });
    expect((calls[0].task.options!.formattingTokenIds as number[]).length).toBe(3);
    await expectSameRuns(oneDir, twoDir);
    // resident: the reference model stays in this thread; its values reach the workers in the batches
    const residentDir = path.join(root, 'dpo-resident-2');
    await dpo({ ...common, out: residentDir, workers: 2, referenceMode: 'resident' });
    await expectSameRuns(oneDir, residentDir);
  });
});
