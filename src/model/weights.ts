/**
 * Parameters in and out of the model: random initialisation (HF's Llama init), conversion
 * between HF checkpoint tensors ([out, in] linear weights) and the model's variables
 * ([in, out]), and turning a causal LM into a reward model.
 */
import * as tf from '@tensorflow/tfjs';
import { type LlamaConfig, parseLlamaConfig } from './config.js';
import { isLinearWeight, LlamaModel, parameterSpecs, type ParamSpec } from './llama.js';
import { CheckpointError, type NamedTensor } from './safetensors.js';
import { Rng } from '../util/rng.js';

/** Transposes a row-major [rows, cols] matrix. */
export function transpose2d(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[base + c];
  }
  return out;
}

/** HF's shape for a parameter (linear weights [out, in]). */
export function hfShape(spec: ParamSpec): number[] {
  return spec.kind === 'linear' ? [spec.shape[1], spec.shape[0]] : spec.shape;
}

/**
 * HF's Llama initialisation: weights ~ N(0, initializer_range²) (0.02 unless the config says
 * otherwise), RMSNorm weights 1. Values come from a seeded generator in JS, so the same seed
 * gives the same model on every backend.
 */
export function initValues(spec: ParamSpec, rng: Rng, std: number): Float32Array {
  const size = spec.shape.reduce((a, b) => a * b, 1);
  const values = new Float32Array(size);
  if (spec.kind === 'norm') return values.fill(1);
  for (let i = 0; i < size; i++) values[i] = rng.normal() * std;
  return values;
}

/** A trainable variable holding `values` (unnamed: tfjs variable names are global, and several models coexist); the temporary tensor is disposed by the tidy, variables are not. */
export function makeVariable(values: Float32Array, spec: ParamSpec): tf.Variable {
  return tf.tidy(() => tf.variable(tf.tensor(values, spec.shape), true));
}

export function initParameters(config: LlamaConfig, seed: number): Map<string, tf.Variable> {
  const rng = new Rng(seed);
  const std = typeof config.initializer_range === 'number' ? config.initializer_range : 0.02;
  const params = new Map<string, tf.Variable>();
  for (const spec of parameterSpecs(config)) {
    params.set(spec.name, makeVariable(initValues(spec, rng, std), spec));
  }
  return params;
}

/** A random-initialised model. */
export function initModel(config: LlamaConfig, seed = 0): LlamaModel {
  return new LlamaModel(config, initParameters(config, seed));
}

/**
 * Builds variables from HF tensors. Errors name the source and tensor for a missing tensor or a
 * wrong shape; unexpected tensors (e.g. `rotary_emb.inv_freq` of old checkpoints) are ignored.
 * Names in `skip` are not built (8-bit weights a quantized checkpoint holds as bytes).
 */
export function fromHfTensors(config: LlamaConfig, tensors: Map<string, NamedTensor>, source: string, skip: ReadonlySet<string> = new Set()): Map<string, tf.Variable> {
  const params = new Map<string, tf.Variable>();
  try {
    for (const spec of parameterSpecs(config)) {
      if (skip.has(spec.name)) continue;
      const t = tensors.get(spec.name);
      if (!t) throw new CheckpointError(`checkpoint: ${source}: tensor ${spec.name}: missing`);
      const expected = hfShape(spec);
      if (t.shape.join(',') !== expected.join(',')) {
        throw new CheckpointError(`checkpoint: ${source}: tensor ${spec.name}: shape [${t.shape}], config implies [${expected}]`);
      }
      const data = spec.kind === 'linear' ? transpose2d(t.data, expected[0], expected[1]) : t.data;
      params.set(spec.name, makeVariable(data, spec));
    }
  } catch (err) {
    for (const p of params.values()) p.dispose();
    throw err;
  }
  return params;
}

/** The model's parameters as HF tensors ([out, in] linear weights), in parameter order. */
export function toHfTensors(model: LlamaModel): Map<string, NamedTensor> {
  const out = new Map<string, NamedTensor>();
  for (const spec of parameterSpecs(model.config)) {
    const param = model.params.get(spec.name);
    if (!param) throw new Error(`model: ${spec.name} has no float weight (a quantized model?); use savePretrained, or the full-precision model`);
    const values = param.dataSync() as Float32Array;
    const shape = hfShape(spec);
    out.set(spec.name, {
      shape,
      data: isLinearWeight(spec.name) ? transpose2d(values, spec.shape[0], spec.shape[1]) : Float32Array.from(values),
    });
  }
  return out;
}

/**
 * A reward model from a causal LM (or a copy of a reward model): the same backbone, HF's
 * `LlamaForSequenceClassification` config (`num_labels: 1`) and a new `score` head initialised
 * N(0, initializer_range²). The LM head is dropped.
 */
export function toRewardModel(causal: LlamaModel, seed = 0): LlamaModel {
  const config = parseLlamaConfig(
    { ...causal.config, architectures: ['LlamaForSequenceClassification'], num_labels: 1 },
    'reward model config',
  );
  const params = new Map<string, tf.Variable>();
  for (const spec of parameterSpecs(config)) {
    const existing = causal.params.get(spec.name);
    if (!existing && causal.linearOverrides.has(spec.name)) {
      for (const p of params.values()) p.dispose();
      throw new Error(`toRewardModel: ${spec.name} has no float weight (a quantized model?); start the reward model from the full-precision one`);
    }
    const values = existing ? (existing.dataSync() as Float32Array) : initValues(spec, new Rng(seed), 0.02);
    params.set(spec.name, makeVariable(values, spec));
  }
  return new LlamaModel(config, params);
}
