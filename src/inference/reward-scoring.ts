/**
 * Scoring with a reward model: one scalar per (prompt, response), batched. Used by `rm score`,
 * rejection sampling (the RM picks the best of K samples) and the reward trainer's checks.
 *
 * A response is tokenized exactly as the reward trainer tokenizes it (`tokenizePromptResponse`:
 * prompt and response encoded as separate parts, the response ending with its end-of-turn token),
 * and its score is read at that last token (a `logprob` reward model: over the response's tokens,
 * the end-of-turn token included), so a score here is the number the trainer optimised.
 *
 * Padding never changes a score: sequences are right-padded, attention is causal and padding
 * tokens carry segment id 0 (no real token attends to them), positions restart at 0 for every
 * sequence, and the score is read at the row's own last real token. Rows are batched by length
 * (less padding) and the scores returned in input order.
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaModel } from '../model/llama.js';
import { FullAttention } from '../model/attention.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { tokenizePromptResponse } from '../tokenizer/chat-template.js';
import { padRows } from '../../data/collate.js';
import type { Message } from '../../data/rows.js';

/** One response to score. */
export interface ScoreInput {
  /** A string (one user turn) or the conversation so far, ending with a user message. */
  prompt: string | Message[];
  response: string;
}

export interface ScoreOptions {
  /** Sequences per forward pass. */
  batchSize: number;
  /** Render with the tokenizer's chat template; default: when it has one (as the trainer does). */
  chat?: boolean;
  /** Match special-token strings in the texts as control tokens (default: plain text, as the trainer does by default). */
  parseSpecialTokens?: boolean;
  /** How errors name row `index` (e.g. `scores.jsonl:7`); default `rows[index]`. */
  describeRow?: (index: number) => string;
}

/**
 * The index of each sequence's last real token: [N]. The reward head reads the hidden state
 * there (`LlamaModel.rewards`).
 */
export function lastTokenIndex(sequences: readonly (readonly number[])[]): Int32Array {
  return Int32Array.from(sequences, (ids) => ids.length - 1);
}

/**
 * Rewards of token sequences, one forward pass per chunk of `batchSize` sequences of similar
 * length; each sequence is read at its last token (`score` head), or over its response (`logprob`
 * head: `responseStarts[i]` is where sequence i's response begins, i.e. its prompt's length).
 * Returns the scores in input order.
 */
export function scoreTokenIds(model: LlamaModel, sequences: readonly (readonly number[])[], batchSize: number, padId = 0, responseStarts?: readonly number[]): number[] {
  if (!model.dims.isRewardModel) throw new Error('score: the model is a causal LM; scoring needs a reward model (LlamaForSequenceClassification, or rm train --head logprob)');
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`score: batchSize must be a positive integer, got ${batchSize}`);
  if (model.dims.rewardHead === 'logprob' && responseStarts?.length !== sequences.length) {
    throw new Error('score: a logprob reward model reads the response tokens: give responseStarts (each prompt\'s length), one per sequence');
  }
  const order = sequences.map((ids, i) => ({ i, len: ids.length })).sort((a, b) => a.len - b.len).map((x) => x.i);
  const scores = new Array<number>(sequences.length);
  for (let start = 0; start < order.length; start += batchSize) {
    const indices = order.slice(start, start + batchSize);
    const chunk = indices.map((i) => sequences[i]);
    const batch = padRows(chunk.map((ids) => ({ ids: [...ids], targetMask: ids.map(() => 0) })), padId);
    const values = tf.tidy(() => {
      const ctx = new FullAttention({ batchSize: batch.batchSize, seqLen: batch.seqLen, segmentIds: batch.segmentIds });
      const hidden = model.forward(tf.tensor2d(batch.inputIds, [batch.batchSize, batch.seqLen], 'int32'), ctx); // [B, T, C]
      const at = { lastIndex: lastTokenIndex(chunk), inputIds: batch.inputIds, ...(responseStarts ? { responseStart: indices.map((i) => responseStarts[i]!) } : {}) };
      return model.rewards(hidden, at).dataSync() as Float32Array; // [B]
    });
    indices.forEach((i, j) => {
      scores[i] = values[j];
    });
  }
  return scores;
}

/**
 * The reward of each response to its prompt, in input order. Errors name the row
 * (`describeRow`) and say what is wrong: a message-list prompt without a chat template, a token
 * id outside the model's vocabulary, or a sequence longer than the model's context.
 */
export function scoreResponses(model: LlamaModel, tokenizer: Tokenizer, rows: readonly ScoreInput[], opts: ScoreOptions): number[] {
  const describeRow = opts.describeRow ?? ((i: number) => `rows[${i}]`);
  const responseStarts: number[] = [];
  const sequences = rows.map((row, i) => {
    let ids: number[];
    try {
      const parts = tokenizePromptResponse(tokenizer, row.prompt, row.response, { chat: opts.chat, parseSpecialTokens: opts.parseSpecialTokens });
      ids = [...parts.promptIds, ...parts.responseIds];
      responseStarts.push(parts.promptIds.length);
    } catch (err) {
      throw new Error(`${describeRow(i)}: prompt: ${(err as Error).message}`);
    }
    if (ids.length > model.dims.maxPositions) {
      throw new Error(`${describeRow(i)}: response: prompt + response are ${ids.length} tokens, more than the model's context of ${model.dims.maxPositions}`);
    }
    const bad = ids.find((id) => id >= model.dims.vocabSize);
    if (bad !== undefined) throw new Error(`${describeRow(i)}: prompt: token id ${bad} is not below the model's vocabulary size ${model.dims.vocabSize} (tokenizer and model disagree)`);
    return ids;
  });
  const padId = tokenizer.batchPadId;
  const rewards = scoreTokenIds(model, sequences, opts.batchSize, padId, responseStarts);
  const bad = rewards.findIndex((r) => !Number.isFinite(r));
  if (bad >= 0) throw new Error(`${describeRow(bad)}: reward is ${rewards[bad]}: the reward model's output is not finite (its weights or this input overflow float32)`);
  return rewards;
}
