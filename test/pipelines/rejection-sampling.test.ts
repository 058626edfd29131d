/**
 * The one rejection-sampling step (`tfalign sample` and the round stage): the same samples,
 * choices and SFT rows with workers as without (rewards up to float32 batching), and the random-selection ablation keeps a sample that is not always the
 * reward model's best while recording the reward model's scores.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../../src/tokenizer/bpe-trainer.js';
import { createModel } from '../../src/model/create.js';
import { savePretrained } from '../../src/model/pretrained.js';
import { toRewardModel } from '../../src/model/weights.js';
import { runRejectionSampling, type RejectionSamplingOptions } from '../../src/pipelines/rejection-sampling.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-rs-step-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

let base: Omit<RejectionSamplingOptions, 'numWorkers' | 'outDir' | 'selection'>;

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  const tokDir = path.join(tmpRoot, 'tok');
  const words = ['apple', 'river', 'stone', 'cloud', 'green', 'music', 'paper', 'light'];
  const corpus = Array.from({ length: 300 }, (_, i) => `${words[i % 8]} ${words[(i * 5) % 8]} ${words[(i * 3 + 1) % 8]}.`);
  const tokenizerJson = trainByteLevelBpe([corpus.join('\n')], { vocabSize: 300 });
  writeTokenizerFolder(tokDir, { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson) });
  const policyDir = path.join(tmpRoot, 'policy');
  const policy = await createModel({ configFile: 'configs/models/tiny.json', tokenizerDir: tokDir, out: policyDir, seed: 3 });
  const rewardModelDir = path.join(tmpRoot, 'rm');
  const rewardModel = toRewardModel(policy, 5);
  await savePretrained(rewardModel, rewardModelDir, { tokenizerDir: tokDir });
  policy.dispose();
  rewardModel.dispose();
  base = {
    policyDir,
    rewardModelDir,
    prompts: ['apple river', 'stone cloud', 'green music', 'paper light'].map((prompt, j) => ({ prompt, id: `p${j}` })),
    sampling: { numSamples: 4, seed: 11, decoding: { temperature: 1, topK: 0, topP: 1, maxNewTokens: 6 }, engine: { kvCache: 'paged' } },
    scoring: { batchSize: 8 },
    pairs: { pairStrategy: 'best-worst', minRewardGap: 0, seed: 11 },
  };
});

const read = (file: string) => fs.readFileSync(file, 'utf8');

describe('runRejectionSampling', () => {
  it('samples the same texts, keeps the same samples and writes the same SFT rows with 2 workers as in this thread; the best is kept', async () => {
    const here = await runRejectionSampling({ ...base, selection: 'reward-model', numWorkers: 1, outDir: path.join(tmpRoot, 'one') });
    const pooled = await runRejectionSampling({ ...base, selection: 'reward-model', numWorkers: 2, outDir: path.join(tmpRoot, 'two') });
    expect(pooled.numWorkers).toBe(2);
    expect(here.numWorkers).toBe(1);
    // the same texts and choices; rewards equal up to float32 batching (workers score other batch compositions)
    expect(pooled.scored.map((p) => p.samples.map((x) => x.text))).toEqual(here.scored.map((p) => p.samples.map((x) => x.text)));
    pooled.scored.forEach((p, j) => p.samples.forEach((x, i) => expect(x.reward).toBeCloseTo(here.scored[j]!.samples[i]!.reward, 5)));
    expect(pooled.selected).toEqual(here.selected);
    expect(read(pooled.files.sft)).toBe(read(here.files.sft));
    expect(read(pooled.files.samples).split('\n').length).toBe(read(here.files.samples).split('\n').length);
    expect(here.scored).toHaveLength(4);
    here.scored.forEach((p, j) => {
      const rewards = p.samples.map((s) => s.reward);
      expect(p.samples).toHaveLength(4);
      expect(rewards[here.selected[j]!]).toBe(Math.max(...rewards));
    });
  });

  it('random selection keeps a uniformly drawn sample, with the reward model’s scores still in `scored`', async () => {
    const byRm = await runRejectionSampling({ ...base, selection: 'reward-model', numWorkers: 1, outDir: path.join(tmpRoot, 'rm-sel') });
    const random = await runRejectionSampling({ ...base, selection: 'random', selectionSeed: 5, numWorkers: 1, outDir: path.join(tmpRoot, 'random') });
    // the same samples and rewards, another choice for at least one prompt (4 prompts × 4 samples)
    expect(random.scored).toEqual(byRm.scored);
    expect(random.selected).not.toEqual(byRm.selected);
  });
});
