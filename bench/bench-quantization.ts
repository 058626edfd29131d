/**
 * Quantized inference: resident weight memory and paged sampling throughput of float32 against
 * int8-absmax and fp8-rowwise weights (Llama 3 rule: feed-forward projections of all but the
 * first and last layers; W8A8, per-token activation scales), on random-init models.
 *
 * Quantized models are built with `initQuantizedModel` (each selected weight quantized as soon as
 * it is drawn), so a shape whose float32 weights do not fit the wasm heap (llama-3.2-1b: 4.9 GB)
 * can still be made; float32 is attempted too and its failure reported.
 *
 * One JSON object per line on stdout, per config and scheme: build seconds, resident weight bytes
 * (float32 Variables, 8-bit codes + scales, what the quantized projections would take in
 * float32), tfjs bytes after building, sampling tokens/s over wall time and per CPU-second
 * (K samples per prompt, paged KV cache, temperature 1, no stop tokens), and for quantized
 * schemes the largest relative difference of their last-position logits from the float32 model's
 * where both fit.
 *
 *   npm run bench:quantization                                    # small.json, all three
 *   npm run bench:quantization -- --config configs/models/llama-3.2-1b.json --schemes fp8-rowwise --prompts 1 \
 *     --prompt-length 16 --max-new-tokens 4 --all-layers --projections q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --roundtrip /tmp/q1b
 */
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend.js';
import { readJsonFile } from '../src/model/checkpoint-io.js';
import { parseLlamaConfig } from '../src/model/config.js';
import { initModel } from '../src/model/weights.js';
import type { LlamaModel } from '../src/model/llama.js';
import { FullAttention } from '../src/model/attention.js';
import { initQuantizedModel, weightBytes } from '../src/model/quantization/quantize-model.js';
import { QUANT_SCHEMES, type Projection, type QuantizationOptionsInput } from '../src/model/quantization/options.js';
import { Rng } from '../src/util/rng.js';
import { loadPretrained, savePretrained } from '../src/model/pretrained.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SamplingEngine } from '../samplers/engine.js';

const { values: args } = parseArgs({
  options: {
    config: { type: 'string', default: 'configs/models/small.json' },
    schemes: { type: 'string', default: ['fp32', ...QUANT_SCHEMES].join(',') },
    prompts: { type: 'string', default: '2' },
    'prompt-length': { type: 'string', default: '32' },
    k: { type: 'string', default: '16' },
    'max-new-tokens': { type: 'string', default: '16' },
    backend: { type: 'string', default: 'wasm' },
    seed: { type: 'string', default: '0' },
    // Save each quantized model into this folder and sample from the reloaded copy (checks that the
    // folder loads on this backend; its logits must equal the in-memory model's).
    roundtrip: { type: 'string' },
    // Which projections, and whether the first and last layers too (default: the Llama 3 rule).
    projections: { type: 'string' },
    'all-layers': { type: 'boolean', default: false },
  },
});

const backend = await initBackend(args.backend as 'wasm', { quiet: true });
const config = parseLlamaConfig(readJsonFile(args.config), args.config);
const numPrompts = Number(args.prompts);
const promptLength = Number(args['prompt-length']);
const numSamples = Number(args.k);
const maxNewTokens = Number(args['max-new-tokens']);
const seed = Number(args.seed);
const schemes = args.schemes.split(',').map((s) => s.trim());
const selection: Omit<QuantizationOptionsInput, 'scheme'> = {
  ...(args.projections ? { projections: args.projections.split(',') as [Projection, ...Projection[]] } : {}),
  ...(args['all-layers'] ? { keepFirstAndLastLayers: false } : {}),
};

const rng = new Rng(1234);
const requests = Array.from({ length: numPrompts }, (_, j) => ({
  promptIds: Array.from({ length: promptLength }, () => rng.nextInt(config.vocab_size)),
  numSamples,
  seed: 100 + j * numSamples,
}));
const probeIds = [requests[0]!.promptIds];

function lastLogits(model: LlamaModel): Float32Array {
  const out = tf.tidy(() => {
    const ctx = new FullAttention({ batchSize: 1, seqLen: promptLength });
    const hidden = model.forward(tf.tensor2d(probeIds, [1, promptLength], 'int32'), ctx);
    ctx.dispose();
    return model.logits(tf.slice(hidden, [0, promptLength - 1, 0], [1, 1, hidden.shape[2]]));
  });
  const values = out.dataSync() as Float32Array;
  out.dispose();
  return values;
}

