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
import type { LoraOptions } from '../model/lora.js';
import { numLoraParameters } from '../model/lora.js';
import { headChunkRows, type HeadChunking } from '../model/lm-head.js';

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
  /** LoRA: only adapters (and a score head) hold gradients and AdamW state. */
  lora?: Pick<LoraOptions, 'r' | 'targetModules'>;
  /** Decoder layers recomputed in backward: one layer's activations plus each layer's input. */
  gradientCheckpointing?: boolean;
  /** Positions whose LM-head logits exist at once (a number, `auto`; 0 or absent: all). */
  headChunkTokens?: HeadChunking;
}

/** The estimated bytes of one training step per replica, by part. */
export interface TrainingMemory {
  /** Model weights (and frozen copies). */
  weights: number;
  /** Gradients and AdamW moments of the trainable parameters (all of them, or the adapters). */
  trainableState: number;
  /** Activations kept for backward, plus the LM head's logits. */
  activations: number;
  /** Trainable parameters. */
  numTrainable: number;
  numParameters: number;
}

/**
 * The memory one training step needs per replica (see `checkTrainingFits`): 4 bytes per value;
 * weights P (+ frozen copies); gradients + AdamW m, v of the trainable parameters (3 × 4 bytes
 * each, adapters' own weights included with LoRA); activations per token per layer
 * 10·C + 4·I + H·T (norms, projections, attention scores), all layers' — or with checkpointing
 * each layer's input C plus one layer's — and the head's logits: 2·V per position, or 3·V per
 * position of one chunk (logits, softmax, gradient) when the head is chunked. 8-bit weights
 * (`quantizedParameters`) count only as the float copies dequantized at once.
 */
export function estimateTrainingMemory(shape: TrainingShape, dims: ModelDims, opts: Pick<TrainingFitOptions, 'length' | 'sequencesPerRow' | 'frozenModels' | 'quantizedParameters'>, numReplicas: number): TrainingMemory {
  const rowsPerPass = shape.microBatchSize ?? shape.batchSize;
  const rowsPerReplica = Math.ceil(rowsPerPass / numReplicas) * opts.sequencesPerRow;
  const t = opts.length;
  const tokens = rowsPerReplica * t;
  const params = numParameters(dims);
  const adapters = shape.lora ? numLoraParameters(dims, shape.lora) : 0;
  const numTrainable = shape.lora ? adapters + (dims.rewardHead === 'score' ? dims.hiddenSize : 0) : params;
  const quantized = opts.quantizedParameters ?? 0;
  // 8-bit weights: none in the heap but the dequantized float copies in use (one layer's, twice: its products and the tape's)
  const dequantized = quantized > 0 ? 2 * (shape.gradientCheckpointing ? quantized / dims.numLayers : quantized) : 0;
  const weights = 4 * ((params - quantized) * (1 + (opts.frozenModels ?? 0)) + dequantized + adapters);
  const trainableState = 4 * 3 * numTrainable;
  const perLayerPerToken = 10 * dims.hiddenSize + 4 * dims.intermediateSize + dims.numHeads * t;
  const layers = shape.gradientCheckpointing ? dims.numLayers * dims.hiddenSize + perLayerPerToken : dims.numLayers * perLayerPerToken;
  const chunk = headChunkRows(tokens, dims.vocabSize, dims.hiddenSize, shape.headChunkTokens ?? 0);
  const head = dims.rewardHead === 'score' ? 2 * tokens : chunk < tokens ? 3 * dims.vocabSize * chunk + dims.hiddenSize * tokens : 2 * dims.vocabSize * tokens;
  return { weights, trainableState, activations: 4 * (tokens * layers + head), numTrainable, numParameters: params };
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
  /**
   * Parameters stored in 8 bits (a quantized checkpoint: QLoRA). Their codes live outside the
   * tensor heap; each is dequantized to float32 for its own product, one layer's at a time under
   * gradient checkpointing. Default 0.
   */
  quantizedParameters?: number;
}

/**
 * Checks that one training step of `shape` on a model of `dims` fits the machine (see the file
 * comment); throws one line naming the field to change. Call it before reading data or weights.
 */
export function checkTrainingFits(shape: TrainingShape, dims: ModelDims, opts: TrainingFitOptions, source: string): void {
  checkWorkers(shape.workers, shape.forceWorkers === true, source);
  const numReplicas = shape.workers ?? (opts.backend === 'tensorflow' ? 1 : numCores());
  const rowsPerPass = shape.microBatchSize ?? shape.batchSize;
  const t = opts.length;
  const m = estimateTrainingMemory(shape, dims, opts, numReplicas);
  const stateBytes = m.weights + m.trainableState;
  const perReplica = stateBytes + m.activations;
  const machine = os.totalmem();
  const wasm = opts.backend === 'wasm';
  const budgetPerReplica = wasm ? Math.min(WASM_HEAP_BYTES, machine / numReplicas) : machine / numReplicas;
  if (perReplica <= budgetPerReplica) return;
  const holds = wasm
    ? `the wasm backend holds ${formatBytes(WASM_HEAP_BYTES)} per replica (${numReplicas} replica${numReplicas === 1 ? '' : 's'}, ${formatBytes(machine)} of memory)`
    : `this machine has ${formatBytes(machine)} for ${numReplicas} replica${numReplicas === 1 ? '' : 's'}`;
  const what = shape.lora ? 'weights, adapter gradients and AdamW state' : 'weights, gradients and AdamW state';
  const needs = `needs about ${formatBytes(perReplica)} per replica (${formatBytes(stateBytes)} of ${what}, ${formatBytes(m.activations)} of activations)`;
  if (stateBytes > budgetPerReplica) {
    const fixes = [
      ...(shape.lora ? [] : [`set lora (weights + adapter state: ${formatBytes(m.weights + 16 * numLoraParameters(dims, { r: 16, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] }))} at r 16)`]),
      ...(numReplicas > 1 ? ['fewer workers'] : []),
      'a smaller model',
      ...(wasm ? ['the tensorflow backend'] : []),
    ];
    throw new Error(`${source}: model: ${m.numParameters.toLocaleString('en-US')} parameters ${needs}; ${holds}; ${fixes.join(', or ')}`);
  }
  const field = shape.microBatchSize !== undefined ? 'microBatchSize' : 'batchSize';
  const fixes = [
    `lower ${field}${field === 'batchSize' ? ' (or set microBatchSize to accumulate gradients over smaller passes)' : ''}`,
    ...(shape.gradientCheckpointing ? [] : ['set gradientCheckpointing: true']),
    ...((shape.headChunkTokens ?? 0) !== 0 || dims.rewardHead === 'score' ? [] : ["set headChunkTokens: auto"]),
    `lower ${opts.lengthField}`,
  ];
  throw new Error(
    `${source}: ${field}: one pass of ${rowsPerPass.toLocaleString('en-US')} rows × ${opts.lengthField} ${t.toLocaleString('en-US')} tokens ${needs}; ${holds}; ${fixes.join(', or ')}`,
  );
}
