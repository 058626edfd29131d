/**
 * Quantizing a whole model in place, and what a quantized model holds: each selected projection's
 * float Variable is replaced by 8-bit codes + scales kept outside tfjs (see `quantized-linear.ts`)
 * and a projection override that dequantizes them per call. The model's other parameters
 * (embeddings, norms, attention, first/last layers under the Llama 3 rule) stay float32.
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaConfig } from '../config.js';
import { LlamaModel, parameterSpecs } from '../llama.js';
import { CheckpointError, type NamedTensor } from '../safetensors.js';
import { initValues, makeVariable, transpose2d } from '../weights.js';
import { Rng } from '../../util/rng.js';
import { QuantizationOptionsSchema, selectQuantizedWeights, type QuantizationOptions, type QuantizationOptionsInput } from './options.js';
import { activationQuantizedLinear, dequantizeWeight, quantizedLinear, quantizeWeight, residentBytes, type ActivationQuantization, type QuantizedWeight } from './quantized-linear.js';

/** The quantized part of a model: its settings and its 8-bit weights by HF name. */
export interface ModelQuantization {
  options: QuantizationOptions;
  weights: Map<string, QuantizedWeight>;
}

const quantizations = new WeakMap<LlamaModel, ModelQuantization>();

/** The quantization of `model`, or undefined for a float model. */
export function quantizationOf(model: LlamaModel): ModelQuantization | undefined {
  return quantizations.get(model);
}

/** How the options quantize a projection's input (undefined: not at all). */
export function activationQuantization(options: QuantizationOptions): ActivationQuantization | undefined {
  if (options.activations === 'none') return undefined;
  if (options.scheme === 'int8-absmax') return { kind: 'int8' };
  return { kind: 'fp8', upperBound: options.activationScaleUpperBound ?? undefined };
}

/** Records `weights` as the model's quantized projections and routes them through their overrides. */
export function attachQuantization(model: LlamaModel, quantization: ModelQuantization): void {
  for (const [name, w] of quantization.weights) model.linearOverrides.set(name, quantizedLinear(w));
  quantizations.set(model, quantization);
}

/** Parses options and lists the selected weights; throws when nothing is selected. */
function selection(config: LlamaConfig, input: QuantizationOptionsInput): { options: QuantizationOptions; names: string[] } {
  const options = QuantizationOptionsSchema.parse(input);
  const names = selectQuantizedWeights(config, options);
  if (names.length === 0) {
    throw new Error(
      `quantize: no projection selected (${config.num_hidden_layers} layers, first and last kept in full precision); quantize every layer or choose more projections`,
    );
  }
  return { options, names };
}

/** One HF-layout weight [out, in] quantized under `options`. */
function quantizeHf(hf: Float32Array, numOut: number, numIn: number, options: QuantizationOptions): QuantizedWeight {
  return quantizeWeight(hf, numOut, numIn, options.scheme, { grouping: options.weightGrouping, activations: activationQuantization(options) });
}

/**
 * Quantizes `model` in place: every projection the options select (Llama 3 rule by default) is
 * quantized from its float weight, whose Variable is then disposed. Throws when the selection is
 * empty (e.g. a 2-layer model under the first/last-layer rule) rather than doing nothing silently.
 */
export function quantizeModel(model: LlamaModel, input: QuantizationOptionsInput): ModelQuantization {
  if (quantizationOf(model)) throw new Error('quantize: the model is already quantized');
  const { options, names } = selection(model.config, input);
  const weights = new Map<string, QuantizedWeight>();
  for (const name of names) {
    const variable = model.params.get(name);
    if (!variable) throw new Error(`quantize: ${name} has no float weight`);
    const [numIn, numOut] = variable.shape as [number, number];
    weights.set(name, quantizeHf(transpose2d(variable.dataSync() as Float32Array, numIn, numOut), numOut, numIn, options)); // from [out, in]
    variable.dispose();
    model.params.delete(name);
  }
  const quantization = { options, weights };
  attachQuantization(model, quantization);
  return quantization;
}

/**
 * Quantizes checkpoint tensors (HF names and layout) without building a float model: the selected
 * weights are quantized in plain memory and removed from `tensors`, so tfjs never holds them in
 * float32 (a 1 B model's 4.9 GB would not fit the 4 GB wasm heap).
 */
