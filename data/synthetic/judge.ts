/**
 * The judge the quickstart's rounds use instead of human annotators: it compares two responses to
 * a synthetic-task prompt as a Llama 3 annotator would (arXiv 2407.21783 §4.2.1), with a preference,
 * one of four strengths, sometimes a mistake, and sometimes an edited, improved response.
 *
 * Rules, for responses a and b with task scores s_a and s_b (`task.ts`) and gap g = |s_a − s_b|:
 * 1. preference: the higher score; on a tie (g = 0) a fair coin;
 * 2. strength from the gap: g ≥ 0.5 significantly_better, g ≥ 0.25 better, g ≥ 0.1 slightly_better,
 *    otherwise marginally_better (gaps are compared with a 1e-9 slack, so 0.825 − 0.575 is 0.25);
 * 3. label noise: like people, the judge errs on close calls only. On a pair with 0 < g < `noisyGapBelow`
 *    (default 0.5: every pair but the significantly-better ones) it flips the preference with
 *    probability `labelNoise`, keeping the strength the gap gives (a mistaken annotator is not less
 *    sure). With the Llama 3 filter {significantly_better, better}, flipped `better` pairs still reach
 *    the reward model and DPO, as real annotation noise does;
 * 4. edits: with probability `editRate` the judge also returns `edited`, the preferred response with
 *    its first `editFixes` errors fixed (`fixFirstError`), which always scores above it; never when the preferred
 *    response is already correct (an edit equal to the response would make an empty pair).
 *
 * Each `compare` draws exactly three numbers from `rng` (coin, flip, edit) whatever the outcome,
 * so the verdicts for a list of pairs replay from a seed regardless of which branches were taken.
 * Identical responses get a coin-flip `marginally_better` verdict; callers drop such pairs
 * (a preference row needs chosen ≠ rejected).
 */
import { z } from 'zod';
import type { Strength } from '../rows.js';
import type { Rng } from '../../src/util/rng.js';
import { fixFirstError, score as taskScore } from './task.js';

export type { Strength };

/** A judge's answer on one pair. */
export interface JudgeVerdict {
  /** Which response the judge prefers. */
  preferred: 'a' | 'b';
  /** How much better the preferred response is. */
  strength: Strength;
  /** An improved version of the preferred response, ranked above it (edited > chosen > rejected). */
  edited?: string;
}

/**
 * What the rounds need from a source of preferences: pairwise verdicts, and a score for evaluating
 * policies on held-out prompts. A config names a module whose default export is a `Judge`.
 */
export interface Judge {
  /** The verdict on responses `a` and `b` to `prompt`; randomness (noise, edits) comes from `rng` only. */
  compare(prompt: string, a: string, b: string, rng: Rng): JudgeVerdict;
  /** The quality of `response` to `prompt`, in [0, 1]. */
  score(prompt: string, response: string): number;
}

/** Score gaps at or above which each strength is given, strongest first (rule 2). */
export const STRENGTH_THRESHOLDS: readonly { strength: Strength; minGap: number }[] = [
  { strength: 'significantly_better', minGap: 0.5 },
  { strength: 'better', minGap: 0.25 },
  { strength: 'slightly_better', minGap: 0.1 },
  { strength: 'marginally_better', minGap: 0 },
];

/** Slack on gap comparisons: score differences are sums of float terms. */
const GAP_EPSILON = 1e-9;

/** The strength a score gap earns (rule 2). */
export function strengthFromGap(gap: number): Strength {
  for (const { strength, minGap } of STRENGTH_THRESHOLDS) {
    if (gap >= minGap - GAP_EPSILON) return strength;
  }
  return 'marginally_better';
}

export const SyntheticJudgeOptionsSchema = z
  .object({
    labelNoise: z
      .number()
      .min(0)
      .max(1)
      .default(0.1)
      .describe('Probability that the judge prefers the worse response of a close pair (score gap below noisyGapBelow).'),
    editRate: z
      .number()
      .min(0)
      .max(1)
      .default(0.2)
      .describe('Probability that a verdict carries an edited response: the preferred one with its first error fixed.'),
    editFixes: z
      .number()
      .int()
      .min(1)
      .default(1)
      .describe('Errors an edit fixes, first to last (1: a light touch-up; a large number: the annotator rewrites the answer).'),
    noisyGapBelow: z
      .number()
      .min(0)
      .max(1)
      .default(0.5)
      .describe('Label noise touches only pairs whose score gap is below this; 0.5 spares significantly_better pairs.'),
  })
  .describe('Options of the synthetic task judge.');
export type SyntheticJudgeOptions = z.input<typeof SyntheticJudgeOptionsSchema>;

/** A judge of the synthetic task with the given noise and edit rates (rules in the module doc). */
export function createSyntheticJudge(options: SyntheticJudgeOptions = {}): Judge {
  const parsed = SyntheticJudgeOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`synthetic judge: options.${issue.path.join('.')}: ${issue.message}`);
  }
  const { labelNoise, editRate, editFixes, noisyGapBelow } = parsed.data;
  return {
    score: taskScore,
    compare(prompt: string, a: string, b: string, rng: Rng): JudgeVerdict {
      const coin = rng.next();
      const flipDraw = rng.next();
      const editDraw = rng.next();
      const scoreA = taskScore(prompt, a);
      const scoreB = taskScore(prompt, b);
      const gap = Math.abs(scoreA - scoreB);
      let preferred: 'a' | 'b' = scoreA === scoreB ? (coin < 0.5 ? 'a' : 'b') : scoreA > scoreB ? 'a' : 'b';
      if (gap > 0 && gap < noisyGapBelow - GAP_EPSILON && flipDraw < labelNoise) preferred = preferred === 'a' ? 'b' : 'a';
      const verdict: JudgeVerdict = { preferred, strength: strengthFromGap(gap) };
      if (editDraw < editRate) {
        const response = preferred === 'a' ? a : b;
        let edited = response;
        for (let i = 0; i < editFixes; i++) {
          const next = fixFirstError(prompt, edited);
          if (next === edited) break;
          edited = next;
        }
        if (edited !== response) verdict.edited = edited;
      }
      return verdict;
    },
  };
}

/** The judge `configs/quickstart.yaml` names (`judge: data/synthetic/judge.ts`): default options. */
export const judge: Judge = createSyntheticJudge();

export default judge;
