/**
 * One optimizer step, behind an interface so that where the gradients are computed can change
 * without touching a trainer: `LocalStepEngine` computes every micro-batch here; a data-parallel
 * engine splits the micro-batches over worker replicas, sums their gradients through shared
 * memory and has every replica apply the same update. Both run the same four pieces:
 * (a) `computeGradients` of each micro-batch's normalised contribution, (b) summation,
 * (c) global-norm clipping, (d) AdamW.
 *
 * Normalisation happens once, here: before a step the engine counts the global batch's units
 * (Σ of the task's `unitsOf` over all its micro-batches, before any split) and every micro-batch
 * contributes Σ_u sums[u] / U_u (`objective.ts`); the gradients of those contributions add.
 */
import * as tf from '@tensorflow/tfjs';
import { AdamW } from './adamw.js';
import { clipByGlobalNorm, globalNorm } from './grad-clip.js';
import { computeGradients, disposeGrads, GradientAccumulator } from './grad-accumulator.js';
import { addUnits, hasUnits, metricMeans, normalizedLoss, type LossFn, type MetricSum, type Objective, type UnitCounts, type UnitsFn } from './objective.js';

export type { LossFn, MicroBatchObjective, Objective, UnitCounts, UnitsFn } from './objective.js';

export interface StepResult {
  /** The global batch's loss: Σ_u (Σ of the u-sums over its micro-batches) / U_u. */
  loss: number;
  /** Each metric's Σ over the global batch / the global count of its unit. */
  metrics: Record<string, number>;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** U_u: the global batch's units of normalisation, by kind. */
  units: UnitCounts;
}

export interface StepEngine<B> {
  readonly optimizer: AdamW;
  /** Computes, reduces, clips and applies the gradients of `microBatches` at learning rate `lr`. */
  step(microBatches: B[], lr: number): Promise<StepResult>;
  /** Releases workers or other resources. */
  close(): Promise<void>;
}

export interface LocalStepEngineOptions {
  /** Clip the global gradient norm to this; 0 disables. */
  maxGradNorm: number;
}

/** One micro-batch's contribution to the step's loss and its metric sums. */
export interface MicroBatchRecord {
  /** ℓᵢ = Σ_u sums[u] / U_u. */
  loss: number;
  metrics?: Record<string, MetricSum>;
}

/**
 * The global batch's unit totals, checked: a step whose units are all 0 (every micro-batch fully
 * masked) has nothing to learn from.
 */
export function stepUnits<B>(microBatches: readonly B[], unitsOf: UnitsFn<B>): UnitCounts {
  const totals = addUnits(microBatches.map((batch) => unitsOf(batch)));
  if (!hasUnits(totals)) throw new Error('train: a step had no loss units (every micro-batch was fully masked)');
  return totals;
}

/** The micro-batches with at least one unit (fully masked ones contribute nothing and are not computed). */
export function withUnits<B>(microBatches: readonly B[], unitsOf: UnitsFn<B>): B[] {
  return microBatches.filter((batch) => hasUnits(unitsOf(batch)));
}

/**
 * Computes the gradient of each micro-batch's contribution ℓᵢ = Σ_u sums[u] / totals[u] and adds
 * it to `accumulator`; returns each micro-batch's record. Shared by the local engine and every
 * data-parallel replica, so all compute a step the same way.
 */
export function accumulateMicroBatches<B>(
  params: Map<string, tf.Variable>,
  lossFn: LossFn<B>,
  microBatches: readonly B[],
  totals: UnitCounts,
  accumulator: GradientAccumulator,
): MicroBatchRecord[] {
  const records: MicroBatchRecord[] = [];
  for (const batch of microBatches) {
    let metrics: Record<string, MetricSum> | undefined;
    const { loss, grads } = computeGradients(params, () => {
      const out = lossFn(batch);
      metrics = out.metrics;
      return normalizedLoss(out.sums, totals);
    });
    try {
      accumulator.add(grads);
    } finally {
      disposeGrads(grads);
    }
    records.push({ loss, metrics });
  }
  return records;
}

/** The step's loss (Σ of the contributions) and metric means from every micro-batch's record. */
export function combineRecords(records: readonly MicroBatchRecord[], totals: UnitCounts): { loss: number; metrics: Record<string, number> } {
  return { loss: records.reduce((a, r) => a + r.loss, 0), metrics: metricMeans(records.map((r) => r.metrics), totals) };
}

/** Every micro-batch computed in this thread, on this backend. */
export class LocalStepEngine<B> implements StepEngine<B> {
  constructor(
    private readonly params: Map<string, tf.Variable>,
    private readonly objective: Objective<B>,
    readonly optimizer: AdamW,
    private readonly opts: LocalStepEngineOptions,
  ) {}

  async step(microBatches: B[], lr: number): Promise<StepResult> {
    const totals = stepUnits(microBatches, this.objective.unitsOf);
    const accumulator = new GradientAccumulator();
    try {
      const records = accumulateMicroBatches(this.params, this.objective.loss, withUnits(microBatches, this.objective.unitsOf), totals, accumulator);
      const summed = accumulator.sum();
      // clipByGlobalNorm takes ownership of `summed` (disposes what it scales)
      const { grads, norm: gradNorm } =
        this.opts.maxGradNorm > 0 ? clipByGlobalNorm(summed, this.opts.maxGradNorm) : { grads: summed, norm: globalNorm(summed) };
      try {
        if (!Number.isFinite(gradNorm)) throw new Error(`train: gradient norm is ${gradNorm}; the loss diverged (lower the learning rate)`);
        this.optimizer.applyGradients(this.params, grads, lr);
      } finally {
        disposeGrads(grads);
      }
      return { ...combineRecords(records, totals), gradNorm, units: totals };
    } finally {
      accumulator.reset();
    }
  }

  /** Frees the optimizer's moments (the model's weights belong to the caller). */
  async close(): Promise<void> {
    this.optimizer.dispose();
  }
}
