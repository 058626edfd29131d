/**
 * Data-parallel training on one machine (the seed's §4.1): N replicas of the model each compute
 * the gradients of their share of the global batch, the gradients are summed through a
 * `SharedArrayBuffer` and averaged, and every replica applies the same clipped AdamW update, so
 * the replicas stay bit-identical and the run matches one replica on the whole batch up to float
 * rounding.
 *
 * Threads: the parent thread is replica 0 and computes a share like the others, so N replicas
 * use N − 1 worker threads (one thread fewer to schedule on an N-core machine, and the parent's
 * model — the one the loop evaluates and saves — is updated by the same code as the workers').
 * While the parent computes, its event loop is blocked; worker replies wait in the queue.
 *
 * One step, three message rounds (messages say "go" and "done", never carry tensors):
 *   1) compute: shards (`shard.ts`) go out; each replica accumulates Σᵢ wᵢ gᵢ over its
 *      micro-batches into its slot and reports Σ wᵢ, losses and metrics;
 *   2) reduce:  each replica averages its range of elements over all slots into slot 0,
 *      dividing by the global Σ wᵢ (`allreduce.ts`);
 *   3) apply:   each replica clips and applies ḡ from slot 0; the pre-clip norms must agree
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
import { Worker } from 'node:worker_threads';
import type * as tf from '@tensorflow/tfjs';
import type { LlamaModel } from '../model/llama.js';
import type { AdamW, AdamWParamState } from '../train/adamw.js';
import { combineMetrics, type LossFn, type StepEngine, type StepResult } from '../train/step-engine.js';
import { createSlotBuffer, layoutOfParams, partitionRange, reduceSlotRange, slotViews, type GradientLayout } from './allreduce.js';
import { applyReduced, computeShard, type ShardResult } from './replica.js';
import { shardMicroBatches } from './shard.js';
import { buildTaskLoss, resolveTask, type TaskDescriptor } from './tasks.js';
import type { ParamValue, ReplicaState, WorkerInit, WorkerMessage, WorkerRequest, WorkerResults } from './protocol.js';

export interface WorkerStepEngineOptions<B> {
  /** Replicas computing gradients, the parent thread included (≥ 2; N − 1 worker threads are started). */
  numWorkers: number;
  /** The parent's backend; every worker initialises the same one. */
  backend: 'tensorflow' | 'wasm' | 'cpu';
  /** The parent's model (replica 0): its architecture is rebuilt in each worker, its weights copied. */
  model: LlamaModel;
  /** The loss every replica builds (see `tasks.ts`). */
  task: TaskDescriptor;
  /** The parent's loss; default: built from `task` like the workers'. It must compute the task's loss. */
  lossFn?: LossFn<B>;
  /** The parent's optimizer; workers get the same hyperparameters and, at sync, its state. */
  optimizer: AdamW;
  /** Clip the global gradient norm to this; 0 disables. */
  maxGradNorm: number;
}

/** Error of a worker, carrying the worker's own stack. */
function workerError(replica: number, message: string, stack?: string): Error {
  const error = new Error(`worker ${replica}: ${message}`);
  if (stack) error.stack = `Error: worker ${replica}: ${message}\n${stack.split('\n').slice(1).join('\n')}`;
  return error;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

/** One worker thread and its request/reply bookkeeping. */
class ReplicaWorker {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private exited = false;
  private failure: Error | undefined;
  readonly ready: Promise<void>;

  constructor(
    readonly replica: number,
    private readonly worker: Worker,
    onFailure: (error: Error) => void,
  ) {
    this.ready = new Promise<void>((resolve, reject) => {
      worker.on('message', (message: WorkerMessage) => {
        if (message.type === 'ready') {
          this.worker.unref();
          resolve();
          return;
        }
        const pending = this.pending.get(message.id);
        if (!pending) return;
        this.pending.delete(message.id);
        if (this.pending.size === 0) this.worker.unref();
        if (message.ok) pending.resolve(message.result);
        else {
          const error = workerError(replica, message.message, message.stack);
          pending.reject(error);
          onFailure(error);
        }
      });
      worker.on('error', (err: Error) => {
        const error = workerError(replica, err.message, err.stack);
        reject(error);
        onFailure(error);
      });
      worker.on('messageerror', (err: Error) => onFailure(workerError(replica, `message could not be read: ${err.message}`)));
      worker.on('exit', (code) => {
        this.exited = true;
        const error = workerError(replica, `exited with code ${code}`);
        reject(error);
        onFailure(error);
      });
    });
    // A failure before `ready` is awaited must not be reported as unhandled; `create` awaits it.
    this.ready.catch(() => undefined);
  }

  /** True while the thread runs. */
  get isLive(): boolean {
    return !this.exited;
  }

  request<T extends WorkerRequest>(request: T): Promise<WorkerResults[T['type']]> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.exited) return Promise.reject(workerError(this.replica, 'has exited'));
    const id = this.nextId++;
    const reply = new Promise<WorkerResults[T['type']]>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
    });
    // Keep the process alive while a reply is owed; idle workers do not hold it open.
    this.worker.ref();
    this.worker.postMessage({ ...request, id });
    return reply;
  }

  rejectAll(error: Error): void {
    this.failure ??= error;
    for (const pending of this.pending.values()) pending.reject(error);
    this.pending.clear();
  }

  async terminate(): Promise<void> {
    if (this.exited) return;
    await this.worker.terminate();
    this.exited = true;
  }
}

