/**
 * `tfalign eval quantization`: the full-precision and the quantized policy sampled on the same
 * prompts with the same seeds, every sample scored by the reward model (and by a judge module when
 * given); writes into --out, atomically:
 *   summary.json   settings, mean score difference with its 95% interval, KS statistic and
 *                  p-value, identical-output fractions, weight bytes, sampling speed
 *   samples.jsonl  per prompt and seed: both texts and their scores
 *   report.html    the same with histogram overlays of the score distributions
 */
import { Option, type Command } from 'commander';
import * as path from 'node:path';
import { backendOption, example, intArg, overwriteOption, useBackend, addOptions, decodingOptions } from './common.js';
import { claimOutputFolder, ensureDir, writeFileAtomic, writeOutputMarker } from '../util/atomic.js';
import { MAX_ROWS_PER_BATCH, MAX_SAMPLES_PER_PROMPT } from '../config/limits.js';
import { modelDims } from '../model/config.js';
import { readJsonl, writeJsonlAtomic } from '../../data/jsonl.js';
import { PromptRowSchema } from '../../data/rows.js';
import { KV_CACHE_KINDS, type KVCacheKind } from '../../samplers/sampling-io.js';
import type { PromptRow } from '../../data/rows.js';

interface EvalQuantizationOptions {
  policy: string;
  quantized: string;
  rewardModel: string;
  prompts: string;
  numSamples: number;
  out: string;
  maxNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  kvCache: KVCacheKind;
  chat?: boolean;
  maxNumSeqs: number;
  rewardBatchSize: number;
  judge?: string;
  judgeOptions?: string;
  overwrite?: boolean;
  backend: string;
}

