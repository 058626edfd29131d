/**
 * The six stages of a round (Llama 3 §4.1), each a function from the round's context to its
 * files and metrics. Stages read earlier stages' outputs only through the run layout, so any
 * stage can be rerun on its own once the ones before it are done.
 *
 *   1. collect_preferences  two samples per prompt from the best policy so far, compared by the judge
 *   2. train_reward_model   Bradley–Terry/ranking RM on all preferences so far
 *   3. rejection_sample     K samples per prompt, scored by the new RM, best kept
 *   4. sft                  SFT on the selected samples
 *   5. dpo                  DPO from the SFT model on the latest preferences
 *   6. evaluate             held-out judge score, RM score, win rates; picks the best policy
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadPretrained } from '../model/pretrained.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { Rng } from '../train/seed.js';
import { trainRewardModel } from '../trainers/reward.js';
import { scoreResponses } from '../trainers/reward-scoring.js';
import { sft } from '../trainers/sft.js';
import { dpo } from '../trainers/dpo.js';
import { readJsonl, writeJsonlAtomic } from '../../data/jsonl.js';
import { PreferenceRowSchema, SftRowSchema, type PreferenceRow } from '../../data/rows.js';
import { samplePolicy } from '../../samplers/policy-sampler.js';
import { buildRejectionRows, scorePrompts, type SampledPrompt } from '../../samplers/rejection.js';
import type { RunConfig } from '../config/run.js';
import type { LogRecord } from '../train/loop.js';
import type { RunLayout } from './layout.js';
import { roundStages, type ROUND_STAGES } from '../store/stages.js';
import { cleanFile, dedupFile } from '../../data/curation/steps.js';
import type { Judge } from './judge-loader.js';
import { promptsOfRound, promptText, readPrompts } from './prompts.js';
import { hasImportedPreferences, readImportedPreferences } from './annotations.js';

export type RoundStageName = (typeof ROUND_STAGES)[number] | 'curate';

/** The stages a round of this config runs, in order (`curate` after rejection sampling when enabled). */
export function stagesOf(config: RunConfig): RoundStageName[] {
  return roundStages({ curate: config.curate.enabled }) as RoundStageName[];
}

export interface StageContext {
  config: RunConfig;
  layout: RunLayout;
  round: number;
  /** The judge module, when the config names one (required for `preferences.source: judge`). */
  judge?: Judge;
  /** The base model folder. */
  basePolicy: string;
  /** The best policy before this round (the base model in round 1). */
  bestPolicy: string;
  /** This stage's (empty) output folder. */
  outDir: string;
  /** Progress and summary lines. */
  log: (line: string) => void;
  /** Training log records of the stage's trainer (metrics per step). */
  onTrainLog?: (record: LogRecord) => void;
}

export interface StageArtifact {
  kind: 'checkpoint' | 'dataset' | 'report';
  name: string;
  path: string;
  numRows?: number;
}

export interface StageOutput {
  artifacts: StageArtifact[];
  /** Summary metrics of the stage, e.g. `rm/accuracy`. */
  metrics: Record<string, number>;
  samples?: { prompt: string; promptId: string; index: number; text: string; reward: number; numTokens: number; finishReason: string; selected: boolean }[];
  preferences?: PreferenceRow[];
  /** The policy chosen for the next round (evaluate only). */
  bestPolicy?: string;
}

/** Folder of stage `stage` of round `round`. */
function stageDir(ctx: StageContext, round: number, stage: RoundStageName): string {
  return ctx.layout.stageDir(round, stage);
}

const decodingOf = (s: RunConfig['sampling'], maxNewTokens = s.maxNewTokens, temperature = s.temperature) => ({
  temperature,
  topK: s.topK,
  topP: s.topP,
  maxNewTokens,
});