export function quantizeHfTensors(config: LlamaConfig, tensors: Map<string, NamedTensor>, input: QuantizationOptionsInput, source: string): ModelQuantization {
  const { options, names } = selection(config, input);
  const weights = new Map<string, QuantizedWeight>();
  for (const name of names) {
    const t = tensors.get(name);
    if (!t) throw new CheckpointError(`checkpoint: ${source}: tensor ${name}: missing`);
    const [numOut, numIn] = t.shape as [number, number];
    weights.set(name, quantizeHf(t.data, numOut, numIn, options));
    tensors.delete(name);
  }
  return { options, weights };
}

/** A model of float Variables `params` plus the quantized projections (which must be absent from `params`). */
export function assembleQuantizedModel(config: LlamaConfig, params: Map<string, tf.Variable>, quantization: ModelQuantization): LlamaModel {
  const model = new LlamaModel(config, params, new Map([...quantization.weights].map(([name, w]) => [name, quantizedLinear(w)] as const)));
  attachQuantization(model, quantization);
  return model;
}

/**
 * A random-initialised quantized model, identical to `quantizeModel(initModel(config, seed), …)`
 * but built one parameter at a time, so the float32 copy of a selected weight exists only while
 * it is being quantized (how a 1 B shape is made on wasm).
 */
export function initQuantizedModel(config: LlamaConfig, seed: number, input: QuantizationOptionsInput): LlamaModel {
  const { options, names } = selection(config, input);
  const selected = new Set(names);
  const rng = new Rng(seed);
  const std = typeof config.initializer_range === 'number' ? config.initializer_range : 0.02;
  const params = new Map<string, tf.Variable>();
  const weights = new Map<string, QuantizedWeight>();
  for (const spec of parameterSpecs(config)) {
    const values = initValues(spec, rng, std); // same stream as initParameters: same model
    if (selected.has(spec.name)) {
      const [numIn, numOut] = spec.shape as [number, number];
      weights.set(spec.name, quantizeHf(transpose2d(values, numIn, numOut), numOut, numIn, options));
    } else {
      params.set(spec.name, makeVariable(values, spec));
    }
  }
  return assembleQuantizedModel(config, params, { options, weights });
}

/**
 * A float model whose weights are exactly the dequantized ones (quantized projections become
 * ordinary Variables holding code × scale). With `activations: 'none'` it computes the same
 * numbers as the quantized model; with activation quantization and `keepActivationQuantization`,
 * its float projections quantize their inputs per token the same way, and again it computes the
 * same numbers. The original is untouched.
 */
export function dequantizedTwin(model: LlamaModel, opts: { keepActivationQuantization?: boolean } = {}): LlamaModel {
  const quantization = quantizationOf(model);
  const params = new Map<string, tf.Variable>();
  for (const spec of parameterSpecs(model.config)) {
    const existing = model.params.get(spec.name);
    const w = quantization?.weights.get(spec.name);
    const values = w ? dequantizeWeight(w) : (existing!.dataSync() as Float32Array);
    params.set(spec.name, makeVariable(values, spec));
  }
  const twin = new LlamaModel(model.config, params);
  if (quantization && opts.keepActivationQuantization) {
    for (const [name, w] of quantization.weights) if (w.activations) twin.linearOverrides.set(name, activationQuantizedLinear(w.activations));
  }
  return twin;
}

/** Resident bytes of a model's weights: float32 Variables and 8-bit codes + scales. */
export interface WeightBytes {
  /** All float32 parameters (4 bytes per value). */
  floatBytes: number;
  /** Codes + scales of the quantized projections. */
  quantizedBytes: number;
  /** What the quantized projections would take in float32. */
  quantizedAsFloatBytes: number;
  /** floatBytes + quantizedBytes. */
  totalBytes: number;
}

export function weightBytes(model: LlamaModel): WeightBytes {
  let floatBytes = 0;
  for (const p of model.params.values()) floatBytes += p.size * 4;
  let quantizedBytes = 0;
  let quantizedAsFloatBytes = 0;
  for (const w of quantizationOf(model)?.weights.values() ?? []) {
    quantizedBytes += residentBytes(w);
    quantizedAsFloatBytes += w.codes.length * 4;
  }
  return { floatBytes, quantizedBytes, quantizedAsFloatBytes, totalBytes: floatBytes + quantizedBytes };
}
