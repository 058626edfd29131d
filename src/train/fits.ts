/**
 * Does one training step fit this machine? The machine bound of `src/config/limits.ts` (see its
 * comment, point 2) for a model of known dimensions: `workers` against the cores, and the peak
 * memory of one step — weights, gradients and AdamW moments per replica, plus the activations of
 * one micro-batch — against what the backend can hold. Trainers call it right after reading the
 * model's config.json, before any data, weights or output is touched.
 */
import * as os from 'node:os';
import type { ModelDims } from '../model/config.js';
import { checkWorkers, formatBytes, numCores, WASM_HEAP_BYTES } from '../config/limits.js';

/** Parameters of a model from its dimensions (embeddings counted once when tied). */
function numParameters(d: ModelDims): number {
  const attention = d.hiddenSize * d.numHeads * d.headDim * 2 + d.hiddenSize * d.numKvHeads * d.headDim * 2;
  const perLayer = attention + 3 * d.hiddenSize * d.intermediateSize + 2 * d.hiddenSize;
  const head = d.rewardHead === 'score' ? d.hiddenSize : d.tied ? 0 : d.vocabSize * d.hiddenSize;
  return d.vocabSize * d.hiddenSize + d.numLayers * perLayer + d.hiddenSize + head;
}

export interface TrainingShape {
  /** Rows per optimizer step, and per forward pass when set (gradient accumulation). */
  batchSize: number;
  microBatchSize?: number;
  /** Data-parallel replicas (undefined: one per core on wasm/cpu, 1 on tensorflow). */
  workers?: number;
  forceWorkers?: boolean;
}

export interface TrainingFitOptions {
  /** The backend that runs (`wasm`, `cpu`, `tensorflow`). */
  backend: string;
  /** Tokens of the longest sequence, and the field that sets it (`maxLength`, `seqLen`). */
  length: number;
  lengthField: string;
  /** Sequences per row: 1 for SFT and pretraining, 2 for DPO pairs, up to 3 for reward-model rows. */
  sequencesPerRow: number;
  /** Models held per replica besides the trained one (DPO's resident reference: 1). Default 0. */
  frozenModels?: number;
}

/**
 * Checks that one training step of `shape` on a model of `dims` fits the machine (see the file
 * comment); throws one line naming the field to change. Call it before reading data or weights.
 */
export function checkTrainingFits(shape: TrainingShape, dims: ModelDims, opts: TrainingFitOptions, source: string): void {
  checkWorkers(shape.workers, shape.forceWorkers === true, source);
  const numReplicas = shape.workers ?? (opts.backend === 'tensorflow' ? 1 : numCores());
  const rowsPerPass = shape.microBatchSize ?? shape.batchSize;
  const rowsPerReplica = Math.ceil(rowsPerPass / numReplicas) * opts.sequencesPerRow;
  const t = opts.length;
  const params = numParameters(dims);
  const stateBytes = 4 * params * (4 + (opts.frozenModels ?? 0)); // weights, gradients, AdamW m and v (+ frozen copies)
  const outputs = dims.rewardHead === 'score' ? 1 : dims.vocabSize;
  const perToken = 2 * outputs + dims.numLayers * (10 * dims.hiddenSize + 4 * dims.intermediateSize + dims.numHeads * t);
  const activationBytes = 4 * rowsPerReplica * t * perToken;
  const perReplica = stateBytes + activationBytes;
  const machine = os.totalmem();
  const wasm = opts.backend === 'wasm';
  const budgetPerReplica = wasm ? Math.min(WASM_HEAP_BYTES, machine / numReplicas) : machine / numReplicas;
  if (perReplica <= budgetPerReplica) return;
  const holds = wasm
    ? `the wasm backend holds ${formatBytes(WASM_HEAP_BYTES)} per replica (${numReplicas} replica${numReplicas === 1 ? '' : 's'}, ${formatBytes(machine)} of memory)`
    : `this machine has ${formatBytes(machine)} for ${numReplicas} replica${numReplicas === 1 ? '' : 's'}`;
  const needs = `needs about ${formatBytes(perReplica)} per replica (${formatBytes(stateBytes)} of weights, gradients and AdamW state, ${formatBytes(activationBytes)} of activations)`;
  if (stateBytes > budgetPerReplica) {
    throw new Error(`${source}: model: ${params.toLocaleString('en-US')} parameters ${needs}; ${holds}; use a smaller model${wasm ? ' or the tensorflow backend' : ''}`);
  }
  const field = shape.microBatchSize !== undefined ? 'microBatchSize' : 'batchSize';
  throw new Error(
    `${source}: ${field}: one pass of ${rowsPerPass.toLocaleString('en-US')} rows × ${opts.lengthField} ${t.toLocaleString('en-US')} tokens ${needs}; ${holds}; ` +
      `lower ${field} or ${opts.lengthField}${field === 'batchSize' ? ', or set microBatchSize to accumulate gradients over smaller passes' : ''}`,
  );
}
