/**
 * LoRA adapters as PEFT folders, the format `peft.PeftModel.from_pretrained` reads:
 *
 *   adapter_config.json        peft_type "LORA", r, lora_alpha, lora_dropout, target_modules,
 *                              bias "none", task_type (CAUSAL_LM | SEQ_CLS), base_model_name_or_path,
 *                              modules_to_save (["score"] for a reward model)
 *   adapter_model.safetensors  base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight [r, in],
 *                              ….lora_B.weight [out, r]; base_model.model.score.weight [1, hidden]
 *                              for a reward model (PEFT strips `modules_to_save.default` on save)
 *   tokenizer files            copied from the base, so the folder works as a `--model` alone
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import type { LlamaModel } from './llama.js';
import { LORA_TARGET_MODULES, LoraAdapters, type LoraOptions } from './lora.js';
import { CheckpointError, encodeSafetensors, readSafetensors, type NamedTensor } from './safetensors.js';
import { readJsonFile } from './checkpoint-io.js';
import { transpose2d } from './weights.js';

export const ADAPTER_CONFIG_NAME = 'adapter_config.json';
export const ADAPTER_WEIGHTS_NAME = 'adapter_model.safetensors';
const PREFIX = 'base_model.model.';
const SCORE_TENSOR = `${PREFIX}score.weight`;

export const PeftAdapterConfigSchema = z
  .object({
    peft_type: z.literal('LORA').describe('Only LoRA adapters are read.'),
    task_type: z.enum(['CAUSAL_LM', 'SEQ_CLS']).nullable().optional().describe('CAUSAL_LM for a policy, SEQ_CLS for a reward model.'),
    r: z.number().int().positive().describe('Adapter rank.'),
    lora_alpha: z.number().positive().describe('Scale numerator: the update is (lora_alpha / r) · B A x.'),
    lora_dropout: z.number().min(0).lt(1).default(0).describe('Dropout on the adapter input while training.'),
    target_modules: z
      .union([z.array(z.string()), z.string()])
      .describe('Adapted projections: names out of q_proj k_proj v_proj o_proj gate_proj up_proj down_proj, or "all-linear".'),
    bias: z.literal('none').default('none').describe('Only bias "none" is supported (Llama projections have no bias).'),
    base_model_name_or_path: z.string().nullable().optional().describe('The base model folder the adapter was trained on.'),
    modules_to_save: z.array(z.string()).nullable().optional().describe('Fully trained modules saved with the adapter (["score"] for a reward model).'),
    fan_in_fan_out: z.literal(false).default(false).describe('Llama projections are nn.Linear: must be false.'),
    use_rslora: z.boolean().default(false).describe('rsLoRA scaling lora_alpha / √r.'),
    layers_to_transform: z.null().optional().describe('Only all layers are supported.'),
  })
  .passthrough();

export type PeftAdapterConfig = z.infer<typeof PeftAdapterConfigSchema>;

/** True when `dir` is a PEFT adapter folder (adapter_config.json, no config.json of its own). */
export function isAdapterFolder(dir: string): boolean {
  return fs.existsSync(path.join(dir, ADAPTER_CONFIG_NAME)) && !fs.existsSync(path.join(dir, 'config.json'));
}

