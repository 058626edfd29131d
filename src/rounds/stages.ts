/**
 * The six stages of a round (Llama 3 §4.1), and round 0's build_base, each a function from the
 * round's context to its files, metrics and (evaluate, build_base) the policy it chose. Stages
 * find earlier stages' outputs only through the store's artifact records (`ctx.artifactPath`),
 * so any stage can be rerun on its own once the ones before it are done.
 *
 *   1. collect_preferences  two samples per prompt from the best policy so far, compared by the judge
 *   2. train_reward_model   Bradley–Terry/ranking RM on all preferences so far
 *   3. rejection_sample     K samples per prompt, scored by the new RM, best kept
 *   4. sft                  SFT on the selected samples
 *   5. dpo                  DPO from the SFT model on the latest preferences
 *   6. evaluate             held-out judge score, RM score, win rates; picks the best policy
 */
import * as path from 'node:path';
import { loadPretrained } from '../model/pretrained.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { Rng } from '../util/rng.js';
import { trainRewardModel } from '../trainers/reward.js';
import { scoreResponses } from '../inference/reward-scoring.js';
import { runRejectionSampling } from '../pipelines/rejection-sampling.js';
import { quantizeFolder, type QuantizeFolderResult } from '../model/quantization/quantize-folder.js';
import { sft } from '../trainers/sft.js';
import { dpo } from '../trainers/dpo.js';
import { readJsonl, writeJsonlAtomic } from '../../data/jsonl.js';
import { PreferenceRowSchema, SftRowSchema, type PreferenceRow } from '../../data/rows.js';
import { samplePolicy } from '../../samplers/policy-sampler.js';
import type { RunConfig } from './run-config.js';
import type { LogRecord } from '../train/loop.js';
import type { RunLayout } from './layout.js';
import { roundStages, type RoundStageName, type StageName } from '../store/stages.js';
import { buildBaseModel } from './base-model.js';
import { cleanFile, dedupFile } from '../../data/curation/steps.js';
import type { Judge } from './judge-loader.js';
import { promptsOfRound, promptText, readPrompts } from './prompts.js';
import { hasImportedPreferences, readImportedPreferences } from './annotations.js';
import { preferenceAccuracy } from '../eval/preference-accuracy.js';
import { selectionQuality } from '../eval/selection-quality.js';
import { bootstrapMeanInterval, intervalMetrics, mean } from '../eval/statistics.js';

/** The stages a round of this config runs, in order (`curate` after rejection sampling when enabled). */
export function stagesOf(config: RunConfig): RoundStageName[] {
  return roundStages({ curate: config.curate.enabled });
}

export interface StageContext {
  config: RunConfig;
  layout: RunLayout;
  round: number;
  /** The judge module, when the config names one (required for `preferences.source: judge`). */
  judge?: Judge;
  /** The base model folder (empty in round 0, whose build_base makes it). */
  basePolicy: string;
  /** The best policy before this round (the base model in round 1; empty in round 0). */
  bestPolicy: string;
  /** This stage's (empty) output folder. */
  outDir: string;
  /**
   * The recorded path of artifact `name` of a done stage (the store's record, not a rebuilt
   * path), or undefined when that stage recorded none by that name.
   */
  artifactPath: (round: number, stage: RoundStageName, name: string) => string | undefined;
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
  /** The policy chosen for the next round (evaluate; build_base's base model), recorded in the store with the stage. */
  bestPolicy?: string;
}

/** The recorded artifact `name` of a done stage; an error naming what to run when it is missing. */
function requireArtifact(ctx: StageContext, round: number, stage: RoundStageName, name: string): string {
  const found = ctx.artifactPath(round, stage, name);
  if (found === undefined) throw new Error(`round ${round} stage ${stage} recorded no artifact "${name}"; run \`tfalign round ${round} --stage ${stage}\``);
  return found;
}

