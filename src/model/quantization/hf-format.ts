/**
 * Quantized models as Hugging Face folders, following the conventions transformers and vLLM read:
 *
 * fp8-rowwise → FBGEMM FP8 (Meta's released Llama 3.1 FP8 checkpoints, transformers' `FbgemmFp8Config`):
 *   config.json `quantization_config: {quant_method: "fbgemm_fp8", activation_scale_ub: 1200,
 *   modules_to_not_convert: [every linear module left in full precision]}`; per quantized module
 *   `…weight` F8_E4M3 [out, in], `…weight_scale` F32 [out, 1], `…input_scale_ub` F32 [1].
 *
 * int8-absmax → compressed-tensors, format "int-quantized" (llm-compressor's W8A8 INT8 layout):
 *   `quantization_config: {quant_method: "compressed-tensors", format: "int-quantized",
 *   config_groups: {group_0: {targets: ["Linear"], weights: {num_bits: 8, type: "int",
 *   symmetric: true, strategy: "channel" | "tensor"}, input_activations: {…strategy: "token",
 *   dynamic: true} | null}}, ignore: [full-precision modules]}`; per module `…weight` I8 [out, in]
 *   and `…weight_scale` F32 [out, 1] (channel) or [1] (tensor).
 *
 * Scales are dequantization multipliers in both (x ≈ q · scale). Both configs also carry
 * `tfalign: {…QuantizationOptions}`, the exact settings, which other tools ignore. Which weights
 * are quantized is read from the tensors themselves (an 8-bit `…weight` with its `…weight_scale`),
 * so a checkpoint made elsewhere with another layer selection loads too.
 */
import type { LlamaConfig } from '../config.js';
import { isLinearWeight, LlamaModel, parameterSpecs } from '../llama.js';
import { CheckpointError, type ByteTensor, type NamedTensor } from '../safetensors.js';
import { fromHfTensors, hfShape, transpose2d } from '../weights.js';
import { QuantizationOptionsSchema, selectQuantizedWeights, type QuantizationOptions } from './options.js';
import { hfBytesOf, weightFromHf, type QuantizedWeight } from './quantized-linear.js';
import { activationQuantization, assembleQuantizedModel, quantizationOf, type ModelQuantization } from './quantize-model.js';

/** `model.layers.3.mlp.up_proj.weight` → `model.layers.3.mlp.up_proj`. */
function moduleOf(weightName: string): string {
  return weightName.replace(/\.weight$/, '');
}

/** Linear modules of the config left in full precision (HF module names, `lm_head` included). */
function fullPrecisionModules(config: LlamaConfig, quantized: ReadonlySet<string>): string[] {
  const names = parameterSpecs(config)
    .filter((s) => s.kind === 'linear' && !quantized.has(s.name))
    .map((s) => moduleOf(s.name));
  // A tied LM head has no tensor of its own but is still a Linear module transformers would convert.
  if (!names.includes('lm_head') && !names.includes('score')) names.push(config.architectures[0] === 'LlamaForSequenceClassification' ? 'score' : 'lm_head');
  return names;
}

/** The `quantization_config` object of config.json for a quantization of `config`. */
export function hfQuantizationConfig(config: LlamaConfig, quantization: ModelQuantization): Record<string, unknown> {
  const { options } = quantization;
  const keep = fullPrecisionModules(config, new Set(quantization.weights.keys()));
  if (options.scheme === 'fp8-rowwise') {
    return { quant_method: 'fbgemm_fp8', activation_scale_ub: options.activationScaleUpperBound, modules_to_not_convert: keep, tfalign: options };
  }
  const activations = options.activations === 'per-token' ? { num_bits: 8, type: 'int', symmetric: true, strategy: 'token', dynamic: true } : null;
  return {
    quant_method: 'compressed-tensors',
    format: 'int-quantized',
    quantization_status: 'compressed',
    config_groups: {
      group_0: {
        targets: ['Linear'],
        weights: { num_bits: 8, type: 'int', symmetric: true, strategy: options.weightGrouping === 'per-row' ? 'channel' : 'tensor', dynamic: false },
        input_activations: activations,
      },
    },
    ignore: keep,
    tfalign: options,
  };
}