export async function runEvalQuantization(o: EvalQuantizationOptions): Promise<void> {
  // loaded here, not at the top: `tfalign --help` loads no tensor code
  const { loadConfig: loadModelConfig } = await import('../model/pretrained.js');
  const { runQuantizationEval } = await import('../pipelines/quantization-eval.js');
  const { renderQuantizationReport } = await import('../report/quantization-report.js');
  const { loadJudge } = await import('../rounds/judge-loader.js');
  const { promptText } = await import('../rounds/prompts.js');
  claimOutputFolder(o.out, { command: 'eval quantization', overwrite: o.overwrite, flag: '--out' });
  await useBackend(o.backend);
  const { rows } = await readJsonl(o.prompts, PromptRowSchema);
  if (rows.length === 0) throw new Error(`${o.prompts}: no prompts`);
  if (modelDims(loadModelConfig(o.policy)).isRewardModel) throw new Error(`--policy: ${o.policy} is a reward model; give a causal LM`);
  if (modelDims(loadModelConfig(o.quantized)).isRewardModel) throw new Error(`--quantized: ${o.quantized} is a reward model; give a causal LM`);
  if (!modelDims(loadModelConfig(o.rewardModel)).isRewardModel) throw new Error(`--reward-model: ${o.rewardModel} is a causal LM; give a reward model`);
  // Before any sampling: the two policies must be the full-precision one and a quantized one.
  if (loadModelConfig(o.policy).quantization_config != null) throw new Error(`--policy: ${o.policy} is itself quantized; give the full-precision policy`);
  if (loadModelConfig(o.quantized).quantization_config == null) throw new Error(`--quantized: ${o.quantized} is not quantized (no quantization_config); make it with tfalign quantize`);
  let judgeScore: ((prompt: PromptRow['prompt'], response: string) => number) | undefined;
  if (o.judge) {
    let options: Record<string, unknown> = {};
    if (o.judgeOptions !== undefined) {
      try {
        options = JSON.parse(o.judgeOptions);
      } catch {
        throw new Error('--judge-options: expected a JSON object');
      }
    }
    const judge = await loadJudge(o.judge, options, '--judge');
    judgeScore = (prompt, response) => judge.score(promptText(prompt), response);
  }
  const start = performance.now();
  const result = await runQuantizationEval({
    policyDir: o.policy,
    quantizedDir: o.quantized,
    rewardModelDir: o.rewardModel,
    prompts: rows.map(({ value, line }) => ({ prompt: value.prompt, ...(value.id !== undefined ? { id: value.id } : {}), label: `${o.prompts}:${line}` })),
    sampling: {
      numSamples: o.numSamples,
      decoding: { temperature: o.temperature, topK: o.topK, topP: o.topP, maxNewTokens: o.maxNewTokens },
      seed: o.seed,
      chat: o.chat,
      engine: { kvCache: o.kvCache, maxNumSeqs: o.maxNumSeqs },
    },
    scoring: { batchSize: o.rewardBatchSize, chat: o.chat },
    judgeScore,
    onStep: (step) => process.stderr.write(`eval quantization: ${step} (${((performance.now() - start) / 1000).toFixed(0)} s)\n`),
  });
  ensureDir(o.out);
  const { samples, reward, judge, ...rest } = result;
  const strip = (c: typeof reward) => {
    const { fullScores: _f, quantizedScores: _q, ...summary } = c;
    return summary;
  };
  const summary = { ...rest, reward: strip(reward), ...(judge ? { judge: strip(judge) } : {}), policy: o.policy, quantized: o.quantized, rewardModel: o.rewardModel, prompts: o.prompts, seed: o.seed };
  writeFileAtomic(path.join(o.out, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  await writeJsonlAtomic(
    path.join(o.out, 'samples.jsonl'),
    samples.flatMap((perPrompt) =>
      perPrompt.map((s, i) => ({
        prompt: s.prompt,
        ...(s.id !== undefined ? { id: s.id } : {}),
        sample: i,
        full: s.full,
        quantized: s.quantized,
        full_reward: s.fullReward,
        quantized_reward: s.quantizedReward,
        ...(s.fullJudge !== undefined ? { full_judge: s.fullJudge, quantized_judge: s.quantizedJudge } : {}),
      })),
    ),
  );
  writeFileAtomic(path.join(o.out, 'report.html'), renderQuantizationReport(result, { policyDir: o.policy, quantizedDir: o.quantized, rewardModelDir: o.rewardModel, promptsFile: o.prompts }));
  writeOutputMarker(o.out, { command: 'eval quantization', files: ['report.html', 'samples.jsonl', 'summary.json'] });
  const d = reward.meanDifference;
  const judgeLine = judge ? `; judge mean ${judge.full.mean.toFixed(4)} → ${judge.quantized.mean.toFixed(4)}, difference ${judge.meanDifference.estimate.toFixed(4)} [${judge.meanDifference.low.toFixed(4)}, ${judge.meanDifference.high.toFixed(4)}]` : '';
  console.log(
    `eval quantization: ${result.numPrompts} prompts × ${result.numSamplesPerPrompt} samples; reward mean ${reward.full.mean.toFixed(4)} → ${reward.quantized.mean.toFixed(4)}, ` +
      `difference ${d.estimate.toFixed(4)} [${d.low.toFixed(4)}, ${d.high.toFixed(4)}] (95%), KS D ${reward.ks.statistic.toFixed(4)} (p ${reward.ks.pValue.toFixed(3)})${judgeLine}; ` +
      `identical greedy outputs ${(100 * result.greedy.identicalFraction).toFixed(1)}%, identical samples ${(100 * result.identicalSampleFraction).toFixed(1)}% -> ${o.out}`,
  );
}

export function registerEvalCommands(program: Command): void {
  const evalCommand = program.command('eval').description('evaluations of a model against a reference');
  const quantization = evalCommand
    .command('quantization')
    .description('full-precision vs quantized policy: same prompts and seeds, reward-model (and judge) score distributions compared, identical greedy outputs counted')
    .requiredOption('--policy <dir>', 'full-precision causal LM folder (with tokenizer.json)')
    .requiredOption('--quantized <dir>', 'the same policy after tfalign quantize')
    .requiredOption('--reward-model <dir>', 'reward model folder (its own tokenizer, else the policy\'s)')
    .requiredOption('--prompts <file>', 'JSONL rows {"prompt": text or messages, "id"?}')
    .requiredOption('-k, --num-samples <k>', 'samples per prompt from each policy', intArg('-k', { min: 1, max: MAX_SAMPLES_PER_PROMPT }))
    .requiredOption('--out <dir>', 'folder for summary.json, samples.jsonl, report.html (new, empty, or a previous output)');
  addOptions(quantization, decodingOptions({ maxNewTokens: 256, temperature: 'sampling temperature (the greedy comparison always uses 0)', seed: 'sample i of prompt j uses seed + j·K + i, in both policies' }))
    .addOption(new Option('--kv-cache <kind>', 'paged, dense or none').choices([...KV_CACHE_KINDS]).default('paged'))
    .option('--chat', 'render prompts with the chat template (default: when the tokenizer has one)')
    .option('--no-chat', 'render prompts as [BOS] text')
    .option('--max-num-seqs <n>', 'most sequences decoding at once (paged)', intArg('--max-num-seqs', { min: 1, max: MAX_ROWS_PER_BATCH }), 128)
    .option('--reward-batch-size <n>', 'sequences per reward-model forward', intArg('--reward-batch-size', { min: 1, max: MAX_ROWS_PER_BATCH }), 8)
    .option('--judge <module>', 'judge module (default export with score(prompt, response) in [0, 1]), e.g. data/synthetic/judge.ts')
    .option('--judge-options <json>', 'options for the judge module\'s factory, as JSON')
    .addOption(overwriteOption())
    .addOption(backendOption())
    .addHelpText(
      'after',
      example(
        'tfalign quantize --model runs/quickstart/policy --scheme fp8-rowwise --out runs/quickstart/policy-fp8',
        'tfalign eval quantization --policy runs/quickstart/policy --quantized runs/quickstart/policy-fp8 --reward-model runs/quickstart/rm --prompts data/prompts.jsonl -k 16 --judge data/synthetic/judge.ts --out runs/quickstart/eval-fp8',
      ),
    )
    .action(async (o: EvalQuantizationOptions) => runEvalQuantization(o));
}
