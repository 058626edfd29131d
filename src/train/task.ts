/**
 * A training **task**: the one definition of an objective (batch → loss and metrics), named by a
 * serialisable **task descriptor** so that every replica can build it.
 *
 * A worker thread cannot receive a closure, so a trainer names its objective as plain data:
 * `{ kind: 'causal-lm' }`. Each replica (the parent thread's engine and every worker) resolves the
 * kind to a `TaskDefinition` (`src/tasks/index.ts`) and builds its loss over its own model replica.
 *
 * Built in (`src/tasks/`): `causal-lm` (pretraining, SFT), `reward-model` and `dpo`.
 *
 * Adding a kind: write a `TaskDefinition<YourBatch>` —
 * `buildLoss({ model, options })` returns the loss over one micro-batch as SUMS per unit of
 * normalisation (`MicroBatchObjective`, `objective.ts`), `unitsOf(batch)` counts those units from
 * the data alone, and `splitBatch` (optional) cuts one micro-batch into row-disjoint parts so that
 * several workers can share it. The step engine, not the loss, divides by the global batch's unit
 * counts, so a loss never needs to know whether or how its batch was split —
 * then either
 *   (a) put it in `src/tasks/` and add it to the built-in list of `src/tasks/index.ts`, or
 *   (b) export it as `task` from its module and put that module's URL in the descriptor:
 *       `{ kind: 'my-loss', module: new URL('./my-task.ts', import.meta.url).href }`.
 * There is deliberately no `registerTask()` call: a registration made at run time in the parent
 * would not exist in the workers, which load modules afresh; both ways above are code that every
 * thread loads. Options the loss needs (β, a reference-log-prob file, …) go in `options` as
 * plain data (structured-clone safe); batches travel to workers by message, so a batch type must
 * be plain data too (typed arrays, numbers, arrays), never tensors — and its typed arrays should
 * own their buffers (`selectRows` makes such copies): a `subarray` view of a large buffer is sent
 * with the whole buffer.
 */
import type { LlamaModel } from '../model/llama.js';
import type { LossFn, UnitCounts } from './objective.js';

/** Which loss a replica runs, as plain data (sent to every worker once). */
export interface TaskDescriptor {
  /** The loss kind, e.g. `causal-lm` (pretraining and SFT). */
  kind: string;
  /** URL of an ES module exporting `task: TaskDefinition` of this kind, for kinds not built in. */
  module?: string;
  /** Kind-specific options, plain data. */
  options?: Record<string, unknown>;
  /**
   * Testing only: replica `replica` (0 is the parent thread, workers are 1…N−1) throws
   * `Error(message)` from its loss during optimizer step `step` (0-based), to exercise how a
   * failing worker stops the run.
   */
  failAtStep?: { step: number; replica: number; message?: string };
}

/** What a task's loss builder receives on each replica. */
export interface TaskContext {
  /** This replica's model; the loss must read its weights through it. */
  model: LlamaModel;
  /** The descriptor's `options` ({} when absent). */
  options: Record<string, unknown>;
}

export interface TaskDefinition<B> {
  /** The descriptor `kind` this definition answers to. */
  kind: string;
  /** The loss over one micro-batch (sums per unit kind), built once per replica. */
  buildLoss(ctx: TaskContext): LossFn<B> | Promise<LossFn<B>>;
  /** The batch's units of normalisation by kind (the keys its loss sums and metrics are over), from its data alone. */
  unitsOf(batch: B): UnitCounts;
  /**
   * Cuts a micro-batch into at most `numParts` non-empty row-disjoint parts whose unit counts,
   * loss sums and metric sums add up to the whole's. Without it, workers share whole
   * micro-batches only.
   */
  splitBatch?(batch: B, numParts: number): B[];
}

/** Rows `[0, n)` cut into `numParts` contiguous ranges whose sizes differ by at most one (empty ranges dropped). */
export function evenRowRanges(numRows: number, numParts: number): [number, number][] {
  if (!Number.isInteger(numParts) || numParts < 1) throw new Error(`tasks: numParts must be an integer ≥ 1, got ${numParts}`);
  const ranges: [number, number][] = [];
  let start = 0;
  for (let part = 0; part < numParts; part++) {
    const size = Math.floor(numRows / numParts) + (part < numRows % numParts ? 1 : 0);
    if (size > 0) ranges.push([start, start + size]);
    start += size;
  }
  return ranges;
}