/** File name of the fixed reward-model eval set in round 1's collect_preferences folder. */
export const RM_EVAL_ARTIFACT = 'rm-eval';

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
  const artifacts: StageArtifact[] = [{ kind: 'dataset', name: 'preferences', path: file, numRows: rows.length }];
  if (ctx.round === 1) {
    const evalSet = await buildRmEvalSet(ctx);
    artifacts.push(evalSet.artifact);
    Object.assign(metrics, evalSet.metrics);
  }
  return { artifacts, metrics, preferences: rows };
}

/**
 * The fixed reward-model eval set, built once in round 1 and used by every round's RM: the base
 * model's samples on the held-out prompts (never trained on), `rmEvalSamplesPerPrompt` per prompt,
 * consecutive samples paired. Labels are the judge's noise-free preference: the sample with the
 * higher `judge.score` is chosen (the judge's `compare` gives the strength only, so its label
 * noise does not cap the measured accuracy); pairs the judge scores equal are dropped, as no
 * ranking of them is right.
 */
async function buildRmEvalSet(ctx: StageContext): Promise<{ artifact: StageArtifact; metrics: Record<string, number> }> {
  const judge = ctx.judge!;
  const numSamples = ctx.config.evaluate.rmEvalSamplesPerPrompt;
  const prompts = await readPrompts(ctx.layout.heldoutPrompts);
  const seed = ctx.config.seed * 1_000_003 + 17;
  const { samples } = await sampleTexts(ctx, ctx.basePolicy, prompts.map((r) => r.prompt), numSamples, seed);
  const rng = new Rng(seed);
  const rows: PreferenceRow[] = [];
  samples.forEach((perPrompt, j) => {
    const text = promptText(prompts[j]!.prompt);
    for (let i = 0; i + 1 < perPrompt.length; i += 2) {
      const a = perPrompt[i]!.text;
      const b = perPrompt[i + 1]!.text;
      const scoreA = judge.score(text, a);
      const scoreB = judge.score(text, b);
      if (scoreA === scoreB) continue;
      const { strength } = judge.compare(text, a, b, rng.fork(j * numSamples + i));
      const [chosen, rejected] = scoreA > scoreB ? [a, b] : [b, a];
      rows.push({ prompt: prompts[j]!.prompt, chosen, rejected, strength, ...(prompts[j]!.id !== undefined ? { id: prompts[j]!.id } : {}) });
    }
  });
  if (rows.length === 0) throw new Error(`collect_preferences: the fixed reward-model eval set is empty (every held-out pair scored equal); use more held-out prompts`);
  const file = path.join(ctx.outDir, 'rm-eval.jsonl');
  await writeJsonlAtomic(file, rows);
  ctx.log(`collect_preferences: fixed reward-model eval set of ${rows.length} pairs from ${prompts.length} held-out prompts × ${numSamples} base-model samples`);
  return { artifact: { kind: 'dataset', name: RM_EVAL_ARTIFACT, path: file, numRows: rows.length }, metrics: { 'rm_eval/num_pairs': rows.length } };
}

// 2) train_reward_model -----------------------------------------------------------------------

