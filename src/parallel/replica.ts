/**
 * The two halves of a data-parallel step that every replica runs on its own thread — the parent
 * thread (replica 0) and each worker run exactly this code, which is what keeps their weights
 * bit-identical:
 *   `computeShard`: (a) gradients of each of its micro-batches' contributions, normalised by the
 *     global batch's unit counts the parent sent, (b) summed and written to its slot of the
 *     shared buffer;
 *   `applyReduced`: after the all-reduce, (c) global-norm clipping and (d) the AdamW update of
 *     the summed gradient read from slot 0.
 * Steps (a)–(d) are those of `LocalStepEngine`; only the cross-replica sum moved into `allreduce.ts`.
 */
import * as tf from '@tensorflow/tfjs';
import type { AdamW } from '../train/adamw.js';
import { clipByGlobalNorm, globalNorm } from '../train/grad-clip.js';
import { disposeGrads, GradientAccumulator } from '../train/grad-accumulator.js';
import { accumulateMicroBatches, type LossFn, type MicroBatchRecord, type UnitCounts } from '../train/step-engine.js';
import { readReduced, writeSlot, type GradientLayout } from './allreduce.js';

/** What a replica reports after computing its micro-batches (plain data: it crosses threads). */
export interface ShardResult {
  /** Per micro-batch, in order. */
  records: MicroBatchRecord[];
  /** Layout indices of the parameters that received a gradient (the others were written as zeros). */
  present: number[];
}

/**
 * Computes the gradients of `microBatches`' contributions (each normalised by `totals`, the global
 * batch's unit counts), sums them locally (gradient accumulation happens here, before any
 * communication) and writes the sum into `slot`. A replica with no micro-batches writes zeros.
 */
export function computeShard<B>(
  params: Map<string, tf.Variable>,
  lossFn: LossFn<B>,
  microBatches: B[],
  totals: UnitCounts,
  layout: GradientLayout,
  slot: Float32Array,
): ShardResult {
  const accumulator = new GradientAccumulator();
  try {
    const records = accumulateMicroBatches(params, lossFn, microBatches, totals, accumulator);
    if (accumulator.numMicroBatches === 0) return { records, present: writeSlot(layout, new Map(), slot) };
    const sum = accumulator.sum();
    try {
      return { records, present: writeSlot(layout, sum, slot) };
    } finally {
      disposeGrads(sum);
    }
  } finally {
    accumulator.reset();
  }
}

/**
 * Clips the reduced gradient g (slot 0, parameters at `present`) to `maxGradNorm` (0: no
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
  const summed = readReduced(layout, reduced, present);
  // clipByGlobalNorm takes ownership of `summed` (disposes what it scales)
  const { grads, norm } = maxGradNorm > 0 ? clipByGlobalNorm(summed, maxGradNorm) : { grads: summed, norm: globalNorm(summed) };
  try {
    if (Number.isFinite(norm)) optimizer.applyGradients(params, grads, lr);
  } finally {
    disposeGrads(grads);
  }
  return norm;
}
