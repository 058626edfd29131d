/**
 * One optimizer step, behind an interface so that where the gradients are computed can change
 * without touching a trainer: `LocalStepEngine` computes every micro-batch here; a data-parallel
 * engine splits the micro-batches over worker replicas, sums their weighted gradients through
 * shared memory and has every replica apply the same update. Both run the same four pieces:
 * (a) `computeGradients` per micro-batch, (b) weighted accumulation, (c) global-norm clipping,
 * (d) AdamW.
 */
import * as tf from '@tensorflow/tfjs';
import { AdamW } from './adamw.js';
import { clipByGlobalNorm, globalNorm } from './grad-clip.js';
import { computeGradients, disposeGrads, GradientAccumulator } from './grad-accumulator.js';

/** What a trainer's loss function returns for one micro-batch. */
export interface MicroBatchLoss {
  /** The micro-batch loss: a mean over its `weight` units (tokens, pairs). */
  loss: tf.Scalar;
  /** Units the loss averages over; micro-batches are combined in proportion to it. */
  weight: number;
  /** Numbers to log, each a mean over the same units (read with dataSync inside the tape). */
  metrics?: Record<string, number>;
}

/** A trainer's loss over one micro-batch. Runs under the gradient tape. */
export type LossFn<B> = (batch: B) => MicroBatchLoss;

export interface StepResult {
  /** Weighted mean loss over the global batch. */
  loss: number;
  /** Weighted mean of each metric over the global batch. */
  metrics: Record<string, number>;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Total weight (loss units) of the global batch. */
  weight: number;
}

export interface StepEngine<B> {
  readonly optimizer: AdamW;
  /** Computes, reduces, clips and applies the gradients of `microBatches` at learning rate `lr`. */
  step(microBatches: B[], lr: number): Promise<StepResult>;
  /** Releases workers or other resources. */
  close(): Promise<void>;
}

/** Weighted means of metric records, weights given per record. */
export function combineMetrics(records: { weight: number; metrics?: Record<string, number> }[]): Record<string, number> {
  const sums: Record<string, number> = {};
  const weights: Record<string, number> = {};
  for (const r of records) {
    for (const [k, v] of Object.entries(r.metrics ?? {})) {
      sums[k] = (sums[k] ?? 0) + v * r.weight;
      weights[k] = (weights[k] ?? 0) + r.weight;
    }
  }
  return Object.fromEntries(Object.keys(sums).map((k) => [k, sums[k] / weights[k]]));
}

export interface LocalStepEngineOptions {
  /** Clip the global gradient norm to this; 0 disables. */
  maxGradNorm: number;
}

/** One micro-batch's loss value, weight and metrics. */
export interface MicroBatchRecord {
  weight: number;
  loss: number;
  metrics?: Record<string, number>;
}

/**
 * Computes the gradients of each micro-batch and adds wᵢ·gᵢ to `accumulator` (fully masked
 * micro-batches, weight 0, add nothing); returns each micro-batch's record. Shared by the local
 * engine and every data-parallel replica, so all compute a step the same way.
 */
export function accumulateMicroBatches<B>(
  params: Map<string, tf.Variable>,
  lossFn: LossFn<B>,
  microBatches: readonly B[],
  accumulator: GradientAccumulator,
): MicroBatchRecord[] {
  const records: MicroBatchRecord[] = [];
  for (const batch of microBatches) {
    let record: { weight: number; metrics?: Record<string, number> } | undefined;
    const { loss, grads } = computeGradients(params, () => {
      const out = lossFn(batch);
      record = { weight: out.weight, metrics: out.metrics };
      return out.loss;
    });
    try {
      if (record!.weight > 0) accumulator.add(grads, record!.weight);
    } finally {
      disposeGrads(grads);
    }
    records.push({ ...record!, loss });
  }
  return records;
}

/** Every micro-batch computed in this thread, on this backend. */
export class LocalStepEngine<B> implements StepEngine<B> {
  constructor(
    private readonly params: Map<string, tf.Variable>,
    private readonly lossFn: LossFn<B>,
    readonly optimizer: AdamW,
    private readonly opts: LocalStepEngineOptions,
  ) {}

  async step(microBatches: B[], lr: number): Promise<StepResult> {
    const accumulator = new GradientAccumulator();
    try {
      const records = accumulateMicroBatches(this.params, this.lossFn, microBatches, accumulator);
      const weight = records.reduce((a, r) => a + r.weight, 0);
      if (weight === 0) throw new Error('train: a step had no loss units (every micro-batch was fully masked)');
      const averaged = accumulator.average();
      // clipByGlobalNorm takes ownership of `averaged` (disposes what it scales)
      const { grads, norm: gradNorm } =
        this.opts.maxGradNorm > 0 ? clipByGlobalNorm(averaged, this.opts.maxGradNorm) : { grads: averaged, norm: globalNorm(averaged) };
      try {
        if (!Number.isFinite(gradNorm)) throw new Error(`train: gradient norm is ${gradNorm}; the loss diverged (lower the learning rate)`);
        this.optimizer.applyGradients(this.params, grads, lr);
      } finally {
        disposeGrads(grads);
      }
      const loss = records.reduce((a, r) => a + r.loss * r.weight, 0) / weight;
      return { loss, metrics: combineMetrics(records), gradNorm, weight };
    } finally {
      accumulator.reset();
    }
  }

  /** Frees the optimizer's moments (the model's weights belong to the caller). */
  async close(): Promise<void> {
    this.optimizer.dispose();
  }
}