export async function trainRewardModelStage(ctx: StageContext): Promise<StageOutput> {
  // All preferences so far (Llama 3: "the reward model uses all preference data").
  const all: PreferenceRow[] = [];
  for (let r = 1; r <= ctx.round; r++) all.push(...(await readPreferences(requireArtifact(ctx, r, 'collect_preferences', 'preferences'))));
  const train = path.join(ctx.outDir, 'train.jsonl');
  await writeJsonlAtomic(train, all);
  // The fixed held-out set when round 1 built one (judge source); else a split of the training rows.
  const evalFile = ctx.artifactPath(1, 'collect_preferences', RM_EVAL_ARTIFACT);
  const { from, ...trainer } = ctx.config.rewardModel;
  const start = from === 'policy' ? ctx.bestPolicy : ctx.basePolicy;
  const result = await trainRewardModel(
    {
      ...trainer,
      ...(evalFile !== undefined ? { eval: evalFile, evalFraction: 0 } : {}),
      model: start,
      train,
      out: path.join(ctx.outDir, 'run'),
      backend: ctx.config.backend,
      seed: ctx.config.seed + ctx.round,
    },
    { onLog: ctx.onTrainLog },
  );
  const metrics: Record<string, number> = {
    'rm/accuracy': Number(result.lastEval?.accuracy),
    'rm/margin': Number(result.lastEval?.margin),
    'rm/num_pairs': result.data.train.numPairs,
    'rm/initial_accuracy': Number(result.initialEval?.accuracy ?? NaN),
  };
  if (evalFile !== undefined) {
    // Every pair of the fixed set, whatever strengths the RM trains on: accuracy with its 95%
    // interval, and per strength (Llama 3 reports RM accuracy by preference strength).
    const pairs = await readPreferences(evalFile);
    const rm = await loadPretrained(result.modelDir);
    const rmTok = await Tokenizer.fromFolder(result.modelDir);
    let rewards: number[];
    try {
      rewards = scoreResponses(rm, rmTok, pairs.flatMap((p) => [{ prompt: p.prompt, response: p.chosen }, { prompt: p.prompt, response: p.rejected }]), { batchSize: 64 });
    } finally {
      rm.dispose();
    }
    const report = preferenceAccuracy(pairs.map((p, i) => ({ strength: p.strength ?? 'better', chosenReward: rewards[2 * i]!, rejectedReward: rewards[2 * i + 1]! })));
    Object.assign(metrics, {
      ...intervalMetrics('rm/accuracy', report.accuracy),
      'rm/margin': report.margin,
      'rm/num_eval_pairs': report.numPairs,
    });
    for (const [strength, r] of Object.entries(report.byStrength)) {
      metrics[`rm/accuracy/${strength}`] = r.accuracy.estimate;
      metrics[`rm/num_eval_pairs/${strength}`] = r.numPairs;
    }
  }
  const ci = metrics['rm/accuracy_ci_low'] !== undefined ? ` [${metrics['rm/accuracy_ci_low'].toFixed(3)}, ${metrics['rm/accuracy_ci_high']!.toFixed(3)}]` : '';
  ctx.log(
    `train_reward_model: ${result.data.train.numPairs} pairs from the ${from === 'policy' ? 'best policy' : 'base model'}, held-out accuracy ${metrics['rm/accuracy']!.toFixed(3)}${ci}` +
      `${metrics['rm/num_eval_pairs'] !== undefined ? ` on ${metrics['rm/num_eval_pairs']} fixed pairs` : ''} (before training ${metrics['rm/initial_accuracy']!.toFixed(3)}), margin ${metrics['rm/margin']!.toFixed(3)}`,
  );
  return { artifacts: [{ kind: 'dataset', name: 'rm-train', path: train, numRows: all.length }, { kind: 'checkpoint', name: 'reward-model', path: result.modelDir }], metrics };
}

// 3) rejection_sample -------------------------------------------------------------------------

