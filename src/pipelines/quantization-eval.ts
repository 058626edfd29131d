/**
 * Judging a quantization by what it does to the policy's outputs, as the Llama 3 report did for
 * FP8 inference (§4.2: the reward model's score distribution over 100,000 responses from BF16
 * and FP8 inference):
 *
 *   1) sample  — K samples of every prompt from the full-precision policy and from the quantized
 *                one, with the same seeds (sample i of prompt j uses seed + j·K + i in both), so
 *                differences come from the weights and not from the random streams;
 *   2) greedy  — one greedy (temperature 0) continuation of every prompt from each, for the
 *                fraction of identical outputs;
 *   3) score   — every sample by the reward model (and by a judge when one is given);
 *   4) compare — mean score difference (quantized − full) with a 95% percentile-bootstrap interval
 *                over prompts (each prompt's mean difference over its K paired samples is one
 *                unit), the two-sample Kolmogorov–Smirnov statistic and its p-value.
 */
import { loadPretrained } from '../model/pretrained.js';
import type { LlamaModel } from '../model/llama.js';
import { quantizationOf, weightBytes, type WeightBytes } from '../model/quantization/quantize-model.js';
import type { QuantizationOptions } from '../model/quantization/options.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { scoreResponses } from '../inference/reward-scoring.js';
import { bootstrapMeanInterval, ksPValue, ksStatistic, mean, standardDeviation, type Interval } from '../eval/statistics.js';
import type { Conversation } from '../../data/rows.js';
import { samplePolicy, type PolicySamples, type PolicySamplingOptions } from '../../samplers/policy-sampler.js';
import type { SamplingStats } from '../../samplers/engine.js';
import { rewardTokenizerDir, type RejectionPrompt } from './rejection-sampling.js';

export interface QuantizationEvalOptions {
  /** Full-precision causal LM folder. */
  policyDir: string;
  /** The same policy quantized (`tfalign quantize`), with a tokenizer or sharing the policy's. */
  quantizedDir: string;
  rewardModelDir: string;
  prompts: readonly RejectionPrompt[];
  /** K, decoding, seed, chat rendering, engine: the same for both policies. */
  sampling: Omit<PolicySamplingOptions, 'describePrompt' | 'onPromptDone'>;
  /** Sequences per reward-model forward, and chat rendering of what is scored. */
  scoring: { batchSize: number; chat?: boolean };
  /** A judge's quality score in [0, 1] of a response, when the task has one. */
  judgeScore?: (prompt: Conversation | string, response: string) => number;
  /** Bootstrap resamples / seed of the mean-difference interval. */
  bootstrap?: { numResamples?: number; seed?: number };
  /** Called as each step starts (progress lines). */
  onStep?: (step: 'sample full' | 'sample quantized' | 'greedy' | 'score') => void;
}

/** Two score distributions compared. */
export interface ScoreComparison {
  full: { mean: number; sd: number; n: number };
  quantized: { mean: number; sd: number; n: number };
  /** mean(quantized) − mean(full), paired by prompt and seed, 95% bootstrap interval over prompts. */
  meanDifference: Interval;
  /** Whether 0 lies inside the interval. */
  zeroInInterval: boolean;
  ks: { statistic: number; pValue: number };
  fullScores: number[];
  quantizedScores: number[];
}

export interface QuantizationEvalResult {
  numPrompts: number;
  numSamplesPerPrompt: number;
  quantization: QuantizationOptions;
  /** Number of quantized projections. */
  numQuantizedWeights: number;
  weightBytes: { full: WeightBytes; quantized: WeightBytes };
  reward: ScoreComparison;
  judge?: ScoreComparison;
  /** Fraction of (prompt, seed) pairs whose sampled texts are identical. */
  identicalSampleFraction: number;
  /** Greedy outputs: fraction identical, and how long they agree before diverging (characters). */
  greedy: { identicalFraction: number; meanCommonPrefixChars: number; meanChars: number };
  sampling: { full: SamplingStats; quantized: SamplingStats };
  /** Per prompt, per sample: both texts and scores. */
  samples: { prompt: Conversation | string; id?: string; full: string; quantized: string; fullReward: number; quantizedReward: number; fullJudge?: number; quantizedJudge?: number }[][];
}

/** Compares two K-per-prompt score tables paired by (prompt, sample). */
export function compareScores(full: readonly (readonly number[])[], quantized: readonly (readonly number[])[], bootstrap: { numResamples?: number; seed?: number } = {}): ScoreComparison {
  const fullScores = full.flat();
  const quantizedScores = quantized.flat();
  const perPromptDifference = full.map((row, j) => mean(quantized[j]!) - mean(row));
  const meanDifference = bootstrapMeanInterval(perPromptDifference, bootstrap);
  // The point estimate is the difference of the overall means (equal to the mean of per-prompt differences when every prompt has K samples).
  meanDifference.estimate = mean(quantizedScores) - mean(fullScores);
  const statistic = ksStatistic(fullScores, quantizedScores);
  return {
    full: { mean: mean(fullScores), sd: standardDeviation(fullScores), n: fullScores.length },
    quantized: { mean: mean(quantizedScores), sd: standardDeviation(quantizedScores), n: quantizedScores.length },
    meanDifference,
    zeroInInterval: meanDifference.low <= 0 && 0 <= meanDifference.high,
    ks: { statistic, pValue: ksPValue(statistic, fullScores.length, quantizedScores.length) },
    fullScores,
    quantizedScores,
  };
}

