/**
 * A model as a Hugging Face folder: `config.json`, `model.safetensors` (or shards + index),
 * tokenizer files and `generation_config.json`. `loadPretrained` reads any Llama-family folder
 * (F32/F16/BF16, tied or not, sharded or not; or quantized: FBGEMM FP8 / compressed-tensors INT8,
 * see quantization/hf-format.ts); `savePretrained` writes one that transformers loads unchanged,
 * under the output-folder policy of `src/util/atomic.ts` (a new folder appears complete or not at
 * all; an existing one is written into only when the command owns it).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseLlamaConfig, type LlamaConfig } from './config.js';
import { LlamaModel } from './llama.js';
import { fromHfTensors, toHfTensors, toRewardModel } from './weights.js';
import { CONFIG_NAME, copyTokenizerFiles, loadTensorsFromFolder, readJsonFile, saveFolder, type SaveFolderOptions } from './checkpoint-io.js';
import { CheckpointError } from './safetensors.js';
import { adapterBaseModel, adapterFolderFiles, isAdapterFolder, loadAdapter, readAdapterConfig } from './peft.js';
import { attachedAdapters, type LoraAdapters } from './lora.js';
import { writeOutputFolder } from '../util/atomic.js';
import { quantizedHfContents, quantizedModelFromHf } from './quantization/hf-format.js';
import { quantizationOf } from './quantization/quantize-model.js';

/**
 * Reads and validates `DIR/config.json`; errors name the file and every bad field. For a PEFT
 * adapter folder, the config of its base (a reward model's when the adapter is SEQ_CLS).
 */
export function loadConfig(dir: string): LlamaConfig {
  if (isAdapterFolder(dir)) {
    const { config } = readAdapterConfig(dir);
    const base = loadConfig(adapterBaseModel(dir, config));
    if (config.task_type !== 'SEQ_CLS' || base.architectures[0] === 'LlamaForSequenceClassification') return base;
    return parseLlamaConfig({ ...base, architectures: ['LlamaForSequenceClassification'], num_labels: 1 }, `${dir} (reward-model adapter)`);
  }
  const file = path.join(dir, CONFIG_NAME);
  if (!fs.existsSync(file)) throw new CheckpointError(`checkpoint: ${dir}: no ${CONFIG_NAME}`);
  return parseLlamaConfig(readJsonFile(file), file);
}

/**
 * Loads a model folder. The config decides causal LM vs reward model. A PEFT adapter folder
 * loads its base (`base_model_name_or_path`) with the adapter merged in: a plain model.
 */
export async function loadPretrained(dir: string): Promise<LlamaModel> {
  if (isAdapterFolder(dir)) {
    const model = await loadWithAdapter(adapterBaseModel(dir, readAdapterConfig(dir).config), dir);
    // an 8-bit base (QLoRA) keeps its adapters attached: its weights cannot take them in
    if (!quantizationOf(model)) attachedAdapters(model)!.mergeIntoBase();
    return model;
  }
  const config = loadConfig(dir);
  const { tensors, byteTensors } = await loadTensorsFromFolder(dir);
  if (config.quantization_config !== undefined && config.quantization_config !== null) {
    // 8-bit weights stay 8-bit in memory, dequantized per layer in the forward pass.
    return quantizedModelFromHf(config, tensors, byteTensors, dir);
  }
  if (byteTensors.size > 0) {
    const [name, t] = [...byteTensors][0]!;
    throw new CheckpointError(`checkpoint: ${dir}: tensor ${name} is ${t.dtype}, but config.json has no quantization_config`);
  }
  return new LlamaModel(config, fromHfTensors(config, tensors, dir));
}

export interface SaveOptions extends SaveFolderOptions {
  /** Stored dtype: F32 (default) or BF16 (half the bytes, what HF hubs hold). */
  dtype?: 'F32' | 'BF16';
  /** Copy tokenizer.json, tokenizer_config.json, special_tokens_map.json, generation_config.json from here. */
  tokenizerDir?: string;
  /** Extra files by relative path (optimizer state, trainer state, …), written in the same atomic rename. */
  files?: Record<string, string | Buffer>;
  /** Shard above this many bytes (transformers' default 5 GB). */
  maxShardBytes?: number;
}

