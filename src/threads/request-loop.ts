/**
 * The worker's side of a `WorkerChannel`: initialise the backend, say `ready`, then answer
 * requests one after another. Both worker entry files (`worker.ts`, `shard-worker.ts`) run it.
 *
 * Failures are replies, not crashes: a request that throws answers `{ok: false, message, stack}`
 * and the parent decides what stops. Errors outside a request (backend initialisation) surface
 * as the Worker's 'error' event.
 */
import type { MessagePort } from 'node:worker_threads';
import { initBackend } from '../backend.js';

/** Worker → parent. */
export type ChannelMessage =
  | { type: 'ready' }
  | { type: 'progress'; id: number; numDone: number; numTokens: number }
  | { type: 'reply'; id: number; ok: true; result: unknown }
  | { type: 'reply'; id: number; ok: false; message: string; stack?: string };

/**
 * Initialises `backend`, then handles every request arriving on `port` with `handle`, strictly
 * in order (the next starts when the previous has replied, even if one awaits), and posts
 * `ready` once requests can be taken.
 */
export async function serveRequests<Request extends object>(
  port: MessagePort,
  backend: 'tensorflow' | 'wasm' | 'cpu',
  handle: (request: Request & { id: number }) => Promise<unknown>,
): Promise<void> {
  await initBackend(backend, { quiet: true });
  let queue: Promise<void> = Promise.resolve();
  port.on('message', (request: Request & { id: number }) => {
    queue = queue.then(async () => {
      let reply: ChannelMessage;
      try {
        reply = { type: 'reply', id: request.id, ok: true, result: await handle(request) };
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        reply = { type: 'reply', id: request.id, ok: false, message: error.message, stack: error.stack };
      }
      port.postMessage(reply);
    });
  });
  port.postMessage({ type: 'ready' } satisfies ChannelMessage);
}
