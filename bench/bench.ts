/**
 * `npm run bench`: one JSON object per line on stdout.
 *
 *   train      forward+backward+AdamW tokens/s of configs/models/small.json at batch 8 × 256, per backend
 *   generate   generation tokens/s (dense KV cache, one prompt, K samples)
 *
 * Then, unless --only is given, the other bench files in turn (their lines follow):
 *   bench-vs-torch.ts  training side by side with PyTorch (bench/torch_llama.py) when `torch` is
 *                      importable: same architecture, batch, steps and threads, alternating runs,
 *                      tokens/s, tokens per CPU-second and the ratio; without torch it says so and
 *                      prints tfalign's figures alone
 *   bench-trainers.ts  reward-model and DPO steps/s; peak RSS with a precomputed vs resident reference
 *   bench-workers.ts   training tokens/s with 1 worker and with every core, and the scaling ratio
 *   bench-curation.ts  rows/s of MinHash dedup and semantic dedup on 10,000 rows
 * (`npm run bench:sample` measures the paged KV cache separately: it takes minutes.)
 *
 * Flags: --quick (tiny.json, few steps: a smoke run in seconds), --backends wasm,cpu,
 * --only train|generate|vs-torch. Each case runs in a fresh child process so backends do not
 * share memory. `npm run bench -- --only vs-torch` is the side-by-side mode alone.
 */
import * as os from 'node:os';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { answerCase, passThrough, runCaseInChild, runChild } from './child-case.js';
import { initBackend, type BackendName } from '../src/backend.js';
import { benchTrainStep } from './train-step.js';
import { parseLlamaConfig } from '../src/model/config.js';
import { readJsonFile } from '../src/model/checkpoint-io.js';
import { initModel } from '../src/model/weights.js';
import { generate } from '../samplers/generate.js';
import { DecodingOptionsSchema } from '../samplers/decoding.js';

interface Case {
  bench: 'train' | 'generate';
  backend: BackendName;
  config: string;
  batchSize: number;
  seqLen: number;
  numSteps: number;
}

function machine(): Record<string, string | number> {
  return { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.cpus().length, node: process.version };
}

async function runCase(c: Case): Promise<Record<string, unknown>> {
  const info = await initBackend(c.backend, { quiet: true });
  if (c.bench === 'train') {
    // cpu: no warm-up step (one step of small.json takes minutes there; nothing to warm up in JS).
    const r = await benchTrainStep({ configFile: c.config, batchSize: c.batchSize, seqLen: c.seqLen, numSteps: c.numSteps, numWarmupSteps: c.backend === 'cpu' ? 0 : 1 });
    return { bench: 'train', backend: info.name, config: c.config, ...r, ...machine() };
  }
  const config = parseLlamaConfig(readJsonFile(c.config), c.config);
  const model = initModel(config, 0);
  const prompt = Array.from({ length: c.seqLen }, (_, i) => (i * 7919) % config.vocab_size);
  const decoding = DecodingOptionsSchema.parse({ temperature: 1, maxNewTokens: c.numSteps });
  generate(model, prompt.slice(0, 8), { numSamples: 1, decoding: { ...decoding, maxNewTokens: 2 }, seed: 0, kvCache: 'dense' }); // warm-up
  const start = performance.now();
  const out = generate(model, prompt, { numSamples: c.batchSize, decoding, seed: 0, kvCache: 'dense' });
  const seconds = (performance.now() - start) / 1000;
  const numTokens = out.reduce((a, s) => a + s.tokenIds.length, 0);
  model.dispose();
  return {
    bench: 'generate', backend: info.name, config: c.config, prompt_tokens: c.seqLen, samples: c.batchSize, new_tokens: numTokens,
    seconds, tokens_per_s: numTokens / seconds, num_tensors_after: tf.memory().numTensors, ...machine(),
  };
}

function parseArgs(argv: string[]) {
  const get = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  return {
    quick: argv.includes('--quick'),
    backends: (get('--backends') ?? 'wasm,cpu').split(',') as BackendName[],
    only: get('--only'),
  };
}

async function main(): Promise<void> {
  if (await answerCase(runCase)) return;
  const args = parseArgs(process.argv.slice(2));
  const config = args.quick ? 'configs/models/tiny.json' : 'configs/models/small.json';
  const cases: Case[] = [];
  for (const backend of args.backends) {
    if (!args.only || args.only === 'train') {
      // cpu is ~40× slower than wasm: one measured step is enough to place it.
      cases.push({ bench: 'train', backend, config, batchSize: 8, seqLen: args.quick ? 64 : 256, numSteps: args.quick ? 3 : backend === 'cpu' ? 1 : 3 });
    }
    if (!args.only || args.only === 'generate') {
      cases.push({ bench: 'generate', backend, config, batchSize: 4, seqLen: args.quick ? 16 : 64, numSteps: args.quick ? 8 : backend === 'cpu' ? 8 : 64 });
    }
  }
  const self = fileURLToPath(import.meta.url);
  if (args.only === 'vs-torch') {
    runBenchFile('bench/bench-vs-torch.ts', args.quick);
    return;
  }
  for (const c of cases) passThrough(runCaseInChild(self, c), { bench: c.bench, backend: c.backend });
  if (args.only) return;
  for (const file of ['bench/bench-vs-torch.ts', 'bench/bench-trainers.ts', 'bench/bench-workers.ts', 'bench/bench-curation.ts']) runBenchFile(file, args.quick);
}

/** Runs another bench file in a child process and passes its JSON lines through. */
function runBenchFile(file: string, quick: boolean): void {
  passThrough(runChild(process.execPath, ['bin/run-ts.js', file, ...(quick ? ['--quick'] : [])]), { bench: file });
}

await main();
