/**
 * The one call a trainer makes to get its step engine: `numWorkers` 1 computes everything in
 * this thread (`LocalStepEngine`), more starts data-parallel worker threads (`WorkerStepEngine`).
 */
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { currentBackend } from '../backend.js';
import type { LlamaModel } from '../model/llama.js';
import { trainingParameters } from '../model/lora.js';
import { quantizationOf } from '../model/quantization/quantize-model.js';
import { AdamW, type AdamWOptions } from '../train/adamw.js';
import { LocalStepEngine, type StepEngine } from '../train/step-engine.js';
import { type TaskDescriptor } from '../train/task.js';
import { buildTaskLoss, resolveTask } from '../tasks/index.js';
import { WorkerStepEngine } from './worker-engine.js';
import type { TrainingOptions } from '../config/training.js';

/** A running backend's name. */
export type RunningBackend = 'tensorflow' | 'wasm' | 'cpu';

/**
 * Default number of data-parallel replicas: every core on wasm and cpu, whose kernels run on one
 * thread each; 1 on `tensorflow`, whose native kernels already use every core (or a GPU).
 */
export function defaultNumWorkers(backend: RunningBackend): number {
  return backend === 'tensorflow' ? 1 : os.availableParallelism();
}

export interface StepEngineOptions<B> {
  /** Replicas computing gradients, this thread included; default `defaultNumWorkers(backend)`. */
  numWorkers?: number;
  /** The backend workers initialise; default: the one running here. */
  backend?: RunningBackend;
  /** The model to train (replica 0); workers rebuild its architecture and copy its weights. */
  model: LlamaModel;
  /** The objective as a serialisable task: this thread and every worker build their loss from it. */
  task: TaskDescriptor;
  /** AdamW hyperparameters (a custom `noDecay` reaches workers as the set of names it exempts). */
  optimizer: AdamWOptions;
  /** Clip the global gradient norm to this; 0 disables. */
  maxGradNorm: number;
}

/** The backend running in this thread, as `initBackend` (or tfjs itself) set it. */
function runningBackend(): RunningBackend {
  const name = currentBackend()?.name ?? tf.getBackend();
  if (name !== 'tensorflow' && name !== 'wasm' && name !== 'cpu') throw new Error(`workers: backend '${name}' cannot be started in a worker (expected tensorflow, wasm or cpu)`);
  return name;
}

/** A `LocalStepEngine` for 1 replica, a started `WorkerStepEngine` for more. */
export async function createStepEngine<B>(o: StepEngineOptions<B>): Promise<StepEngine<B>> {
  const backend = o.backend ?? runningBackend();
  // 8-bit weights (QLoRA) live outside the parameters that replicas copy: one thread trains them
  const quantized = quantizationOf(o.model) !== undefined;
  const numWorkers = o.numWorkers ?? (quantized ? 1 : defaultNumWorkers(backend));
  if (!Number.isInteger(numWorkers) || numWorkers < 1) throw new Error(`workers: numWorkers must be an integer ≥ 1, got ${numWorkers}`);
  if (quantized && numWorkers > 1) throw new Error(`workers: ${numWorkers} replicas of an 8-bit (QLoRA) model are not supported: worker replicas copy float parameters only; set workers: 1`);
  const optimizer = new AdamW(o.optimizer);
  if (numWorkers === 1) {
    const loss = await buildTaskLoss<B>(o.task, o.model, { replica: 0, currentStep: () => optimizer.step });
    const task = await resolveTask<B>(o.task);
    return new LocalStepEngine<B>(trainingParameters(o.model), { loss, unitsOf: task.unitsOf.bind(task) }, optimizer, { maxGradNorm: o.maxGradNorm });
  }
  return WorkerStepEngine.create<B>({ numWorkers, backend, model: o.model, task: o.task, optimizer, maxGradNorm: o.maxGradNorm });
}

/**
 * The step engine of a trainer from its validated options: `workers` (default: every core on
 * wasm/cpu), AdamW from `lr`, `adamBeta1/2`, `adamEps`, `weightDecay`, and `maxGradNorm`.
 */
export function createTrainerEngine<B>(
  options: Pick<TrainingOptions, 'workers' | 'lr' | 'adamBeta1' | 'adamBeta2' | 'adamEps' | 'weightDecay' | 'maxGradNorm'>,
  o: { backend: RunningBackend; model: LlamaModel; task: TaskDescriptor },
): Promise<StepEngine<B>> {
  return createStepEngine<B>({
    numWorkers: options.workers, // undefined: createStepEngine's default (one per core; one for an 8-bit model)
    backend: o.backend,
    model: o.model,
    task: o.task,
    optimizer: { lr: options.lr, beta1: options.adamBeta1, beta2: options.adamBeta2, eps: options.adamEps, weightDecay: options.weightDecay },
    maxGradNorm: options.maxGradNorm,
  });
}