export async function rejectionSample(ctx: StageContext): Promise<StageOutput> {
  const s = ctx.config.sampling;
  const prompts = promptsOfRound(await readPrompts(ctx.layout.trainPrompts), ctx.round, s.promptsPerRound, ctx.config.preferences.promptsPerRound);
  // 0) sampling.quantization: serve the policy from an 8-bit copy, made in this stage's folder
  let policyDir = ctx.bestPolicy;
  let quantized: QuantizeFolderResult | undefined;
  if (s.quantization) {
    policyDir = path.join(ctx.outDir, 'policy-quantized');
    quantized = await quantizeFolder({ model: ctx.bestPolicy, out: policyDir, options: s.quantization });
  }
  // sample → score → select → write pairs: the step `tfalign sample` runs, with sampling.workers threads
  const { scored, rows, selected, stats, files } = await runRejectionSampling({
    policyDir,
    rewardModelDir: requireArtifact(ctx, ctx.round, 'train_reward_model', 'reward-model'),
    prompts,
    sampling: { numSamples: s.k, seed: stageSeed(ctx, 3), decoding: decodingOf(s), engine: s.engine },
    scoring: { batchSize: s.rewardBatchSize },
    // `selection: random` (ablation): the kept sample is drawn uniformly, the RM's rewards stay recorded.
    selection: s.selection,
    selectionSeed: stageSeed(ctx, 3) + 1,
    pairs: { ...s.pairs, seed: stageSeed(ctx, 3) },
    numWorkers: s.workers,
    outDir: ctx.outDir,
  });
  const rewards = scored.map((p) => p.samples.map((x) => x.reward));
  const rmBest = mean(rewards.map((r, j) => r[selected[j]!]!));
  const rmMean = mean(rewards.map(mean));
  const metrics: Record<string, number> = {
    'sample/reward_mean': rmMean,
    'sample/best_of_k_mean': rmBest,
    'sample/best_of_k_gain': rmBest - rmMean,
    'sample/tokens_per_s': stats.tokensPerSecond,
    'sample/num_pairs': rows.summary.numPairs,
    'sample/num_prompts': scored.length,
    ...(quantized
      ? { 'sample/quantized_projections': quantized.quantized.length, 'sample/policy_weight_bytes': quantized.bytes.totalBytes, 'sample/policy_float_weight_bytes': quantized.bytes.floatBytes + quantized.bytes.quantizedAsFloatBytes }
      : {}),
  };
  let judgeLine = '';
  if (ctx.judge) {
    // The judge's view of the same selection: what best-of-K buys in judged quality, and how
    // well the RM ranks each prompt's samples the way the judge does.
    const judge = ctx.judge;
    const judgeScores = scored.map((p) => p.samples.map((x) => judge.score(promptText(p.prompt), x.text)));
    const q = selectionQuality({ rewards, judgeScores, selected }, { seed: stageSeed(ctx, 3) });
    Object.assign(metrics, {
      'sample/judge_mean': q.judgeMean,
      'sample/judge_best_of_k': q.judgeBest,
      ...intervalMetrics('sample/judge_gain', q.judgeGain),
      'rm/spearman_judge': q.spearman,
      'sample/reward_hacking': q.rewardHacking ? 1 : 0,
    });
    judgeLine =
      `; judge ${q.judgeMean.toFixed(3)} → ${q.judgeBest.toFixed(3)} (gain ${q.judgeGain.estimate.toFixed(3)} [${q.judgeGain.low.toFixed(3)}, ${q.judgeGain.high.toFixed(3)}]), RM–judge Spearman ${q.spearman.toFixed(3)}` +
      (q.rewardHacking ? `\n  warning: reward hacking: the selection raised the reward model's score by ${q.rmGain.toFixed(3)} while the judge's score fell by ${(-q.judgeGain.estimate).toFixed(3)}` : '');
  }
  ctx.log(
    `rejection_sample: ${scored.length} prompts × ${s.k}${s.quantization ? ` from a ${s.quantization.scheme} policy (${quantized!.quantized.length} projections)` : ''}, ${s.selection === 'random' ? 'random selection' : 'reward-model selection'}: reward mean ${rmMean.toFixed(3)} → kept ${rmBest.toFixed(3)}` +
      judgeLine +
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
        selected: i === selected[j],
      })),
    ),
  };
}

// 3b) curate (optional) -----------------------------------------------------------------------

