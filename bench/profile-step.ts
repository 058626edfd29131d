/**
 * Where one training step's time goes: forward + backward + AdamW of an architecture file at a
 * batch size (default small.json, 8 × 256) on wasm, each kernel's CPU time summed by kernel name.
 * Every wasm kernel is wrapped to read `process.cpuUsage()` before and after (CPU time, not wall
 * time: a kernel preempted by other processes on a shared machine is not charged for the wait;
 * with native threads > 1 the helpers' time lands in the kernel too). One JSON object per kernel
 * name, largest first, then a total line.
 *
 *   node bin/run-ts.js bench/profile-step.ts [--config configs/models/small.json] [--batch 8] [--seq 256] [--matmul native|xnnpack] [--top 0]
 *
 * `--top N` also prints the N costliest single calls with their input shapes.
 */
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { initBackend } from '../src/backend.js';
import { setMatMulPath } from '../src/kernels/wasm-kernels.js';
import { parseLlamaConfig } from '../src/model/config.js';
import { readJsonFile } from '../src/model/checkpoint-io.js';
import { initModel } from '../src/model/weights.js';
import { AdamW } from '../src/train/adamw.js';
import { LocalStepEngine } from '../src/train/step-engine.js';
import { causalLmLoss, causalLmUnits } from '../src/tasks/causal-lm.js';
import type { TokenBatch } from '../data/collate.js';
import { randomBatch } from './train-step.js';

const argv = process.argv.slice(2);
const get = (flag: string, fallback: string) => {
  const i = argv.indexOf(flag);
  return i >= 0 ? argv[i + 1] : fallback;
};
const configFile = get('--config', 'configs/models/small.json');
const batchSize = Number(get('--batch', '8'));
const seqLen = Number(get('--seq', '256'));
const matmul = get('--matmul', 'native') as 'native' | 'xnnpack';
const numTop = Number(get('--top', '0'));

const info = await initBackend('wasm', { quiet: true });
const status = setMatMulPath(matmul);

interface Call {
  kernel: string;
  ms: number;
  inputs: number[][];
}
let recording = false;
const calls: Call[] = [];
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
/** Wraps every wasm kernel registered now with a CPU-time probe (re-registering replaces it). */
for (const config of tf.getKernelsForBackend('wasm')) {
  const inner = config.kernelFunc;
  const wrapped: KernelConfig = {
    ...config,
    kernelFunc: (args) => {
      if (!recording) return inner(args);
      const start = cpuMs();
      const out = inner(args);
      const inputs = Object.values(args.inputs).map((t) => (t as TensorInfo | undefined)?.shape ?? []);
      calls.push({ kernel: config.kernelName, ms: cpuMs() - start, inputs });
      return out;
    },
  };
  tf.unregisterKernel(config.kernelName, 'wasm');
  tf.registerKernel(wrapped);
}

const config = parseLlamaConfig(readJsonFile(configFile), configFile);
const model = initModel(config, 0);
const engine = new LocalStepEngine<TokenBatch>(model.params, { loss: (b: TokenBatch) => causalLmLoss(model, b), unitsOf: causalLmUnits }, new AdamW({ lr: 1e-4 }), { maxGradNorm: 1 });
const batch = randomBatch(config.vocab_size, batchSize, seqLen, 1);
await engine.step([batch], 1e-4); // warm-up
const wallStart = performance.now();
const cpuStart = cpuMs();
recording = true;
await engine.step([batch], 1e-4);
recording = false;
const stepCpuMs = cpuMs() - cpuStart;
const wallMs = performance.now() - wallStart;

const byName = new Map<string, { ms: number; calls: number }>();
for (const c of calls) {
  const entry = byName.get(c.kernel) ?? { ms: 0, calls: 0 };
  entry.ms += c.ms;
  entry.calls++;
  byName.set(c.kernel, entry);
}
const kernelMs = calls.reduce((a, c) => a + c.ms, 0);
for (const c of [...calls].sort((x, y) => y.ms - x.ms).slice(0, numTop)) {
  console.log(JSON.stringify({ bench: 'profile-call', kernel: c.kernel, cpu_ms: Number(c.ms.toFixed(1)), inputs: c.inputs }));
}
for (const [name, e] of [...byName].sort((x, y) => y[1].ms - x[1].ms)) {
  console.log(JSON.stringify({ bench: 'profile-step', kernel: name, cpu_ms: Number(e.ms.toFixed(1)), calls: e.calls, share: Number((e.ms / stepCpuMs).toFixed(3)) }));
}
console.log(JSON.stringify({
  bench: 'profile-step-total', config: configFile, batch: `${batchSize}x${seqLen}`, backend: info.name, matmul: status.description,
  step_cpu_ms: Number(stepCpuMs.toFixed(1)), kernel_cpu_ms: Number(kernelMs.toFixed(1)), outside_kernels_cpu_ms: Number((stepCpuMs - kernelMs).toFixed(1)),
  wall_ms: Number(wallMs.toFixed(1)), loadavg: os.loadavg().map((x) => Number(x.toFixed(2))), cpu: os.cpus()[0]?.model ?? 'unknown', node: process.version,
}));
model.dispose();
