/**
 * Model-based quality scoring and selection (Llama 3, arXiv 2407.21783 §4.2.3: "we consider a
 * data sample high-quality if the RM rates it in the top quartile"; a second, Llama-based rater
 * is OR-ed with it — "we select examples that are marked as high quality by the RM or the
 * Llama-based filter").
 *
 * - `rewardQualityScores`: the reward model's score of each row's main response (the response,
 *   the last assistant turn, or a preference row's chosen) to its prompt, batched, tokenized
 *   exactly as the reward trainer does (`scoreResponses`).
 * - `judgeQualityScores`: a second scorer's `score(prompt, response)` per row, the prompt given
 *   as one string (message contents joined by blank lines) — the `Judge` of the rounds.
 * - `selectByQuality`: keep a row when its reward is in the top `topFraction` of the rows, or when
 *   the second scorer rates it at or above `judgeThreshold`.
 *
 * Top fraction, exactly: with n rows, numTop = ⌈topFraction · n⌉ and the bar is the numTop-th
 * highest reward; every row scoring at or above the bar is kept, so rows tied at the bar are
 * kept together (a row is never dropped while an equal-scoring row is kept) and the kept count
 * can exceed numTop only by such ties. 10 rows at 0.25: ⌈2.5⌉ = 3 rows.
 */
import { z } from 'zod';
import type { LlamaModel } from '../../src/model/llama.js';
import type { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { scoreResponses } from '../../src/inference/reward-scoring.js';
import { mainResponse, promptText, scoringPrompt, type CurationRow } from './row-text.js';

export const QualityOptionsSchema = z
  .object({
    topFraction: z
      .number()
      .gt(0)
      .max(1)
      .default(0.25)
      .describe('Fraction of rows kept by reward, best first (0.25: the top quartile, Llama 3\'s rule; 1 keeps every row and only adds scores).'),
    judgeThreshold: z
      .number()
      .default(0.8)
      .describe('With a second scorer, a row it rates at or above this is kept even outside the reward top fraction (judge scores are in [0, 1]).'),
  })
  .strict()
  .describe('Quality selection: reward top fraction, OR-ed with a second scorer above a threshold.');
export type QualityOptions = z.output<typeof QualityOptionsSchema>;
export type QualityOptionsInput = z.input<typeof QualityOptionsSchema>;

/** How scoring batches and names rows. */
export interface ScoringOptions {
  /** Sequences per forward pass. */
  batchSize: number;
  /** Render with the tokenizer's chat template; default: when it has one. */
  chat?: boolean;
  /** How errors name row `index` (e.g. `data.jsonl:7`); default `rows[index]`. */
  describeRow?: (index: number) => string;
}

/** The reward model's score of each row's main response, in input order. */
export function rewardQualityScores(model: LlamaModel, tokenizer: Tokenizer, rows: readonly CurationRow[], opts: ScoringOptions): number[] {
  const inputs = rows.map((row) => ({ prompt: scoringPrompt(row), response: mainResponse(row) }));
  return scoreResponses(model, tokenizer, inputs, opts);
}

/** What quality selection needs from a second scorer: a score for one response (a `Judge` has it). */
export interface ResponseScorer {
  score(prompt: string, response: string): number;
}

/** The second scorer's score of each row's main response; a non-finite score is an error naming the row. */
export function judgeQualityScores(scorer: ResponseScorer, rows: readonly CurationRow[], describeRow: (index: number) => string = (i) => `rows[${i}]`): number[] {
  return rows.map((row, i) => {
    const score = scorer.score(promptText(row), mainResponse(row));
    if (typeof score !== 'number' || !Number.isFinite(score)) throw new Error(`${describeRow(i)}: judge score is ${String(score)}, expected a finite number`);
    return score;
  });
}

export interface QualitySelection {
  /** Per row: kept or not. */
  keep: boolean[];
  /** Indices of kept rows, ascending. */
  keptIndices: number[];
  /** The lowest reward kept by the top-fraction rule (the numTop-th highest; +Infinity with no rows). */
  rewardBar: number;
  /** Rows kept because their reward reaches the bar. */
  numKeptByReward: number;
  /** Rows kept only because the second scorer rates them at or above its threshold. */
  numKeptByJudgeOnly: number;
  /** Rows removed. */
  numRemoved: number;
}

/**
 * Selects rows by reward (top fraction, ties at the bar kept) OR by the second scorer
 * (`judgeScores[i] ≥ judgeThreshold`), see the module doc.
 */
export function selectByQuality(rewards: readonly number[], options: QualityOptionsInput = {}, judgeScores?: readonly number[]): QualitySelection {
  const parsed = QualityOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`quality: options.${issue.path.join('.')}: ${issue.message}`);
  }
  const { topFraction, judgeThreshold } = parsed.data;
  rewards.forEach((r, i) => {
    if (!Number.isFinite(r)) throw new Error(`quality: rewards[${i}] is ${r}`);
  });
  if (judgeScores !== undefined && judgeScores.length !== rewards.length) {
    throw new Error(`quality: ${judgeScores.length} judge scores for ${rewards.length} rows`);
  }
  const numTop = Math.ceil(topFraction * rewards.length);
  const descending = [...rewards].sort((a, b) => b - a);
  const rewardBar = numTop > 0 ? descending[numTop - 1]! : Infinity;
  const selection: QualitySelection = { keep: [], keptIndices: [], rewardBar, numKeptByReward: 0, numKeptByJudgeOnly: 0, numRemoved: 0 };
  rewards.forEach((reward, i) => {
    const byReward = reward >= rewardBar;
    const byJudge = judgeScores !== undefined && judgeScores[i]! >= judgeThreshold;
    const keep = byReward || byJudge;
    selection.keep.push(keep);
    if (keep) selection.keptIndices.push(i);
    if (byReward) selection.numKeptByReward++;
    else if (byJudge) selection.numKeptByJudgeOnly++;
    else selection.numRemoved++;
  });
  return selection;
}
