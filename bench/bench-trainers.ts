/**
 * Reward-model and DPO training throughput on configs/models/small.json (wasm), and the memory a
 * precomputed reference saves: peak RSS of DPO steps with the reference log-probs precomputed
 * (one model in memory) against a resident frozen reference model (TRL without precompute).
 * One JSON object per line; each case in a fresh child process (peak RSS is per process).
 *
 *   node bin/run-ts.js bench/bench-trainers.ts [--quick]
 */
import { fileURLToPath } from 'node:url';
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { answerCase, passThrough, runCaseInChild } from './child-case.js';
import { initBackend } from '../src/backend.js';
import { parseLlamaConfig } from '../src/model/config.js';
import { readJsonFile } from '../src/model/checkpoint-io.js';
import { initModel, toRewardModel } from '../src/model/weights.js';
import { AdamW } from '../src/train/adamw.js';
import { LocalStepEngine } from '../src/train/step-engine.js';
import { collatePreferences, rewardModelLoss, rewardModelUnits, type PreferenceBatch } from '../src/tasks/reward-model.js';
import { collatePairs, dpoLoss, dpoUnits, type DpoBatch } from '../src/tasks/dpo.js';
import { computeReferenceLogps } from '../src/trainers/reference-logps.js';
import { DPO_LOSSES } from '../losses/index.js';
import { Rng } from '../src/util/rng.js';
import type { LlamaModel } from '../src/model/llama.js';

interface Case {
  bench: 'rm' | 'dpo';
  referenceMode?: 'precomputed' | 'resident';
  config: string;
  numPairs: number;
  promptLen: number;
  responseLen: number;
  numSteps: number;
}

function randomIds(rng: Rng, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => 1 + rng.nextInt(vocab - 1));
}

async function runCase(c: Case): Promise<Record<string, unknown>> {
  await initBackend('wasm', { quiet: true });
  const config = parseLlamaConfig(readJsonFile(c.config), c.config);
  const rng = new Rng(0);
  const pairs = Array.from({ length: c.numPairs }, () => ({
    promptIds: randomIds(rng, c.promptLen, config.vocab_size),
    chosenIds: randomIds(rng, c.responseLen, config.vocab_size),
    rejectedIds: randomIds(rng, c.responseLen, config.vocab_size),
  }));
  const rssBefore = process.memoryUsage().rss;
  let model: LlamaModel;
  let step: () => Promise<void>;
  let tokensPerStep: number;
  if (c.bench === 'rm') {
    const causal = initModel(config, 0);
    model = toRewardModel(causal, 0);
    causal.dispose();
    const batch: PreferenceBatch = collatePreferences(
      pairs.map((p) => ({ promptIds: p.promptIds, responses: [p.chosenIds, p.rejectedIds], hasEdited: false, strength: 'better' as const })),
      0,
    );
    const engine = new LocalStepEngine<PreferenceBatch>(model.params, { loss: (b) => rewardModelLoss(model, b, { margin: false, centeringCoefficient: 0 }), unitsOf: rewardModelUnits }, new AdamW({ lr: 1e-5 }), { maxGradNorm: 1 });
    step = async () => void (await engine.step([batch], 1e-5));
    tokensPerStep = batch.sequences.numRealTokens;
  } else {
    model = initModel(config, 0);
    const lossOpts = { loss: DPO_LOSSES.sigmoid, beta: 0.1, labelSmoothing: 0, nllCoefficient: 0.2, formattingTokenIds: [] };
    let reference: LlamaModel | undefined;
    let batch: DpoBatch;
    if (c.referenceMode === 'resident') {
      reference = initModel(config, 0); // a second, frozen copy held for the whole run
      for (const v of reference.params.values()) v.trainable = false;
      const ref = computeReferenceLogps(reference, pairs, { batchSize: c.numPairs, padId: 0, formattingTokenIds: [] });
      batch = collatePairs(pairs, ref, 0);
    } else {
      const ref = computeReferenceLogps(model, pairs, { batchSize: c.numPairs, padId: 0, formattingTokenIds: [] });
      batch = collatePairs(pairs, ref, 0);
    }
    const engine = new LocalStepEngine<DpoBatch>(model.params, { loss: (b) => dpoLoss(model, b, lossOpts), unitsOf: dpoUnits }, new AdamW({ lr: 1e-5 }), { maxGradNorm: 1 });
    step = async () => {
      if (reference) {
        // TRL without precompute: the reference scores every batch.
        const ref = computeReferenceLogps(reference, pairs, { batchSize: c.numPairs, padId: 0, formattingTokenIds: [] });
        batch = collatePairs(pairs, ref, 0);
      }
      await engine.step([batch], 1e-5);
    };
    tokensPerStep = batch.tokens.numRealTokens;
  }
  await step(); // warm-up
  const start = performance.now();
  const cpuStart = process.cpuUsage();
  for (let i = 0; i < c.numSteps; i++) await step();
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6; // this process's CPU time: comparable when other jobs share the cores
  return {
    bench: c.bench,
    ...(c.referenceMode ? { reference: c.referenceMode } : {}),
    backend: 'wasm',
    config: c.config,
    pairs_per_step: c.numPairs,
    sequence_tokens: c.promptLen + c.responseLen,
    steps_per_s: c.numSteps / seconds,
    tokens_per_s: (tokensPerStep * c.numSteps) / seconds,
    tokens_per_cpu_s: (tokensPerStep * c.numSteps) / cpuSeconds,
    peak_rss_mb: process.resourceUsage().maxRSS / 1024,
    rss_growth_mb: (process.memoryUsage().rss - rssBefore) / 2 ** 20,
    num_tensors: tf.memory().numTensors,
    cpu: os.cpus()[0]?.model,
    load_avg: os.loadavg()[0],
  };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (await answerCase(runCase)) return;
  const quick = argv.includes('--quick');
  const config = quick ? 'configs/models/tiny.json' : 'configs/models/small.json';
  const base = { config, numPairs: 4, promptLen: quick ? 32 : 128, responseLen: quick ? 32 : 128, numSteps: quick ? 2 : 3 };
  const cases: Case[] = [
    { ...base, bench: 'rm' },
    { ...base, bench: 'dpo', referenceMode: 'precomputed' },
    { ...base, bench: 'dpo', referenceMode: 'resident' },
  ];
  const self = fileURLToPath(import.meta.url);
  for (const c of cases) passThrough(runCaseInChild(self, c), { bench: c.bench });
}

await main();
