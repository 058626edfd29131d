/**
 * Pretraining recipe: next-token prediction on a text corpus, so a from-scratch model becomes a
 * base model for the alignment demos. Reads top to bottom on the shared skeleton (`recipe.ts`):
 * validate → setup → train → save.
 *
 * Documents are wrapped as [BOS] text [EOS] (unless the text already starts/ends with them), laid end to end and cut into rows of exactly
 * `seqLen` tokens (no padding); each piece keeps its own document id, so attention and the loss
 * never cross a document boundary.
 */
import { z } from 'zod';
import { trainingOptionsSchema } from '../config/training.js';
import { limit } from '../config/limits.js';
import { validateConfig } from '../config/load.js';
import { loadPretrained } from '../model/pretrained.js';
import { readCorpus } from '../../data/corpus.js';
import { packRows, selectRows, type SequenceRow, type TokenBatch } from '../../data/collate.js';
import { batchIndicesAt, microBatches, numTrainingSteps, type LogRecord, type TrainingResult } from '../train/loop.js';
import { CAUSAL_LM_TASK_KIND, evaluateCausalLm } from '../tasks/causal-lm.js';
import { holdOut, setupRecipe, trainWithTask } from './recipe.js';

export const PretrainConfigSchema = trainingOptionsSchema({
  lr: 1e-3, // small from-scratch models train fast at 1e-3 (nanoGPT's shakespeare-char uses 1e-3)
  batchSize: 8,
  epochs: 1,
  warmupRatio: 0.05,
  lrDecay: 'cosine',
  weightDecay: 0.1,
  maxGradNorm: 1,
}).extend({
  model: z.string().min(1).describe('Model folder (HF layout) to start from, e.g. one made by `tfalign model init`.'),
  corpus: z.string().min(1).describe('Text file (documents separated by blank lines) or JSONL with a `text` field.'),
  out: z.string().min(1).describe('Run folder: checkpoints, metrics.jsonl, and the final model in out itself (config.json, model.safetensors, tokenizer files: loadable as out, like TRL\'s output_dir).'),
  seqLen: limit.tokens(2).default(256).describe('Tokens per training row (default 256, the issue benchmark size).'),
  resume: z.boolean().default(false).describe('Continue from the latest checkpoint in `out`.'),
  parseSpecialTokens: z
    .boolean()
    .default(false)
    .describe('Match special-token strings in the corpus (`<|eot_id|>`) as control tokens, for chat-formatted corpora; default: plain text.'),
});
export type PretrainConfigInput = z.input<typeof PretrainConfigSchema>;
export type PretrainConfig = z.infer<typeof PretrainConfigSchema>;

export interface TrainerHooks {
  onLog?: (record: LogRecord) => void;
  /** Called once before training with the number of steps. */
  onStart?: (info: { numSteps: number; numTrainRows: number; numEvalRows: number }) => void;
}

export async function pretrain(input: PretrainConfigInput, hooks: TrainerHooks = {}): Promise<TrainingResult> {
  // 1) validate: the config, then the model (a causal LM whose context holds seqLen) and the machine
  const config = validateConfig(PretrainConfigSchema, input, 'pretrain config');
  const { backend, tokenizer, padId } = await setupRecipe(config, {
    command: 'pretrain',
    method: 'pretraining',
    model: 'causal-lm',
    length: config.seqLen,
    lengthField: 'seqLen',
    longerThanContext: 'refuse',
    sequencesPerRow: 1,
  });

  // 2) setup: data (tokenize, pack, hold out) → model
  const documents = await readCorpus(config.corpus);
  const bos = tokenizer.bosTokenId;
  const eos = tokenizer.eosTokenId ?? tokenizer.eotTokenId;
  const endIds = new Set([tokenizer.eosTokenId, tokenizer.eotTokenId].filter((id) => id !== undefined));
  const rows: SequenceRow[] = documents.map((doc) => {
    // BOS/EOS wrap each document unless its text already carries them (chat-formatted corpora, parseSpecialTokens).
    const body = tokenizer.encode(doc, { parseSpecialTokens: config.parseSpecialTokens });
    const head = bos !== undefined && body[0] !== bos ? [bos] : [];
    const tail = eos !== undefined && !endIds.has(body[body.length - 1]) ? [eos] : [];
    const ids = [...head, ...body, ...tail];
    return { ids, targetMask: ids.map((_, i) => (i === 0 ? 0 : 1)) };
  });
  const packed = packRows(rows, { seqLen: config.seqLen, padId, allowSplit: true });
  if (packed.batchSize < 2) throw new Error(`pretrain: ${config.corpus} gives ${packed.batchSize} row of ${config.seqLen} tokens; need at least 2 (a train and an eval row)`);
  // row indices of the packed batch; pretraining always holds out at least one row
  const split = holdOut(Array.from({ length: packed.batchSize }, (_, i) => i), { evalFraction: config.evalFraction, seed: config.seed, atLeastOne: true });
  const evalRows = split.eval;
  const trainRows = split.train;
  const evalBatches: TokenBatch[] = [];
  const microSize = config.microBatchSize ?? config.batchSize;
  for (let i = 0; i < evalRows.length; i += microSize) evalBatches.push(selectRows(packed, evalRows.slice(i, i + microSize)));
  const numSteps = numTrainingSteps(trainRows.length, config);
  hooks.onStart?.({ numSteps, numTrainRows: trainRows.length, numEvalRows: evalRows.length });

  const model = await loadPretrained(config.model);

  // 3) train the causal-LM task (this thread, or workers splitting each batch by rows) and
  // 4) save: the loop writes out/checkpoint-N, out/metrics.jsonl and the final model into out itself
  try {
    return await trainWithTask<TokenBatch>({
      backend,
      task: { kind: CAUSAL_LM_TASK_KIND },
      runDir: config.out,
      model,
      options: config,
      numSteps,
      batchesAt: (step) =>
        microBatches(batchIndicesAt(step, trainRows.length, config.batchSize, config.seed).map((i) => trainRows[i]), config).map((idx) =>
          selectRows(packed, idx),
        ),
      numTokensOf: (batch) => batch.numRealTokens,
      evaluate: () => evaluateCausalLm(model, evalBatches),
      tokenizerDir: config.model,
      resume: config.resume,
      onLog: hooks.onLog,
      owner: { command: 'pretrain', model: config.model },
    });
  } finally {
    model.dispose();
  }
}
