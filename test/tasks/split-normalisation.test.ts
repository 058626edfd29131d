/**
 * The point of normalising once in the engine: a micro-batch cut into parts of UNEQUAL unit
 * counts — a DPO batch whose parts hold 3 + 2 pairs but 12 + 18 chosen tokens, a reward-model
 * batch whose parts hold 3 + 2 rows but 7 + 2 pairs (and, read through the LM head with an NLL
 * term, 9 + 11 best-response tokens) — gives exactly the unsplit loss, gradient and
 * metrics through the step engine (gradient accumulation over the parts, and 2 worker replicas
 * splitting the batch), with nothing in the batches saying they were split.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { parseLlamaConfig } from '../../src/model/config.js';
import { initModel, toRewardModel } from '../../src/model/weights.js';
import { LlamaModel } from '../../src/model/llama.js';
import { AdamW } from '../../src/train/adamw.js';
import { disposeGrads, GradientAccumulator, type GradMap } from '../../src/train/grad-accumulator.js';
import { accumulateMicroBatches, LocalStepEngine, stepUnits, type Objective, type StepResult } from '../../src/train/step-engine.js';
import { createStepEngine } from '../../src/parallel/factory.js';
import type { TaskDescriptor } from '../../src/train/task.js';
import { collatePairs, dpoLoss, dpoTaskOptions, dpoUnits, splitDpoBatch, type DpoBatch, type DpoLossOptions } from '../../src/tasks/dpo.js';
import { collatePreferences, rewardModelLoss, rewardModelUnits, rewardTaskOptions, splitPreferenceBatch, type PreferenceBatch } from '../../src/tasks/reward-model.js';
import { DPO_LOSSES } from '../../losses/dpo.js';

const config = parseLlamaConfig({
  vocab_size: 40, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 1,
  num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64,
});
const ids = (seed: number, n: number) => Array.from({ length: n }, (_, i) => (seed * 7 + i * 3) % 40);

/** 5 pairs whose chosen responses have 2, 4, 6, 8, 10 tokens: parts 3 + 2 pairs hold 12 + 18 chosen tokens. */
const dpoBatch = collatePairs(
  Array.from({ length: 5 }, (_, i) => ({ promptIds: ids(i, 3), chosenIds: ids(20 + i, 2 + 2 * i), rejectedIds: ids(30 + i, 4) })),
  { chosen: [-3, -4, -5, -6, -7], rejected: [-5, -5, -5, -5, -5] },
  0,
);
const dpoOptions: DpoLossOptions = { loss: DPO_LOSSES.sigmoid, beta: 0.1, labelSmoothing: 0, nllCoefficient: 0.2, formattingTokenIds: [5] };

/** 5 preference rows, rows 0 and 2 with an edit: parts 3 + 2 rows hold 7 + 2 pairs. */
const rmBatch = collatePreferences(
  [3, 2, 3, 2, 2].map((numResponses, p) => ({
    promptIds: ids(p, 3 + p),
    responses: Array.from({ length: numResponses }, (_, r) => ids(10 * p + r, 2 + r + p)),
    hasEdited: numResponses === 3,
    strength: 'better' as const,
  })),
  0,
);
const rmOptions = { margin: false, centeringCoefficient: 0.01 };

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
});

/** The summed gradient of `microBatches` as the engines compute it (global unit totals, then Σ). */
function engineGradient<B>(model: LlamaModel, objective: Objective<B>, microBatches: B[]): Map<string, Float32Array> {
  const accumulator = new GradientAccumulator();
  accumulateMicroBatches(model.params, objective.loss, microBatches, stepUnits(microBatches, objective.unitsOf), accumulator);
  const sum: GradMap = accumulator.sum();
  accumulator.reset();
  const out = new Map([...sum].map(([name, g]) => [name, Float32Array.from(g.dataSync() as Float32Array)]));
  disposeGrads(sum);
  return out;
}

