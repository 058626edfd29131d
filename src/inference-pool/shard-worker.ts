/**
 * A `ShardPool` worker thread: initialises its backend, then runs shard requests
 * (`shard-jobs.ts`) one after another. It loads the model folder a request names and keeps it
 * until a request names another folder (one model in memory at a time: `tfalign sample` samples
 * with the policy, then scores with the reward model). Sampling progress is posted while the
 * shard runs.
 *
 * Requests are answered by `serveRequests` (`request-loop.ts`): a request that throws answers
 * `{ok: false, message, stack}`; the pool rejects the job with that message and stops.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { LlamaModel } from '../model/llama.js';
import { loadPretrained } from '../model/pretrained.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { serveRequests, type ChannelMessage } from '../threads/request-loop.js';
import { runShardJob, type ShardRequest, type ShardWorkerInit } from './shard-jobs.js';

if (!parentPort) throw new Error('shard-worker: src/inference-pool/shard-worker.ts must run in a worker thread (started by ShardPool)');
const port = parentPort;
const init = workerData as ShardWorkerInit;

/** The loaded model and tokenizer, by folder. */
let loaded: { dir: string; model: LlamaModel } | undefined;
let tokenizer: { dir: string; tokenizer: Tokenizer } | undefined;

async function modelOf(dir: string): Promise<LlamaModel> {
  if (loaded?.dir !== dir) {
    loaded?.model.dispose();
    loaded = undefined;
    loaded = { dir, model: await loadPretrained(dir) };
  }
  return loaded.model;
}

async function tokenizerOf(dir: string): Promise<Tokenizer> {
  if (tokenizer?.dir !== dir) tokenizer = { dir, tokenizer: await Tokenizer.fromFolder(dir) };
  return tokenizer.tokenizer;
}

async function handle(request: ShardRequest & { id: number }): Promise<unknown> {
  const model = await modelOf(request.modelDir);
  const needsTokenizer = request.kind === 'sample' || request.kind === 'score';
  return runShardJob(request, {
    model,
    tokenizer: needsTokenizer ? await tokenizerOf(request.tokenizerDir ?? request.modelDir) : undefined,
    onProgress: (numDone, numTokens) => port.postMessage({ type: 'progress', id: request.id, numDone, numTokens } satisfies ChannelMessage),
  });
}

await serveRequests<ShardRequest>(port, init.backend, handle);
