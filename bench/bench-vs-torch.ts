/**
 * Training throughput side by side with PyTorch, in one run: forward + backward + clipping + AdamW
 * of the same architecture (configs/models/small.json), the same batch (8 × 256 random tokens),
 * the same steps, the same number of threads — tfalign in a child process (`train-step.ts`'s
 * engine via `createStepEngine`), PyTorch in `bench/torch_llama.py` under `/usr/bin/python3` (or
 * `$TFALIGN_PYTHON`). Runs alternate (tfalign, PyTorch, tfalign, PyTorch, …) so that load from
 * other processes biases neither side; each side's best repeat gives the ratio. One JSON object
 * per line on stdout.
 *
 *   node bin/run-ts.js bench/bench-vs-torch.ts [--quick] [--threads 1,2] [--repeats 2] [--steps 3] [--no-xnnpack] [--no-sample] [--only-sample]
 *
 * For T threads tfalign runs as:
 *   - T = 1: one replica, native matmul on 1 thread (`native`), and the XNNPACK route (`xnnpack`,
 *     today's path without the addon) for comparison unless --no-xnnpack;
 *   - T > 1: one replica whose matrix products use T threads (`native-1x{T}`), and T data-parallel
 *     replicas with one thread each (`native-{T}x1`).
 * PyTorch runs with `torch.set_num_threads(T)`. Both report CPU time (tfalign: `process.cpuUsage`,
 * PyTorch: `getrusage`, every thread of the process): tokens per CPU-second hardly depend on how
 * much of the machine other processes take. Without an importable torch it says so and prints
 * tfalign's figures alone.
 *
 * Then sampling, one thread each: tfalign's paged engine (`bench-sample.ts --case 256 --modes
 * paged`: 8 prompts × 256 tokens, K = 16, 64 new tokens, native kernels on 1 thread) against
 * `bench/torch_sample.py` (the same workload the best plain-PyTorch way: each prompt prefilled
 * once, its KV cache repeated K times, the K samples decoded as one batch), alternating.
 */
import { spawnSync } from 'node:child_process';
import { answerCase, runChild } from './child-case.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend.js';
import { countParameters, parseLlamaConfig } from '../src/model/config.js';
import { readJsonFile } from '../src/model/checkpoint-io.js';
import { initModel } from '../src/model/weights.js';
import { createStepEngine } from '../src/parallel/factory.js';
import type { TokenBatch } from '../data/collate.js';
import { randomBatch } from './train-step.js';

interface TfalignCase {
  config: string;
  variant: string;
  numWorkers: number;
  batchSize: number;
  seqLen: number;
  numSteps: number;
}

const loadavg = () => os.loadavg().map((x) => Number(x.toFixed(2)));

function machine(): Record<string, string | number> {
  return { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.availableParallelism(), node: process.version };
}

/** In the child: one warm-up step, then `numSteps` timed steps. */
async function runTfalign(c: TfalignCase): Promise<Record<string, unknown>> {
  const loadBefore = loadavg();
  const info = await initBackend('wasm', { quiet: true });
  const config = parseLlamaConfig(readJsonFile(c.config), c.config);
  const model = initModel(config, 0);
  const engine = await createStepEngine<TokenBatch>({ numWorkers: c.numWorkers, model, task: { kind: 'causal-lm' }, optimizer: { lr: 1e-4 }, maxGradNorm: 1 });
  const batch = randomBatch(config.vocab_size, c.batchSize, c.seqLen, 1);
  await engine.step([batch], 1e-4); // warm-up: kernels, packing, copying weights to the workers
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
    bench: 'train-vs-torch', framework: 'tfalign', variant: c.variant, backend: info.name, matmul: info.matMul,
    threads: Number(process.env.TFALIGN_NATIVE_THREADS ?? 1) * c.numWorkers, workers: c.numWorkers, config: c.config,
    parameters: countParameters(config), batch: `${c.batchSize}x${c.seqLen}`, steps: c.numSteps, seconds_per_step: seconds / c.numSteps,
    tokens_per_s: numTokens / seconds, cpu_seconds: cpuSeconds, tokens_per_cpu_s: numTokens / cpuSeconds,
    num_tensors_after: tf.memory().numTensors, loadavg_before: loadBefore, loadavg_after: loadavg(), ...machine(),
  };
}