/** √(Σ‖a − b‖² / Σ‖b‖²) over every parameter. */
function relativeDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  let diff = 0;
  let norm = 0;
  for (const [name, values] of b) {
    const other = a.get(name)!;
    values.forEach((v, i) => {
      diff += (other[i] - v) ** 2;
      norm += v ** 2;
    });
  }
  return Math.sqrt(diff / norm);
}

/** One local step of `microBatches` on a fresh model from `makeModel`. */
async function localStep<B>(makeModel: () => LlamaModel, objectiveOf: (m: LlamaModel) => Objective<B>, microBatches: B[]): Promise<StepResult> {
  const model = makeModel();
  const engine = new LocalStepEngine<B>(model.params, objectiveOf(model), new AdamW({ lr: 1e-3 }), { maxGradNorm: 0 });
  try {
    return await engine.step(microBatches, 1e-3);
  } finally {
    await engine.close();
    model.dispose();
  }
}

/** One 2-replica step of `microBatches` (one micro-batch: split by rows across the replicas). */
async function workerStep<B>(makeModel: () => LlamaModel, task: TaskDescriptor, microBatches: B[]): Promise<StepResult> {
  const model = makeModel();
  const engine = await createStepEngine<B>({ numWorkers: 2, model, task, optimizer: { lr: 1e-3 }, maxGradNorm: 0 });
  try {
    return await engine.step(microBatches, 1e-3);
  } finally {
    await engine.close();
    model.dispose();
  }
}

function expectSameStep(actual: StepResult, expected: StepResult, tolerance: number): void {
  const close = (a: number, e: number, what: string) => expect(Math.abs(a - e), `${what}: ${a} vs ${e}`).toBeLessThanOrEqual(tolerance * Math.max(1, Math.abs(e)));
  close(actual.loss, expected.loss, 'loss');
  close(actual.gradNorm, expected.gradNorm, 'gradNorm');
  expect(actual.units).toEqual(expected.units);
  expect(Object.keys(actual.metrics).sort()).toEqual(Object.keys(expected.metrics).sort());
  for (const [name, value] of Object.entries(expected.metrics)) close(actual.metrics[name], value, name);
}

describe('DPO + NLL split into parts of unequal chosen-token counts', () => {
  const makeModel = () => initModel(config, 4);
  const objectiveOf = (model: LlamaModel): Objective<DpoBatch> => ({ loss: (b) => dpoLoss(model, b, dpoOptions), unitsOf: dpoUnits });
  const parts = splitDpoBatch(dpoBatch, 2);

  it('the parts carry only their own rows and counts (no trace of the whole)', () => {
    expect(parts.map(dpoUnits)).toEqual([{ pairs: 3, chosen_tokens: 12 }, { pairs: 2, chosen_tokens: 18 }]);
    expect(Object.keys(parts[0]).sort()).toEqual(['numPairs', 'refChosenLogps', 'refRejectedLogps', 'tokens']);
  });

  it('accumulated as micro-batches: the unsplit gradient, loss and nll_loss', async () => {
    const model = makeModel();
    const whole = engineGradient(model, objectiveOf(model), [dpoBatch]);
    const split = engineGradient(model, objectiveOf(model), parts);
    expect(relativeDiff(split, whole)).toBeLessThan(1e-5);
    // normalising each part by its own counts (a mean per part, parts weighted by pairs) is not the same gradient
    const perPart = parts.map((part) => engineGradient(model, objectiveOf(model), [part]));
    const pairWeighted = new Map([...whole.keys()].map((name) => [name, perPart[0].get(name)!.map((v, i) => (3 * v + 2 * perPart[1].get(name)![i]) / 5)]));
    expect(relativeDiff(pairWeighted, whole)).toBeGreaterThan(1e-3);
    model.dispose();

    const unsplitStep = await localStep(makeModel, objectiveOf, [dpoBatch]);
    const splitStep = await localStep(makeModel, objectiveOf, parts);
    expectSameStep(splitStep, unsplitStep, 1e-5);
    expect(unsplitStep.units).toEqual({ pairs: 5, chosen_tokens: 30 });
    expect(unsplitStep.metrics.nll_loss).toBeGreaterThan(1); // a real NLL term (random weights: about ln 40)
  });

  it('split across 2 worker replicas: the single-thread step', async () => {
    const unsplitStep = await localStep(makeModel, objectiveOf, [dpoBatch]);
    const workers = await workerStep(makeModel, { kind: 'dpo', options: dpoTaskOptions(dpoOptions) }, [dpoBatch]);
    expectSameStep(workers, unsplitStep, 1e-5);
  });
});

