/**
 * Training checkpoints: an HF model folder plus the optimizer and trainer state needed to resume,
 * written in one atomic folder save (`RUN/checkpoint-<step>/`):
 *
 *   config.json, model.safetensors, tokenizer files   — loadable by transformers as they are
 *   optimizer.safetensors                              — AdamW moments, metadata in __metadata__
 *   trainer_state.json                                 — global step, rng state, data position
 *
 * A run folder holds `checkpoint-*` folders, `metrics.jsonl` and the final model in `model/`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LlamaModel } from '../model/llama.js';
import { savePretrained } from '../model/pretrained.js';
import { encodeSafetensors, readSafetensors } from '../model/safetensors.js';
import { readJsonFile } from '../model/checkpoint-io.js';
import type { AdamW } from './adamw.js';
import { exportOptimizerState, importOptimizerState, parseOptimizerStateMeta, parseTrainerState, type TrainerState } from './optimizer-state.js';

export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const TRAINER_STATE_FILE = 'trainer_state.json';
export const FINAL_MODEL_DIR = 'model';

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
}

export async function saveCheckpoint(runDir: string, args: SaveCheckpointArgs): Promise<string> {
  const dir = checkpointDir(runDir, args.state.globalStep);
  const opt = exportOptimizerState(args.optimizer);
  await savePretrained(args.model, dir, {
    tokenizerDir: args.tokenizerDir,
    files: {
      [OPTIMIZER_FILE]: encodeSafetensors(opt.tensors, { metadata: { tfalign: JSON.stringify(opt.meta) }, name: OPTIMIZER_FILE }),
      [TRAINER_STATE_FILE]: JSON.stringify(args.state, null, 2) + '\n',
    },
  });
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
  importOptimizerState(optimizer, model.params, { tensors, meta: parseOptimizerStateMeta(metaJson, optPath) });
  return state;
}
