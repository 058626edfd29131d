/**
 * LoRA, gradient checkpointing and the chunked LM head at real sizes (wasm, random init):
 *
 *   train   SFT and DPO steps (micro-batch 1 × 512 tokens; DPO: 1 pair = 2 × 512) on
 *           smollm2-135m / smollm2-360m, LoRA r 16 on all seven projections vs full fine-tuning
 *           where the memory pre-check lets it run; gradient checkpointing on, head chunks 'auto'.
 *           DPO with LoRA scores its reference with the adapters off (no second model).
 *   sample  K = 8 rejection-sampling generation (paged KV cache) on both models.
 *   head    one causal-LM gradient over 2 × 512 tokens of a 1-layer model (hidden 576) as the
 *           vocabulary grows 8 k → 128 k, plain head vs chunks of 256 positions vs 'auto' (sized to the vocabulary).
 *
 * One JSON object per line, each case in a fresh child process (peak RSS and the wasm heap, which
 * only grows, are per process). Tokens per CPU-second are given as well: other jobs may share the
 * cores.
 *
 *   node bin/run-ts.js bench/bench-lora.ts [--quick] [--only train|sample|head] [--models smollm2-135m,smollm2-360m]
 */
import { fileURLToPath } from 'node:url';
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { answerCase, passThrough, runCaseInChild } from './child-case.js';
import { initBackend } from '../src/backend.js';
import { modelDims, parseLlamaConfig } from '../src/model/config.js';
import { readJsonFile } from '../src/model/checkpoint-io.js';
import { initModel } from '../src/model/weights.js';
import { initQuantizedModel } from '../src/model/quantization/quantize-model.js';
import { numQuantizedParameters } from '../src/model/quantization/hf-format.js';
import { PROJECTIONS, QuantizationOptionsSchema } from '../src/model/quantization/options.js';
import { headChunkRows, type HeadChunking } from '../src/model/lm-head.js';
import { attachedAdapters, trainingParameters } from '../src/model/lora.js';
import { LoraOptionsSchema } from '../src/config/lora.js';
import { configureTrainingModel } from '../src/train/model-setup.js';
import { checkTrainingFits } from '../src/train/fits.js';
import { AdamW } from '../src/train/adamw.js';
import { LocalStepEngine } from '../src/train/step-engine.js';
import { computeGradients, disposeGrads } from '../src/train/grad-accumulator.js';
import { causalLmLoss, causalLmUnits } from '../src/tasks/causal-lm.js';
import { normalizedLoss } from '../src/train/objective.js';
import { collatePairs, dpoLoss, dpoUnits, type DpoBatch } from '../src/tasks/dpo.js';
import { computeReferenceLogps } from '../src/trainers/reference-logps.js';
import { padRows, type TokenBatch } from '../data/collate.js';
import { DPO_LOSSES } from '../losses/index.js';
import { SamplingEngine } from '../samplers/engine.js';
import { Rng } from '../src/util/rng.js';

type Case =
  | { bench: 'train'; objective: 'sft' | 'dpo'; config: string; mode: 'lora' | 'full' | 'qlora'; seqLen: number; numSteps: number }
  | { bench: 'sample'; config: string; k: number; numPrompts: number; promptLen: number; maxNewTokens: number }
  | { bench: 'head'; vocab: number; chunk: HeadChunking; numRows: number; seqLen: number; frozenEmbedding: boolean };

const ids = (rng: Rng, n: number, vocab: number) => Array.from({ length: n }, () => 1 + rng.nextInt(vocab - 1));

/** The wasm heap's size: it only grows, so at the end it is the peak of tensor memory. */
function wasmHeapMb(): number | undefined {
  const backend = tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } };
  return backend.wasm?.HEAPU8 ? backend.wasm.HEAPU8.buffer.byteLength / 2 ** 20 : undefined;
}

function common(): Record<string, unknown> {
  return { backend: 'wasm', peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024), wasm_heap_mb: wasmHeapMb(), cpu: os.cpus()[0]?.model, cores: os.cpus().length, load_avg: Number(os.loadavg()[0].toFixed(2)) };
}

function cpuSeconds(from: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(from);
  return (d.user + d.system) / 1e6;
}

