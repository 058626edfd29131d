/**
 * A data-parallel worker thread: one model replica on its own backend, driven by
 * `WorkerStepEngine` through the requests of `protocol.ts`. Compiled, the thread runs this
 * module directly; from the sources, through `src/threads/ts-worker-bootstrap.js` (worker-entry.ts).
 *
 * Requests are answered by `serveRequests` (`request-loop.ts`): a request that throws answers
 * `{ok: false, message, stack}` and the parent stops the run with that error. Errors outside a
 * request (backend initialisation) surface as the Worker's 'error' event, which the parent
 * treats alike.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { LlamaModel } from '../model/llama.js';
import { isAdapterParameter, LoraAdapters, trainingParameters } from '../model/lora.js';
import { AdamW, type AdamWParamState } from '../train/adamw.js';
import type { LossFn } from '../train/step-engine.js';
import { gradientLayout, reduceSlotRange, slotViews } from './allreduce.js';
import { applyReduced, computeShard } from './replica.js';
import { serveRequests } from '../threads/request-loop.js';
import { buildTaskLoss } from '../tasks/index.js';
import type { WorkerInit, WorkerRequest, WorkerResults } from './protocol.js';

if (!parentPort) throw new Error('worker: src/parallel/worker.ts must run in a worker thread (started by WorkerStepEngine)');
const port = parentPort;
const init = workerData as WorkerInit;
const layout = gradientLayout(init.layout.names, init.layout.shapes);
const slots = slotViews(init.slots, init.numReplicas, layout.numElements);
const noDecayNames = new Set(init.optimizer.noDecayNames);
const optimizer = new AdamW({ ...init.optimizer, noDecay: (name) => noDecayNames.has(name) });

/** What a step trains of the replica model (`trainingParameters`: with LoRA, base and adapters) and its loss, built at the first `sync`. */
let params: Map<string, tf.Variable> | undefined;
let lossFn: LossFn<unknown> | undefined;
/** Optimizer step being computed (for the task's fault injection). */
let currentStep = 0;

function replicaParams(): Map<string, tf.Variable> {
  if (!params || !lossFn) throw new Error(`worker ${init.replica}: a step arrived before the weights (sync)`);
  return params;
}

async function sync(request: Extract<WorkerRequest, { type: 'sync' }>): Promise<null> {
  if (!params) {
    const baseParams = new Map<string, tf.Variable>();
    const adapterParams = new Map<string, tf.Variable>();
    for (const p of request.params) {
      (isAdapterParameter(p.name) ? adapterParams : baseParams).set(p.name, tf.tidy(() => tf.variable(tf.tensor(p.values, p.shape, 'float32'), p.trainable)));
    }
    const model = new LlamaModel(init.config, baseParams);
    model.gradientCheckpointing = init.model.gradientCheckpointing;
    model.headChunkTokens = init.model.headChunkTokens;
    if (init.model.lora) LoraAdapters.fromVariables(model, init.model.lora, adapterParams);
    params = trainingParameters(model);
    lossFn = await buildTaskLoss(init.task, model, { replica: init.replica, currentStep: () => currentStep });
  } else {
    for (const p of request.params) {
      const variable = replicaParams().get(p.name);
      if (!variable) throw new Error(`worker ${init.replica}: sync: parameter '${p.name}' is not in the replica model`);
      tf.tidy(() => variable.assign(tf.tensor(p.values, p.shape, 'float32')));
    }
  }
  optimizer.loadState(request.optimizerStep, new Map<string, AdamWParamState>(request.optimizerStates));
  return null;
}

async function handle(request: WorkerRequest): Promise<WorkerResults[WorkerRequest['type']]> {
  switch (request.type) {
    case 'sync':
      return sync(request);
    case 'compute': {
      const trained = replicaParams();
      currentStep = request.step;
      return computeShard(trained, lossFn!, request.microBatches, request.totals, layout, slots[init.replica]);
    }
    case 'reduce':
      reduceSlotRange(slots, request.start, request.end);
      return null;
    case 'apply':
      return { gradNorm: applyReduced(replicaParams(), optimizer, layout, slots[0], request.present, init.maxGradNorm, request.lr) };
    case 'read-state': {
      return {
        weights: [...replicaParams()].map(([name, v]) => [name, Float32Array.from(v.dataSync() as Float32Array)] as [string, Float32Array]),
        optimizerStep: optimizer.step,
        optimizerStates: optimizer.stateNames().map((name) => [name, optimizer.readState(name)!] as [string, AdamWParamState]),
      };
    }
  }
}

await serveRequests<WorkerRequest>(port, init.backend, handle);
