/**
 * Data-parallel training on one machine (the seed's §4.1): N replicas of the model each compute
 * the gradients of their share of the global batch, the gradients are summed through a
 * `SharedArrayBuffer`, and every replica applies the same clipped AdamW update, so
 * the replicas stay bit-identical and the run matches one replica on the whole batch up to float
 * rounding.
 *
 * Threads: the parent thread is replica 0 and computes a share like the others, so N replicas
 * use N − 1 worker threads (one thread fewer to schedule on an N-core machine, and the parent's
 * model — the one the loop evaluates and saves — is updated by the same code as the workers').
 * While the parent computes, its event loop is blocked; worker replies wait in the queue.
 *
 * One step, three message rounds (messages say "go" and "done", never carry tensors):
 *   1) compute: the parent counts the global batch's units U_u with the task's `unitsOf` (before
 *      any split) and sends them with the shards (`shard.ts`); each replica sums the gradients of
 *      its micro-batches' contributions Σ_u sums[u] / U_u into its slot and reports their loss
 *      values and metric sums — the normalisation is done once, by the engine, not by each loss;
 *   2) reduce:  each replica sums its range of elements over all slots into slot 0
 *      (`allreduce.ts`; a plain sum: the contributions are already normalised);
 *   3) apply:   each replica clips and applies g from slot 0; the pre-clip norms must agree
 *      exactly (a cheap check that the replicas did not diverge).
 *
 * The replicas copy the parent's weights and optimizer state at the first step (so a resume
 * that loads a checkpoint into the parent after the engine was made is honoured), and again at
 * the step after `resync()`.
 *
 * Failure: a worker whose request throws, that crashes or exits stops the engine: every
 * pending and later `step()` rejects with that worker's error (its message and stack), and all
 * workers are terminated. Idle workers are `unref`ed, so a run that forgets `close()` still ends.
 */
import type * as tf from '@tensorflow/tfjs';
import type { LlamaModel } from '../model/llama.js';
import { attachedAdapters, trainingParameters } from '../model/lora.js';
import type { AdamW, AdamWParamState } from '../train/adamw.js';
import { combineRecords, stepUnits, withUnits, type LossFn, type StepEngine, type StepResult, type UnitsFn } from '../train/step-engine.js';
import { createSlotBuffer, layoutOfParams, partitionRange, reduceSlotRange, slotViews, type GradientLayout } from './allreduce.js';
import { applyReduced, computeShard, type ShardResult } from './replica.js';
import { shardMicroBatches } from './shard.js';
import { type TaskDescriptor } from '../train/task.js';
import { buildTaskLoss, resolveTask } from '../tasks/index.js';
import type { ParamValue, ReplicaState, WorkerInit, WorkerRequest, WorkerResults } from './protocol.js';
import { allOrFirstError, type WorkerChannel } from '../threads/worker-channel.js';
import { WorkerGroup } from '../threads/worker-group.js';

export interface WorkerStepEngineOptions<B> {
  /** Replicas computing gradients, the parent thread included (≥ 2; N − 1 worker threads are started). */
  numWorkers: number;
  /** The parent's backend; every worker initialises the same one. */
  backend: 'tensorflow' | 'wasm' | 'cpu';
  /** The parent's model (replica 0): its architecture is rebuilt in each worker, its weights copied. */
  model: LlamaModel;
  /** The objective every replica, this thread's included, builds (`src/tasks/`). */
  task: TaskDescriptor;
  /** The parent's optimizer; workers get the same hyperparameters and, at sync, its state. */
  optimizer: AdamW;
  /** Clip the global gradient norm to this; 0 disables. */
  maxGradNorm: number;
}

/** Sends `request` to `worker`; the reply typed by the request's type. */
function ask<T extends WorkerRequest>(worker: WorkerChannel<WorkerRequest>, request: T): Promise<WorkerResults[T['type']]> {
  return worker.request(request) as Promise<WorkerResults[T['type']]>;
}