async function trainCase(c: Extract<Case, { bench: 'train' }>): Promise<Record<string, unknown>> {
  const config = parseLlamaConfig(readJsonFile(c.config), c.config);
  const dims = modelDims(config);
  const lora = c.mode === 'full' ? undefined : LoraOptionsSchema.parse({ r: 16 });
  // QLoRA: every projection of every layer in 8 bits (weights only), built without a float copy
  const quantization = QuantizationOptionsSchema.parse({ scheme: 'int8-absmax', activations: 'none', projections: [...PROJECTIONS], keepFirstAndLastLayers: false });
  const quantizedParameters = c.mode === 'qlora' ? numQuantizedParameters(config, quantization) : 0;
  const options = { lora, gradientCheckpointing: true, headChunkTokens: 'auto' as const, seed: 0 };
  const head = { bench: 'train', objective: c.objective, model: c.config, mode: c.mode, micro_batch: `1 x ${c.seqLen}`, lora_r: lora?.r ?? null, gradient_checkpointing: true, head_chunk_tokens: 'auto' };
  try {
    checkTrainingFits({ batchSize: 1, workers: 1, ...options }, dims, { backend: 'wasm', length: c.seqLen, lengthField: 'maxLength', sequencesPerRow: c.objective === 'dpo' ? 2 : 1, quantizedParameters }, `${c.objective} config`);
  } catch (err) {
    return { ...head, refused: (err as Error).message };
  }
  const model = c.mode === 'qlora' ? initQuantizedModel(config, 0, quantization) : initModel(config, 0);
  configureTrainingModel(model, options);
  const params = trainingParameters(model);
  let numTrainable = 0;
  for (const v of params.values()) if (v.trainable) numTrainable += v.size;
  // QLoRA: the 8-bit codes (1 byte a value, outside the tensor heap) count with the float32 weights
  const numParameters = model.numParameters() + quantizedParameters;
  const codeBytes = quantizedParameters;
  const weightBytes = 4 * model.numParameters() + codeBytes;
  const rng = new Rng(1);
  const promptLen = Math.min(64, c.seqLen / 4);
  const optimizer = new AdamW({ lr: 1e-5 });
  let step: () => Promise<void>;
  let tokensPerStep: number;
  if (c.objective === 'sft') {
    const batch: TokenBatch = padRows([{ ids: ids(rng, c.seqLen, config.vocab_size), targetMask: Array.from({ length: c.seqLen }, (_, i) => (i < promptLen ? 0 : 1)) }], 0);
    const engine = new LocalStepEngine<TokenBatch>(params, { loss: (b) => causalLmLoss(model, b), unitsOf: causalLmUnits }, optimizer, { maxGradNorm: 1 });
    step = async () => void (await engine.step([batch], 1e-5));
    tokensPerStep = batch.numRealTokens;
  } else {
    const pairs = [{ promptIds: ids(rng, promptLen, config.vocab_size), chosenIds: ids(rng, c.seqLen - promptLen, config.vocab_size), rejectedIds: ids(rng, c.seqLen - promptLen, config.vocab_size) }];
    const lossOpts = { loss: DPO_LOSSES.sigmoid, beta: 0.1, labelSmoothing: 0, nllCoefficient: 0.2, formattingTokenIds: [] };
    const refOpts = { batchSize: 2, padId: 0, formattingTokenIds: [] };
    const engine = new LocalStepEngine<DpoBatch>(params, { loss: (b) => dpoLoss(model, b, lossOpts), unitsOf: dpoUnits }, optimizer, { maxGradNorm: 1 });
    const adapters = attachedAdapters(model);
    step = async () => {
      // LoRA: the reference is the same weights with the adapters off, scored every step (TRL with a PEFT policy);
      // full fine-tuning: precomputed from the starting weights (here: recomputed, same cost as once per pair)
      const ref = adapters ? adapters.withDisabled(() => computeReferenceLogps(model, pairs, refOpts)) : computeReferenceLogps(model, pairs, refOpts);
      await engine.step([collatePairs(pairs, ref, 0)], 1e-5);
    };
    tokensPerStep = 2 * c.seqLen;
  }
  // One measured step (a 360M step takes minutes here): it includes the first call of each
  // kernel and AdamW's state allocation, a small share of a step of this size.
  const cpu = process.cpuUsage();
  const start = performance.now();
  for (let i = 0; i < c.numSteps; i++) await step();
  const seconds = (performance.now() - start) / 1000;
  const heldBytes = tf.memory().numBytes + codeBytes;
  const cpuS = cpuSeconds(cpu);
  return {
    ...head,
    parameters: numParameters,
    ...(quantizedParameters > 0 ? { quantized_parameters: quantizedParameters, quantized_mb: Math.round(codeBytes / 2 ** 20) } : {}),
    trainable: numTrainable,
    trainable_pct: Number(((100 * numTrainable) / numParameters).toFixed(3)),
    steps: c.numSteps,
    step_s: Number((seconds / c.numSteps).toFixed(1)),
    tokens_per_s: Number(((tokensPerStep * c.numSteps) / seconds).toFixed(1)),
    tokens_per_cpu_s: Number(((tokensPerStep * c.numSteps) / cpuS).toFixed(1)),
    weights_mb: Math.round(weightBytes / 2 ** 20),
    held_between_steps_mb: Math.round(heldBytes / 2 ** 20),
    held_over_weights: Number((heldBytes / weightBytes).toFixed(3)),
    ...common(),
  };
}

