/**
 * The worker threads of one owner (`ShardPool`, `WorkerStepEngine`) and their shared fate: the
 * first failure of any of them (a failed reply, a crash, an exit, or the owner's own error passed
 * to `fail`) stops the group — every owed reply rejects with that error, every thread is
 * terminated, and `failure` keeps it so the owner reports it for every later call.
 * `close()` terminates the threads without a failure.
 */
import { Worker } from 'node:worker_threads';
import { allOrFirstError, WorkerChannel } from './worker-channel.js';
import { resolveWorkerEntry } from './worker-entry.js';

export interface WorkerGroupOptions {
  /** How errors name thread k (0-based), e.g. `shard worker ${k}`. */
  labelOf: (k: number) => string;
  /** Whether a failed request's error carries the thread's label (see `WorkerChannelOptions`). */
  labelReplyErrors: boolean;
}

export class WorkerGroup<Request extends object> {
  private firstFailure: Error | undefined;
  /** Settles once every thread has exited after a failure. */
  private stopped: Promise<void> | undefined;
  private closed = false;
  /** One channel per thread, in start order. */
  readonly channels: WorkerChannel<Request>[];

  private constructor(module: URL, workerData: readonly unknown[], options: WorkerGroupOptions) {
    const onFailure = (error: Error) => void this.fail(error);
    const entry = resolveWorkerEntry(module);
    this.channels = workerData.map(
      (data, k) =>
        new WorkerChannel<Request>(new Worker(entry.file, { workerData: data, argv: entry.argv }), { label: options.labelOf(k), labelReplyErrors: options.labelReplyErrors }, onFailure),
    );
  }

  /**
   * Starts one thread of `module` (the worker's compiled `.js` URL, `new URL('./x-worker.js',
   * import.meta.url)`; from the sources its `.ts`, see worker-entry.ts) per `workerData` entry and
   * waits until each is ready; a failing start stops the group and rejects with that thread's error.
   */
  static async start<Request extends object>(module: URL, workerData: readonly unknown[], options: WorkerGroupOptions): Promise<WorkerGroup<Request>> {
    const group = new WorkerGroup<Request>(module, workerData, options);
    try {
      await allOrFirstError(group.channels.map((c) => c.ready));
    } catch (err) {
      await group.fail(err as Error);
      throw err;
    }
    return group;
  }

  /** The error that stopped the group, if one did. */
  get failure(): Error | undefined {
    return this.firstFailure;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Threads still running (0 after `close()` or a failure). */
  get numLiveWorkers(): number {
    return this.channels.filter((c) => c.isLive).length;
  }

  /** Stops every thread after a failure; the first error is kept. Settles when all have exited. */
  fail(error: Error): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (!this.stopped) {
      this.firstFailure = error;
      for (const c of this.channels) c.rejectAll(error);
      this.stopped = Promise.all(this.channels.map((c) => c.terminate())).then(() => undefined);
    }
    return this.stopped;
  }

  /** Runs `body`; any error stops the group, and the group's first error is what rejects. */
  async guarded<T>(body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (err) {
      await this.fail(err as Error);
      throw this.firstFailure ?? err;
    }
  }

  /** Terminates every thread. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.channels.map((c) => c.terminate()));
  }
}
