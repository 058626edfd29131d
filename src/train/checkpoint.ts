/**
 * Training checkpoints: an HF model folder plus the optimizer and trainer state needed to resume,
 * written in one atomic folder save (`RUN/checkpoint-<step>/`):
 *
 *   config.json, model.safetensors, tokenizer files   — loadable by transformers as they are
 *   optimizer.safetensors                              — AdamW moments, metadata in __metadata__
 *   trainer_state.json                                 — global step, rng state, data position
 *
 * A run folder is the final model itself, as TRL's `output_dir` after `save_model`: its HF files
 * (config.json, model.safetensors, tokenizer files) sit directly in it, beside `checkpoint-*`
 * folders and `metrics.jsonl` (`saveFinalModel`).
 *
 * With LoRA the weights part (of the final model and of each checkpoint) is a PEFT adapter folder
 * (adapter_config.json, adapter_model.safetensors) instead, and the optimizer state covers the
 * adapters only.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LlamaModel } from '../model/llama.js';
import { saveAdapterFolder, savePretrained } from '../model/pretrained.js';
import { attachedAdapters, trainingParameters } from '../model/lora.js';
import { encodeSafetensors, readSafetensors } from '../model/safetensors.js';
import { CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME, readJsonFile } from '../model/checkpoint-io.js';
import { sha256File } from '../util/hash.js';
import { claimOutputFolder, ensureDir, readOutputMarker, writeOutputMarker } from '../util/atomic.js';
import type { AdamW } from './adamw.js';
import { exportOptimizerState, importOptimizerState, parseOptimizerStateMeta, parseTrainerState, type TrainerState } from './optimizer-state.js';

export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const TRAINER_STATE_FILE = 'trainer_state.json';

/**
 * Hash of what a model folder computes: its config.json and weight files (not its tokenizer or
 * other files), so a copy of the folder elsewhere hashes alike and a retrained one does not.
 */
export function modelFingerprint(dir: string): string {
  const names = fs.readdirSync(dir).filter((name) => name === CONFIG_NAME || name === 'adapter_config.json' || name.endsWith('.safetensors') || name === SAFE_WEIGHTS_INDEX_NAME).sort();
  const listing = createHash('sha256');
  for (const name of names) listing.update(`${sha256File(path.join(dir, name))}  ${name}\n`, 'utf8');
  return listing.digest('hex');
}

export interface RunFolderOwner {
  /** The trainer (`sft`, `dpo`, `rm train`, `pretrain`). */
  command: string;
  /** The model folder training starts from. */
  model: string;
}

/**
 * Takes `runDir` for a trainer before anything is written into it (the output-folder policy of
 * `src/util/atomic.ts`): new, empty, or this trainer's previous output, else only with `overwrite`.
 * The marker records the starting model's fingerprint; `--resume` from a different model is
 * refused, since it would continue the other model's checkpoint (and, for DPO, reuse reference
 * log-probs computed with the other model).
 */
export function claimRunFolder(runDir: string, owner: RunFolderOwner, options: { resume: boolean; overwrite: boolean }): void {
  const state = claimOutputFolder(runDir, { command: owner.command, overwrite: options.overwrite, flag: 'out' });
  const fingerprint = modelFingerprint(owner.model);
  const previous = typeof state.marker?.model === 'string' ? state.marker.model : undefined;
  if (options.resume && state.marker?.command === owner.command && previous !== undefined && previous !== fingerprint) {
    const started = typeof state.marker.modelPath === 'string' ? ` (${state.marker.modelPath})` : '';
    const reuse = owner.command === 'dpo' ? " and reuse its reference log-probs" : '';
    throw new Error(
      `${owner.command}: --resume: ${runDir} was started from another model${started}, not ${owner.model} (weights sha256 ${previous.slice(0, 12)}… vs ${fingerprint.slice(0, 12)}…); ` +
        `resuming would continue that model's checkpoint${reuse}. Give the model it started from, or a new out`,
    );
  }
  ensureDir(runDir);
  // the files list of a previous final model stays, so saving again replaces exactly those files
  const files = state.marker?.command === owner.command && Array.isArray(state.marker.files) ? { files: state.marker.files } : {};
  writeOutputMarker(runDir, { ...files, command: owner.command, model: fingerprint, modelPath: path.resolve(owner.model) });
}