/** Samples `numSamples` texts per prompt from a policy folder. */
async function sampleTexts(ctx: StageContext, policyDir: string, prompts: readonly PreferenceRow['prompt'][], numSamples: number, seed: number, opts: { maxNewTokens?: number; temperature?: number } = {}) {
  const policy = await loadPretrained(policyDir);
  const tok = await Tokenizer.fromFolder(policyDir);
  try {
    return samplePolicy(policy, tok, prompts, {
      numSamples,
      seed,
      decoding: decodingOf(ctx.config.sampling, opts.maxNewTokens, opts.temperature),
      engine: ctx.config.sampling.engine,
    });
  } finally {
    policy.dispose();
  }
}

/** Stage seed: distinct per run seed, round and stage. */
function stageSeed(ctx: StageContext, stageIndex: number): number {
  return ctx.config.seed * 1_000_003 + ctx.round * 101 + stageIndex * 7;
}

async function readPreferences(file: string): Promise<PreferenceRow[]> {
  return (await readJsonl(file, PreferenceRowSchema)).rows.map((r) => r.value);
}

// 1) collect_preferences ----------------------------------------------------------------------

export async function collectPreferences(ctx: StageContext): Promise<StageOutput> {
  return ctx.config.preferences.source === 'file' ? importedPreferences(ctx) : judgedPreferences(ctx);
}

/** `preferences.source: file`: the pairs people labeled, imported with `tfalign annotate import`. */
async function importedPreferences(ctx: StageContext): Promise<StageOutput> {
  if (!hasImportedPreferences(ctx.layout, ctx.round)) {
    throw new Error(`round ${ctx.round}: no imported preferences; label pairs and run \`tfalign annotate import --run ${ctx.config.name} --round ${ctx.round} FILE\``);
  }
  const rows = await readImportedPreferences(ctx.layout, ctx.round);
  const file = path.join(ctx.outDir, 'preferences.jsonl');
  await writeJsonlAtomic(file, rows);
  ctx.log(`collect_preferences: ${rows.length} imported pairs`);
  return { artifacts: [{ kind: 'dataset', name: 'preferences', path: file, numRows: rows.length }], metrics: { 'pref/num_pairs': rows.length }, preferences: rows };
}

/** `preferences.source: judge`: two samples per prompt from the best policy, compared by the judge. */
async function judgedPreferences(ctx: StageContext): Promise<StageOutput> {
  const p = ctx.config.preferences;
  const judge = ctx.judge!;
  const prompts = promptsOfRound(await readPrompts(ctx.layout.trainPrompts), ctx.round, p.promptsPerRound);
  const { samples } = await sampleTexts(ctx, ctx.bestPolicy, prompts.map((r) => r.prompt), 2, stageSeed(ctx, 1));
  const rng = new Rng(stageSeed(ctx, 1));
  const rows: PreferenceRow[] = [];
  let numIdentical = 0;
  samples.forEach(([a, b], j) => {
    if (a!.text === b!.text) {
      numIdentical++;
      return;
    }
    const text = promptText(prompts[j]!.prompt);
    const verdict = judge.compare(text, a!.text, b!.text, rng.fork(j));
    const [chosen, rejected] = verdict.preferred === 'a' ? [a!.text, b!.text] : [b!.text, a!.text];
    rows.push({
      prompt: prompts[j]!.prompt,
      chosen,
      rejected,
      strength: verdict.strength,
      ...(verdict.edited !== undefined && verdict.edited !== chosen ? { edited: verdict.edited } : {}),
      ...(prompts[j]!.id !== undefined ? { id: prompts[j]!.id } : {}),
    });
  });
  const file = path.join(ctx.outDir, 'preferences.jsonl');
  await writeJsonlAtomic(file, rows);
  const metrics: Record<string, number> = { 'pref/num_pairs': rows.length, 'pref/num_identical': numIdentical, 'pref/num_edited': rows.filter((r) => r.edited).length };
  for (const r of rows) metrics[`pref/${r.strength}`] = (metrics[`pref/${r.strength}`] ?? 0) + 1;
  ctx.log(`collect_preferences: ${rows.length} pairs from ${prompts.length} prompts (${numIdentical} identical sample pairs skipped, ${metrics['pref/num_edited']} edited)`);
  return { artifacts: [{ kind: 'dataset', name: 'preferences', path: file, numRows: rows.length }], metrics, preferences: rows };
}

