/**
 * The messages between `WorkerStepEngine` (parent thread) and its workers. Every message is
 * plain data (structured clone); gradients never travel in one — they go through the shared
 * slot buffer — and weights and optimizer moments travel only at `sync` (once per run, and after
 * a resume).
 *
 * The parent sends one request at a time to each worker and waits for its reply, so a worker
 * handles requests strictly in order: sync → (compute → reduce → apply)* → read-state.
 */
import type { LlamaConfig } from '../model/config.js';
import type { LoraOptions } from '../model/lora.js';
import type { HeadChunking } from '../model/lm-head.js';
import type { AdamWParamState } from '../train/adamw.js';
import type { TaskDescriptor } from '../train/task.js';
import type { ShardResult } from './replica.js';
import type { UnitCounts } from '../train/step-engine.js';

/** `workerData` of every worker. */
export interface WorkerInit {
  /** This worker's replica index (1…N−1; the parent is replica 0). */
  replica: number;
  numReplicas: number;
  /** The parent's backend, initialised the same way in the worker. */
  backend: 'tensorflow' | 'wasm' | 'cpu';
  /** Architecture of the replica model. */
  config: LlamaConfig;
  /** How the parent's model is set up for training: LoRA adapters (their variables arrive at sync), checkpointing, head chunks. */
  model: { lora?: LoraOptions; gradientCheckpointing: boolean; headChunkTokens: HeadChunking };
  task: TaskDescriptor;
  /** AdamW hyperparameters; `noDecay` as the names it exempts (a function cannot cross threads). */
  optimizer: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; noDecayNames: string[] };
  maxGradNorm: number;
  /** Trainable parameter names (sorted) and shapes: the slot layout. */
  layout: { names: string[]; shapes: number[][] };
  /** `numReplicas` slots of the layout's element count. */
  slots: SharedArrayBuffer;
}

/** A parameter's value as plain data. */
export interface ParamValue {
  name: string;
  shape: number[];
  trainable: boolean;
  values: Float32Array;
}

export type WorkerRequest =
  | { type: 'sync'; params: ParamValue[]; optimizerStep: number; optimizerStates: [string, AdamWParamState][] }
  | { type: 'compute'; step: number; microBatches: unknown[]; totals: UnitCounts }
  | { type: 'reduce'; start: number; end: number }
  | { type: 'apply'; lr: number; present: number[] }
  | { type: 'read-state' };

/** A replica's weights and optimizer state, for checking that replicas agree. */
export interface ReplicaState {
  replica: number;
  /** Parameter values by name. */
  weights: Map<string, Float32Array>;
  optimizerStep: number;
  /** AdamW state by parameter name. */
  optimizerStates: Map<string, AdamWParamState>;
}

/** The result of each request type. */
export interface WorkerResults {
  sync: null;
  compute: ShardResult;
  reduce: null;
  apply: { gradNorm: number };
  'read-state': { weights: [string, Float32Array][]; optimizerStep: number; optimizerStates: [string, AdamWParamState][] };
}