/** Cleaning rules, then exact/near-duplicate removal, over the selected samples (Llama 3 §4.2.3). */
export async function curateStage(ctx: StageContext): Promise<StageOutput> {
  const input = requireArtifact(ctx, ctx.round, 'rejection_sample', 'sft');
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
  const { from, data, enabled, ...trainer } = ctx.config.sft;
  const start = from === 'base' ? ctx.basePolicy : ctx.bestPolicy;
  if (!enabled) {
    // Ablation: no SFT on the selected samples; DPO starts from the model SFT would have started from.
    ctx.log(`sft: skipped (sft.enabled: false); DPO starts from ${from === 'base' ? 'the base model' : 'the previous policy'}`);
    return { artifacts: [{ kind: 'checkpoint', name: 'sft-model', path: start }], metrics: { 'sft/skipped': 1 } };
  }
  const rounds = data === 'all' ? Array.from({ length: ctx.round }, (_, i) => i + 1) : [ctx.round];
  const rows: unknown[] = [];
  // The curated selection when the curate stage runs, else rejection sampling's.
  const selected = (r: number) => (ctx.config.curate.enabled ? requireArtifact(ctx, r, 'curate', 'curated-sft') : requireArtifact(ctx, r, 'rejection_sample', 'sft'));
  for (const r of rounds) rows.push(...(await readJsonl(selected(r), SftRowSchema)).rows.map((x) => x.value));
  const train = path.join(ctx.outDir, 'train.jsonl');
  await writeJsonlAtomic(train, rows);
  const result = await sft({ ...trainer, model: start, train, out: path.join(ctx.outDir, 'run'), backend: ctx.config.backend, seed: ctx.config.seed + ctx.round }, { onLog: ctx.onTrainLog });
  const metrics = { 'sft/loss': Number(result.lastEval?.loss), 'sft/num_rows': rows.length };
  ctx.log(`sft: ${rows.length} rows from ${start === ctx.basePolicy ? 'the base model' : 'the previous policy'}, held-out response loss ${metrics['sft/loss'].toFixed(4)}`);
  return { artifacts: [{ kind: 'dataset', name: 'sft-train', path: train, numRows: rows.length }, { kind: 'checkpoint', name: 'sft-model', path: result.modelDir }], metrics };
}

// 5) dpo --------------------------------------------------------------------------------------

export async function dpoStage(ctx: StageContext): Promise<StageOutput> {
  const { data, enabled, ...trainer } = ctx.config.dpo;
  const sftModel = requireArtifact(ctx, ctx.round, 'sft', 'sft-model');
  if (!enabled) {
    // Ablation: no DPO; the SFT model is the round's policy.
    ctx.log('dpo: skipped (dpo.enabled: false); the SFT model is the policy');
    return { artifacts: [{ kind: 'checkpoint', name: 'policy', path: sftModel }], metrics: { 'dpo/skipped': 1 } };
  }
  const rounds = data === 'all' ? Array.from({ length: ctx.round }, (_, i) => i + 1) : [ctx.round];
  const rows: PreferenceRow[] = [];
  for (const r of rounds) rows.push(...(await readPreferences(requireArtifact(ctx, r, 'collect_preferences', 'preferences'))));
  const train = path.join(ctx.outDir, 'train.jsonl');
  await writeJsonlAtomic(train, rows);
  // Held out: the fixed set every round's RM is measured on (hundreds of pairs with noise-free
  // labels, never trained on), so DPO's implicit reward is judged on the same pairs as the RM;
  // without one (imported preferences), `evalFraction` of the training pairs.
  const evalFile = ctx.artifactPath(1, 'collect_preferences', RM_EVAL_ARTIFACT);
  const result = await dpo(
    {
      ...trainer,
      ...(evalFile !== undefined ? { eval: evalFile, evalFraction: 0 } : {}),
      model: sftModel,
      train,
      out: path.join(ctx.outDir, 'run'),
      backend: ctx.config.backend,
      seed: ctx.config.seed + ctx.round,
    },
    { onLog: ctx.onTrainLog },
  );
  const e: Record<string, number | string> = result.lastEval ?? {};
  const metrics = {
    'dpo/rewards_accuracies': Number(e['rewards/accuracies']),
    'dpo/rewards_margins': Number(e['rewards/margins']),
    'dpo/logps_chosen': Number(e['logps/chosen']),
    'dpo/num_pairs': rows.length,
    'dpo/num_eval_pairs': Number(e['num_pairs'] ?? NaN),
  };
  ctx.log(
    `dpo: ${rows.length} pairs, held-out rewards/accuracies ${metrics['dpo/rewards_accuracies'].toFixed(3)} on ${metrics['dpo/num_eval_pairs']} ${evalFile !== undefined ? 'fixed ' : ''}pairs, margins ${metrics['dpo/rewards_margins'].toFixed(3)}`,
  );
  return { artifacts: [{ kind: 'dataset', name: 'dpo-train', path: train, numRows: rows.length }, { kind: 'checkpoint', name: 'policy', path: result.modelDir }], metrics };
}

