/**
 * `tfalign sample`: rejection sampling. K samples of every prompt from the policy (the paged
 * sampling engine by default), scored by the reward model; writes, atomically, in --out:
 *   samples.jsonl      {prompt, samples: [{text, reward, num_tokens, finish_reason}], best}
 *                      (`best` is the index of the highest-reward sample; `id` kept when given)
 *   sft.jsonl          {prompt, response} (or {messages}) with the best sample
 *   preferences.jsonl  {prompt, chosen, rejected, chosen_reward, rejected_reward} by --pair-strategy
 * Progress on stderr (prompts done, samples/s, tokens/s); a summary on stdout at the end.
 *
 * `--workers N` (default 1) shards the prompts, then the samples to score, across N worker
 * threads (`ShardPool`), each holding one model at a time, loaded from its folder; the outputs
 * are the same files as with one (same seeds, same order). The default stays 1: each worker
 * loads its own copy of the policy and of the reward model, which costs memory and a start-up
 * that only pays off for enough prompts × K.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Option, type Command } from 'commander';
import { backendOption, checkWorkersFlag, example, floatArg, forceWorkersOption, intArg, overwriteOption, progress, useBackend, workersArg, addOptions, decodingOptions } from './common.js';
import { claimOutputFolder, writeOutputMarker } from '../util/atomic.js';
import { MAX_ROWS_PER_BATCH, MAX_SAMPLES_PER_PROMPT } from '../config/limits.js';
import { modelDims } from '../model/config.js';
import { readJsonl } from '../../data/jsonl.js';
import { PromptRowSchema } from '../../data/rows.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { KV_CACHE_KINDS, type KVCacheKind } from '../../samplers/sampling-io.js';
import { PAIR_STRATEGIES, type PairStrategy } from '../../samplers/rejection.js';

interface SampleCommandOptions {
  policy: string;
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
  pairStrategy: PairStrategy;
  minRewardGap: number;
  chat?: boolean;
  maxNumSeqs: number;
  blockSize: number;
  kvCacheMb: number;
  rewardBatchSize: number;
  backend: string;
  workers: number;
  forceWorkers?: boolean;
  overwrite?: boolean;
}

/** A folder's tokenizer, with a one-line error naming the flag when it has none. */
async function folderTokenizer(dir: string, flag: string): Promise<Tokenizer> {
  const { Tokenizer } = await import('../tokenizer/tokenizer.js');
  if (!fs.existsSync(path.join(dir, 'tokenizer.json'))) throw new Error(`${flag}: ${dir} has no tokenizer.json`);
  return Tokenizer.fromFolder(dir);
}

export async function runSample(o: SampleCommandOptions): Promise<void> {
  const { loadConfig: loadModelConfig } = await import('../model/pretrained.js');
  const { runRejectionSampling } = await import('../pipelines/rejection-sampling.js');
  checkWorkersFlag('sample', o.workers, o.forceWorkers);
  // Before any model loads: --out must be new, empty or a previous sample output.
  claimOutputFolder(o.out, { command: 'sample', overwrite: o.overwrite, flag: '--out' });
  await useBackend(o.backend);
  const { rows } = await readJsonl(o.prompts, PromptRowSchema);
  if (rows.length === 0) throw new Error(`${o.prompts}: no prompts`);
  // Model kinds from config.json, before any weights load (here or in the workers).
  if (modelDims(loadModelConfig(o.policy)).isRewardModel) throw new Error(`--policy: ${o.policy} is a reward model; give a causal LM`);
  if (!modelDims(loadModelConfig(o.rewardModel)).isRewardModel) {
    throw new Error(`--reward-model: ${o.rewardModel} is a causal LM; give a reward model (rm train's OUT: LlamaForSequenceClassification, or a causal LM with tfalign_reward)`);
  }
  await folderTokenizer(o.policy, '--policy');
  // 1)–3) sample, score, select and build pairs (with workers when asked); write into --out
  const bar = progress('sample', rows.length);
  const start = performance.now();
  const { rows: result, stats, numWorkers } = await runRejectionSampling({
    policyDir: o.policy,
    rewardModelDir: o.rewardModel,
    prompts: rows.map(({ value, line }) => ({ prompt: value.prompt, ...(value.id !== undefined ? { id: value.id } : {}), label: `${o.prompts}:${line}` })),
    sampling: {
      numSamples: o.numSamples,
      decoding: { temperature: o.temperature, topK: o.topK, topP: o.topP, maxNewTokens: o.maxNewTokens },
      seed: o.seed,
      chat: o.chat,
      engine: { kvCache: o.kvCache, maxNumSeqs: o.maxNumSeqs, blockSize: o.blockSize, kvCacheBytes: Math.round(o.kvCacheMb * 1024 * 1024) },
      onPromptDone: (numDone: number, numTokens: number) => {
        const seconds = Math.max((performance.now() - start) / 1000, 1e-9);
        bar.update(numDone, { 'samples/s': (numDone * o.numSamples) / seconds, 'tokens/s': numTokens / seconds });
      },
    },
    onSampled: () => bar.done(),
    scoring: { batchSize: o.rewardBatchSize, chat: o.chat },
    selection: 'reward-model',
    pairs: { pairStrategy: o.pairStrategy, minRewardGap: o.minRewardGap, seed: o.seed },
    numWorkers: o.workers,
    outDir: o.out,
  });
  // 4) the marker that makes --out this command's, once the three files are written
  writeOutputMarker(o.out, { command: 'sample', files: ['preferences.jsonl', 'samples.jsonl', 'sft.jsonl'] });
  const s = result.summary;
  const skipped = s.numSkippedGap + s.numSkippedIdentical;
  const workers = numWorkers > 1 ? `, ${numWorkers} workers` : '';
  console.log(
    `sample: ${s.numPrompts} prompts × ${o.numSamples} samples, ${stats.numGeneratedTokens} tokens in ${stats.wallSeconds.toFixed(1)} s (${stats.tokensPerSecond.toFixed(1)} tokens/s, kv-cache ${stats.kvCache}${workers}); ` +
      `reward mean ${s.rewardMean.toFixed(4)}, best-of-${o.numSamples} mean ${s.bestOfKMean.toFixed(4)}, gain ${s.gain.toFixed(4)}; ` +
      `${s.numPairs} pairs (${skipped} prompts without: ${s.numSkippedGap} below the gap, ${s.numSkippedIdentical} identical) -> ${o.out}`,
  );
}

