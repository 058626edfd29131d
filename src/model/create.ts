/**
 * New models and merged models as HF folders: `createModel` random-initialises an architecture
 * file (configs/models/*.json) sized to a tokenizer; `averageModels` averages the weights of
 * several checkpoints of one architecture (Llama 3 averages RM, SFT and DPO models);
 * `mergeAdapter` folds a PEFT LoRA adapter into its base (W' = W + (α/r)·B A).
 */
import * as fs from 'node:fs';
import { parseLlamaConfig } from './config.js';
import { readJsonFile } from './checkpoint-io.js';
import { initModel, toHfTensors, fromHfTensors } from './weights.js';
import { loadPretrained, loadWithAdapter, savePretrained } from './pretrained.js';
import { attachedAdapters } from './lora.js';
import { readAdapterConfig } from './peft.js';
import { LlamaModel } from './llama.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { averageWeights } from './average.js';
import { claimOutputFolder } from '../util/atomic.js';

export interface CreateModelOptions {
  /** Architecture file (HF config.json fields). */
  configFile: string;
  /** Tokenizer folder: sets vocab_size and the special token ids, and is copied into the model. */
  tokenizerDir?: string;
  out: string;
  seed: number;
  /** The command that owns `out` (output-folder policy); default `model init`. */
  command?: string;
  /** Write into a non-empty `out` that is not this command's output (its other files are kept). */
  overwrite?: boolean;
}

export async function createModel(opts: CreateModelOptions): Promise<LlamaModel> {
  if (!fs.existsSync(opts.configFile)) throw new Error(`model init: ${opts.configFile}: no such file`);
  const raw = readJsonFile(opts.configFile) as Record<string, unknown>;
  if (opts.tokenizerDir) {
    const tok = await Tokenizer.fromFolder(opts.tokenizerDir);
    raw.vocab_size = tok.vocabSize;
    raw.bos_token_id = tok.bosTokenId ?? null;
    // generation stops at any end token (Llama 3 lists both <|end_of_text|> and <|eot_id|>)
    const endIds = [...new Set([tok.eosTokenId, tok.eotTokenId].filter((id): id is number => id !== undefined))];
    raw.eos_token_id = endIds.length === 0 ? null : endIds.length === 1 ? endIds[0] : endIds;
    raw.pad_token_id = tok.padTokenId ?? null;
  }
  const config = parseLlamaConfig(raw, opts.configFile);
  // Before the weights are made: a folder this command may not write is refused at once.
  claimOutputFolder(opts.out, { command: opts.command ?? 'model init', overwrite: opts.overwrite, flag: '--out' });
  const model = initModel(config, opts.seed);
  await savePretrained(model, opts.out, { tokenizerDir: opts.tokenizerDir, command: opts.command ?? 'model init', overwrite: opts.overwrite, flag: '--out' });
  return model;
}

/**
 * Uniform (or weighted) average of several model folders of the same architecture, saved as a
 * new folder with the first one's config and tokenizer.
 */
export async function averageModels(dirs: string[], out: string, coefficients?: number[], options: { overwrite?: boolean } = {}): Promise<void> {
  if (dirs.length < 2) throw new Error('model average: give at least two model folders');
  const output = { command: 'model average', overwrite: options.overwrite, flag: '--out' };
  claimOutputFolder(out, output);
  const first = await loadPretrained(dirs[0]);
  const sets = [toHfTensors(first)];
  for (const dir of dirs.slice(1)) {
    const m = await loadPretrained(dir);
    if (JSON.stringify(m.config.architectures) !== JSON.stringify(first.config.architectures)) {
      throw new Error(`model average: ${dir} is a ${m.config.architectures[0]}, ${dirs[0]} a ${first.config.architectures[0]}`);
    }
    sets.push(toHfTensors(m));
    m.dispose();
  }
  const averaged = new LlamaModel(first.config, fromHfTensors(first.config, averageWeights(sets, coefficients), 'average'));
  await savePretrained(averaged, out, { tokenizerDir: dirs[0], ...output });
  first.dispose();
  averaged.dispose();
}

/**
 * Folds the LoRA adapter of `adapterDir` into the base model `baseDir` and writes a plain HF folder
 * at `out` (a reward-model adapter on a causal base gives a reward model with its score head).
 * The adapter is read and checked before `out` is touched.
 */
export async function mergeAdapter(baseDir: string, adapterDir: string, out: string, options: { overwrite?: boolean } = {}): Promise<LlamaModel> {
  const output = { command: 'model merge', overwrite: options.overwrite, flag: '--out' };
  readAdapterConfig(adapterDir);
  claimOutputFolder(out, output);
  const model = await loadWithAdapter(baseDir, adapterDir);
  attachedAdapters(model)!.mergeIntoBase();
  await savePretrained(model, out, { tokenizerDir: fs.existsSync(`${adapterDir}/tokenizer.json`) ? adapterDir : baseDir, ...output });
  return model;
}
