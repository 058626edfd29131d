/**
 * The two halves of a data-parallel step that every replica runs on its own thread — the parent
 * thread (replica 0) and each worker run exactly this code, which is what keeps their weights
 * bit-identical:
 *   `computeShard`: (a) gradients of each of its micro-batches, (b) accumulated as Σᵢ wᵢ gᵢ and
 *     written to its slot of the shared buffer;
 *   `applyReduced`: after the all-reduce, (c) global-norm clipping and (d) the AdamW update of
 *     the averaged gradient read from slot 0.
 * Steps (a)–(d) are those of `LocalStepEngine`; only the averaging moved into `allreduce.ts`.
 */
import * as tf from '@tensorflow/tfjs';
import type { AdamW } from '../train/adamw.js';
import { clipByGlobalNorm, globalNorm } from '../train/grad-clip.js';
import { disposeGrads, GradientAccumulator } from '../train/grad-accumulator.js';
import { accumulateMicroBatches, type LossFn, type MicroBatchRecord } from '../train/step-engine.js';
import { readReduced, writeSlot, type GradientLayout } from './allreduce.js';

/** What a replica reports after computing its micro-batches (plain data: it crosses threads). */
export interface ShardResult {
  /** Σᵢ wᵢ over this replica's micro-batches. */
  weight: number;
  /** Per micro-batch, in order. */
  records: MicroBatchRecord[];
  /** Layout indices of the parameters that received a gradient (the others were written as zeros). */
  present: number[];
}

/**
 * Computes the gradients of `microBatches`, accumulates Σᵢ wᵢ gᵢ locally (gradient accumulation
 * happens here, before any communication) and writes the sum into `slot`. A replica with no
 * micro-batches, or only fully masked ones, writes zeros and weight 0.
 */
export function computeShard<B>(params: Map<string, tf.Variable>, lossFn: LossFn<B>, microBatches: B[], layout: GradientLayout, slot: Float32Array): ShardResult {
  const accumulator = new GradientAccumulator();
  try {
    const records = accumulateMicroBatches(params, lossFn, microBatches, accumulator);
    if (accumulator.numMicroBatches === 0) return { weight: 0, records, present: writeSlot(layout, new Map(), slot) };
    const sum = accumulator.weightedSum();
    try {
      return { weight: accumulator.totalWeight, records, present: writeSlot(layout, sum, slot) };
    } finally {
      disposeGrads(sum);
    }
  } finally {
    accumulator.reset();
  }
}

/**
 * Clips the reduced gradient ḡ (slot 0, parameters at `present`) to `maxGradNorm` (0: no
 * clipping) and applies one AdamW update at `lr`. Returns the pre-clip global norm; when it is
 * not finite nothing is applied (every replica sees the same norm, so all skip alike).
 */
export function applyReduced(
  params: Map<string, tf.Variable>,
  optimizer: AdamW,
  layout: GradientLayout,
  reduced: Float32Array,
  present: number[],
  maxGradNorm: number,
  lr: number,
): number {
  const averaged = readReduced(layout, reduced, present);
  // clipByGlobalNorm takes ownership of `averaged` (disposes what it scales)
  const { grads, norm } = maxGradNorm > 0 ? clipByGlobalNorm(averaged, maxGradNorm) : { grads: averaged, norm: globalNorm(averaged) };
  try {
    if (Number.isFinite(norm)) optimizer.applyGradients(params, grads, lr);
  } finally {
    disposeGrads(grads);
  }
  return norm;
}
