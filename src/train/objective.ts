/**
 * What a training task's loss returns for one micro-batch, and the one place where it is
 * normalised over the global batch.
 *
 * A task's loss returns SUMS, one per unit of normalisation: `sums[u]` is the objective's
 * term(s) summed over the micro-batch's units of kind `u`, coefficients applied (causal LM:
 * `sums.tokens = Σ_t nll_t`; DPO + NLL: `sums.pairs = Σ_p L_pref(h_p)` and
 * `sums.chosen_tokens = α · Σ_t nll_t`; reward model: `sums.pairs = Σ over ordered pairs`).
 * The task also counts each micro-batch's units from its data alone (`unitsOf`, no forward pass).
 * With U_u the units of kind u over ALL micro-batches of a step (before any split across
 * workers), the step's objective is
 *
 *   L = Σ_u ( Σ_i sums_i[u] ) / U_u          (kinds with U_u = 0 contribute nothing)
 *
 * so each micro-batch i contributes ℓ_i = Σ_u sums_i[u] / U_u, and the gradient of L is the plain
 * sum of the micro-batches' gradients ∇ℓ_i — across gradient accumulation and across replicas
 * alike, with no weights and no averaging. An objective with several units (DPO's preference
 * term per pair and NLL term per chosen token) is exact however the batch is cut; no loss needs
 * to know how its batch was split. Metrics work the same way: each is a sum over a named unit,
 * and its value is Σ_i sum_i / U_unit.
 */
import * as tf from '@tensorflow/tfjs';

/** Units of normalisation of a batch, by kind (`tokens`, `pairs`, `rows`, …). */
export type UnitCounts = Record<string, number>;

/** A metric of one micro-batch as a sum over a unit kind; its value is Σ sums / the global count. */
export interface MetricSum {
  /** Σ of the metric over the micro-batch's units of kind `unit`. */
  sum: number;
  /** The unit kind it is a mean over (a key of the task's `unitsOf`). */
  unit: string;
}

/** What a task's loss returns for one micro-batch. */
export interface MicroBatchObjective {
  /** Per unit kind: the objective's terms summed over this micro-batch's units of that kind (coefficients applied). */
  sums: Record<string, tf.Scalar>;
  /** Numbers to log, as sums over a unit (read with dataSync inside the tape). */
  metrics?: Record<string, MetricSum>;
}

/** A task's loss over one micro-batch. Runs under the gradient tape. */
export type LossFn<B> = (batch: B) => MicroBatchObjective;

/** A batch's unit counts from its data alone (no forward pass). */
export type UnitsFn<B> = (batch: B) => UnitCounts;

/** What a step engine or an evaluation runs: the loss of a micro-batch and how its units are counted. */
export interface Objective<B> {
  loss: LossFn<B>;
  unitsOf: UnitsFn<B>;
}

/** Σ of unit counts, kind by kind. */
export function addUnits(records: readonly UnitCounts[]): UnitCounts {
  const total: UnitCounts = {};
  for (const units of records) {
    for (const [kind, count] of Object.entries(units)) {
      if (!(count >= 0) || !Number.isFinite(count)) throw new Error(`objective: unit count '${kind}' must be a finite number ≥ 0, got ${count}`);
      total[kind] = (total[kind] ?? 0) + count;
    }
  }
  return total;
}

/** Whether any unit count is positive (a batch without is fully masked: it contributes nothing). */
export function hasUnits(units: UnitCounts): boolean {
  return Object.values(units).some((count) => count > 0);
}

/**
 * ℓ = Σ_u sums[u] / totals[u]: one micro-batch's contribution to the global batch's objective
 * (kinds whose total is 0 contribute nothing). A new scalar; `sums` are only read.
 */
export function normalizedLoss(sums: Record<string, tf.Scalar>, totals: UnitCounts): tf.Scalar {
  return tf.tidy(() => {
    let loss: tf.Scalar = tf.scalar(0);
    for (const kind of Object.keys(sums).sort()) {
      const total = totals[kind];
      if (total === undefined) throw new Error(`objective: the loss returned a sum over '${kind}', which the task's unitsOf does not count (it counts ${Object.keys(totals).join(', ') || 'nothing'})`);
      if (total > 0) loss = tf.add(loss, tf.div(sums[kind], total));
    }
    return loss;
  });
}

/** Σ of each metric's sums over `records`, divided by the global count of its unit (metrics over a unit counted 0 are left out). */
export function metricMeans(records: readonly (Record<string, MetricSum> | undefined)[], totals: UnitCounts): Record<string, number> {
  const sums = new Map<string, MetricSum>();
  for (const metrics of records) {
    for (const [name, { sum, unit }] of Object.entries(metrics ?? {})) {
      const previous = sums.get(name);
      if (previous && previous.unit !== unit) throw new Error(`objective: metric '${name}' is a sum over '${unit}' here but over '${previous.unit}' in another micro-batch`);
      sums.set(name, { sum: (previous?.sum ?? 0) + sum, unit });
    }
  }
  const means: Record<string, number> = {};
  for (const [name, { sum, unit }] of sums) {
    const total = totals[unit];
    if (total === undefined) throw new Error(`objective: metric '${name}' is a sum over '${unit}', which the task's unitsOf does not count`);
    if (total > 0) means[name] = sum / total;
  }
  return means;
}

/** An objective's value over a set of batches, as one global batch. */
export interface ObjectiveValue {
  /** Σ_u Σ_i sums_i[u] / U_u over every batch. */
  loss: number;
  /** Each metric's Σ over every batch / its unit's count. */
  metrics: Record<string, number>;
  /** U_u: every batch's units, summed. */
  units: UnitCounts;
}

/**
 * The objective over `batches` normalised as ONE batch (the engine's rule, without gradients): the
 * exact means over all their units, however the batches were cut. What evaluation reports.
 */
export function evaluateObjective<B>(objective: Objective<B>, batches: readonly B[]): ObjectiveValue {
  const unitsPerBatch = batches.map((batch) => objective.unitsOf(batch));
  const units = addUnits(unitsPerBatch);
  let loss = 0;
  const records: (Record<string, MetricSum> | undefined)[] = [];
  batches.forEach((batch, i) => {
    if (!hasUnits(unitsPerBatch[i])) return;
    loss += tf.tidy(() => {
      const out = objective.loss(batch);
      records.push(out.metrics);
      return normalizedLoss(out.sums, units).dataSync()[0];
    });
  });
  return { loss, metrics: metricMeans(records, units), units };
}
