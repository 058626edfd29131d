/**
 * A base model from scratch for the quickstart: a byte-level BPE tokenizer and a small Llama
 * trained on noisy demonstrations of the synthetic task, so the base model "speaks" the chat
 * format but answers mediocrely — room for the rounds to improve it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../tokenizer/bpe-trainer.js';
import { buildPretrainingCorpus, buildTokenizerCorpus } from '../../data/synthetic/corpus.js';
import { writeJsonlAtomic } from '../../data/jsonl.js';
import { createModel } from '../model/create.js';
import { pretrain } from '../trainers/pretrain.js';
import type { RunConfig } from './run-config.js';
import type { LogRecord } from '../train/loop.js';

export interface BaseModelResult {
  modelDir: string;
  metrics: Record<string, number>;
}

export async function buildBaseModel(
  spec: NonNullable<RunConfig['base']['fromScratch']>,
  dir: string,
  opts: { seed: number; backend: RunConfig['backend']; onLog?: (r: LogRecord) => void; onStart?: (numSteps: number) => void },
): Promise<BaseModelResult> {
  fs.mkdirSync(dir, { recursive: true });
  // 1) tokenizer
  const tokenizerDir = path.join(dir, 'tokenizer');
  const tokenizerJson = trainByteLevelBpe(buildTokenizerCorpus({ numDocuments: 2000, seed: opts.seed + 1 }), { vocabSize: spec.vocabSize });
  writeTokenizerFolder(tokenizerDir, { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson, { modelMaxLength: 2048 }) });
  // 2) corpus of noisy demonstrations
  const corpus = path.join(dir, 'corpus.jsonl');
  await writeJsonlAtomic(corpus, buildPretrainingCorpus({ numDocuments: spec.numDocuments, seed: opts.seed + 2, noiseLevel: spec.noiseLevel }).map((text) => ({ text })));
  // 3) random init, then pretraining
  const initDir = path.join(dir, 'init');
  (await createModel({ configFile: spec.architecture, tokenizerDir, out: initDir, seed: opts.seed })).dispose();
  const result = await pretrain(
    // the synthetic corpus is chat-formatted: its special-token strings are the control tokens
    { ...spec.pretrain, model: initDir, corpus, out: path.join(dir, 'pretrain'), backend: opts.backend, seed: opts.seed, parseSpecialTokens: true },
    { onLog: opts.onLog, onStart: (info) => opts.onStart?.(info.numSteps) },
  );
  return {
    modelDir: result.modelDir,
    metrics: { 'pretrain/loss': Number(result.lastEval?.loss ?? NaN), 'pretrain/tokens_per_s': result.tokensPerSecond },
  };
}
