/**
 * Choosing the next token from a row of logits: greedy (temperature 0), or sampling with
 * temperature, top-k and nucleus (top-p, Holtzman et al. 2020) filtering, in that order — the
 * order Hugging Face's logits warpers apply them. Runs on plain arrays: one row of V floats
 * per sequence per step is cheap next to the forward pass, and keeps each sequence's random
 * stream its own (sample i of a prompt draws from seed + i whatever the batch composition).
 */
import { z } from 'zod';
import type { Rng } from '../src/util/rng.js';

export const DecodingOptionsSchema = z.object({
  temperature: z.number().min(0).default(1).describe('Softmax temperature; 0 means greedy (argmax). Default 1: sample the model as it is.'),
  topK: z.number().int().min(0).default(0).describe('Keep only the K most likely tokens; 0 disables.'),
  topP: z.number().gt(0).max(1).default(1).describe('Keep the smallest set of tokens whose probability reaches P; 1 disables.'),
  maxNewTokens: z.number().int().positive().default(64).describe('Most tokens generated per sequence.'),
  stopTokenIds: z.array(z.number().int().nonnegative()).default([]).describe('Generation ends after any of these (EOS / <|eot_id|>).'),
});
export type DecodingOptions = z.infer<typeof DecodingOptionsSchema>;

/** Index of the largest value (first on ties, like torch.argmax). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * The filtered, renormalised distribution as (token, probability) pairs sorted by
 * probability, descending. Exposed for tests and for the engine's logprob reporting.
 */
export function filteredDistribution(logits: ArrayLike<number>, opts: Pick<DecodingOptions, 'temperature' | 'topK' | 'topP'>): { ids: number[]; probs: number[] } {
  const v = logits.length;
  let max = -Infinity;
  for (let i = 0; i < v; i++) if (logits[i] > max) max = logits[i];
  // Tokens more than 40 nats below the best after temperature carry < e^-40 each: dropping them
  // before sorting changes no probability by more than V·e^-40 and avoids sorting the vocabulary.
  const floor = max - 40 * opts.temperature;
  const candidates: number[] = [];
  for (let i = 0; i < v; i++) if (logits[i] >= floor) candidates.push(i);
  candidates.sort((a, b) => logits[b] - logits[a] || a - b);
  const limit = opts.topK > 0 ? Math.min(opts.topK, candidates.length) : candidates.length;
  const probs: number[] = [];
  let sum = 0;
  for (let r = 0; r < limit; r++) {
    const p = Math.exp((logits[candidates[r]] - max) / opts.temperature);
    probs.push(p);
    sum += p;
  }
  // nucleus: the smallest prefix whose mass reaches topP (always at least one token)
  let kept = probs.length;
  if (opts.topP < 1) {
    let cumulative = 0;
    for (let r = 0; r < probs.length; r++) {
      cumulative += probs[r] / sum;
      if (cumulative >= opts.topP) {
        kept = r + 1;
        break;
      }
    }
  }
  let keptSum = 0;
  for (let r = 0; r < kept; r++) keptSum += probs[r];
  return { ids: candidates.slice(0, kept), probs: probs.slice(0, kept).map((p) => p / keptSum) };
}

/** The next token for one sequence. */
export function sampleToken(logits: ArrayLike<number>, opts: Pick<DecodingOptions, 'temperature' | 'topK' | 'topP'>, rng: Rng): number {
  if (opts.temperature === 0) return argmax(logits);
  if (opts.topK === 0 && opts.topP >= 1) return sampleUnfiltered(logits, opts.temperature, rng);
  const { ids, probs } = filteredDistribution(logits, opts);
  let u = rng.next();
  for (let r = 0; r < ids.length; r++) {
    u -= probs[r];
    if (u < 0) return ids[r];
  }
  return ids[ids.length - 1];
}

/** Plain temperature sampling in vocabulary order: O(V), no sort (the common case). */
function sampleUnfiltered(logits: ArrayLike<number>, temperature: number, rng: Rng): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  const weights = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += weights[i] = Math.exp((logits[i] - max) / temperature);
  let u = rng.next() * sum;
  for (let i = 0; i < logits.length; i++) {
    u -= weights[i];
    if (u < 0) return i;
  }
  return argmax(logits);
}