/** The Python that has torch, or why none does. */
function findTorchPython(): { python: string; version: string } | { python: undefined; reason: string } {
  const candidates = [process.env.TFALIGN_PYTHON, fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : undefined, 'python3'].filter((p): p is string => !!p);
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
    if (r.status === 0) return { python, version: r.stdout.trim() };
  }
  return { python: undefined, reason: `torch is not importable by ${candidates.join(' or ')} (Debian: apt-get install python3-torch libopenblas0-pthread)` };
}

/** Runs a command whose last stdout line is a JSON record; prints and returns it (undefined on failure). */
function runRecord(command: string, args: string[], env: NodeJS.ProcessEnv, label: Record<string, unknown>): Record<string, number> | undefined {
  const result = runChild(command, args, { env });
  if (!result.ok) {
    console.log(JSON.stringify({ ...label, error: result.error }));
    return undefined;
  }
  console.log(JSON.stringify({ ...result.record, loadavg_after: result.record.loadavg_after ?? loadavg() }));
  return result.record;
}

function parseArgs(argv: string[]) {
  const get = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const quick = argv.includes('--quick');
  const cores = os.availableParallelism();
  return {
    quick,
    threads: (get('--threads') ?? (cores > 1 ? `1,${cores}` : '1')).split(',').map(Number),
    repeats: Number(get('--repeats') ?? (quick ? 1 : 2)),
    steps: Number(get('--steps') ?? 3),
    xnnpack: !argv.includes('--no-xnnpack'),
    sample: !argv.includes('--no-sample'),
    onlySample: argv.includes('--only-sample'),
  };
}

type Best = Map<string, Record<string, number>>;

function keepBest(best: Best, key: string, record: Record<string, number> | undefined): void {
  if (!record) return;
  const previous = best.get(key);
  best.set(key, {
    tokens_per_s: Math.max(previous?.tokens_per_s ?? 0, record.tokens_per_s),
    tokens_per_cpu_s: Math.max(previous?.tokens_per_cpu_s ?? 0, record.tokens_per_cpu_s),
  });
}