let floatLogits: Float32Array | undefined;
for (const scheme of schemes) {
  const base = { bench: 'quantization', config: args.config, scheme, ...(scheme === 'fp32' ? {} : { selection }), backend: backend.name, numPrompts, promptLength, numSamples, maxNewTokens };
  let model: LlamaModel | undefined;
  const t0 = performance.now();
  try {
    model = scheme === 'fp32' ? initModel(config, seed) : initQuantizedModel(config, seed, { scheme: scheme as (typeof QUANT_SCHEMES)[number], ...selection });
  } catch (err) {
    console.log(JSON.stringify({ ...base, error: `building the model failed: ${(err as Error).message.split('\n')[0]}`, buildSeconds: (performance.now() - t0) / 1000 }));
    continue;
  }
  const buildSeconds = (performance.now() - t0) / 1000;
  console.error(`bench quantization: ${scheme} built in ${buildSeconds.toFixed(0)} s; tfjs holds ${(tf.memory().numBytes / 2 ** 20).toFixed(0)} MiB`);
  try {
  let roundtrip: { saveSeconds: number; loadSeconds: number; folderBytes: number; logitsEqual: boolean } | undefined;
  if (args.roundtrip && scheme !== 'fp32') {
    const dir = path.join(args.roundtrip, scheme);
    fs.rmSync(dir, { recursive: true, force: true });
    const before = lastLogits(model);
    const s0 = performance.now();
    await savePretrained(model, dir, { command: 'bench quantization' });
    const saveSeconds = (performance.now() - s0) / 1000;
    model.dispose();
    const l0 = performance.now();
    model = await loadPretrained(dir);
    const loadSeconds = (performance.now() - l0) / 1000;
    const after = lastLogits(model);
    const folderBytes = fs.readdirSync(dir).reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
    roundtrip = { saveSeconds, loadSeconds, folderBytes, logitsEqual: before.every((v, i) => v === after[i]) };
  }
  const bytes = weightBytes(model);
  const tfBytes = tf.memory().numBytes;
  const logits = lastLogits(model);
  let maxRelativeLogitDiff: number | undefined;
  if (scheme === 'fp32') floatLogits = logits;
  else if (floatLogits) {
    let maxDiff = 0;
    let maxAbs = 0;
    for (let i = 0; i < logits.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(logits[i]! - floatLogits[i]!));
      maxAbs = Math.max(maxAbs, Math.abs(floatLogits[i]!));
    }
    maxRelativeLogitDiff = maxDiff / maxAbs;
  }
  const engine = new SamplingEngine({ model, kvCache: 'paged' });
  const cpu0 = process.cpuUsage();
  const w0 = performance.now();
  const { stats } = engine.generate(requests, { temperature: 1, topK: 0, topP: 1, maxNewTokens, stopTokenIds: [] });
  const wallSeconds = (performance.now() - w0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  console.log(
    JSON.stringify({
      ...base,
      buildSeconds,
      floatWeightBytes: bytes.floatBytes,
      quantizedWeightBytes: bytes.quantizedBytes,
      quantizedAsFloatBytes: bytes.quantizedAsFloatBytes,
      quantizedLayersRatio: bytes.quantizedAsFloatBytes > 0 ? bytes.quantizedBytes / bytes.quantizedAsFloatBytes : null,
      totalWeightBytes: bytes.totalBytes,
      tfjsBytesAfterBuild: tfBytes,
      numGeneratedTokens: stats.numGeneratedTokens,
      wallSeconds,
      tokensPerSecond: stats.numGeneratedTokens / wallSeconds,
      cpuSeconds,
      tokensPerCpuSecond: stats.numGeneratedTokens / cpuSeconds,
      ...(maxRelativeLogitDiff !== undefined ? { maxRelativeLogitDiff } : {}),
      ...(roundtrip ? { roundtrip } : {}),
    }),
  );
  } catch (err) {
    // e.g. the wasm heap (4 GiB) running out: report it as a result line rather than a stack trace
    console.log(JSON.stringify({ ...base, buildSeconds, weightBytes: weightBytes(model), tfjsBytes: tf.memory().numBytes, error: (err as Error).message.split('\n')[0] }));
    process.exit(1);
  }
  model.dispose();
}