// 2) train_reward_model -----------------------------------------------------------------------

export async function trainRewardModelStage(ctx: StageContext): Promise<StageOutput> {
  // All preferences so far (Llama 3: "the reward model uses all preference data").
  const all: PreferenceRow[] = [];
  for (let r = 1; r <= ctx.round; r++) all.push(...(await readPreferences(path.join(stageDir(ctx, r, 'collect_preferences'), 'preferences.jsonl'))));
  const train = path.join(ctx.outDir, 'train.jsonl');
  await writeJsonlAtomic(train, all);
  const result = await trainRewardModel(
    { ...ctx.config.rewardModel, model: ctx.basePolicy, train, out: path.join(ctx.outDir, 'run'), backend: ctx.config.backend, seed: ctx.config.seed + ctx.round },
    { onLog: ctx.onTrainLog },
  );
  const metrics = { 'rm/accuracy': Number(result.lastEval?.accuracy), 'rm/margin': Number(result.lastEval?.margin), 'rm/num_pairs': result.data.train.numPairs, 'rm/initial_accuracy': Number(result.initialEval?.accuracy ?? NaN) };
  ctx.log(`train_reward_model: ${result.data.train.numPairs} pairs, held-out accuracy ${metrics['rm/accuracy'].toFixed(3)}, margin ${metrics['rm/margin'].toFixed(3)}`);
  return { artifacts: [{ kind: 'dataset', name: 'rm-train', path: train, numRows: all.length }, { kind: 'checkpoint', name: 'reward-model', path: result.modelDir }], metrics };
}

// 3) rejection_sample -------------------------------------------------------------------------

export async function rejectionSample(ctx: StageContext): Promise<StageOutput> {
  const s = ctx.config.sampling;
  const prompts = promptsOfRound(await readPrompts(ctx.layout.trainPrompts), ctx.round, s.promptsPerRound, ctx.config.preferences.promptsPerRound);
  const { samples, stats } = await sampleTexts(ctx, ctx.bestPolicy, prompts.map((r) => r.prompt), s.k, stageSeed(ctx, 3));
  const rmDir = path.join(stageDir(ctx, ctx.round, 'train_reward_model'), 'run', 'model');
  const rm = await loadPretrained(rmDir);
  const rmTok = await Tokenizer.fromFolder(rmDir);
  const sampled: SampledPrompt[] = prompts.map((p, j) => ({ prompt: p.prompt, ...(p.id !== undefined ? { id: p.id } : {}), samples: samples[j]! }));
  let scored;
  try {
    scored = scorePrompts(sampled, (inputs) => scoreResponses(rm, rmTok, inputs, { batchSize: 32 }));
  } finally {
    rm.dispose();
  }
  const rows = buildRejectionRows(scored, { ...s.pairs, seed: stageSeed(ctx, 3) });
  const files = { samples: path.join(ctx.outDir, 'samples.jsonl'), sft: path.join(ctx.outDir, 'sft.jsonl'), preferences: path.join(ctx.outDir, 'preferences.jsonl') };
  await writeJsonlAtomic(files.samples, rows.samples);
  await writeJsonlAtomic(files.sft, rows.sft);
  await writeJsonlAtomic(files.preferences, rows.preferences);
  const sum = rows.summary;
  // The judge's view of the same selection (when there is a judge): what best-of-K buys in true quality.
  let judgeMean = NaN;
  let judgeBest = NaN;
  if (ctx.judge) {
    const judge = ctx.judge;
    judgeMean = 0;
    judgeBest = 0;
    scored.forEach((p, j) => {
      const text = promptText(p.prompt);
      const judged = p.samples.map((x) => judge.score(text, x.text));
      judgeMean += judged.reduce((a, b) => a + b, 0) / judged.length;
      judgeBest += judged[rows.samples[j]!.best]!;
    });
  }
  const metrics = {
    'sample/reward_mean': sum.rewardMean,
    'sample/best_of_k_mean': sum.bestOfKMean,
    'sample/best_of_k_gain': sum.gain,
    'sample/judge_mean': judgeMean / scored.length,
    'sample/judge_best_of_k': judgeBest / scored.length,
    'sample/tokens_per_s': stats.tokensPerSecond,
    'sample/num_pairs': sum.numPairs,
  };
  ctx.log(
    `rejection_sample: ${sum.numPrompts} prompts × ${s.k}, reward mean ${sum.rewardMean.toFixed(3)} → best-of-${s.k} ${sum.bestOfKMean.toFixed(3)}` +
      (ctx.judge ? `; judge ${metrics['sample/judge_mean'].toFixed(3)} → ${metrics['sample/judge_best_of_k'].toFixed(3)}` : '') +
      ` (${stats.tokensPerSecond.toFixed(0)} tokens/s)`,
  );
  return {
    artifacts: [
      { kind: 'dataset', name: 'samples', path: files.samples, numRows: rows.samples.length },
      { kind: 'dataset', name: 'sft', path: files.sft, numRows: rows.sft.length },
      { kind: 'dataset', name: 'rs-preferences', path: files.preferences, numRows: rows.preferences.length },
    ],
    metrics,
    samples: scored.flatMap((p, j) =>
      p.samples.map((x, i) => ({
        prompt: promptText(p.prompt), promptId: p.id ?? String(j), index: i, text: x.text, reward: x.reward, numTokens: x.numTokens, finishReason: x.finishReason,
        selected: i === rows.samples[j]!.best,
      })),
    ),
  };
}

