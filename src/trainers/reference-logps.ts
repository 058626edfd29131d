/**
 * Reference log-probs for DPO, computed once before training and stored with the run.
 *
 * DPO compares the policy with a frozen reference π_ref (the SFT model it starts from). Both
 * terms log π_ref(y_w|x) and log π_ref(y_l|x) depend only on the data and on the starting weights,
 * so they are computed in one pass over the data with the starting model — which is then trained
 * in place as the policy — and written to `OUT/reference_logps.jsonl`. No second model is ever
 * held in memory (holding one is TRL's most reported DPO memory problem).
 *
 * Each stored row carries a hash of what its values depend on besides the model: the prompt,
 * chosen and rejected token ids and the masked formatting ids. On resume a row is reused only when
 * its hash matches, so changed or reordered data never reads stale values.
 *
 * The sum is over the response tokens minus the formatting tokens (Llama 3 §4.1.4), exactly the
 * positions the policy's mask `targets × formattingTokenMask(labels)` keeps: response token k is
 * the label of the position before it, so "label is a formatting id" is "responseIds[k] is one".
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { z } from 'zod';
import type { LlamaModel } from '../model/llama.js';
import { readJsonl, writeJsonlAtomic } from '../../data/jsonl.js';
import * as tf from '@tensorflow/tfjs';
import { batchTokenLogprobs } from '../inference/token-logprobs.js';
import { collatePairs, maskedSequenceLogps, type PreferencePairIds } from '../tasks/dpo.js';

export const REFERENCE_LOGPS_FILE = 'reference_logps.jsonl';

/** Summed log-probs per pair, in pair order. */
export interface PairLogps {
  chosen: Float64Array;
  rejected: Float64Array;
}

export interface ReferenceLogpsOptions {
  /** Sequences per forward pass (each pair is two sequences). */
  batchSize: number;
  padId: number;
  /** Ids left out of the sums (empty: every response token counts). */
  formattingTokenIds: readonly number[];
}

/**
 * log π(y_w|x) and log π(y_l|x) of every pair under `model`, summed over response tokens minus
 * the formatting tokens — computed exactly as the DPO task computes the policy's
 * (`maskedSequenceLogps` over the chosen-then-rejected layout of `collatePairs`, float32), so a
 * policy equal to the reference gets log-ratios of exactly 0 and ties (`rewards/accuracies` 0 at
 * the first step, as in TRL), whatever the batches. Pairs of similar length are batched together
 * (`batchSize` sequences, i.e. batchSize/2 pairs, per forward pass).
 */
export function computeReferenceLogps(model: LlamaModel, pairs: readonly PreferencePairIds[], opts: ReferenceLogpsOptions): PairLogps {
  const chosen = new Float64Array(pairs.length);
  const rejected = new Float64Array(pairs.length);
  const length = (p: PreferencePairIds) => p.promptIds.length + Math.max(p.chosenIds.length, p.rejectedIds.length);
  const order = pairs.map((p, i) => ({ i, len: length(p) })).sort((a, b) => a.len - b.len).map((x) => x.i);
  const pairsPerBatch = Math.max(1, Math.floor(opts.batchSize / 2));
  for (let start = 0; start < order.length; start += pairsPerBatch) {
    const indices = order.slice(start, start + pairsPerBatch);
    const batch = collatePairs(indices.map((i) => pairs[i]), { chosen: [], rejected: [] }, opts.padId);
    const seqLogps = tf.tidy(() => maskedSequenceLogps(batchTokenLogprobs(model, batch.tokens, { positions: 'targets' }), batch.tokens, opts.formattingTokenIds).seqLogps); // [2P]
    const values = seqLogps.dataSync();
    seqLogps.dispose();
    indices.forEach((i, j) => {
      chosen[i] = values[j];
      rejected[i] = values[indices.length + j];
    });
  }
  return { chosen, rejected };
}

/** Hash of everything a pair's reference values depend on besides the model (hex, 32 chars). */
export function pairHash(pair: PreferencePairIds, formattingTokenIds: readonly number[]): string {
  const key = JSON.stringify([pair.promptIds, pair.chosenIds, pair.rejectedIds, [...formattingTokenIds].sort((a, b) => a - b)]);
  return createHash('sha256').update(key).digest('hex').slice(0, 32);
}