describe('reward model split into parts of unequal pairs per row', () => {
  const makeModel = () => {
    const causal = initModel(config, 2);
    const model = toRewardModel(causal, 3);
    causal.dispose();
    return model;
  };
  const objectiveOf = (model: LlamaModel): Objective<PreferenceBatch> => ({ loss: (b) => rewardModelLoss(model, b, rmOptions), unitsOf: rewardModelUnits });
  const parts = splitPreferenceBatch(rmBatch, 2);

  it('accumulated as micro-batches: the unsplit gradient, loss, and accuracy and margin over rows', async () => {
    expect(parts.map(rewardModelUnits)).toEqual([{ pairs: 7, rows: 3, best_tokens: 9 }, { pairs: 2, rows: 2, best_tokens: 11 }]);
    const model = makeModel();
    expect(relativeDiff(engineGradient(model, objectiveOf(model), parts), engineGradient(model, objectiveOf(model), [rmBatch]))).toBeLessThan(1e-5);
    model.dispose();
    const unsplitStep = await localStep(makeModel, objectiveOf, [rmBatch]);
    const splitStep = await localStep(makeModel, objectiveOf, parts);
    expectSameStep(splitStep, unsplitStep, 1e-6);
    expect(unsplitStep.units).toEqual({ pairs: 9, rows: 5, best_tokens: 20 });
    // accuracy: correct rows out of 5, exactly
    const numCorrect = unsplitStep.metrics.accuracy * 5;
    expect(Math.abs(numCorrect - Math.round(numCorrect))).toBeLessThan(1e-9);
    expect(splitStep.metrics.accuracy).toBe(unsplitStep.metrics.accuracy);
  });
});

describe('logprob reward model (LM head, NLL on the best response) split into parts of unequal best-response tokens', () => {
  // rows 0–2 | 3–4: best responses of 2+3+4 = 9 | 5+6 = 11 tokens, 7 | 2 pairs, 3 | 2 rows
  const logprobConfig = parseLlamaConfig({ ...config, tfalign_reward: { head: 'logprob', beta: 2 } });
  const makeModel = () => new LlamaModel(logprobConfig, initModel(config, 2).params);
  const lossOptions = { margin: false, centeringCoefficient: 0, nllCoefficient: 0.5 };
  const objectiveOf = (model: LlamaModel): Objective<PreferenceBatch> => ({ loss: (b) => rewardModelLoss(model, b, lossOptions), unitsOf: rewardModelUnits });
  const parts = splitPreferenceBatch(rmBatch, 2);

  it('accumulated as micro-batches: the unsplit step, pairs and best tokens each normalised once', async () => {
    const unsplitStep = await localStep(makeModel, objectiveOf, [rmBatch]);
    const splitStep = await localStep(makeModel, objectiveOf, parts);
    expectSameStep(splitStep, unsplitStep, 1e-5);
    expect(unsplitStep.units).toEqual({ pairs: 9, rows: 5, best_tokens: 20 });
    expect(unsplitStep.metrics.nll_loss).toBeGreaterThan(2); // random weights over 40 ids: about ln 40 per token
  });

  it('split across 2 worker replicas: the single-thread step', async () => {
    const unsplitStep = await localStep(makeModel, objectiveOf, [rmBatch]);
    const workers = await workerStep(makeModel, { kind: 'reward-model', options: rewardTaskOptions(lossOptions) }, [rmBatch]);
    expectSameStep(workers, unsplitStep, 1e-5);
  });
});