// 6) evaluate ---------------------------------------------------------------------------------

/** Scores of each prompt's samples: by the judge when there is one, else by the round's reward model. */
type SampleScorer = (prompts: readonly PreferenceRow['prompt'][], samples: { text: string }[][]) => number[][];

/**
 * A policy's samples on the held-out prompts, their scores and the mean score: sampled as the
 * config says, or with `greedy` one greedy answer per prompt.
 */
async function scorePolicy(ctx: StageContext, policyDir: string, prompts: readonly PreferenceRow['prompt'][], scorer: SampleScorer, { greedy = false } = {}) {
  const e = ctx.config.evaluate;
  // One seed for every round: each policy is judged on the same prompts with the same random
  // streams, so a policy scores the same whenever it is evaluated and rounds compare fairly.
  const evalSeed = ctx.config.seed * 1_000_003 + 6;
  const { samples } = await sampleTexts(ctx, policyDir, prompts, greedy ? 1 : e.samplesPerPrompt, evalSeed, {
    maxNewTokens: e.maxNewTokens ?? ctx.config.sampling.maxNewTokens,
    temperature: greedy ? 0 : e.temperature,
  });
  const scores = scorer(prompts, samples);
  const flat = scores.flat();
  return { samples, scores, mean: flat.reduce((a, b) => a + b, 0) / flat.length };
}

/** Per prompt, the fraction of its samples where `a` scores above `b` (same index); ties count half. */
function winsPerPrompt(a: number[][], b: number[][]): number[] {
  return a.map((row, j) => mean(row.map((x, i) => {
    const y = b[j]![i]!;
    return x > y ? 1 : x === y ? 0.5 : 0;
  })));
}