/** What a quantized model writes: float tensors (incl. scales), 8-bit tensors, and the config. */
export interface QuantizedHfContents {
  tensors: Map<string, NamedTensor>;
  byteTensors: Map<string, ByteTensor>;
  config: Record<string, unknown>;
}

export function quantizedHfContents(model: LlamaModel): QuantizedHfContents {
  const quantization = quantizationOf(model);
  if (!quantization) throw new Error('quantized checkpoint: the model is not quantized');
  const tensors = new Map<string, NamedTensor>();
  const byteTensors = new Map<string, ByteTensor>();
  for (const spec of parameterSpecs(model.config)) {
    const w = quantization.weights.get(spec.name);
    if (w) {
      const module = moduleOf(spec.name);
      byteTensors.set(spec.name, { dtype: w.scheme === 'fp8-rowwise' ? 'F8_E4M3' : 'I8', shape: [w.numOut, w.numIn], bytes: hfBytesOf(w) });
      tensors.set(`${module}.weight_scale`, { shape: w.scales.length === 1 ? [1] : [w.numOut, 1], data: Float32Array.from(w.scales) });
      const ub = w.activations?.upperBound;
      if (w.scheme === 'fp8-rowwise' && ub !== undefined) tensors.set(`${module}.input_scale_ub`, { shape: [1], data: Float32Array.of(ub) });
      continue;
    }
    const values = model.params.get(spec.name)!.dataSync() as Float32Array;
    const data = isLinearWeight(spec.name) ? transpose2d(values, spec.shape[0]!, spec.shape[1]!) : Float32Array.from(values);
    tensors.set(spec.name, { shape: hfShape(spec), data });
  }
  const { quantization_config: _previous, ...rest } = model.config as Record<string, unknown>;
  return { tensors, byteTensors, config: { ...rest, quantization_config: hfQuantizationConfig(model.config, quantization) } };
}

function fail(source: string, message: string): never {
  throw new CheckpointError(`checkpoint: ${source}: ${message}`);
}