/**
 * `Promise.all` marked as handled: when the parent's own computation throws before it awaits the
 * workers, their rejections (the engine stopping them) must not surface as unhandled.
 */
function allOrFirstError<T>(promises: Promise<T>[]): Promise<T[]> {
  const all = Promise.all(promises);
  all.catch(() => undefined);
  return all;
}

export class WorkerStepEngine<B> implements StepEngine<B> {
  readonly optimizer: AdamW;
  /** Replicas, the parent included. */
  readonly numReplicas: number;
  private readonly params: Map<string, tf.Variable>;
  private readonly layout: GradientLayout;
  private readonly slots: Float32Array[];
  private readonly workers: ReplicaWorker[];
  private readonly lossFn: LossFn<B>;
  private readonly splitBatch?: (batch: B, numParts: number) => B[];
  private readonly maxGradNorm: number;
  private needsSync = true;
  private failure: Error | undefined;
  /** Settles once every worker has exited after a failure. */
  private stopped: Promise<void> | undefined;
  private closed = false;

  private constructor(parts: {
    options: WorkerStepEngineOptions<B>;
    layout: GradientLayout;
    slotBuffer: SharedArrayBuffer;
    workers: ReplicaWorker[];
    lossFn: LossFn<B>;
    splitBatch?: (batch: B, numParts: number) => B[];
  }) {
    const o = parts.options;
    this.optimizer = o.optimizer;
    this.numReplicas = o.numWorkers;
    this.params = o.model.params;
    this.layout = parts.layout;
    this.slots = slotViews(parts.slotBuffer, o.numWorkers, parts.layout.numElements);
    this.workers = parts.workers;
    this.lossFn = parts.lossFn;
    this.splitBatch = parts.splitBatch;
    this.maxGradNorm = o.maxGradNorm;
  }

  /** Starts N − 1 workers and waits until each has its backend (a failing start rejects). */
  static async create<B>(options: WorkerStepEngineOptions<B>): Promise<WorkerStepEngine<B>> {
    const n = options.numWorkers;
    if (!Number.isInteger(n) || n < 2) throw new Error(`workers: WorkerStepEngine needs numWorkers ≥ 2, got ${n} (use LocalStepEngine for 1)`);
    const task = await resolveTask<B>(options.task);
    const lossFn = options.lossFn ?? (await buildTaskLoss<B>(options.task, options.model, { replica: 0, currentStep: () => options.optimizer.step }));
    const layout = layoutOfParams(options.model.params);
    if (layout.names.length === 0) throw new Error('workers: the model has no trainable parameter');
    const slotBuffer = createSlotBuffer(n, layout.numElements);
    const opt = options.optimizer;
    const init: Omit<WorkerInit, 'replica'> = {
      numReplicas: n,
      backend: options.backend,
      config: options.model.config,
      task: options.task,
      optimizer: {
        lr: opt.lr, beta1: opt.beta1, beta2: opt.beta2, eps: opt.eps, weightDecay: opt.weightDecay,
        noDecayNames: [...options.model.params.keys()].filter((name) => opt.noDecay(name)),
      },
      maxGradNorm: options.maxGradNorm,
      layout: { names: layout.names, shapes: layout.shapes },
      slots: slotBuffer,
    };
    // Events arrive only after this function yields, by which time `engine` is set.
    let engine: WorkerStepEngine<B> | undefined;
    const onFailure = (error: Error) => void engine?.fail(error);
    const bootstrap = new URL('./worker-bootstrap.js', import.meta.url);
    const workers = Array.from({ length: n - 1 }, (_, i) => {
      const workerData: WorkerInit = { ...init, replica: i + 1 };
      return new ReplicaWorker(i + 1, new Worker(bootstrap, { workerData }), onFailure);
    });
    engine = new WorkerStepEngine<B>({ options, layout, slotBuffer, workers, lossFn, splitBatch: task.splitBatch?.bind(task) });
    try {
      await allOrFirstError(workers.map((w) => w.ready));
    } catch (err) {
      await engine.fail(err as Error);
      throw err;
    }
    return engine;
  }