export async function evaluateStage(ctx: StageContext): Promise<StageOutput> {
  const prompts = (await readPrompts(ctx.layout.heldoutPrompts)).map((p) => p.prompt);
  const policyDir = requireArtifact(ctx, ctx.round, 'dpo', 'policy');
  const rmDir = requireArtifact(ctx, ctx.round, 'train_reward_model', 'reward-model');
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
    // Greedy answers, the policy's mode: how much of what a model knows its samples show (a base
    // whose greedy score is close to its sampled one knows little that post-training can elicit).
    const greedy = await scorePolicy(ctx, policyDir, prompts, scorer, { greedy: true });
    const baseGreedy = await scorePolicy(ctx, ctx.basePolicy, prompts, scorer, { greedy: true });
    const rmScores = judge ? rmScorer(prompts, current.samples).flat() : current.scores.flat();
    // The previous best was scored on the same prompts with the same random streams just now.
    improved = current.mean >= previous.mean;
    // 95% intervals by bootstrap over held-out prompts (a prompt's samples are not independent).
    const seed = ctx.config.seed;
    // (a policy's score is the mean over all its samples: the estimate of the per-prompt bootstrap)
    const scoreOf = (p: { scores: number[][]; mean: number }) => ({ ...bootstrapMeanInterval(p.scores.map(mean), { seed }), estimate: p.mean });
    const score = scoreOf(current);
    const vsPrevious = bootstrapMeanInterval(winsPerPrompt(current.scores, previous.scores), { seed });
    const vsBase = bootstrapMeanInterval(winsPerPrompt(current.scores, base.scores), { seed });
    metrics = {
      ...intervalMetrics(`eval/${scoreName}_score`, score),
      [`eval/previous_${scoreName}_score`]: previous.mean,
      ...intervalMetrics(`eval/base_${scoreName}_score`, scoreOf(base)),
      ...intervalMetrics(`eval/${scoreName}_score_greedy`, scoreOf(greedy)),
      ...intervalMetrics(`eval/base_${scoreName}_score_greedy`, scoreOf(baseGreedy)),
      ...intervalMetrics('eval/gain_over_base', bootstrapMeanInterval(current.scores.map((row, j) => mean(row) - mean(base.scores[j]!)), { seed })),
      'eval/rm_score': rmScores.reduce((a, b) => a + b, 0) / rmScores.length,
      ...intervalMetrics('eval/win_rate_vs_previous', vsPrevious),
      ...intervalMetrics('eval/win_rate_vs_base', vsBase),
      'eval/num_prompts': prompts.length,
      'eval/num_samples': current.scores.flat().length,
      'eval/selected': improved ? 1 : 0,
    };
    const ci = (x: { low: number; high: number }) => `[${x.low.toFixed(3)}, ${x.high.toFixed(3)}]`;
    ctx.log(
      `evaluate: ${scoreName} score ${current.mean.toFixed(3)} ${ci(score)} on ${prompts.length} held-out prompts (previous best ${previous.mean.toFixed(3)}, base ${base.mean.toFixed(3)}; greedy ${greedy.mean.toFixed(3)}, base ${baseGreedy.mean.toFixed(3)}), ` +
        `win rate vs previous ${vsPrevious.estimate.toFixed(3)} ${ci(vsPrevious)}, vs base ${vsBase.estimate.toFixed(3)} ${ci(vsBase)}; ` +
        (improved ? "this round's policy is the new best" : 'the previous policy stays the best'),
    );
  } finally {
    rm.dispose();
  }
  const report = path.join(ctx.outDir, 'samples.jsonl');
  await writeJsonlAtomic(report, prompts.map((prompt, j) => ({ prompt, samples: current.samples[j]!.map((x, i) => ({ text: x.text, [`${scoreName}_score`]: current.scores[j]![i] })) })));
  // The choice is recorded in the store with the stage's completion (its one home).
  return {
    artifacts: [{ kind: 'report', name: 'eval-samples', path: report, numRows: prompts.length }],
    metrics,
    bestPolicy: improved ? policyDir : ctx.bestPolicy,
  };
}

// 0) build_base (round 0, a base model from scratch) -------------------------------------------

/** The base model from scratch (`base.fromScratch`): tokenizer, noisy demonstrations, pretraining. */
export async function buildBaseStage(ctx: StageContext): Promise<StageOutput> {
  const spec = ctx.config.base.fromScratch;
  if (spec === undefined) throw new Error('build_base: the config names a base model (base.model); there is nothing to build');
  const result = await buildBaseModel(spec, ctx.outDir, { seed: ctx.config.seed, backend: ctx.config.backend, onLog: ctx.onTrainLog });
  return { artifacts: [{ kind: 'checkpoint', name: BASE_MODEL_ARTIFACT, path: result.modelDir }], metrics: result.metrics, bestPolicy: result.modelDir };
}

/** The name of build_base's model artifact. */
export const BASE_MODEL_ARTIFACT = 'base-model';

export const STAGES: Record<StageName, (ctx: StageContext) => Promise<StageOutput>> = {
  build_base: buildBaseStage,
  collect_preferences: collectPreferences,
  train_reward_model: trainRewardModelStage,
  rejection_sample: rejectionSample,
  curate: curateStage,
  sft: sftStage,
  dpo: dpoStage,
  evaluate: evaluateStage,
};