async function sampleCase(c: Extract<Case, { bench: 'sample' }>): Promise<Record<string, unknown>> {
  const config = parseLlamaConfig(readJsonFile(c.config), c.config);
  const model = initModel(config, 0);
  const rng = new Rng(3);
  const requests = Array.from({ length: c.numPrompts }, (_, p) => ({ promptIds: ids(rng, c.promptLen, config.vocab_size), numSamples: c.k, seed: 1000 * p }));
  const engine = new SamplingEngine({ model, kvCache: 'paged' });
  const cpu = process.cpuUsage();
  const { stats } = engine.generate(requests, { temperature: 1, maxNewTokens: c.maxNewTokens, stopTokenIds: [] });
  const cpuS = cpuSeconds(cpu);
  return {
    bench: 'sample', model: c.config, kv_cache: 'paged', k: c.k, prompts: c.numPrompts, prompt_tokens: c.promptLen, max_new_tokens: c.maxNewTokens,
    generated_tokens: stats.numGeneratedTokens, wall_s: Number(stats.wallSeconds.toFixed(1)), tokens_per_s: Number(stats.tokensPerSecond.toFixed(2)),
    tokens_per_cpu_s: Number((stats.numGeneratedTokens / cpuS).toFixed(2)), ...common(),
  };
}

async function headCase(c: Extract<Case, { bench: 'head' }>): Promise<Record<string, unknown>> {
  const config = parseLlamaConfig({ vocab_size: c.vocab, hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 1, num_attention_heads: 9, num_key_value_heads: 3, max_position_embeddings: 2048, tie_word_embeddings: true }, 'head bench');
  const model = initModel(config, 0);
  model.headChunkTokens = c.chunk;
  // frozen: the embedding (= tied head) gets no gradient, as under LoRA; the layer still trains
  if (c.frozenEmbedding) model.params.get('model.embed_tokens.weight')!.trainable = false;
  const rng = new Rng(5);
  const batch = padRows(Array.from({ length: c.numRows }, () => ({ ids: ids(rng, c.seqLen, c.vocab), targetMask: Array.from({ length: c.seqLen }, () => 1) })), 0);
  const heapBefore = wasmHeapMb();
  const start = performance.now();
  let loss = 0;
  // tf.profile's peakBytes: the most tensor memory alive at once during the step
  const profile = await tf.profile(() => {
    const out = computeGradients(model.params, () => normalizedLoss(causalLmLoss(model, batch).sums, causalLmUnits(batch)));
    loss = out.loss;
    disposeGrads(out.grads);
  });
  const seconds = (performance.now() - start) / 1000;
  const positions = c.numRows * (c.seqLen - 1);
  return {
    bench: 'head', vocab: c.vocab, head_chunk_tokens: c.chunk, chunk_rows: headChunkRows(c.numRows * (c.seqLen - 1), c.vocab, 576, c.chunk), embedding: c.frozenEmbedding ? 'frozen (LoRA)' : 'trained', positions,
    peak_tensor_mb: Math.round(profile.peakBytes / 2 ** 20), loss: Number(loss.toFixed(4)), step_s: Number(seconds.toFixed(2)),
    full_logits_mb: Math.round((4 * positions * c.vocab) / 2 ** 20), embedding_mb: Math.round((4 * c.vocab * 576) / 2 ** 20),
    wasm_heap_before_step_mb: heapBefore, ...common(),
  };
}

async function runCase(c: Case): Promise<Record<string, unknown>> {
  await initBackend('wasm', { quiet: true });
  if (c.bench === 'train') return trainCase(c);
  if (c.bench === 'sample') return sampleCase(c);
  return headCase(c);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (await answerCase(runCase)) return;
  const quick = argv.includes('--quick');
  const onlyArg = argv.indexOf('--only');
  const only = onlyArg >= 0 ? argv[onlyArg + 1] : undefined;
  const modelsArg = argv.indexOf('--models');
  const named = modelsArg >= 0 ? argv[modelsArg + 1]!.split(',').map((m) => `configs/models/${m}.json`) : undefined;
  const models = quick ? ['configs/models/tiny.json'] : (named ?? ['configs/models/smollm2-135m.json', 'configs/models/smollm2-360m.json']);
  const seqLen = quick ? 64 : 512;
  const cases: Case[] = [];
  // the targets first: smollm2-360m LoRA SFT and DPO within the wasm heap (full is refused by the pre-check)
  for (const config of [...models].reverse()) {
    for (const objective of ['sft', 'dpo'] as const) {
      for (const mode of ['lora', 'full'] as const) cases.push({ bench: 'train', objective, config, mode, seqLen, numSteps: 1 });
    }
  }
  // QLoRA on the size whose float32 weights alone exceed the wasm heap
  if (!quick) for (const objective of ['sft', 'dpo'] as const) cases.push({ bench: 'train', objective, config: 'configs/models/llama-3.2-1b.json', mode: 'qlora', seqLen, numSteps: 1 });
  for (const vocab of quick ? [512, 2048] : [8192, 32768, 128256]) {
    for (const frozenEmbedding of [true, false]) {
      for (const chunk of [0, 256, 'auto'] as const) cases.push({ bench: 'head', vocab, chunk, numRows: 2, seqLen: quick ? 64 : 512, frozenEmbedding });
    }
  }
  for (const config of models) cases.push({ bench: 'sample', config, k: 8, numPrompts: 1, promptLen: quick ? 16 : 64, maxNewTokens: quick ? 8 : 32 });
  const self = fileURLToPath(import.meta.url);
  // a case that runs out of memory says so: the last error line of its stderr
  for (const c of cases.filter((x) => only === undefined || x.bench === only)) passThrough(runCaseInChild(self, c, { stderrReason: true }), c);
}

await main();