// 3b) curate (optional) -----------------------------------------------------------------------

/** Cleaning rules, then exact/near-duplicate removal, over the selected samples (Llama 3 §4.2.3). */
export async function curateStage(ctx: StageContext): Promise<StageOutput> {
  const input = path.join(stageDir(ctx, ctx.round, 'rejection_sample'), 'sft.jsonl');
  const cleaned = path.join(ctx.outDir, 'cleaned.jsonl');
  const out = path.join(ctx.outDir, 'sft.jsonl');
  const clean = await cleanFile({ input, out: cleaned, rejects: path.join(ctx.outDir, 'rejects-clean.jsonl'), options: ctx.config.curate.clean });
  const dedup = await dedupFile({ input: cleaned, out, rejects: path.join(ctx.outDir, 'rejects-dedup.jsonl'), options: ctx.config.curate.dedup });
  const metrics: Record<string, number> = { 'curate/num_in': clean.numIn, 'curate/num_out': dedup.numOut };
  for (const [rule, n] of [...Object.entries(clean.removed), ...Object.entries(dedup.removed)]) metrics[`curate/removed/${rule}`] = n;
  const removed = Object.entries(metrics).filter(([k, v]) => k.startsWith('curate/removed/') && v > 0).map(([k, v]) => `${k.slice(15)} ${v}`);
  ctx.log(`curate: ${clean.numIn} rows in, ${dedup.numOut} out${removed.length ? ` (removed: ${removed.join(', ')})` : ''}`);
  return { artifacts: [{ kind: 'dataset', name: 'curated-sft', path: out, numRows: dedup.numOut }], metrics };
}

// 4) sft --------------------------------------------------------------------------------------

export async function sftStage(ctx: StageContext): Promise<StageOutput> {
  const c = ctx.config.sft;
  const rounds = c.data === 'all' ? Array.from({ length: ctx.round }, (_, i) => i + 1) : [ctx.round];
  const rows: unknown[] = [];
  // The curated selection when the curate stage runs, else rejection sampling's.
  const selected = (r: number) => (ctx.config.curate.enabled ? path.join(stageDir(ctx, r, 'curate'), 'sft.jsonl') : path.join(stageDir(ctx, r, 'rejection_sample'), 'sft.jsonl'));
  for (const r of rounds) rows.push(...(await readJsonl(selected(r), SftRowSchema)).rows.map((x) => x.value));
  const train = path.join(ctx.outDir, 'train.jsonl');
  await writeJsonlAtomic(train, rows);
  const { from, data: _data, ...trainer } = c;
  const start = from === 'base' ? ctx.basePolicy : ctx.bestPolicy;
  const result = await sft({ ...trainer, model: start, train, out: path.join(ctx.outDir, 'run'), backend: ctx.config.backend, seed: ctx.config.seed + ctx.round }, { onLog: ctx.onTrainLog });
  const metrics = { 'sft/loss': Number(result.lastEval?.loss), 'sft/num_rows': rows.length };
  ctx.log(`sft: ${rows.length} rows from ${start === ctx.basePolicy ? 'the base model' : 'the previous policy'}, held-out response loss ${metrics['sft/loss'].toFixed(4)}`);
  return { artifacts: [{ kind: 'dataset', name: 'sft-train', path: train, numRows: rows.length }, { kind: 'checkpoint', name: 'sft-model', path: result.modelDir }], metrics };
}