export function registerSampleCommands(program: Command): void {
  const sample = program
    .command('sample')
    .description('rejection sampling: K samples per prompt from the policy, scored by a reward model; best-of-K SFT rows and preference pairs')
    .requiredOption('--policy <dir>', 'causal LM folder to sample from (with tokenizer.json)')
    .requiredOption('--reward-model <dir>', 'reward model folder (rm train\'s OUT: a score or logprob head)')
    .requiredOption('--prompts <file>', 'JSONL rows {"prompt": text or messages, "id"?}')
    .requiredOption('-k, --num-samples <k>', 'samples per prompt (Llama 3: 10 to 30)', intArg('-k', { min: 1, max: MAX_SAMPLES_PER_PROMPT }))
    .requiredOption('--out <dir>', 'folder for samples.jsonl, sft.jsonl, preferences.jsonl (new, empty, or a previous sample output)');
  addOptions(sample, decodingOptions({ maxNewTokens: 256, seed: 'sample i of prompt j uses seed + j·K + i' }))
    .addOption(new Option('--kv-cache <kind>', 'paged (prompt once, shared by its samples), dense (prompt per sample) or none (recompute)').choices([...KV_CACHE_KINDS]).default('paged'))
    .addOption(new Option('--pair-strategy <s>', 'rejected side of each pair: the worst sample or a random other one').choices([...PAIR_STRATEGIES]).default('best-worst'))
    .option('--min-reward-gap <g>', 'make no pair when chosen − rejected reward is below this', floatArg('--min-reward-gap', { min: 0 }), 0)
    .option('--chat', 'render prompts with the chat template (default: when the tokenizer has one)')
    .option('--no-chat', 'render prompts as [BOS] text')
    .option('--max-num-seqs <n>', 'most sequences decoding at once (paged)', intArg('--max-num-seqs', { min: 1, max: MAX_ROWS_PER_BATCH }), 128)
    .option('--block-size <n>', 'tokens per KV block (paged)', intArg('--block-size', { min: 1 }), 16)
    .option('--kv-cache-mb <mb>', 'memory for the paged KV pool, MiB', floatArg('--kv-cache-mb', { min: 1 }), 256)
    .option('--reward-batch-size <n>', 'sequences per reward-model forward', intArg('--reward-batch-size', { min: 1, max: MAX_ROWS_PER_BATCH }), 8)
    .option('--workers <n>', 'worker threads sharing the prompts and the scoring, each with its own model copy (default 1, at most the cores)', workersArg(), 1)
    .addOption(forceWorkersOption())
    .addOption(overwriteOption())
    .addOption(backendOption())
    .addHelpText('after', example('tfalign sample --policy runs/sft --reward-model runs/rm --prompts data/prompts.jsonl -k 16 --out runs/rs'))
    .action(async (o: SampleCommandOptions) => runSample(o));
}
