/**
 * One rejection-sampling step (Llama 3 §4.2.2), shared by `tfalign sample` and the round stage
 * `rejection_sample`:
 *
 *   1) sample  — K samples of every prompt from the policy (shared-prefix paged KV cache);
 *                sample i of prompt j uses seed + j·K + i whatever the number of workers;
 *   2) score   — every sample by the reward model, batched;
 *   3) select  — each prompt's best sample (or, for the `random` ablation, a uniformly random
 *                one; the reward model's scores stay recorded);
 *   4) write   — samples.jsonl (every sample with its reward), sft.jsonl (the kept samples) and
 *                preferences.jsonl (chosen = kept, rejected by the pair strategy), each atomically.
 *
 * Workers (`numWorkers` > 1) share the prompts in step 1 and the samples in step 2 through the
 * inference worker pool, each thread with its own model copy; 1 computes everything here.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadPretrained } from '../model/pretrained.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { scoreResponses } from '../inference/reward-scoring.js';
import { writeJsonlAtomic } from '../../data/jsonl.js';
import type { Conversation } from '../../data/rows.js';
import { samplePolicy, type PolicySamples, type PolicySamplingOptions } from '../../samplers/policy-sampler.js';
import { buildRejectionRows, scorePrompts, type RejectionOptions, type RejectionRows, type SampledPrompt, type ScoredPrompt } from '../../samplers/rejection.js';
import { Rng } from '../util/rng.js';
import { ensureDir } from '../util/atomic.js';
import { ShardPool } from '../inference-pool/shard-pool.js';

export interface RejectionPrompt {
  prompt: Conversation | string;
  id?: string;
  /** Where the prompt came from (`prompts.jsonl:7`), for errors. */
  label?: string;
}

export interface RejectionSamplingOptions {
  /** Causal LM folder sampled from (with its tokenizer). */
  policyDir: string;
  /** Reward model folder; its tokenizer, else the policy's. */
  rewardModelDir: string;
  prompts: readonly RejectionPrompt[];
  /** Samples per prompt, decoding, seed, chat rendering, engine, progress. */
  sampling: Omit<PolicySamplingOptions, 'describePrompt' | 'labels'>;
  /** Called once every prompt is sampled, before scoring (progress bars). */
  onSampled?: () => void;
  /** Sequences per reward-model forward, and chat rendering of what is scored. */
  scoring: { batchSize: number; chat?: boolean };
  /** `reward-model`: each prompt keeps its best sample; `random`: a uniformly random one, drawn with `selectionSeed`. */
  selection: 'reward-model' | 'random';
  selectionSeed?: number;
  /** Pair building (strategy, minimum reward gap, seed). */
  pairs: RejectionOptions;
  /** Threads sampling and scoring: 1 computes here, more start an inference worker pool. */
  numWorkers: number;
  /** Folder the three files go to (the caller owns it). */
  outDir: string;
}

export interface RejectionSamplingResult {
  scored: ScoredPrompt[];
  rows: RejectionRows;
  /** Index of the kept sample of each prompt. */
  selected: number[];
  stats: PolicySamples['stats'];
  files: { samples: string; sft: string; preferences: string };
  numWorkers: number;
}

/** The reward model's tokenizer folder: its own when it has tokenizer.json, else the policy's. */
export function rewardTokenizerDir(rewardModelDir: string, policyDir: string): string {
  return fs.existsSync(path.join(rewardModelDir, 'tokenizer.json')) ? rewardModelDir : policyDir;
}

export async function runRejectionSampling(o: RejectionSamplingOptions): Promise<RejectionSamplingResult> {
  const rewardTokDir = rewardTokenizerDir(o.rewardModelDir, o.policyDir);
  const numSamples = o.sampling.numSamples;
  const labels = o.prompts.map((p, j) => p.label ?? `prompt ${j}`);
  const pool = o.numWorkers > 1 ? await ShardPool.create({ numWorkers: o.numWorkers }) : undefined;
  try {
    // 1) sample
    const texts = o.prompts.map((p) => p.prompt);
    let sampledOutput: PolicySamples;
    if (pool) {
      sampledOutput = await pool.sample(o.policyDir, texts, { ...o.sampling, labels });
    } else {
      const policy = await loadPretrained(o.policyDir);
      try {
        sampledOutput = samplePolicy(policy, await Tokenizer.fromFolder(o.policyDir), texts, { ...o.sampling, describePrompt: (j) => labels[j]! });
      } finally {
        policy.dispose();
      }
    }
    const { samples, stats } = sampledOutput;
    o.onSampled?.();

    // 2) score
    const sampled: SampledPrompt[] = o.prompts.map((p, j) => ({ prompt: p.prompt, ...(p.id !== undefined ? { id: p.id } : {}), samples: samples[j]! }));
    const describeSample = (i: number) => `${labels[Math.floor(i / numSamples)]} sample ${i % numSamples}`;
    const inputs = sampled.flatMap((p) => p.samples.map((s) => ({ prompt: p.prompt, response: s.text })));
    let rewards: number[];
    if (pool) {
      rewards = await pool.score(o.rewardModelDir, inputs, { ...o.scoring, tokenizerDir: rewardTokDir, labels: inputs.map((_, i) => describeSample(i)) });
    } else {
      const rewardModel = await loadPretrained(o.rewardModelDir);
      try {
        rewards = scoreResponses(rewardModel, await Tokenizer.fromFolder(rewardTokDir), inputs, { ...o.scoring, describeRow: describeSample });
      } finally {
        rewardModel.dispose();
      }
    }
    const scored = scorePrompts(sampled, () => rewards);

    // 3) select (the random ablation ranks by a uniform draw instead of the reward)
    const selectionRng = new Rng(o.selectionSeed ?? 0);
    const ranked = o.selection === 'random' ? scored.map((p) => ({ ...p, samples: p.samples.map((x) => ({ ...x, reward: selectionRng.next() })) })) : scored;
    const rows = buildRejectionRows(ranked, o.pairs);
    const selected = rows.samples.map((r) => r.best);

    // 4) write
    ensureDir(o.outDir);
    const files = { samples: path.join(o.outDir, 'samples.jsonl'), sft: path.join(o.outDir, 'sft.jsonl'), preferences: path.join(o.outDir, 'preferences.jsonl') };
    await writeJsonlAtomic(files.samples, rows.samples);
    await writeJsonlAtomic(files.sft, rows.sft);
    await writeJsonlAtomic(files.preferences, rows.preferences);
    return { scored, rows, selected, stats, files, numWorkers: pool?.numWorkers ?? 1 };
  } finally {
    await pool?.close();
  }
}