// 5) dpo --------------------------------------------------------------------------------------

export async function dpoStage(ctx: StageContext): Promise<StageOutput> {
  const { data, ...trainer } = ctx.config.dpo;
  const rounds = data === 'all' ? Array.from({ length: ctx.round }, (_, i) => i + 1) : [ctx.round];
  const rows: PreferenceRow[] = [];
  for (const r of rounds) rows.push(...(await readPreferences(path.join(stageDir(ctx, r, 'collect_preferences'), 'preferences.jsonl'))));
  const train = path.join(ctx.outDir, 'train.jsonl');
  await writeJsonlAtomic(train, rows);
  const sftModel = path.join(stageDir(ctx, ctx.round, 'sft'), 'run', 'model');
  const result = await dpo({ ...trainer, model: sftModel, train, out: path.join(ctx.outDir, 'run'), backend: ctx.config.backend, seed: ctx.config.seed + ctx.round }, { onLog: ctx.onTrainLog });
  const e: Record<string, number | string> = result.lastEval ?? {};
  const metrics = {
    'dpo/rewards_accuracies': Number(e['rewards/accuracies']),
    'dpo/rewards_margins': Number(e['rewards/margins']),
    'dpo/logps_chosen': Number(e['logps/chosen']),
    'dpo/num_pairs': rows.length,
  };
  ctx.log(`dpo: ${rows.length} pairs, held-out rewards/accuracies ${metrics['dpo/rewards_accuracies'].toFixed(3)}, margins ${metrics['dpo/rewards_margins'].toFixed(3)}`);
  return { artifacts: [{ kind: 'dataset', name: 'dpo-train', path: train, numRows: rows.length }, { kind: 'checkpoint', name: 'policy', path: result.modelDir }], metrics };
}

// 6) evaluate ---------------------------------------------------------------------------------

/** Scores of each prompt's samples: by the judge when there is one, else by the round's reward model. */
type SampleScorer = (prompts: readonly PreferenceRow['prompt'][], samples: { text: string }[][]) => number[][];

/** A policy's samples on the held-out prompts, their scores and the mean score. */
async function scorePolicy(ctx: StageContext, policyDir: string, prompts: readonly PreferenceRow['prompt'][], scorer: SampleScorer) {
  const e = ctx.config.evaluate;
  // One seed for every round: each policy is judged on the same prompts with the same random
  // streams, so a policy scores the same whenever it is evaluated and rounds compare fairly.
  const evalSeed = ctx.config.seed * 1_000_003 + 6;
  const { samples } = await sampleTexts(ctx, policyDir, prompts, e.samplesPerPrompt, evalSeed, {
    maxNewTokens: e.maxNewTokens ?? ctx.config.sampling.maxNewTokens,
    temperature: e.temperature,
  });
  const scores = scorer(prompts, samples);
  const flat = scores.flat();
  return { samples, scores, mean: flat.reduce((a, b) => a + b, 0) / flat.length };
}

/** Fraction of (prompt, sample) pairs where `a` scores above `b`; ties count half. */
function winRate(a: number[][], b: number[][]): number {
  let wins = 0;
  let n = 0;
  a.forEach((row, j) => row.forEach((x, i) => {
    const y = b[j]![i]!;
    wins += x > y ? 1 : x === y ? 0.5 : 0;
    n++;
  }));
  return wins / n;
}