async function main(): Promise<void> {
  if (await answerCase(runTfalign)) return;
  const args = parseArgs(process.argv.slice(2));
  const config = args.quick ? 'configs/models/tiny.json' : 'configs/models/small.json';
  const batchSize = 8;
  const seqLen = args.quick ? 64 : 256;
  const torch = findTorchPython();
  if ('reason' in torch) console.log(JSON.stringify({ bench: 'train-vs-torch', framework: 'pytorch', skipped: torch.reason }));
  const self = fileURLToPath(import.meta.url);
  const torchScript = fileURLToPath(new URL('./torch_llama.py', import.meta.url));
  for (const threads of args.onlySample ? [] : args.threads) {
    // tfalign variants for this thread count: [name, workers, matmul threads per worker, native?]
    const variants: [string, number, number, boolean][] =
      threads === 1 ? [['native', 1, 1, true], ...(args.xnnpack ? [['xnnpack', 1, 1, false] as [string, number, number, boolean]] : [])]
        : [[`native-1x${threads}`, 1, threads, true], [`native-${threads}x1`, threads, 1, true]];
    const best: Best = new Map();
    for (let repeat = 0; repeat < args.repeats; repeat++) {
      for (const [variant, numWorkers, matmulThreads, native] of variants) {
        const c: TfalignCase = { config, variant, numWorkers, batchSize, seqLen, numSteps: args.steps };
        const env = { ...process.env, TFALIGN_NATIVE_THREADS: String(matmulThreads), ...(native ? {} : { TFALIGN_NATIVE_MATMUL: '0' }) };
        keepBest(best, variant, runRecord(process.execPath, ['bin/run-ts.js', self, '--case', JSON.stringify(c)], env, { bench: 'train-vs-torch', framework: 'tfalign', variant }));
        if (torch.python && variant === variants[0][0]) {
          const torchArgs = [torchScript, '--config', config, '--batch', String(batchSize), '--seq', String(seqLen), '--steps', String(args.steps), '--warmup', '1', '--threads', String(threads)];
          keepBest(best, 'pytorch', runRecord(torch.python, torchArgs, process.env, { bench: 'train-vs-torch', framework: 'pytorch', threads }));
        }
      }
    }
    const peer = best.get('pytorch');
    for (const [variant] of variants) {
      const mine = best.get(variant);
      if (!mine) continue;
      console.log(JSON.stringify({
        bench: 'train-vs-torch-summary', config, batch: `${batchSize}x${seqLen}`, threads, variant, repeats: args.repeats,
        tfalign_tokens_per_s: mine.tokens_per_s, tfalign_tokens_per_cpu_s: mine.tokens_per_cpu_s,
        ...(peer
          ? {
              torch: (torch as { version: string }).version, torch_tokens_per_s: peer.tokens_per_s, torch_tokens_per_cpu_s: peer.tokens_per_cpu_s,
              ratio: mine.tokens_per_s / peer.tokens_per_s, cpu_ratio: mine.tokens_per_cpu_s / peer.tokens_per_cpu_s, target_ratio: 1,
            }
          : { torch: 'unavailable' }),
        loadavg: loadavg(), ...machine(),
      }));
    }
  }
  if (args.sample) compareSampling(args.quick, args.repeats, torch);
}

/** Sampling tokens/s, tfalign's paged engine against the PyTorch peer, one thread each, alternating. */
function compareSampling(quick: boolean, repeats: number, torch: ReturnType<typeof findTorchPython>): void {
  // bench-sample.ts's case 256 (its --quick variant: 2 prompts, K = 4, 8 new tokens).
  const work = quick ? { prompts: 2, k: 4, newTokens: 8 } : { prompts: 8, k: 16, newTokens: 64 };
  const config = 'configs/models/small.json';
  const torchScript = fileURLToPath(new URL('./torch_sample.py', import.meta.url));
  const best = { tfalign: 0, tfalignCpu: 0, pytorch: 0 };
  for (let repeat = 0; repeat < repeats; repeat++) {
    const env = { ...process.env, TFALIGN_NATIVE_THREADS: '1' };
    const mine = runRecord(process.execPath, ['bin/run-ts.js', 'bench/bench-sample.ts', '--case', '256', '--modes', 'paged', ...(quick ? ['--quick'] : [])], env, { bench: 'sample-vs-torch', framework: 'tfalign' });
    if (mine) best.tfalign = Math.max(best.tfalign, mine.tokens_per_s);
    if (torch.python) {
      const torchArgs = [torchScript, '--config', config, '--prompts', String(work.prompts), '--prompt-tokens', '256', '--k', String(work.k), '--new-tokens', String(work.newTokens), '--threads', '1'];
      const peer = runRecord(torch.python, torchArgs, { ...process.env, PYTHONPATH: path.dirname(torchScript) }, { bench: 'sample-vs-torch', framework: 'pytorch' });
      if (peer) best.pytorch = Math.max(best.pytorch, peer.tokens_per_s);
    }
  }
  console.log(JSON.stringify({
    bench: 'sample-vs-torch-summary', config, prompts: work.prompts, prompt_tokens: 256, k: work.k, new_tokens: work.newTokens, threads: 1, repeats,
    tfalign_tokens_per_s: best.tfalign,
    ...(best.pytorch > 0 ? { torch_tokens_per_s: best.pytorch, ratio: best.tfalign / best.pytorch, target_ratio: 2 } : { torch: 'unavailable' }),
    loadavg: loadavg(), ...machine(),
  }));
}

await main();
