/**
 * Data-parallel training throughput: forward+backward+AdamW tokens/s of configs/models/small.json
 * at batch 8 × 256 on wasm, with 1 replica (`LocalStepEngine`) and with N (`WorkerStepEngine`),
 * and the scaling ratio. Sampling throughput likewise: generated tokens/s of rejection sampling
 * (16 prompts of ~64 tokens, K = 8, 32 new tokens, paged engine, random weights of small.json's
 * architecture with a 300-id vocabulary, see `prepareSampleModel`) with
 * 1 worker (`samplePolicy` in this thread, what `tfalign sample --workers 1` runs) and with N
 * (`ShardPool`, N threads each with its own copy of the model). One JSON object per line on stdout.
 *
 *   node bin/run-ts.js bench/bench-workers.ts [--quick] [--workers 1,2] [--repeats 2] [--steps 3] [--only train|sample]
 *
 * Each case runs in a fresh child process; cases alternate (1, N, 1, N, …) and the ratio uses
 * each count's best repeat, so that load from other processes on a shared machine — reported as
 * `os.loadavg()` before and after each case — biases neither side. CPU time (`process.cpuUsage`,
 * every thread of the process) is reported too: tokens per CPU-second do not depend on how much
 * of the machine other processes take, so `cpu_efficiency` (N replicas against 1) says how much
 * of the ideal N× the engine itself gives up to communication and imbalance.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { answerCase, passThrough, runCaseInChild } from './child-case.js';
import { initBackend } from '../src/backend.js';
import { countParameters, parseLlamaConfig } from '../src/model/config.js';
import { readJsonFile } from '../src/model/checkpoint-io.js';
import { initModel } from '../src/model/weights.js';
import { createStepEngine } from '../src/parallel/factory.js';
import { ShardPool } from '../src/inference-pool/shard-pool.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { createModel } from '../src/model/create.js';
import { Tokenizer } from '../src/tokenizer/tokenizer.js';
import { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../src/tokenizer/bpe-trainer.js';
import { samplePolicy, type PolicySamples } from '../samplers/policy-sampler.js';
import type { SampleJobOptions } from '../src/inference-pool/shard-jobs.js';
import type { TokenBatch } from '../data/collate.js';
import { randomBatch } from './train-step.js';

interface Case {
  config: string;
  numWorkers: number;
  batchSize: number;
  seqLen: number;
  numSteps: number;
  repeat: number;
}

/** A sampling case: prompts × K samples of `maxNewTokens` from the model folder `modelDir`. */
interface SampleCase {
  bench: 'sample';
  config: string;
  modelDir: string;
  numWorkers: number;
  numPrompts: number;
  numSamples: number;
  maxNewTokens: number;
  repeat: number;
}

const WORDS = ['apple', 'river', 'stone', 'cloud', 'green', 'music', 'paper', 'light', 'table', 'water', 'horse', 'glass'];

/** Prompt j: 40 words (~64 tokens with the chat template), different per prompt. */
function benchPrompts(numPrompts: number): string[] {
  return Array.from({ length: numPrompts }, (_, j) => Array.from({ length: 40 }, (_, i) => WORDS[(i * 7 + j * 5 + i * j) % WORDS.length]).join(' '));
}

/**
 * A model folder with random weights of `config` and a small BPE tokenizer trained on the bench
 * prompts; the model's vocabulary is the tokenizer's (300 ids, so every sampled id decodes), the
 * rest of the architecture is `config`'s.
 */
async function prepareSampleModel(config: string, dir: string): Promise<void> {
  await initBackend('wasm', { quiet: true });
  const tokDir = path.join(dir, 'tokenizer');
  const tokenizerJson = trainByteLevelBpe([benchPrompts(64).join('\n')], { vocabSize: 300 });
  writeTokenizerFolder(tokDir, { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson) });
  (await createModel({ configFile: config, tokenizerDir: tokDir, out: path.join(dir, 'model'), seed: 0 })).dispose();
}

/**
 * Generated tokens/s of one sampling case, after a warm-up run (kernels, XNNPACK packing, and
 * with workers the threads' start and model loads) that is not timed. Temperature 1, no top-k/p.
 */
