/**
 * Rejection sampling (best-of-K, Llama 2 §3.2.3 / Llama 3 §4.2.2): K samples of each prompt are
 * scored by the reward model and the best one becomes an SFT target; pairs of samples become
 * preference data.
 *
 * Scoring is handed in as a function (`RewardScorer`): samplers/ never imports the trainers, and
 * the CLI passes `scoreResponses` (src/inference/reward-scoring.ts), which tokenizes every
 * (prompt, sample) exactly as the reward trainer does, right-pads batches of similar length and
 * reads each score at the row's last real token (`LlamaModel.rewards`).
 *
 * Pair strategies (the rejected side; the chosen side is always the best sample):
 * - `best-worst` (default): the lowest-scored sample, the widest margin the K samples offer;
 * - `best-random`: a uniformly drawn other sample, closer to the policy's typical output
 *   (prompt j draws from `new Rng(seed).fork(j)`, so the choice does not depend on other prompts).
 * Samples with the same text as the best are never its rejected side (a pair must differ). With
 * `minRewardGap`, a pair whose reward difference is below it is not made: the reward model
 * cannot tell the two apart with confidence.
 */
import { z } from 'zod';
import { Rng } from '../src/util/rng.js';
import type { FinishReason } from './generate.js';
import type { Conversation, Message } from '../data/rows.js';

export const PAIR_STRATEGIES = ['best-worst', 'best-random'] as const;
export type PairStrategy = (typeof PAIR_STRATEGIES)[number];

export const RejectionOptionsSchema = z
  .object({
    pairStrategy: z
      .enum(PAIR_STRATEGIES)
      .default('best-worst')
      .describe('Rejected side of each preference pair: best-worst (the lowest-scored sample) or best-random (a random other sample).'),
    minRewardGap: z
      .number()
      .min(0)
      .default(0)
      .describe('Make no pair when reward(chosen) − reward(rejected) is below this; 0 keeps every pair of distinct texts.'),
    seed: z.number().int().default(0).describe('Seed of the best-random choice; prompt j draws from Rng(seed).fork(j).'),
  })
  .strict();
export type RejectionOptions = z.input<typeof RejectionOptionsSchema>;

/** One sample to score: the prompt it answers and its text. */
export interface RewardInput {
  prompt: Conversation;
  response: string;
}

/** Rewards of (prompt, response) rows, in input order (batched by the scorer). */
export type RewardScorer = (rows: readonly RewardInput[]) => number[];

/** A generated sample before scoring. */
export interface GeneratedSample {
  text: string;
  numTokens: number;
  finishReason: FinishReason;
}

/** A prompt with its K samples. */
export interface SampledPrompt {
  prompt: Conversation;
  id?: string;
  samples: GeneratedSample[];
}

export interface ScoredSample extends GeneratedSample {
  reward: number;
}

export interface ScoredPrompt {
  prompt: Conversation;
  id?: string;
  samples: ScoredSample[];
}

/** A row of samples.jsonl; `best` is the index of the best sample in `samples`. */
export interface SamplesRow {
  id?: string;
  prompt: Conversation;
  samples: { text: string; reward: number; num_tokens: number; finish_reason: FinishReason }[];
  best: number;
}

/** A row of sft.jsonl (`SftRowSchema`): `{prompt, response}`, or `{messages}` for a conversation prompt. */
export type SftOutputRow = { id?: string; prompt: string; response: string } | { id?: string; messages: Message[] };

/** A row of preferences.jsonl (`PreferenceRowSchema`), with the two rewards as metadata. */
export interface PreferenceOutputRow {
  id?: string;
  prompt: Conversation;
  chosen: string;
  rejected: string;
  chosen_reward: number;
  rejected_reward: number;
}

export interface RejectionSummary {
  numPrompts: number;
  numSamples: number;
  /** Mean reward over every sample. */
  rewardMean: number;
  /** Mean over prompts of the best sample's reward. */
  bestOfKMean: number;
  /** bestOfKMean − rewardMean: what selection buys over sampling once. */
  gain: number;
  numPairs: number;
  /** Prompts without a pair because the gap was below minRewardGap. */
  numSkippedGap: number;
  /** Prompts without a pair because every other sample has the best sample's text. */
  numSkippedIdentical: number;
}

export interface RejectionRows {
  samples: SamplesRow[];
  sft: SftOutputRow[];
  preferences: PreferenceOutputRow[];
  summary: RejectionSummary;
}

/** Index of the highest reward (the first on ties). Throws on an empty list or a non-finite reward. */
export function bestIndex(rewards: readonly number[]): number {
  if (rewards.length === 0) throw new Error('samplers/rejection: bestIndex: no rewards');
  let best = 0;
  rewards.forEach((reward, i) => {
    if (!Number.isFinite(reward)) throw new Error(`samplers/rejection: bestIndex: reward ${i} is ${reward}`);
    if (reward > rewards[best]!) best = i;
  });
  return best;
}