/** The options a checkpoint's `quantization_config` stands for (exact when tfalign wrote it). */
export function optionsFromHfConfig(raw: unknown, source: string): QuantizationOptions {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(source, 'quantization_config is not an object');
  const q = raw as Record<string, unknown>;
  if (q.tfalign !== undefined) {
    const parsed = QuantizationOptionsSchema.safeParse(q.tfalign);
    if (!parsed.success) fail(source, `quantization_config.tfalign: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    return parsed.data;
  }
  if (q.quant_method === 'fbgemm_fp8') {
    const ub = q.activation_scale_ub;
    if (ub !== undefined && ub !== null && !(typeof ub === 'number' && ub > 0)) fail(source, `quantization_config.activation_scale_ub is ${JSON.stringify(ub)}, not a positive number`);
    return QuantizationOptionsSchema.parse({ scheme: 'fp8-rowwise', ...(ub === undefined ? {} : { activationScaleUpperBound: ub }) });
  }
  if (q.quant_method === 'compressed-tensors') {
    const group = (q.config_groups as Record<string, Record<string, unknown>> | undefined)?.group_0;
    const weights = group?.weights as Record<string, unknown> | undefined;
    if (!weights || weights.num_bits !== 8 || weights.type !== 'int' || weights.symmetric !== true || !['channel', 'tensor'].includes(String(weights.strategy))) {
      fail(source, 'quantization_config: only compressed-tensors int-quantized with symmetric 8-bit channel or tensor weights is supported');
    }
    return QuantizationOptionsSchema.parse({
      scheme: 'int8-absmax',
      weightGrouping: weights.strategy === 'channel' ? 'per-row' : 'per-tensor',
      activations: group?.input_activations ? 'per-token' : 'none',
    });
  }
  fail(source, `quantization_config.quant_method ${JSON.stringify(q.quant_method)} is not supported (supported: fbgemm_fp8, compressed-tensors)`);
}

/**
 * Builds a quantized model from checkpoint tensors: each 8-bit `…weight` (with its `…weight_scale`)
 * becomes a quantized projection, everything else a float Variable. Errors name the source and tensor.
 */
export function quantizedModelFromHf(
  config: LlamaConfig,
  tensors: Map<string, NamedTensor>,
  byteTensors: Map<string, ByteTensor>,
  source: string,
): LlamaModel {
  const options = optionsFromHfConfig((config as Record<string, unknown>).quantization_config, source);
  const expectedDtype = options.scheme === 'fp8-rowwise' ? 'F8_E4M3' : 'I8';
  const specs = new Map(parameterSpecs(config).map((s) => [s.name, s] as const));
  const weights = new Map<string, QuantizedWeight>();
  const defaultActivations = activationQuantization(options);
  for (const [name, t] of byteTensors) {
    const spec = specs.get(name);
    if (!spec || spec.kind !== 'linear') fail(source, `tensor ${name}: ${t.dtype} tensor is not a linear weight of this model`);
    if (t.dtype !== expectedDtype) fail(source, `tensor ${name}: dtype ${t.dtype}, but quantization_config says ${options.scheme} (${expectedDtype})`);
    const [numOut, numIn] = hfShape(spec) as [number, number];
    if (t.shape.join(',') !== `${numOut},${numIn}`) fail(source, `tensor ${name}: shape [${t.shape}], config implies [${numOut},${numIn}]`);
    const scaleName = `${moduleOf(name)}.weight_scale`;
    const scale = tensors.get(scaleName);
    if (!scale) fail(source, `tensor ${scaleName}: missing (the scales of 8-bit ${name})`);
    const perTensor = options.scheme === 'int8-absmax' && options.weightGrouping === 'per-tensor';
    if (scale.data.length !== (perTensor ? 1 : numOut)) fail(source, `tensor ${scaleName}: ${scale.data.length} scales, expected ${perTensor ? 1 : numOut}`);
    let activations = defaultActivations;
    const ubTensor = tensors.get(`${moduleOf(name)}.input_scale_ub`);
    if (activations?.kind === 'fp8' && ubTensor) {
      const ub = ubTensor.data[0]!;
      if (!(ub > 0)) fail(source, `tensor ${moduleOf(name)}.input_scale_ub: ${ub} is not a positive number`);
      activations = { kind: 'fp8', upperBound: ub };
    }
    weights.set(name, weightFromHf(options.scheme, t.bytes, Float32Array.from(scale.data), numOut, numIn, activations));
  }
  if (weights.size === 0) fail(source, `quantization_config names ${options.scheme}, but no ${expectedDtype} weight is stored`);
  const params = fromHfTensors(config, tensors, source, new Set(weights.keys()));
  return assembleQuantizedModel(config, params, { options, weights });
}

/**
 * How many parameters a checkpoint stores in 8 bits, from its config.json alone (0 for a float
 * checkpoint): the memory pre-check counts them apart, before any weight is read.
 */
export function quantizedParameterCount(config: LlamaConfig, source: string): number {
  const raw = (config as Record<string, unknown>).quantization_config;
  if (raw === undefined || raw === null) return 0;
  return numQuantizedParameters(config, optionsFromHfConfig(raw, source));
}

/** How many parameters `options` put in 8 bits on a model of `config`. */
export function numQuantizedParameters(config: LlamaConfig, options: QuantizationOptions): number {
  const names = new Set(selectQuantizedWeights(config, options));
  return parameterSpecs(config)
    .filter((p) => names.has(p.name))
    .reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
}
