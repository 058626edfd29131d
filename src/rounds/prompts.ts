/**
 * The run's prompt sets, written once at run creation so every round and every resume sees the
 * same prompts: from a JSONL file of `{prompt}` rows (validated), or drawn from the synthetic
 * task (train and held-out splits are disjoint by construction).
 */
import * as fs from 'node:fs';
import { readJsonl, writeJsonlAtomic } from '../../data/jsonl.js';
import { PromptRowSchema, type PromptRow } from '../../data/rows.js';
import { generatePrompts } from '../../data/synthetic/task.js';
import type { RunConfig } from './run-config.js';

type PromptSource = RunConfig['prompts']['train'];

async function materialize(source: PromptSource, file: string, split: 'train' | 'heldout', seed: number): Promise<void> {
  if (fs.existsSync(file)) return;
  let rows: PromptRow[];
  if (typeof source === 'string') rows = (await readJsonl(source, PromptRowSchema)).rows.map((r) => r.value);
  else rows = generatePrompts(source.synthetic, seed, { split }).map((prompt, i) => ({ prompt, id: `${split}-${i}` }));
  if (rows.length === 0) throw new Error(`prompts.${split}: no prompts`);
  await writeJsonlAtomic(file, rows);
}

export async function writePromptSets(config: RunConfig, files: { train: string; heldout: string }): Promise<void> {
  await materialize(config.prompts.train, files.train, 'train', config.seed);
  await materialize(config.prompts.heldout, files.heldout, 'heldout', config.seed);
}

export async function readPrompts(file: string): Promise<PromptRow[]> {
  return (await readJsonl(file, PromptRowSchema)).rows.map((r) => r.value);
}

/** The `count` prompts of round `round` (1-based), cycling through the set; `offset` separates uses within a round. */
export function promptsOfRound<T>(all: readonly T[], round: number, count: number, offset = 0): T[] {
  const start = ((round - 1) * count + offset) % all.length;
  return Array.from({ length: Math.min(count, all.length) }, (_, i) => all[(start + i) % all.length]!);
}

/** A prompt as the judge reads it: the text, or the last user message of a conversation. */
export function promptText(prompt: PromptRow['prompt']): string {
  if (typeof prompt === 'string') return prompt;
  const users = prompt.filter((m) => m.role === 'user');
  return users[users.length - 1]?.content ?? '';
}
