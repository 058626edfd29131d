/**
 * Small SFT and preference rows over eight words, for trainer tests that need real text of
 * varied lengths (so micro-batches pad and target counts differ by row).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../../src/tokenizer/bpe-trainer.js';
import { createModel } from '../../src/model/create.js';

const WORDS = ['apple', 'river', 'stone', 'cloud', 'green', 'music', 'paper', 'light'];
export const word = (i: number): string => WORDS[i % WORDS.length]!;

/** `n` rows `{prompt, response}`, responses of 2–5 words. */
export function sftWordRows(n: number): { prompt: string; response: string }[] {
  return Array.from({ length: n }, (_, i) => ({
    prompt: `Tell me about ${word(i)}.`,
    response: Array.from({ length: 2 + (i % 4) }, (_, k) => word(i + 3 * k)).join(' ') + '.',
  }));
}

/** `n` preference rows; with `edited`, every third has an edited response (ranked edited > chosen > rejected). */
export function preferenceWordRows(n: number, opts: { edited?: boolean } = {}): { prompt: string; chosen: string; rejected: string; edited?: string }[] {
  return Array.from({ length: n }, (_, i) => ({
    prompt: `Say something about ${word(i)} and ${word(i + 1)}.`,
    chosen: `Gladly: ${Array.from({ length: 1 + (i % 3) }, (_, k) => word(i + k)).join(' ')}.`,
    rejected: `Nope, ${word(i + 5)}.`,
    ...(opts.edited && i % 3 === 0 ? { edited: `Gladly, with thanks: ${word(i + 2)} ${word(i + 4)}.` } : {}),
  }));
}

/**
 * The files trainer tests start from, under `root`: a byte-level BPE tokenizer trained on the rows
 * (`tok/`), a random-init tiny.json model with it (`base/`, seed 5), and the rows as JSONL
 * (`sft.jsonl`, `prefs.jsonl`).
 */
export async function writeWordFixtures(
  root: string,
  rows: { sft: ReturnType<typeof sftWordRows>; preferences: ReturnType<typeof preferenceWordRows> },
): Promise<{ tokDir: string; baseDir: string; sftFile: string; prefsFile: string }> {
  const tokDir = path.join(root, 'tok');
  const corpus = [...rows.sft.flatMap((r) => [r.prompt, r.response]), ...rows.preferences.flatMap((r) => [r.prompt, r.chosen, r.rejected, r.edited ?? ''])];
  const tokenizerJson = trainByteLevelBpe([corpus.join('\n')], { vocabSize: 300 });
  writeTokenizerFolder(tokDir, { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson) });
  const baseDir = path.join(root, 'base');
  (await createModel({ configFile: 'configs/models/tiny.json', tokenizerDir: tokDir, out: baseDir, seed: 5 })).dispose();
  const sftFile = path.join(root, 'sft.jsonl');
  fs.writeFileSync(sftFile, rows.sft.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const prefsFile = path.join(root, 'prefs.jsonl');
  fs.writeFileSync(prefsFile, rows.preferences.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return { tokDir, baseDir, sftFile, prefsFile };
}