export class WorkerStepEngine<B> implements StepEngine<B> {
  readonly optimizer: AdamW;
  /** Replicas, the parent included. */
  readonly numReplicas: number;
  private readonly params: Map<string, tf.Variable>;
  private readonly layout: GradientLayout;
  private readonly slots: Float32Array[];
  private readonly group: WorkerGroup<WorkerRequest>;
  private readonly lossFn: LossFn<B>;
  private readonly unitsOf: UnitsFn<B>;
  private readonly splitBatch?: (batch: B, numParts: number) => B[];
  private readonly maxGradNorm: number;
  private needsSync = true;

  private constructor(parts: {
    options: WorkerStepEngineOptions<B>;
    layout: GradientLayout;
    slotBuffer: SharedArrayBuffer;
    group: WorkerGroup<WorkerRequest>;
    lossFn: LossFn<B>;
    unitsOf: UnitsFn<B>;
    splitBatch?: (batch: B, numParts: number) => B[];
  }) {
    const o = parts.options;
    this.optimizer = o.optimizer;
    this.numReplicas = o.numWorkers;
    this.params = trainingParameters(o.model);
    this.layout = parts.layout;
    this.slots = slotViews(parts.slotBuffer, o.numWorkers, parts.layout.numElements);
    this.group = parts.group;
    this.lossFn = parts.lossFn;
    this.unitsOf = parts.unitsOf;
    this.splitBatch = parts.splitBatch;
    this.maxGradNorm = o.maxGradNorm;
  }

  /** Starts N − 1 workers and waits until each has its backend (a failing start rejects). */
  static async create<B>(options: WorkerStepEngineOptions<B>): Promise<WorkerStepEngine<B>> {
    const n = options.numWorkers;
    if (!Number.isInteger(n) || n < 2) throw new Error(`workers: WorkerStepEngine needs numWorkers ≥ 2, got ${n} (use LocalStepEngine for 1)`);
    const task = await resolveTask<B>(options.task);
    const lossFn = await buildTaskLoss<B>(options.task, options.model, { replica: 0, currentStep: () => options.optimizer.step });
    const params = trainingParameters(options.model);
    const layout = layoutOfParams(params);
    if (layout.names.length === 0) throw new Error('workers: the model has no trainable parameter');
    const slotBuffer = createSlotBuffer(n, layout.numElements);
    const opt = options.optimizer;
    const init: Omit<WorkerInit, 'replica'> = {
      numReplicas: n,
      backend: options.backend,
      config: options.model.config,
      model: {
        lora: attachedAdapters(options.model)?.options,
        gradientCheckpointing: options.model.gradientCheckpointing,
        headChunkTokens: options.model.headChunkTokens,
      },
      task: options.task,
      optimizer: {
        lr: opt.lr, beta1: opt.beta1, beta2: opt.beta2, eps: opt.eps, weightDecay: opt.weightDecay,
        noDecayNames: [...params.keys()].filter((name) => opt.noDecay(name)),
      },
      maxGradNorm: options.maxGradNorm,
      layout: { names: layout.names, shapes: layout.shapes },
      slots: slotBuffer,
    };
    const workerData = Array.from({ length: n - 1 }, (_, i): WorkerInit => ({ ...init, replica: i + 1 }));
    const group = await WorkerGroup.start<WorkerRequest>(new URL('./worker.js', import.meta.url), workerData, {
      labelOf: (i) => `worker ${i + 1}`,
      labelReplyErrors: true,
    });
    return new WorkerStepEngine<B>({ options, layout, slotBuffer, group, lossFn, unitsOf: task.unitsOf.bind(task), splitBatch: task.splitBatch?.bind(task) });
  }

  /** Number of worker threads still running (0 after `close()` or a failure). */
  get numLiveWorkers(): number {
    return this.group.numLiveWorkers;
  }

  /** Makes the next step copy the parent's weights and optimizer state to every worker again. */
  resync(): void {
    this.needsSync = true;
  }