function commonPrefix(a: string, b: string): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/** Samples (and greedy outputs) of one policy folder; the model is loaded and disposed here. */
async function sampleFolder(
  dir: string,
  tok: Tokenizer,
  texts: readonly Conversation[],
  o: QuantizationEvalOptions,
  describe: (j: number) => string,
): Promise<{ sampled: PolicySamples; greedy: PolicySamples; model: { quantization?: QuantizationOptions; numQuantized: number; bytes: WeightBytes } }> {
  const model: LlamaModel = await loadPretrained(dir);
  try {
    const sampled = samplePolicy(model, tok, texts, { ...o.sampling, describePrompt: describe });
    o.onStep?.('greedy');
    const greedy = samplePolicy(model, tok, texts, { ...o.sampling, numSamples: 1, decoding: { ...o.sampling.decoding, temperature: 0 }, describePrompt: describe });
    const q = quantizationOf(model);
    return { sampled, greedy, model: { quantization: q?.options, numQuantized: q?.weights.size ?? 0, bytes: weightBytes(model) } };
  } finally {
    model.dispose();
  }
}

export async function runQuantizationEval(o: QuantizationEvalOptions): Promise<QuantizationEvalResult> {
  const labels = o.prompts.map((p, j) => p.label ?? `prompt ${j}`);
  const describe = (j: number) => labels[j]!;
  const texts = o.prompts.map((p) => p.prompt as Conversation);
  const policyTok = await Tokenizer.fromFolder(o.policyDir);
  // 1)–2) the same prompts, seeds and decoding through both models
  o.onStep?.('sample full');
  const full = await sampleFolder(o.policyDir, policyTok, texts, o, describe);
  if (full.model.quantization) throw new Error(`--policy: ${o.policyDir} is itself quantized; give the full-precision policy`);
  o.onStep?.('sample quantized');
  const quantizedTok = await Tokenizer.fromFolder(rewardTokenizerDir(o.quantizedDir, o.policyDir));
  const quantized = await sampleFolder(o.quantizedDir, quantizedTok, texts, o, describe);
  if (!quantized.model.quantization) throw new Error(`--quantized: ${o.quantizedDir} is not quantized (no quantization_config); make it with tfalign quantize`);

  // 3) score every sample of both with the reward model (one load, one pass)
  o.onStep?.('score');
  const k = o.sampling.numSamples;
  const fullTexts = full.sampled.samples.map((row) => row.map((s) => s.text));
  const quantizedTexts = quantized.sampled.samples.map((row) => row.map((s) => s.text));
  const inputs = [...fullTexts, ...quantizedTexts].flatMap((row, r) => row.map((response) => ({ prompt: o.prompts[r % o.prompts.length]!.prompt, response })));
  const rm = await loadPretrained(o.rewardModelDir);
  let rewards: number[];
  try {
    const numPerModel = o.prompts.length * k;
    const describeRow = (i: number) => `${labels[Math.floor((i % numPerModel) / k)]} sample ${i % k} (${i < numPerModel ? 'full precision' : 'quantized'})`;
    rewards = scoreResponses(rm, await Tokenizer.fromFolder(rewardTokenizerDir(o.rewardModelDir, o.policyDir)), inputs, { ...o.scoring, describeRow });
  } finally {
    rm.dispose();
  }
  const table = (offset: number) => o.prompts.map((_, j) => rewards.slice(offset + j * k, offset + (j + 1) * k));
  const fullRewards = table(0);
  const quantizedRewards = table(o.prompts.length * k);
  const judgeTable = (rows: string[][]) => o.prompts.map((p, j) => rows[j]!.map((text) => o.judgeScore!(p.prompt, text)));
  const fullJudge = o.judgeScore ? judgeTable(fullTexts) : undefined;
  const quantizedJudge = o.judgeScore ? judgeTable(quantizedTexts) : undefined;

  // 4) compare
  let numIdentical = 0;
  fullTexts.forEach((row, j) => row.forEach((text, i) => (numIdentical += text === quantizedTexts[j]![i] ? 1 : 0)));
  const fullGreedy = full.greedy.samples.map((row) => row[0]!);
  const quantizedGreedy = quantized.greedy.samples.map((row) => row[0]!);
  const prefixes = fullGreedy.map((s, j) => commonPrefix(s.text, quantizedGreedy[j]!.text));
  return {
    numPrompts: o.prompts.length,
    numSamplesPerPrompt: k,
    quantization: quantized.model.quantization,
    numQuantizedWeights: quantized.model.numQuantized,
    weightBytes: { full: full.model.bytes, quantized: quantized.model.bytes },
    reward: compareScores(fullRewards, quantizedRewards, o.bootstrap),
    ...(fullJudge && quantizedJudge ? { judge: compareScores(fullJudge, quantizedJudge, o.bootstrap) } : {}),
    identicalSampleFraction: numIdentical / (o.prompts.length * k),
    greedy: {
      identicalFraction: fullGreedy.filter((s, j) => s.text === quantizedGreedy[j]!.text).length / fullGreedy.length,
      meanCommonPrefixChars: mean(prefixes),
      meanChars: mean(fullGreedy.map((s) => s.text.length)),
    },
    sampling: { full: full.sampled.stats, quantized: quantized.sampled.stats },
    samples: o.prompts.map((p, j) =>
      fullTexts[j]!.map((text, i) => ({
        prompt: p.prompt,
        ...(p.id !== undefined ? { id: p.id } : {}),
        full: text,
        quantized: quantizedTexts[j]![i]!,
        fullReward: fullRewards[j]![i]!,
        quantizedReward: quantizedRewards[j]![i]!,
        ...(fullJudge ? { fullJudge: fullJudge[j]![i]!, quantizedJudge: quantizedJudge![j]![i]! } : {}),
      })),
    ),
  };
}