async function runSampleCase(c: SampleCase): Promise<Record<string, unknown>> {
  const loadBefore = loadavg();
  const info = await initBackend('wasm', { quiet: true });
  const prompts = benchPrompts(c.numPrompts);
  const options: SampleJobOptions = { numSamples: c.numSamples, decoding: { temperature: 1, topK: 0, topP: 1, maxNewTokens: c.maxNewTokens }, seed: 0, chat: true };
  const warmUp: SampleJobOptions = { ...options, numSamples: 2, decoding: { ...options.decoding, maxNewTokens: 4 } };
  let run: () => Promise<PolicySamples>;
  let close: () => Promise<void>;
  if (c.numWorkers === 1) {
    const model = await loadPretrained(c.modelDir);
    const tok = await Tokenizer.fromFolder(c.modelDir);
    await Promise.resolve(samplePolicy(model, tok, prompts.slice(0, 1), warmUp));
    run = async () => samplePolicy(model, tok, prompts, options);
    close = async () => model.dispose();
  } else {
    const pool = await ShardPool.create({ numWorkers: c.numWorkers });
    await pool.sample(c.modelDir, prompts.slice(0, c.numWorkers), warmUp);
    run = () => pool.sample(c.modelDir, prompts, options);
    close = () => pool.close();
  }
  const start = performance.now();
  const cpuStart = process.cpuUsage();
  const { stats } = await run();
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  await close();
  return {
    bench: 'sample-workers', backend: info.name, config: c.config, workers: c.numWorkers, repeat: c.repeat,
    vocab_size: (await loadPretrained(c.modelDir).then((m) => (m.dispose(), m.dims.vocabSize))),
    prompts: c.numPrompts, samples_per_prompt: c.numSamples, max_new_tokens: c.maxNewTokens, kv_cache: stats.kvCache,
    generated_tokens: stats.numGeneratedTokens, seconds, tokens_per_s: stats.numGeneratedTokens / seconds,
    tokens_per_cpu_s: stats.numGeneratedTokens / cpuSeconds, loadavg_before: loadBefore, loadavg_after: loadavg(), ...machine(),
  };
}

function machine(): Record<string, string | number> {
  return { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.availableParallelism(), node: process.version };
}

const loadavg = () => os.loadavg().map((x) => Number(x.toFixed(2)));

async function runCase(c: Case): Promise<Record<string, unknown>> {
  const loadBefore = loadavg();
  const info = await initBackend('wasm', { quiet: true });
  const config = parseLlamaConfig(readJsonFile(c.config), c.config);
  const model = initModel(config, 0);
  const engine = await createStepEngine<TokenBatch>({ numWorkers: c.numWorkers, model, task: { kind: 'causal-lm' }, optimizer: { lr: 1e-4 }, maxGradNorm: 1 });
  const batch = randomBatch(config.vocab_size, c.batchSize, c.seqLen, 1);
  await engine.step([batch], 1e-4); // warm-up: kernels, XNNPACK packing, copying weights to the workers
  const start = performance.now();
  const cpuStart = process.cpuUsage();
  for (let i = 0; i < c.numSteps; i++) await engine.step([batch], 1e-4);
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  const numTokens = c.batchSize * c.seqLen * c.numSteps;
  await engine.close();
  model.dispose();
  return {
    bench: 'train-workers', backend: info.name, config: c.config, parameters: countParameters(config), workers: c.numWorkers, repeat: c.repeat,
    batch: `${c.batchSize}x${c.seqLen}`, steps: c.numSteps, seconds_per_step: seconds / c.numSteps, tokens_per_s: numTokens / seconds,
    cpu_seconds_per_step: cpuSeconds / c.numSteps, tokens_per_cpu_s: numTokens / cpuSeconds,
    num_tensors_after: tf.memory().numTensors, loadavg_before: loadBefore, loadavg_after: loadavg(), ...machine(),
  };
}

function parseArgs(argv: string[]) {
  const get = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const quick = argv.includes('--quick');
  return {
    quick,
    workers: (get('--workers') ?? `1,${Math.max(2, os.availableParallelism())}`).split(',').map(Number),
    repeats: Number(get('--repeats') ?? (quick ? 1 : 2)),
    steps: Number(get('--steps') ?? 3),
    only: get('--only'),
  };
}