  /** Runs `body` unless the engine stopped or closed; any error stops the engine, and its first error is what rejects. */
  private async guarded<T>(body: () => Promise<T>): Promise<T> {
    if (this.group.failure) throw this.group.failure;
    if (this.group.isClosed) throw new Error('workers: step() after close()');
    return this.group.guarded(body);
  }

  private async syncReplicas(): Promise<void> {
    const params: ParamValue[] = [...this.params].map(([name, v]) => ({
      name, shape: [...v.shape], trainable: v.trainable, values: v.dataSync() as Float32Array,
    }));
    const optimizerStates = this.optimizer.stateNames().map((name) => [name, this.optimizer.readState(name)!] as [string, AdamWParamState]);
    await allOrFirstError(this.group.channels.map((w) => ask(w, { type: 'sync', params, optimizerStep: this.optimizer.step, optimizerStates })));
    this.needsSync = false;
  }

  step(microBatches: B[], lr: number): Promise<StepResult> {
    return this.guarded(async () => {
      if (this.needsSync) await this.syncReplicas();
      const step = this.optimizer.step;
      const totals = stepUnits(microBatches, this.unitsOf);
      const shards = shardMicroBatches(microBatches, this.numReplicas, this.splitBatch).map((shard) => withUnits(shard, this.unitsOf));

      // 1) compute: the workers in parallel with the parent's own share
      const computing = allOrFirstError(this.group.channels.map((w, i) => ask(w, { type: 'compute', step, microBatches: shards[i + 1], totals })));
      const local = computeShard(this.params, this.lossFn, shards[0], totals, this.layout, this.slots[0]);
      const shardResults: ShardResult[] = [local, ...(await computing)];

      // 2) reduce: replica r sums its range of every slot into slot 0
      const range = (r: number) => partitionRange(this.layout.numElements, this.numReplicas, r);
      const reducing = allOrFirstError(this.group.channels.map((w, i) => ask(w, { type: 'reduce', start: range(i + 1)[0], end: range(i + 1)[1] })));
      reduceSlotRange(this.slots, ...range(0));
      await reducing;

      // 3) apply: the same clipped update everywhere
      const present = [...new Set(shardResults.flatMap((r) => r.present))].sort((a, b) => a - b);
      const applying = allOrFirstError(this.group.channels.map((w) => ask(w, { type: 'apply', lr, present })));
      const gradNorm = applyReduced(this.params, this.optimizer, this.layout, this.slots[0], present, this.maxGradNorm, lr);
      (await applying).forEach((reply, i) => {
        if (!Object.is(reply.gradNorm, gradNorm)) {
          throw new Error(`workers: replica ${i + 1} computed gradient norm ${reply.gradNorm} but the parent ${gradNorm}; the replicas diverged`);
        }
      });
      if (!Number.isFinite(gradNorm)) throw new Error(`train: gradient norm is ${gradNorm}; the loss diverged (lower the learning rate)`);

      return { ...combineRecords(shardResults.flatMap((r) => r.records), totals), gradNorm, units: totals };
    });
  }

  /** Every worker's weights and optimizer state (replicas 1…N−1), to check they equal the parent's. */
  readReplicaStates(): Promise<ReplicaState[]> {
    return this.guarded(async () => {
      if (this.needsSync) await this.syncReplicas();
      const replies = await allOrFirstError(this.group.channels.map((w) => ask(w, { type: 'read-state' })));
      return replies.map((reply, i) => ({
        replica: i + 1,
        weights: new Map(reply.weights),
        optimizerStep: reply.optimizerStep,
        optimizerStates: new Map(reply.optimizerStates),
      }));
    });
  }

  /** Terminates the workers and frees the optimizer's moments (the model belongs to the caller). */
  async close(): Promise<void> {
    if (this.group.isClosed) return;
    await this.group.close();
    this.optimizer.dispose();
  }
}
