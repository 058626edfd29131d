/**
 * Data-parallel training throughput: forward+backward+AdamW tokens/s of configs/models/small.json
 * at batch 8 × 256 on wasm, with 1 replica (`LocalStepEngine`) and with N (`WorkerStepEngine`),
 * and the scaling ratio. One JSON object per line on stdout.
 *
 *   node bin/run-ts.js bench/bench-workers.ts [--quick] [--workers 1,2] [--repeats 2] [--steps 3]
 *
 * Each case runs in a fresh child process; cases alternate (1, N, 1, N, …) and the ratio uses
 * each count's best repeat, so that load from other processes on a shared machine — reported as
 * `os.loadavg()` before and after each case — biases neither side. CPU time (`process.cpuUsage`,
 * every thread of the process) is reported too: tokens per CPU-second do not depend on how much
 * of the machine other processes take, so `cpu_efficiency` (N replicas against 1) says how much
 * of the ideal N× the engine itself gives up to communication and imbalance.
 */
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend.js';
import { countParameters, parseLlamaConfig } from '../src/model/config.js';
import { readJsonFile } from '../src/model/checkpoint-io.js';
import { initModel } from '../src/model/weights.js';
import { createStepEngine } from '../src/parallel/factory.js';
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
    child: get('--case'),
  };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.child) {
    console.log(JSON.stringify(await runCase(JSON.parse(args.child) as Case)));
    return;
  }
  const config = args.quick ? 'configs/models/tiny.json' : 'configs/models/small.json';
  const seqLen = args.quick ? 64 : 256;
  const self = fileURLToPath(import.meta.url);
  const best = new Map<number, { tokensPerSecond: number; tokensPerCpuSecond: number }>();
  for (let repeat = 0; repeat < args.repeats; repeat++) {
    for (const numWorkers of args.workers) {
      const c: Case = { config, numWorkers, batchSize: 8, seqLen, numSteps: args.steps, repeat };
      const child = spawnSync(process.execPath, ['bin/run-ts.js', self, '--case', JSON.stringify(c)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      if (child.status !== 0) {
        console.log(JSON.stringify({ bench: 'train-workers', workers: numWorkers, repeat, error: `exit ${child.status}` }));
        continue;
      }
      process.stdout.write(child.stdout);
      const record = JSON.parse(child.stdout.trim().split('\n').pop()!) as { tokens_per_s: number; tokens_per_cpu_s: number };
      const previous = best.get(numWorkers) ?? { tokensPerSecond: 0, tokensPerCpuSecond: 0 };
      best.set(numWorkers, {
        tokensPerSecond: Math.max(previous.tokensPerSecond, record.tokens_per_s),
        tokensPerCpuSecond: Math.max(previous.tokensPerCpuSecond, record.tokens_per_cpu_s),
      });
    }
  }
  const baseline = best.get(1);
  for (const [numWorkers, figures] of best) {
    if (numWorkers === 1 || baseline === undefined) continue;
    console.log(JSON.stringify({
      bench: 'train-workers-scaling', config, batch: `8x${seqLen}`, workers: numWorkers,
      tokens_per_s_1: baseline.tokensPerSecond, tokens_per_s_n: figures.tokensPerSecond, ratio: figures.tokensPerSecond / baseline.tokensPerSecond, target_ratio: 1.8,
      cpu_efficiency: figures.tokensPerCpuSecond / baseline.tokensPerCpuSecond, loadavg: loadavg(), ...machine(),
    }));
  }
}

await main();
