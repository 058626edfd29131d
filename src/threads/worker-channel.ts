/**
 * The parent's side of one worker thread that answers requests (`serveRequests` in
 * `request-loop.ts` is the other side). `WorkerGroup` holds one per thread for `ShardPool` and
 * `WorkerStepEngine`.
 *
 * Bookkeeping: each request gets an id; its reply (or progress) finds the request by that id.
 * The thread is `ref`ed while a reply is owed and `unref`ed when idle, so a caller that forgets
 * to close still lets the process end.
 *
 * Failure: a failed reply, a thread error, an unreadable message or the thread's exit each call
 * `onFailure` (the group stops every thread and calls `rejectAll`); after `rejectAll` every later
 * request rejects with that first error. Errors name the thread by its label (`shard worker 1`,
 * `worker 1`) and keep the worker's own stack below their first line.
 */
import type { Worker } from 'node:worker_threads';
import type { ChannelMessage } from './request-loop.js';

/** How a request reports progress: items done and tokens made so far. */
export type ProgressCallback = (numDone: number, numTokens: number) => void;

export interface WorkerChannelOptions {
  /** How errors name the thread, e.g. `shard worker 1` or `worker 1`. */
  label: string;
  /**
   * Whether a failed request's error carries the label. False keeps the worker's own message
   * (`ShardPool`: the error a one-thread run would have given for the same row).
   */
  labelReplyErrors: boolean;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  onProgress?: ProgressCallback;
}

/** `label: message`, with the worker's stack (if any) below that first line. */
function labelledError(label: string, message: string, stack?: string): Error {
  const error = new Error(`${label}: ${message}`);
  if (stack) error.stack = `Error: ${label}: ${message}\n${stack.split('\n').slice(1).join('\n')}`;
  return error;
}

/** The error of a failed reply that keeps the worker's message: its message, its stack. */
function replyError(message: string, stack?: string): Error {
  const error = new Error(message);
  if (stack) error.stack = stack;
  return error;
}

/** One worker thread and its request/reply bookkeeping. */
export class WorkerChannel<Request extends object> {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private exited = false;
  private failure: Error | undefined;
  private readonly label: string;
  /** Settles when the thread has initialised (rejects if it fails first). */
  readonly ready: Promise<void>;

  constructor(
    private readonly worker: Worker,
    options: WorkerChannelOptions,
    onFailure: (error: Error) => void,
  ) {
    const label = options.label;
    this.label = label;
    this.ready = new Promise<void>((resolve, reject) => {
      worker.on('message', (message: ChannelMessage) => {
        if (message.type === 'ready') {
          worker.unref();
          resolve();
          return;
        }
        const pending = this.pending.get(message.id);
        if (!pending) return;
        if (message.type === 'progress') {
          pending.onProgress?.(message.numDone, message.numTokens);
          return;
        }
        this.pending.delete(message.id);
        if (this.pending.size === 0) worker.unref();
        if (message.ok) pending.resolve(message.result);
        else {
          const error = options.labelReplyErrors ? labelledError(label, message.message, message.stack) : replyError(message.message, message.stack);
          pending.reject(error);
          onFailure(error);
        }
      });
      const fail = (error: Error) => {
        reject(error);
        onFailure(error);
      };
      worker.on('error', (err: Error) => fail(labelledError(label, err.message, err.stack)));
      worker.on('messageerror', (err: Error) => fail(labelledError(label, `message could not be read: ${err.message}`)));
      worker.on('exit', (code) => {
        this.exited = true;
        fail(labelledError(label, `exited with code ${code}`));
      });
    });
    // A failure before `ready` is awaited must not be reported as unhandled; the owner awaits it.
    this.ready.catch(() => undefined);
  }

  /** True while the thread runs. */
  get isLive(): boolean {
    return !this.exited;
  }

  /** Sends `request` and resolves with the worker's result; `onProgress` gets its progress messages. */
  request(request: Request, onProgress?: ProgressCallback): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.exited) return Promise.reject(labelledError(this.label, 'has exited'));
    const id = this.nextId++;
    const reply = new Promise<unknown>((resolve, reject) => this.pending.set(id, { resolve, reject, onProgress }));
    // Keep the process alive while a reply is owed; idle workers do not hold it open.
    this.worker.ref();
    this.worker.postMessage({ ...request, id });
    return reply;
  }

  /** Rejects every owed reply, and every later request, with `error`. */
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
 * `Promise.all` marked as handled: when the owner stops every worker, the other requests reject
 * too, and when the parent's own computation throws before it awaits the workers, their
 * rejections must not surface as unhandled.
 */
export function allOrFirstError<T>(promises: Promise<T>[]): Promise<T[]> {
  const all = Promise.all(promises);
  all.catch(() => undefined);
  return all;
}
