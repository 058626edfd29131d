/**
 * Where one training step's time goes: forward + backward + AdamW of an architecture file at a
 * batch size (default small.json, 8 × 256) under `tf.profile`, each kernel's wall time summed by
 * kernel name (wasm kernels run synchronously, so a kernel's time is its own). One JSON object per
 * kernel name, largest first, then a total line.
 *
 *   node bin/run-ts.js bench/profile-step.ts [--config configs/models/small.json] [--batch 8] [--seq 256] [--matmul native|xnnpack]
 */
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend.js';
import { setMatMulPath } from '../src/kernels/wasm-kernels.js';
import { parseLlamaConfig } from '../src/model/config.js';
import { readJsonFile } from '../src/model/checkpoint-io.js';
import { initModel } from '../src/model/weights.js';
import { AdamW } from '../src/train/adamw.js';
import { LocalStepEngine } from '../src/train/step-engine.js';
import { causalLmLoss } from '../src/tasks/causal-lm.js';
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

const info = await initBackend('wasm', { quiet: true });
setMatMulPath(matmul);
const config = parseLlamaConfig(readJsonFile(configFile), configFile);
const model = initModel(config, 0);
const engine = new LocalStepEngine<TokenBatch>(model.params, (b) => causalLmLoss(model, b), new AdamW({ lr: 1e-4 }), { maxGradNorm: 1 });
const batch = randomBatch(config.vocab_size, batchSize, seqLen, 1);
await engine.step([batch], 1e-4); // warm-up
const start = performance.now();
const profile = await tf.profile(async () => {
  await engine.step([batch], 1e-4);
});
const wallMs = performance.now() - start;
const byName = new Map<string, { ms: number; calls: number }>();
for (const k of profile.kernels) {
  const entry = byName.get(k.name) ?? { ms: 0, calls: 0 };
  entry.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
  entry.calls++;
  byName.set(k.name, entry);
}
const kernelMs = [...byName.values()].reduce((a, e) => a + e.ms, 0);
for (const [name, e] of [...byName].sort((x, y) => y[1].ms - x[1].ms)) {
  console.log(JSON.stringify({ bench: 'profile-step', kernel: name, ms: Number(e.ms.toFixed(1)), calls: e.calls, share: Number((e.ms / kernelMs).toFixed(3)) }));
}
console.log(JSON.stringify({
  bench: 'profile-step-total', config: configFile, batch: `${batchSize}x${seqLen}`, matmul: info.matMul && matmul === 'native' ? info.matMul : 'matmul: XNNPACK',
  kernel_ms: Number(kernelMs.toFixed(1)), wall_ms: Number(wallMs.toFixed(1)), outside_kernels_ms: Number((wallMs - kernelMs).toFixed(1)),
  loadavg: os.loadavg().map((x) => Number(x.toFixed(2))), cpu: os.cpus()[0]?.model ?? 'unknown', node: process.version,
}));
model.dispose();
