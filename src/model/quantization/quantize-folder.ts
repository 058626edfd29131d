/**
 * `tfalign quantize`: a float model folder in, a quantized folder out (FBGEMM FP8 or
 * compressed-tensors INT8 layout, see `hf-format.ts`), with its tokenizer files. The float
 * weights being quantized never enter tfjs: they are quantized from the checkpoint's arrays.
 */
import { claimOutputFolder } from '../../util/atomic.js';
import { loadTensorsFromFolder } from '../checkpoint-io.js';
import type { LlamaModel } from '../llama.js';
import { loadConfig, savePretrained } from '../pretrained.js';
import { CheckpointError } from '../safetensors.js';
import { fromHfTensors } from '../weights.js';
import type { QuantizationOptionsInput } from './options.js';
import { assembleQuantizedModel, quantizeHfTensors, weightBytes, type WeightBytes } from './quantize-model.js';

export interface QuantizeFolderOptions {
  /** Float model folder (config.json + safetensors). */
  model: string;
  out: string;
  options: QuantizationOptionsInput;
  /** Write into a non-empty `out` that is not a previous output of `tfalign quantize`. */
  overwrite?: boolean;
}

export interface QuantizeFolderResult {
  /** Names of the quantized weights. */
  quantized: string[];
  /** Resident weight bytes of the quantized model. */
  bytes: WeightBytes;
}

export async function quantizeFolder(o: QuantizeFolderOptions): Promise<QuantizeFolderResult> {
  const output = { command: 'quantize', overwrite: o.overwrite, flag: '--out' };
  const config = loadConfig(o.model);
  if (config.quantization_config !== undefined && config.quantization_config !== null) {
    throw new CheckpointError(`quantize: ${o.model}: is already quantized (config.json has a quantization_config); quantize the full-precision model`);
  }
  // Refuse a folder this command may not write before reading gigabytes of weights.
  claimOutputFolder(o.out, output);
  const { tensors, byteTensors } = await loadTensorsFromFolder(o.model);
  if (byteTensors.size > 0) throw new CheckpointError(`quantize: ${o.model}: holds 8-bit tensors but no quantization_config`);
  const quantization = quantizeHfTensors(config, tensors, o.options, o.model);
  let model: LlamaModel | undefined;
  try {
    model = assembleQuantizedModel(config, fromHfTensors(config, tensors, o.model, new Set(quantization.weights.keys())), quantization);
    await savePretrained(model, o.out, { tokenizerDir: o.model, ...output });
    return { quantized: [...quantization.weights.keys()], bytes: weightBytes(model) };
  } finally {
    model?.dispose();
  }
}