  /** Number of worker threads still running (0 after `close()` or a failure). */
  get numLiveWorkers(): number {
    return this.workers.filter((w) => w.isLive).length;
  }

  /** Makes the next step copy the parent's weights and optimizer state to every worker again. */
  resync(): void {
    this.needsSync = true;
  }

  private assertUsable(): void {
    if (this.failure) throw this.failure;
    if (this.closed) throw new Error('workers: step() after close()');
  }

  /** Stops everything after a failure; the first error is kept and reported by every later call. */
  private fail(error: Error): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (!this.stopped) {
      this.failure = error;
      for (const w of this.workers) w.rejectAll(error);
      this.stopped = Promise.all(this.workers.map((w) => w.terminate())).then(() => undefined);
    }
    return this.stopped;
  }

  /** Runs `body`; any error stops the engine, and the engine's first error is what rejects. */
  private async guarded<T>(body: () => Promise<T>): Promise<T> {
    this.assertUsable();
    try {
      return await body();
    } catch (err) {
      await this.fail(err as Error);
      throw this.failure ?? err;
    }
  }

  private async syncReplicas(): Promise<void> {
    const params: ParamValue[] = [...this.params].map(([name, v]) => ({
      name, shape: [...v.shape], trainable: v.trainable, values: v.dataSync() as Float32Array,
    }));
    const optimizerStates = this.optimizer.stateNames().map((name) => [name, this.optimizer.readState(name)!] as [string, AdamWParamState]);
    await allOrFirstError(this.workers.map((w) => w.request({ type: 'sync', params, optimizerStep: this.optimizer.step, optimizerStates })));
    this.needsSync = false;
  }

  step(microBatches: B[], lr: number): Promise<StepResult> {
    return this.guarded(async () => {
      if (this.needsSync) await this.syncReplicas();
      const step = this.optimizer.step;
      const shards = shardMicroBatches(microBatches, this.numReplicas, this.splitBatch);

      // 1) compute: the workers in parallel with the parent's own share
      const computing = allOrFirstError(this.workers.map((w) => w.request({ type: 'compute', step, microBatches: shards[w.replica] })));
      const local = computeShard(this.params, this.lossFn, shards[0], this.layout, this.slots[0]);
      const shardResults: ShardResult[] = [local, ...(await computing)];
      const weight = shardResults.reduce((a, r) => a + r.weight, 0);
      if (weight === 0) throw new Error('train: a step had no loss units (every micro-batch was fully masked)');

      // 2) reduce: replica r averages its range of every slot into slot 0
      const range = (r: number) => partitionRange(this.layout.numElements, this.numReplicas, r);
      const reducing = allOrFirstError(this.workers.map((w) => w.request({ type: 'reduce', start: range(w.replica)[0], end: range(w.replica)[1], divisor: weight })));
      reduceSlotRange(this.slots, ...range(0), weight);
      await reducing;

      // 3) apply: the same clipped update everywhere
      const present = [...new Set(shardResults.flatMap((r) => r.present))].sort((a, b) => a - b);
      const applying = allOrFirstError(this.workers.map((w) => w.request({ type: 'apply', lr, present })));
      const gradNorm = applyReduced(this.params, this.optimizer, this.layout, this.slots[0], present, this.maxGradNorm, lr);
      (await applying).forEach((reply, i) => {
        if (!Object.is(reply.gradNorm, gradNorm)) {
          throw new Error(`workers: replica ${i + 1} computed gradient norm ${reply.gradNorm} but the parent ${gradNorm}; the replicas diverged`);
        }
      });
      if (!Number.isFinite(gradNorm)) throw new Error(`train: gradient norm is ${gradNorm}; the loss diverged (lower the learning rate)`);

      const records = shardResults.flatMap((r) => r.records);
      const loss = records.reduce((a, r) => a + r.loss * r.weight, 0) / weight;
      return { loss, metrics: combineMetrics(records), gradNorm, weight };
    });
  }

  /** Every worker's weights and optimizer state (replicas 1…N−1), to check they equal the parent's. */
  readReplicaStates(): Promise<ReplicaState[]> {
    return this.guarded(async () => {
      if (this.needsSync) await this.syncReplicas();
      const replies = await allOrFirstError(this.workers.map((w) => w.request({ type: 'read-state' })));
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
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.optimizer.dispose();
  }
}
