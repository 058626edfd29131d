/**
 * Task descriptors: the built-in causal-LM kind, splitting a batch by rows, and a kind loaded
 * from its own module URL (in the parent and in the workers).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend.js';
import { parseLlamaConfig } from '../../src/model/config.js';
import { initModel } from '../../src/model/weights.js';
import { createStepEngine } from '../../src/parallel/factory.js';
import { evenRowRanges, type TaskDescriptor } from '../../src/train/task.js';
import { causalLmLoss, causalLmUnits, splitTokenBatch } from '../../src/tasks/causal-lm.js';
import { sftLoss } from '../../losses/sft.js';
import { batchTokenLogprobs } from '../../src/inference/token-logprobs.js';
import { buildTaskLoss, resolveTask } from '../../src/tasks/index.js';
import { padRows, type TokenBatch } from '../../data/collate.js';

const config = parseLlamaConfig({
  vocab_size: 32, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 1,
  num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64,
});

/** 5 rows of different lengths (so their target counts differ), prompt token 0 masked. */
const batch = padRows(
  Array.from({ length: 5 }, (_, r) => {
    const ids = Array.from({ length: 4 + 2 * r }, (_, i) => (3 * r + i) % 32);
    return { ids, targetMask: ids.map((_, i) => (i < 2 ? 0 : 1)) };
  }),
  0,
);

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
});

describe('splitting a batch by rows', () => {
  it('evenRowRanges: sizes differ by at most one, empty parts dropped', () => {
    expect(evenRowRanges(5, 2)).toEqual([[0, 3], [3, 5]]);
    expect(evenRowRanges(2, 3)).toEqual([[0, 1], [1, 2]]);
    expect(evenRowRanges(6, 3)).toEqual([[0, 2], [2, 4], [4, 6]]);
  });

  it('splitTokenBatch: the parts are the rows in order, and their target counts add up to the whole', () => {
    const parts = splitTokenBatch(batch, 2);
    expect(parts.map((p) => p.batchSize)).toEqual([3, 2]);
    expect(parts.every((p) => p.seqLen === batch.seqLen)).toBe(true);
    expect(Array.from(parts[0].inputIds).concat(Array.from(parts[1].inputIds))).toEqual(Array.from(batch.inputIds));
    expect(Array.from(parts[0].targets).concat(Array.from(parts[1].targets))).toEqual(Array.from(batch.targets));
    // row r has 4 + 2r tokens of which 2 + 2r are targets: 2 + 4 + 6 | 8 + 10
    expect(parts.map((p) => p.numTargets)).toEqual([12, 18]);
    expect(batch.numTargets).toBe(30);
  });

  it('the parts\' causal-LM token sums add up to the whole batch\'s, and the sum is the token mean × 30', () => {
    const model = initModel(config, 1);
    const sum = (b: TokenBatch) => tf.tidy(() => causalLmLoss(model, b).sums.tokens.dataSync()[0]);
    const parts = splitTokenBatch(batch, 2);
    expect(parts.map(causalLmUnits)).toEqual([{ tokens: 12 }, { tokens: 18 }]);
    expect(Math.abs(sum(parts[0]) + sum(parts[1]) - sum(batch)) / sum(batch)).toBeLessThan(1e-6);
    // the mean by the oracle: sftLoss over the batch's own log-probs
    const mean = tf.tidy(() => sftLoss(batchTokenLogprobs(model, batch), tf.tensor2d(batch.targets, [batch.batchSize, batch.seqLen - 1])).loss.dataSync()[0]);
    expect(Math.abs(sum(batch) / 30 - mean) / mean).toBeLessThan(1e-6);
    model.dispose();
  });
});

describe('resolving a task', () => {
  const scaled: TaskDescriptor = { kind: 'scaled-causal-lm', module: new URL('./fixtures/scaled-task.ts', import.meta.url).href, options: { scale: 3 } };

  it('a kind from its own module builds the same loss in this thread as by hand', async () => {
    const model = initModel(config, 1);
    const lossFn = await buildTaskLoss<TokenBatch>(scaled, model, { replica: 0, currentStep: () => 0 });
    const [value, reference] = tf.tidy(() => [lossFn(batch).sums.tokens.dataSync()[0], causalLmLoss(model, batch).sums.tokens.dataSync()[0]]);
    expect(Math.abs(value - 3 * reference)).toBeLessThan(1e-5);
    model.dispose();
  });

  it('and in worker threads: a 2-replica step reports the scaled loss and the task\'s metric', async () => {
    const model = initModel(config, 1);
    const reference = tf.tidy(() => causalLmLoss(model, batch).sums.tokens.dataSync()[0]) / 30;
    const engine = await createStepEngine<TokenBatch>({ numWorkers: 2, model, task: scaled, optimizer: { lr: 1e-3 }, maxGradNorm: 0 });
    try {
      const result = await engine.step([batch], 1e-3);
      expect(Math.abs(result.loss - 3 * reference) / (3 * reference)).toBeLessThan(1e-6);
      expect(result.metrics).toEqual({ scale: 3 });
      expect(result.units).toEqual({ tokens: 30 });
    } finally {
      await engine.close();
      model.dispose();
    }
  });

  it('a module whose task has no unitsOf is refused', async () => {
    const module = `data:text/javascript,${encodeURIComponent("export const task = { kind: 'no-units', buildLoss: () => () => ({ sums: {} }) };")}`;
    await expect(resolveTask({ kind: 'no-units', module })).rejects.toThrow(/does not export 'task' \(a TaskDefinition with buildLoss and unitsOf\)/);
  });

  it('a module whose task kind differs from the descriptor is refused', async () => {
    await expect(resolveTask({ ...scaled, kind: 'dpo' })).rejects.toThrow(/exports task kind 'scaled-causal-lm', but the descriptor asks for 'dpo'/);
  });
});