/** Runs one case in a fresh child process and passes its record through (undefined on failure). */
function runChild(self: string, c: object, label: Record<string, unknown>): Record<string, number> | undefined {
  return passThrough(runCaseInChild(self, c), label);
}

type Best = Map<number, { tokensPerSecond: number; tokensPerCpuSecond: number }>;

/** Keeps each worker count's best tokens/s and tokens per CPU-second over the repeats. */
function keepBest(best: Best, numWorkers: number, record: Record<string, number>): void {
  const previous = best.get(numWorkers) ?? { tokensPerSecond: 0, tokensPerCpuSecond: 0 };
  best.set(numWorkers, {
    tokensPerSecond: Math.max(previous.tokensPerSecond, record.tokens_per_s!),
    tokensPerCpuSecond: Math.max(previous.tokensPerCpuSecond, record.tokens_per_cpu_s!),
  });
}

/** One scaling line per worker count above 1: tokens/s against 1 worker, and CPU efficiency. */
function printScaling(best: Best, fields: Record<string, unknown>): void {
  const baseline = best.get(1);
  for (const [numWorkers, figures] of best) {
    if (numWorkers === 1 || baseline === undefined) continue;
    console.log(JSON.stringify({
      ...fields, workers: numWorkers,
      tokens_per_s_1: baseline.tokensPerSecond, tokens_per_s_n: figures.tokensPerSecond, ratio: figures.tokensPerSecond / baseline.tokensPerSecond, target_ratio: 1.8,
      cpu_efficiency: figures.tokensPerCpuSecond / baseline.tokensPerCpuSecond, loadavg: loadavg(), ...machine(),
    }));
  }
}

/** Sampling tokens/s with each worker count (cases alternate, best repeat kept), and the ratio to 1 worker. */
async function benchSampling(args: ReturnType<typeof parseArgs>, self: string): Promise<void> {
  const config = args.quick ? 'configs/models/tiny.json' : 'configs/models/small.json';
  const shape = args.quick ? { numPrompts: 4, numSamples: 4, maxNewTokens: 8 } : { numPrompts: 16, numSamples: 8, maxNewTokens: 32 };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-bench-sample-workers-'));
  try {
    await prepareSampleModel(config, dir);
    const modelDir = path.join(dir, 'model');
    const best: Best = new Map();
    for (let repeat = 0; repeat < args.repeats; repeat++) {
      for (const numWorkers of args.workers) {
        const c: SampleCase = { bench: 'sample', config, modelDir, numWorkers, repeat, ...shape };
        const record = runChild(self, c, { bench: 'sample-workers', workers: numWorkers, repeat });
        if (record) keepBest(best, numWorkers, record);
      }
    }
    printScaling(best, { bench: 'sample-workers-scaling', config, prompts: shape.numPrompts, samples_per_prompt: shape.numSamples, max_new_tokens: shape.maxNewTokens });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (await answerCase((c: Case | SampleCase) => ('bench' in c && c.bench === 'sample' ? runSampleCase(c) : runCase(c as Case)))) return;
  const args = parseArgs(process.argv.slice(2));
  const self = fileURLToPath(import.meta.url);
  if (args.only !== undefined && args.only !== 'train' && args.only !== 'sample') throw new Error(`--only: expected train or sample, got "${args.only}"`);
  if (args.only !== 'sample') benchTraining(args, self);
  if (args.only !== 'train') await benchSampling(args, self);
}

/** Training tokens/s with each worker count (cases alternate, best repeat kept), and the ratio to 1 worker. */
function benchTraining(args: ReturnType<typeof parseArgs>, self: string): void {
  const config = args.quick ? 'configs/models/tiny.json' : 'configs/models/small.json';
  const seqLen = args.quick ? 64 : 256;
  const best: Best = new Map();
  for (let repeat = 0; repeat < args.repeats; repeat++) {
    for (const numWorkers of args.workers) {
      const c: Case = { config, numWorkers, batchSize: 8, seqLen, numSteps: args.steps, repeat };
      const record = runChild(self, c, { bench: 'train-workers', workers: numWorkers, repeat });
      if (record) keepBest(best, numWorkers, record);
    }
  }
  printScaling(best, { bench: 'train-workers-scaling', config, batch: `8x${seqLen}` });
}

await main();