/** Reads `DIR/adapter_config.json`; errors name the file and field. */
export function readAdapterConfig(dir: string): { config: PeftAdapterConfig; options: LoraOptions } {
  const file = path.join(dir, ADAPTER_CONFIG_NAME);
  if (!fs.existsSync(file)) throw new CheckpointError(`lora: ${dir}: no ${ADAPTER_CONFIG_NAME}`);
  const parsed = PeftAdapterConfigSchema.safeParse(readJsonFile(file));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CheckpointError(`lora: ${file}: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const config = parsed.data;
  const modules = config.target_modules === 'all-linear' ? [...LORA_TARGET_MODULES] : typeof config.target_modules === 'string' ? [config.target_modules] : config.target_modules;
  for (const m of modules) {
    if (!(LORA_TARGET_MODULES as readonly string[]).includes(m)) {
      throw new CheckpointError(`lora: ${file}: target_modules: '${m}' is not a Llama projection (${LORA_TARGET_MODULES.join(', ')})`);
    }
  }
  const extra = (config.modules_to_save ?? []).filter((m) => m !== 'score');
  if (extra.length > 0) throw new CheckpointError(`lora: ${file}: modules_to_save: only "score" is supported, got ${extra.join(', ')}`);
  const options: LoraOptions = {
    r: config.r,
    alpha: config.lora_alpha,
    dropout: config.lora_dropout,
    targetModules: modules as LoraOptions['targetModules'],
    useRslora: config.use_rslora,
  };
  return { config, options };
}

/** The base model folder an adapter names, resolved against the adapter folder when relative. */
export function adapterBaseModel(dir: string, config: PeftAdapterConfig): string {
  const base = config.base_model_name_or_path;
  if (!base) throw new CheckpointError(`lora: ${path.join(dir, ADAPTER_CONFIG_NAME)}: base_model_name_or_path is not set; give the base model folder`);
  return path.isAbsolute(base) ? base : path.resolve(dir, base);
}

/**
 * Loads the adapter of folder `dir` onto `model` (attached, enabled). A reward model's score head
 * saved with it (`modules_to_save`) is copied into `model.params`.
 */
export function loadAdapter(model: LlamaModel, dir: string): LoraAdapters {
  const { config, options } = readAdapterConfig(dir);
  const file = path.join(dir, ADAPTER_WEIGHTS_NAME);
  if (!fs.existsSync(file)) throw new CheckpointError(`lora: ${dir}: no ${ADAPTER_WEIGHTS_NAME}`);
  const { tensors } = readSafetensors(file);
  const relative = new Map<string, NamedTensor>();
  for (const [name, t] of tensors) {
    if (!name.startsWith(PREFIX)) throw new CheckpointError(`lora: ${file}: tensor ${name}: expected a name starting with ${PREFIX}`);
    if (name !== SCORE_TENSOR) relative.set(name.slice(PREFIX.length), t);
  }
  const score = tensors.get(SCORE_TENSOR);
  const wantsScore = (config.modules_to_save ?? []).includes('score');
  if (wantsScore !== (score !== undefined)) {
    throw new CheckpointError(`lora: ${file}: ${wantsScore ? `modules_to_save lists score but ${SCORE_TENSOR} is missing` : `holds ${SCORE_TENSOR} but modules_to_save does not list score`}`);
  }
  if (score) {
    const target = model.params.get('score.weight');
    if (!target) throw new CheckpointError(`lora: ${dir}: a reward-model adapter (score head) needs a reward-model base`);
    if (score.shape.join(',') !== [1, model.dims.hiddenSize].join(',')) throw new CheckpointError(`lora: ${file}: tensor ${SCORE_TENSOR}: shape [${score.shape}], expected [1,${model.dims.hiddenSize}]`);
    tf.tidy(() => target.assign(tf.tensor2d(score.data, [model.dims.hiddenSize, 1])));
  }
  return LoraAdapters.fromPeftTensors(model, options, relative, file);
}

/** adapter_config.json as PEFT writes it. */
export function adapterConfigJson(model: LlamaModel, adapters: LoraAdapters, baseModel: string): string {
  const isReward = model.dims.isRewardModel;
  const config = {
    peft_type: 'LORA',
    task_type: isReward ? 'SEQ_CLS' : 'CAUSAL_LM',
    base_model_name_or_path: baseModel,
    r: adapters.options.r,
    lora_alpha: adapters.options.alpha,
    lora_dropout: adapters.options.dropout,
    target_modules: [...adapters.options.targetModules],
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    use_rslora: adapters.options.useRslora === true,
    modules_to_save: isReward ? ['score'] : null,
    layers_to_transform: null,
    revision: null,
  };
  return JSON.stringify(config, null, 2) + '\n';
}

/** The files of an adapter folder (adapter_config.json and adapter_model.safetensors), for an atomic folder write. */
export function adapterFolderFiles(model: LlamaModel, adapters: LoraAdapters, baseModel: string): Record<string, string | Buffer> {
  const tensors = adapters.toPeftTensors();
  if (model.dims.isRewardModel) {
    const score = model.params.get('score.weight')!; // [hidden, 1] → PEFT [1, hidden]
    tensors.set(SCORE_TENSOR, { shape: [1, model.dims.hiddenSize], data: transpose2d(score.dataSync() as Float32Array, model.dims.hiddenSize, 1) });
  }
  return {
    [ADAPTER_CONFIG_NAME]: adapterConfigJson(model, adapters, baseModel),
    [ADAPTER_WEIGHTS_NAME]: encodeSafetensors(tensors, { metadata: { format: 'pt' }, name: ADAPTER_WEIGHTS_NAME }),
  };
}

/**
 * Copies the adapter weights (and a reward model's score head) of adapter folder `dir` into the
 * attached `adapters` and `model` — a resume from a LoRA checkpoint. The folder must hold the same
 * adapter layout (rank, targets).
 */
export function restoreAdapterWeights(model: LlamaModel, adapters: LoraAdapters, dir: string): void {
  const { options } = readAdapterConfig(dir);
  const same = options.r === adapters.options.r && options.targetModules.join(',') === adapters.options.targetModules.join(',');
  if (!same) {
    throw new CheckpointError(
      `lora: ${dir}: adapter r ${options.r} on ${options.targetModules.join(',')} does not match this run's r ${adapters.options.r} on ${adapters.options.targetModules.join(',')}`,
    );
  }
  const file = path.join(dir, ADAPTER_WEIGHTS_NAME);
  const { tensors } = readSafetensors(file);
  for (const [key, variable] of adapters.params) {
    const t = tensors.get(PREFIX + key);
    const [rows, cols] = variable.shape; // internal [in, r] / [r, out]; PEFT holds the transpose
    if (!t || t.shape.join(',') !== [cols, rows].join(',')) throw new CheckpointError(`lora: ${file}: tensor ${PREFIX}${key}: ${t ? `shape [${t.shape}], expected [${cols},${rows}]` : 'missing'}`);
    tf.tidy(() => variable.assign(tf.tensor2d(transpose2d(t.data, cols, rows), [rows, cols])));
  }
  const score = tensors.get(SCORE_TENSOR);
  const head = model.params.get('score.weight');
  if (head && score) tf.tidy(() => head.assign(tf.tensor2d(score.data, [model.dims.hiddenSize, 1])));
}
