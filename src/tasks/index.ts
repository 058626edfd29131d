/**
 * The built-in training tasks, by kind, and how a replica resolves a `TaskDescriptor` to its
 * loss. Every thread — the parent (local engine, replica 0) and each data-parallel worker —
 * resolves a descriptor here, so each objective is defined once, in its task file:
 *   `causal-lm` (pretraining, SFT) · `reward-model` (Bradley–Terry / ranking) · `dpo` (DPO + NLL).
 * A kind not built in is loaded from the descriptor's `module` URL (its `task` export).
 */
import type { LlamaModel } from '../model/llama.js';
import { attachedAdapters } from '../model/lora.js';
import type { LossFn } from '../train/step-engine.js';
import type { TaskDefinition, TaskDescriptor } from '../train/task.js';
import { causalLmTask } from './causal-lm.js';
import { rewardModelTask } from './reward-model.js';
import { dpoTask } from './dpo.js';

/** The kinds every thread knows without a `module` URL (batch types differ per kind, hence `any`). */
const BUILT_IN_TASKS = new Map<string, TaskDefinition<any>>([causalLmTask, rewardModelTask, dpoTask].map((task) => [task.kind, task]));

/** Kinds available without a `module` URL. */
export function builtInTaskKinds(): string[] {
  return [...BUILT_IN_TASKS.keys()].sort();
}

/** The definition a descriptor names: a built-in kind, or the `task` export of its `module`. */
export async function resolveTask<B>(descriptor: TaskDescriptor): Promise<TaskDefinition<B>> {
  if (descriptor.module === undefined) {
    const builtIn = BUILT_IN_TASKS.get(descriptor.kind);
    if (!builtIn) {
      throw new Error(`tasks: unknown task kind '${descriptor.kind}' (built in: ${builtInTaskKinds().join(', ')}; give 'module' for another kind)`);
    }
    return builtIn as TaskDefinition<B>;
  }
  const loaded = (await import(descriptor.module)) as { task?: TaskDefinition<B> };
  const task = loaded.task;
  if (!task || typeof task.buildLoss !== 'function' || typeof task.unitsOf !== 'function') {
    throw new Error(`tasks: ${descriptor.module} does not export 'task' (a TaskDefinition with buildLoss and unitsOf)`);
  }
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
  const lossFn = withDropoutSeeds(await task.buildLoss({ model, options: descriptor.options ?? {} }), model, fault);
  const failAt = descriptor.failAtStep;
  if (!failAt || failAt.replica !== fault.replica) return lossFn;
  return (batch) => {
    if (fault.currentStep() === failAt.step) throw new Error(failAt.message ?? `injected fault on replica ${fault.replica} at step ${failAt.step}`);
    return lossFn(batch);
  };
}

/**
 * With LoRA dropout, seeds each micro-batch's masks from (optimizer step, micro-batch of the step,
 * replica): a resumed run draws the masks the uninterrupted one drew, and the recompute of
 * gradient checkpointing (same seed) draws them again.
 */
function withDropoutSeeds<B>(lossFn: LossFn<B>, model: LlamaModel, fault: { replica: number; currentStep: () => number }): LossFn<B> {
  const adapters = attachedAdapters(model);
  if (!adapters || adapters.options.dropout === 0) return lossFn;
  let step = -1;
  let call = 0;
  return (batch) => {
    if (fault.currentStep() !== step) {
      step = fault.currentStep();
      call = 0;
    }
    adapters.dropoutSeed = ((step * 1_000_003 + call++ * 8191 + fault.replica * 131) % 2_147_483_629) + 1;
    return lossFn(batch);
  };
}