/** One line of `reference_logps.jsonl`. */
export const ReferenceLogpsRowSchema = z.object({
  split: z.enum(['train', 'eval']).describe('Which set of the run the pair belongs to.'),
  index: z.number().int().nonnegative().describe('Position of the pair in its split (after filtering and tokenization).'),
  hash: z.string().describe('pairHash of the pair: its token ids and the masked formatting ids.'),
  chosen_logp: z.number().describe('log π_ref(chosen | prompt), summed over response tokens minus formatting tokens.'),
  rejected_logp: z.number().describe('log π_ref(rejected | prompt), same mask.'),
});
export type ReferenceLogpsRow = z.infer<typeof ReferenceLogpsRowSchema>;

export interface StoredReferenceLogps {
  train: PairLogps;
  eval: PairLogps;
  /** Distinct pairs whose values were computed by this call. */
  numComputed: number;
  /** Pairs whose values were read back from `file` (matching hash). */
  numReused: number;
  file: string;
}

export interface LoadOrComputeArgs extends ReferenceLogpsOptions {
  /** The `reference_logps.jsonl` file to read (when `reuse`) and write. */
  file: string;
  /** The starting model: the reference. */
  model: LlamaModel;
  train: readonly PreferencePairIds[];
  eval: readonly PreferencePairIds[];
  /** Read existing values back (resume); otherwise everything is computed afresh. */
  reuse: boolean;
}

/**
 * The reference values of every train and eval pair: rows of an existing `file` whose hash matches
 * are reused (when `reuse`), the rest computed with `model` in one batched pass. The file is
 * rewritten (atomically) only when something was computed, so a resume over unchanged data leaves
 * it untouched.
 */
export async function loadOrComputeReferenceLogps(args: LoadOrComputeArgs): Promise<StoredReferenceLogps> {
  // 1) what the file already holds, by hash (equal hashes have equal values under one model)
  const known = new Map<string, { chosen: number; rejected: number }>();
  let storedRows: ReferenceLogpsRow[] = [];
  if (args.reuse && fs.existsSync(args.file)) {
    storedRows = (await readJsonl(args.file, ReferenceLogpsRowSchema)).rows.map((r) => r.value);
    for (const row of storedRows) known.set(row.hash, { chosen: row.chosen_logp, rejected: row.rejected_logp });
  }
  // 2) compute the missing pairs of both splits together (a pair repeated in the data, once)
  const splits = { train: args.train, eval: args.eval } as const;
  const hashes = { train: args.train.map((p) => pairHash(p, args.formattingTokenIds)), eval: args.eval.map((p) => pairHash(p, args.formattingTokenIds)) };
  const missing = new Map<string, PreferencePairIds>();
  let numReused = 0;
  for (const split of ['train', 'eval'] as const) {
    hashes[split].forEach((h, index) => {
      if (known.has(h)) numReused++;
      else missing.set(h, splits[split][index]);
    });
  }
  const computed = computeReferenceLogps(args.model, [...missing.values()], args);
  // A NaN here would be stored as null and train every later step on garbage: stop, naming the pair.
  const missingHashes = [...missing.keys()];
  for (let i = 0; i < missingHashes.length; i++) {
    const bad = !Number.isFinite(computed.chosen[i]!) ? computed.chosen[i] : !Number.isFinite(computed.rejected[i]!) ? computed.rejected[i] : undefined;
    if (bad === undefined) continue;
    const split = hashes.train.includes(missingHashes[i]!) ? 'train' : 'eval';
    const index = hashes[split].indexOf(missingHashes[i]!);
    throw new Error(`dpo: reference log-prob of ${split} pair ${index + 1} is ${bad}: the reference model's output is not finite; nothing was written to ${args.file}`);
  }
  [...missing.keys()].forEach((h, i) => known.set(h, { chosen: computed.chosen[i], rejected: computed.rejected[i] }));
  // 3) gather in pair order and store
  const out = {
    train: { chosen: new Float64Array(args.train.length), rejected: new Float64Array(args.train.length) },
    eval: { chosen: new Float64Array(args.eval.length), rejected: new Float64Array(args.eval.length) },
  };
  const rows: ReferenceLogpsRow[] = [];
  for (const split of ['train', 'eval'] as const) {
    hashes[split].forEach((hash, index) => {
      const v = known.get(hash)!;
      out[split].chosen[index] = v.chosen;
      out[split].rejected[index] = v.rejected;
      rows.push({ split, index, hash, chosen_logp: v.chosen, rejected_logp: v.rejected });
    });
  }
  const fileIsCurrent =
    storedRows.length === rows.length && rows.every((r, i) => r.split === storedRows[i].split && r.index === storedRows[i].index && r.hash === storedRows[i].hash);
  if (!fileIsCurrent) await writeJsonlAtomic(args.file, rows);
  return { ...out, numComputed: missing.size, numReused, file: args.file };
}