/** Scores every sample of every prompt with one call of the scorer; rewards must be finite. */
export function scorePrompts(prompts: readonly SampledPrompt[], score: RewardScorer): ScoredPrompt[] {
  const rows: RewardInput[] = prompts.flatMap((p) => p.samples.map((s) => ({ prompt: p.prompt, response: s.text })));
  const rewards = score(rows);
  if (rewards.length !== rows.length) throw new Error(`samplers/rejection: the scorer returned ${rewards.length} rewards for ${rows.length} samples`);
  let next = 0;
  return prompts.map((p, j) => ({
    prompt: p.prompt,
    ...(p.id !== undefined ? { id: p.id } : {}),
    samples: p.samples.map((s, i) => {
      const reward = rewards[next++]!;
      if (!Number.isFinite(reward)) throw new Error(`samplers/rejection: prompts[${j}].samples[${i}]: reward is ${reward}`);
      return { ...s, reward };
    }),
  }));
}

type PairChoice = { chosen: number; rejected: number } | { skipped: 'gap' | 'identical' };

/** The preference pair of one prompt's samples, or why there is none. */
export function choosePair(samples: readonly ScoredSample[], strategy: PairStrategy, minRewardGap: number, rng: Rng): PairChoice {
  const chosen = bestIndex(samples.map((s) => s.reward));
  const candidates = samples.map((_, i) => i).filter((i) => samples[i]!.text !== samples[chosen]!.text);
  if (candidates.length === 0) return { skipped: 'identical' };
  let rejected: number;
  if (strategy === 'best-worst') {
    rejected = candidates.reduce((worst, i) => (samples[i]!.reward < samples[worst]!.reward ? i : worst));
  } else {
    rejected = candidates[rng.nextInt(candidates.length)]!;
  }
  if (samples[chosen]!.reward - samples[rejected]!.reward < minRewardGap) return { skipped: 'gap' };
  return { chosen, rejected };
}

/** The SFT row of a prompt and its best response (a conversation prompt gets the answer appended as an assistant turn). */
function sftRow(prompt: Conversation, response: string, id: string | undefined): SftOutputRow {
  const withId = id !== undefined ? { id } : {};
  if (typeof prompt === 'string') return { ...withId, prompt, response };
  return { ...withId, messages: [...prompt.map((m) => ({ role: m.role, content: m.content })), { role: 'assistant', content: response }] };
}

/** samples.jsonl, sft.jsonl and preferences.jsonl rows plus the summary, from scored prompts. */
export function buildRejectionRows(prompts: readonly ScoredPrompt[], optionsInput: RejectionOptions = {}): RejectionRows {
  const options = RejectionOptionsSchema.parse(optionsInput);
  const base = new Rng(options.seed);
  const out: RejectionRows = {
    samples: [],
    sft: [],
    preferences: [],
    summary: { numPrompts: prompts.length, numSamples: 0, rewardMean: 0, bestOfKMean: 0, gain: 0, numPairs: 0, numSkippedGap: 0, numSkippedIdentical: 0 },
  };
  let rewardSum = 0;
  let bestSum = 0;
  prompts.forEach((p, j) => {
    if (p.samples.length === 0) throw new Error(`samplers/rejection: prompts[${j}]: no samples`);
    const best = bestIndex(p.samples.map((s) => s.reward));
    const withId = p.id !== undefined ? { id: p.id } : {};
    out.samples.push({
      ...withId,
      prompt: p.prompt,
      samples: p.samples.map((s) => ({ text: s.text, reward: s.reward, num_tokens: s.numTokens, finish_reason: s.finishReason })),
      best,
    });
    out.sft.push(sftRow(p.prompt, p.samples[best]!.text, p.id));
    const pair = choosePair(p.samples, options.pairStrategy, options.minRewardGap, base.fork(j));
    if ('skipped' in pair) {
      if (pair.skipped === 'gap') out.summary.numSkippedGap++;
      else out.summary.numSkippedIdentical++;
    } else {
      const chosen = p.samples[pair.chosen]!;
      const rejected = p.samples[pair.rejected]!;
      out.preferences.push({ ...withId, prompt: p.prompt, chosen: chosen.text, rejected: rejected.text, chosen_reward: chosen.reward, rejected_reward: rejected.reward });
    }
    for (const s of p.samples) rewardSum += s.reward;
    bestSum += p.samples[best]!.reward;
    out.summary.numSamples += p.samples.length;
  });
  out.summary.numPairs = out.preferences.length;
  if (prompts.length > 0) {
    out.summary.rewardMean = rewardSum / out.summary.numSamples;
    out.summary.bestOfKMean = bestSum / prompts.length;
    out.summary.gain = out.summary.bestOfKMean - out.summary.rewardMean;
  }
  return out;
}
