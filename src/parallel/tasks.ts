/**
 * Loss kinds a data-parallel worker can build from a serialisable **task descriptor**.
 *
 * A worker thread cannot receive a closure, so a trainer tells the workers which loss to run by
 * name: `{ kind: 'causal-lm' }`. Each replica (the parent thread and every worker) resolves the
 * kind to a `TaskDefinition` and builds its loss over its own model replica.
 *
 * Built in: `causal-lm` (pretraining, SFT), `reward-model` (`trainers/reward-task.ts`) and `dpo`
 * (`trainers/dpo-task.ts`).
 *
 * Adding a kind: write a `TaskDefinition<YourBatch>` next to your trainer —
 * `buildLoss({ model, options })` returns the same `LossFn` the trainer would give
 * `LocalStepEngine`, and `splitBatch` (optional) cuts one micro-batch into row-disjoint parts so
 * that several workers can share it — then either
 *   (a) add it to `BUILT_IN_TASKS` below (one line: a dynamic import of its module), or
 *   (b) export it as `task` from its module and put that module's URL in the descriptor:
 *       `{ kind: 'dpo', module: new URL('./dpo-task.ts', import.meta.url).href }`.
 * There is deliberately no `registerTask()` call: a registration made at run time in the parent
 * would not exist in the workers, which load modules afresh; both ways above are code that every
 * thread loads. Options the loss needs (β, a reference-log-prob file, …) go in `options` as
 * plain data (structured-clone safe); batches travel to workers by message, so a batch type must
 * be plain data too (typed arrays, numbers, arrays), never tensors — and its typed arrays should
 * own their buffers (`selectRows` makes such copies): a `subarray` view of a large buffer is sent
 * with the whole buffer.
 */
import type { LlamaModel } from '../model/llama.js';
import type { LossFn } from '../train/step-engine.js';
import { causalLmLoss } from '../trainers/causal-lm.js';
import { selectRows, type TokenBatch } from '../../data/collate.js';

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
  /** The loss over one micro-batch, built once per replica. */
  buildLoss(ctx: TaskContext): LossFn<B> | Promise<LossFn<B>>;
  /**
   * Cuts a micro-batch into at most `numParts` non-empty row-disjoint parts whose weighted
   * losses add up to the whole's (each part's weight its own loss units). Without it, workers
   * share whole micro-batches only.
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

/** A `TokenBatch` cut into contiguous row ranges (each part keeps the sequence length). */
export function splitTokenBatch(batch: TokenBatch, numParts: number): TokenBatch[] {
  return evenRowRanges(batch.batchSize, numParts).map(([start, end]) =>
    selectRows(
      batch,
      Array.from({ length: end - start }, (_, i) => start + i),
    ),
  );
}

/** Next-token cross-entropy on `TokenBatch`es (pretraining, SFT): `causalLmLoss`, weight = target tokens. */
export const causalLmTask: TaskDefinition<TokenBatch> = {
  kind: 'causal-lm',
  buildLoss: ({ model }) => (batch) => causalLmLoss(model, batch),
  splitBatch: splitTokenBatch,
};

/**
 * The kinds every thread knows without a `module` URL (batch types differ per kind, hence `any`).
 * Kinds defined next to their trainer are imported on first use: a static import would close a
 * cycle (trainer → factory → tasks → trainer), and a worker loads only the kind it runs.
 */
const BUILT_IN_TASKS = new Map<string, () => Promise<TaskDefinition<any>>>([
  [causalLmTask.kind, async () => causalLmTask],
  ['reward-model', async () => (await import('../trainers/reward-task.js')).rewardModelTask],
  ['dpo', async () => (await import('../trainers/dpo-task.js')).dpoTask],
]);

/** Kinds available without a `module` URL. */
export function builtInTaskKinds(): string[] {
  return [...BUILT_IN_TASKS.keys()].sort();
}

/** The definition a descriptor names: a built-in kind, or the `task` export of its `module`. */
export async function resolveTask<B>(descriptor: TaskDescriptor): Promise<TaskDefinition<B>> {
  if (descriptor.module === undefined) {
    const loadBuiltIn = BUILT_IN_TASKS.get(descriptor.kind);
    if (!loadBuiltIn) {
      throw new Error(`tasks: unknown task kind '${descriptor.kind}' (built in: ${builtInTaskKinds().join(', ')}; give 'module' for another kind)`);
    }
    return (await loadBuiltIn()) as TaskDefinition<B>;
  }
  const loaded = (await import(descriptor.module)) as { task?: TaskDefinition<B> };
  const task = loaded.task;
  if (!task || typeof task.buildLoss !== 'function') throw new Error(`tasks: ${descriptor.module} does not export 'task' (a TaskDefinition)`);
  if (task.kind !== descriptor.kind) throw new Error(`tasks: ${descriptor.module} exports task kind '${task.kind}', but the descriptor asks for '${descriptor.kind}'`);
  return task;
}

/**
 * The loss one replica runs: the task's loss over `model`, wrapped so that the descriptor's
 * `failAtStep` fault fires on replica `fault.replica` while `fault.currentStep()` (the optimizer
 * step being computed) equals its step.
 */
export async function buildTaskLoss<B>(
  descriptor: TaskDescriptor,
  model: LlamaModel,
  fault: { replica: number; currentStep: () => number },
): Promise<LossFn<B>> {
  const task = await resolveTask<B>(descriptor);
  const lossFn = await task.buildLoss({ model, options: descriptor.options ?? {} });
  const failAt = descriptor.failAtStep;
  if (!failAt || failAt.replica !== fault.replica) return lossFn;
  return (batch) => {
    if (fault.currentStep() === failAt.step) throw new Error(failAt.message ?? `injected fault on replica ${fault.replica} at step ${failAt.step}`);
    return lossFn(batch);
  };
}