export async function evaluateStage(ctx: StageContext): Promise<StageOutput> {
  const prompts = (await readPrompts(ctx.layout.heldoutPrompts)).map((p) => p.prompt);
  const policyDir = path.join(stageDir(ctx, ctx.round, 'dpo'), 'run', 'model');
  const rmDir = path.join(stageDir(ctx, ctx.round, 'train_reward_model'), 'run', 'model');
  const rm = await loadPretrained(rmDir);
  const rmTok = await Tokenizer.fromFolder(rmDir);
  const rmScorer: SampleScorer = (ps, samples) => {
    const flat = scoreResponses(rm, rmTok, samples.flatMap((perPrompt, j) => perPrompt.map((x) => ({ prompt: ps[j]!, response: x.text }))), { batchSize: 32 });
    let k = 0;
    return samples.map((perPrompt) => perPrompt.map(() => flat[k++]!));
  };
  const judge = ctx.judge;
  const scorer: SampleScorer = judge ? (ps, samples) => samples.map((perPrompt, j) => perPrompt.map((x) => judge.score(promptText(ps[j]!), x.text))) : rmScorer;
  const scoreName = judge ? 'judge' : 'rm';
  let metrics: Record<string, number>;
  let current: Awaited<ReturnType<typeof scorePolicy>>;
  let improved: boolean;
  try {
    current = await scorePolicy(ctx, policyDir, prompts, scorer);
    const previous = await scorePolicy(ctx, ctx.bestPolicy, prompts, scorer);
    const base = ctx.bestPolicy === ctx.basePolicy ? previous : await scorePolicy(ctx, ctx.basePolicy, prompts, scorer);
    const rmScores = judge ? rmScorer(prompts, current.samples).flat() : current.scores.flat();
    // The previous best was scored on the same prompts with the same random streams just now.
    improved = current.mean >= previous.mean;
    metrics = {
      [`eval/${scoreName}_score`]: current.mean,
      [`eval/previous_${scoreName}_score`]: previous.mean,
      [`eval/base_${scoreName}_score`]: base.mean,
      'eval/rm_score': rmScores.reduce((a, b) => a + b, 0) / rmScores.length,
      'eval/win_rate_vs_previous': winRate(current.scores, previous.scores),
      'eval/win_rate_vs_base': winRate(current.scores, base.scores),
      'eval/selected': improved ? 1 : 0,
    };
    ctx.log(
      `evaluate: ${scoreName} score ${current.mean.toFixed(3)} (previous best ${previous.mean.toFixed(3)}, base ${base.mean.toFixed(3)}), win rate vs previous ${metrics['eval/win_rate_vs_previous']!.toFixed(3)}, vs base ${metrics['eval/win_rate_vs_base']!.toFixed(3)}; ` +
        (improved ? "this round's policy is the new best" : 'the previous policy stays the best'),
    );
  } finally {
    rm.dispose();
  }
  const report = path.join(ctx.outDir, 'samples.jsonl');
  await writeJsonlAtomic(report, prompts.map((prompt, j) => ({ prompt, samples: current.samples[j]!.map((x, i) => ({ text: x.text, [`${scoreName}_score`]: current.scores[j]![i] })) })));
  const bestPolicy = improved ? policyDir : ctx.bestPolicy;
  const bestFile = path.join(ctx.outDir, 'best_policy.txt');
  fs.writeFileSync(bestFile, bestPolicy + '\n');
  return {
    artifacts: [
      { kind: 'report', name: 'eval-samples', path: report, numRows: prompts.length },
      { kind: 'report', name: 'best-policy', path: bestFile },
    ],
    metrics,
    bestPolicy,
  };
}

export const STAGES: Record<RoundStageName, (ctx: StageContext) => Promise<StageOutput>> = {
  collect_preferences: collectPreferences,
  train_reward_model: trainRewardModelStage,
  rejection_sample: rejectionSample,
  curate: curateStage,
  sft: sftStage,
  dpo: dpoStage,
  evaluate: evaluateStage,
};