/**
 * Writes the final model into the run folder itself (TRL's `output_dir`): its HF files are
 * renamed into place beside `checkpoint-*`, `metrics.jsonl` and the rest, which are kept; a
 * previous final model's files that are not written again are removed. The folder's marker keeps
 * its owner (`claimRunFolder`) and its starting model's hash, so `--resume` still checks it.
 * A folder nobody claimed (a caller that owns it) is written under the `checkpoint` command.
 */
export async function saveFinalModel(model: LlamaModel, runDir: string, opts: { tokenizerDir?: string; baseModel?: string }): Promise<void> {
  const marker = readOutputMarker(runDir);
  const adapters = attachedAdapters(model);
  if (adapters && opts.baseModel === undefined) throw new Error('checkpoint: a LoRA run needs its base model folder (baseModel) to write its adapter folder');
  const { command, files: _files, ...extra } = marker ?? { command: undefined, files: undefined };
  const owner = marker === null ? { overwrite: true } : { command, markerExtra: extra };
  if (adapters) saveAdapterFolder(model, adapters, runDir, { baseModel: opts.baseModel!, tokenizerDir: opts.tokenizerDir, ...owner });
  else await savePretrained(model, runDir, { tokenizerDir: opts.tokenizerDir, ...owner });
}

export function checkpointDir(runDir: string, step: number): string {
  return path.join(runDir, `checkpoint-${step}`);
}

/** Complete checkpoints of a run folder, by step ascending. */
export function listCheckpoints(runDir: string): { step: number; dir: string }[] {
  if (!fs.existsSync(runDir)) return [];
  return fs
    .readdirSync(runDir)
    .map((name) => /^checkpoint-(\d+)$/.exec(name))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ step: Number(m[1]), dir: path.join(runDir, m[0]) }))
    .filter((c) => fs.existsSync(path.join(c.dir, TRAINER_STATE_FILE)))
    .sort((a, b) => a.step - b.step);
}

export interface SaveCheckpointArgs {
  model: LlamaModel;
  optimizer: AdamW;
  state: TrainerState;
  tokenizerDir?: string;
  /** Keep at most this many checkpoints (oldest removed after a save); 0 keeps all. */
  saveTotalLimit: number;
  /** With LoRA: the base model folder the adapter checkpoint names (base_model_name_or_path). */
  baseModel?: string;
}

export async function saveCheckpoint(runDir: string, args: SaveCheckpointArgs): Promise<string> {
  const dir = checkpointDir(runDir, args.state.globalStep);
  const opt = exportOptimizerState(args.optimizer);
  const files = {
    [OPTIMIZER_FILE]: encodeSafetensors(opt.tensors, { metadata: { tfalign: JSON.stringify(opt.meta) }, name: OPTIMIZER_FILE }),
    [TRAINER_STATE_FILE]: JSON.stringify(args.state, null, 2) + '\n',
  };
  // A LoRA run's checkpoint is its adapter folder (PEFT format) plus the same state files.
  const adapters = attachedAdapters(args.model);
  if (adapters) {
    if (args.baseModel === undefined) throw new Error('checkpoint: a LoRA checkpoint needs its base model folder (baseModel)');
    saveAdapterFolder(args.model, adapters, dir, { baseModel: args.baseModel, tokenizerDir: args.tokenizerDir, files });
  } else {
    await savePretrained(args.model, dir, { tokenizerDir: args.tokenizerDir, files });
  }
  if (args.saveTotalLimit > 0) {
    const all = listCheckpoints(runDir);
    for (const old of all.slice(0, Math.max(0, all.length - args.saveTotalLimit))) fs.rmSync(old.dir, { recursive: true, force: true });
  }
  return dir;
}

/** Restores optimizer state from a checkpoint folder and returns its trainer state. */
export function loadCheckpointState(dir: string, optimizer: AdamW, model: LlamaModel): TrainerState {
  const statePath = path.join(dir, TRAINER_STATE_FILE);
  const state = parseTrainerState(readJsonFile(statePath), statePath);
  const optPath = path.join(dir, OPTIMIZER_FILE);
  const { tensors, metadata } = readSafetensors(optPath);
  let metaJson: unknown;
  try {
    metaJson = JSON.parse(metadata.tfalign ?? '');
  } catch {
    throw new Error(`checkpoint: ${optPath}: __metadata__.tfalign is missing or not JSON`);
  }
  importOptimizerState(optimizer, trainingParameters(model), { tensors, meta: parseOptimizerStateMeta(metaJson, optPath) });
  return state;
}