/** The generation_config.json transformers writes next to a causal LM. */
export function generationConfig(config: LlamaConfig): object {
  return {
    _from_model_config: true,
    bos_token_id: config.bos_token_id ?? undefined,
    eos_token_id: config.eos_token_id ?? undefined,
    pad_token_id: config.pad_token_id ?? undefined,
    transformers_version: '4.46.0',
  };
}

export async function savePretrained(model: LlamaModel, dir: string, opts: SaveOptions = {}): Promise<void> {
  const files: Record<string, string | Buffer> = { ...(opts.files ?? {}) };
  // Read now, before the swap: the tokenizer folder may be the folder being replaced.
  if (opts.tokenizerDir) copyTokenizerFiles(opts.tokenizerDir, files);
  if (!model.dims.isRewardModel && !('generation_config.json' in files)) {
    files['generation_config.json'] = JSON.stringify(generationConfig(model.config), null, 2) + '\n';
  }
  // A quantized model keeps its 8-bit weights (FBGEMM FP8 / compressed-tensors layout, see quantization/hf-format.ts).
  const quantized = quantizationOf(model) ? quantizedHfContents(model) : undefined;
  // Scales (and the float parts) of a quantized model are float32: BF16 scales would move every dequantized weight.
  if (quantized && opts.dtype === 'BF16') throw new Error(`save: ${dir}: a quantized model is saved with float32 scales and parts; BF16 is not available for it`);
  await saveFolder(dir, {
    tensors: quantized?.tensors ?? toHfTensors(model),
    byteTensors: quantized?.byteTensors,
    config: quantized?.config ?? { ...model.config },
    dtype: opts.dtype,
    maxShardBytes: opts.maxShardBytes,
    files,
  }, { command: opts.command, overwrite: opts.overwrite, flag: opts.flag, markerExtra: opts.markerExtra });
}

/**
 * The base folder `baseDir` with the adapter of `adapterDir` attached (not merged). A reward-model
 * adapter on a causal-LM base turns the base into a reward model first (its score head comes
 * from the adapter).
 */
export async function loadWithAdapter(baseDir: string, adapterDir: string): Promise<LlamaModel> {
  const { config } = readAdapterConfig(adapterDir);
  let model = await loadPretrained(baseDir);
  if (config.task_type === 'SEQ_CLS' && !model.dims.isRewardModel) {
    const reward = toRewardModel(model);
    model.dispose();
    model = reward;
  }
  try {
    loadAdapter(model, adapterDir);
  } catch (err) {
    model.dispose();
    throw err;
  }
  return model;
}

export interface SaveAdapterOptions extends SaveFolderOptions {
  /** Recorded as base_model_name_or_path (made absolute, so the folder loads from anywhere). */
  baseModel: string;
  /** Copy the tokenizer files from here, so the adapter folder works as a model folder. */
  tokenizerDir?: string;
  /** Extra files by relative path (optimizer state, trainer state), in the same atomic write. */
  files?: Record<string, string | Buffer>;
}

/** Writes a PEFT adapter folder (see `peft.ts`) under the output-folder policy. */
export function saveAdapterFolder(model: LlamaModel, adapters: LoraAdapters, dir: string, opts: SaveAdapterOptions): void {
  const files: Record<string, string | Buffer> = { ...(opts.files ?? {}), ...adapterFolderFiles(model, adapters, path.resolve(opts.baseModel)) };
  if (opts.tokenizerDir) copyTokenizerFiles(opts.tokenizerDir, files);
  writeOutputFolder(
    dir,
    (staging) => {
      for (const [name, contents] of Object.entries(files)) {
        fs.mkdirSync(path.dirname(path.join(staging, name)), { recursive: true });
        fs.writeFileSync(path.join(staging, name), contents);
      }
    },
    { command: opts.command ?? 'checkpoint', overwrite: opts.overwrite, flag: opts.flag, extra: opts.markerExtra },
  );
}
