/**
 * Sampling, reward scoring and logprobs sharded across worker threads (`ShardPool`): the
 * results equal the one-thread functions' exactly (texts) or within 1e-6 (rewards, log-probs),
 * in input order, with the same seeds; through the pool API and through `tfalign sample`,
 * `tfalign rm score` and `tfalign logprobs` with `--workers 2`. A worker's error rejects with the
 * one-thread message for the same row and stops the pool.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../../src/tokenizer/bpe-trainer.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { createModel } from '../../src/model/create.js';
import { savePretrained } from '../../src/model/pretrained.js';
import { toRewardModel } from '../../src/model/weights.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { scoreResponses } from '../../src/inference/reward-scoring.js';
import { responseLogprobs, type PromptResponseIds } from '../../src/inference/token-logprobs.js';
import { samplePolicy } from '../../samplers/policy-sampler.js';
import { ShardPool } from '../../src/inference-pool/shard-pool.js';
import { combineSamplingStats } from '../../src/inference-pool/shard-jobs.js';
import { registerSampleCommands } from '../../src/cli/sample.js';
import { registerRmCommands } from '../../src/cli/rm.js';
import { registerModelCommands } from '../../src/cli/model.js';
import type { Conversation } from '../../data/rows.js';
import { runCli } from '../cli/run-cli.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-shard-pool-'));
const WORDS = ['apple', 'river', 'stone', 'cloud', 'green', 'music', 'paper', 'light'];

const PROMPTS: Conversation[] = [
  'Tell me about apples.',
  [{ role: 'system', content: 'Answer briefly.' }, { role: 'user', content: 'Tell me about rivers.' }],
  'Say something about stones and clouds.',
  'Green music?',
  'Paper and light.',
];

let policyDir: string;
let rewardDir: string;
let tok: Tokenizer;
let policy: LlamaModel;
let rewardModel: LlamaModel;
let pool: ShardPool;

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  const tokDir = path.join(root, 'tok');
  const corpus = Array.from({ length: 300 }, (_, i) => `${WORDS[i % 8]} ${WORDS[(i * 5) % 8]} ${WORDS[(i * 3 + 1) % 8]}.`).join('\n');
  const tokenizerJson = trainByteLevelBpe([corpus], { vocabSize: 300 });
  writeTokenizerFolder(tokDir, { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson) });
  tok = await Tokenizer.fromFolder(tokDir);
  policyDir = path.join(root, 'policy');
  policy = await createModel({ configFile: 'configs/models/tiny.json', tokenizerDir: tokDir, out: policyDir, seed: 3 });
  rewardDir = path.join(root, 'rm');
  rewardModel = toRewardModel(policy, 5);
  await savePretrained(rewardModel, rewardDir, { tokenizerDir: tokDir });
  pool = await ShardPool.create({ numWorkers: 2 });
});

afterAll(async () => {
  await pool?.close();
  policy?.dispose();
  rewardModel?.dispose();
  fs.rmSync(root, { recursive: true, force: true });
});

const samplingOptions = {
  numSamples: 3,
  decoding: { temperature: 1, topK: 0, topP: 1, maxNewTokens: 8 },
  seed: 7,
  engine: { maxNumSeqs: 4 },
};

/** Score rows of different lengths (so length-sorted batches differ between shards). */
const scoreRows = Array.from({ length: 11 }, (_, i) => ({
  prompt: PROMPTS[i % PROMPTS.length]!,
  response: Array.from({ length: 1 + (i % 5) }, (_, k) => WORDS[(i + 3 * k) % 8]).join(' '),
}));

/** Prompt/response token ids of different lengths (the tokenizer exists once `beforeAll` ran). */
const logprobRowsOf = (t: Tokenizer): PromptResponseIds[] =>
  Array.from({ length: 9 }, (_, i) => ({
    promptIds: t.encode(`Tell me about ${WORDS[i % 8]}.`),
    responseIds: t.encode(Array.from({ length: 1 + (i % 4) }, (_, k) => WORDS[(2 * i + k) % 8]).join(' ')),
  }));

describe('ShardPool', () => {
  it('sample: 5 prompts on 2 workers (3 + 2) give the one-thread samples, in order, with the global seeds', async () => {
    const local = samplePolicy(policy, tok, PROMPTS, samplingOptions);
    const progress: [number, number][] = [];
    const sharded = await pool.sample(policyDir, PROMPTS, { ...samplingOptions, onPromptDone: (numDone, numTokens) => progress.push([numDone, numTokens]) });
    expect(sharded.samples).toEqual(local.samples);
    // not one stream repeated: the 15 samples are not all alike
    expect(new Set(sharded.samples.flat().map((s) => s.text)).size).toBeGreaterThan(5);
    expect(sharded.stats).toMatchObject({ numRequests: 5, numSamples: 15, numGeneratedTokens: local.stats.numGeneratedTokens, numPromptTokens: local.stats.numPromptTokens });
    expect(progress.length).toBe(5);
    expect(progress[progress.length - 1]).toEqual([5, local.stats.numGeneratedTokens]);
    // the second shard (prompts 3, 4) alone, as a one-thread run would have to seed it: seed + 3·K
    const tail = samplePolicy(policy, tok, PROMPTS.slice(3), { ...samplingOptions, seed: samplingOptions.seed + 3 * samplingOptions.numSamples });
    expect(tail.samples).toEqual(local.samples.slice(3));
  });

  it('score: 11 rows on 2 workers give the one-thread rewards within 1e-6, in order', async () => {
    const local = scoreResponses(rewardModel, tok, scoreRows, { batchSize: 4 });
    const sharded = await pool.score(rewardDir, scoreRows, { batchSize: 4 });
    expect(sharded).toHaveLength(11);
    sharded.forEach((reward, i) => expect(Math.abs(reward - local[i]!), `row ${i}`).toBeLessThan(1e-6));
    expect(new Set(local.map((r) => r.toFixed(6))).size).toBeGreaterThan(5);
  });

  it('logprobs: 9 rows on 2 workers give the one-thread token log-probs within 1e-6, in order', async () => {
    const padId = tok.padTokenId ?? 0;
    const logprobRows = logprobRowsOf(tok);
    const local = responseLogprobs(policy, logprobRows, 3, padId);
    const sharded = await pool.logprobs(policyDir, logprobRows, { batchSize: 3, padId });
    expect(sharded.map((lp) => lp.length)).toEqual(logprobRows.map((r) => r.responseIds.length));
    sharded.forEach((lp, i) => lp.forEach((v, k) => expect(Math.abs(v - local[i]![k]!), `row ${i} token ${k}`).toBeLessThan(1e-6)));
  });

  it('combineSamplingStats sums counts, weights the hit rate by prompt tokens, and takes tokens/s over the shared wall time', () => {
    const base = { kvCache: 'paged' as const, numPrefillTokens: 0, wallSeconds: 1, tokensPerSecond: 0, peakNumSeqs: 4, peakKvBytes: 100, idealKvBytes: 50, kvBytesPerToken: 8, numBlocks: 10, numWaits: 1, numForwardPasses: 7 };
    const a = { ...base, numRequests: 2, numSamples: 6, numPromptTokens: 30, numGeneratedTokens: 40, prefixCacheHitRate: 0.5 };
    const b = { ...base, numRequests: 1, numSamples: 3, numPromptTokens: 10, numGeneratedTokens: 20, prefixCacheHitRate: 0 };
    const c = combineSamplingStats([a, b], 4);
    // hit rate (0.5·30 + 0·10) / 40 = 0.375; tokens/s (40 + 20) / 4 = 15
    expect(c).toMatchObject({ numRequests: 3, numSamples: 9, numPromptTokens: 40, numGeneratedTokens: 60, prefixCacheHitRate: 0.375, tokensPerSecond: 15, wallSeconds: 4, peakNumSeqs: 8, numBlocks: 20, kvBytesPerToken: 8 });
  });

  it('a row that fails in the second worker rejects with the one-thread message for that row, and the pool stops', async () => {
    const failing = await ShardPool.create({ numWorkers: 2 });
    const rows = [...scoreRows.slice(0, 9), { prompt: 'Too long.', response: 'apple '.repeat(600) }, scoreRows[0]!];
    const expected = (() => {
      try {
        scoreResponses(rewardModel, tok, rows, { batchSize: 4 });
      } catch (err) {
        return (err as Error).message;
      }
      return 'no error';
    })();
    expect(expected).toMatch(/^rows\[9\]: response: prompt \+ response are \d+ tokens, more than the model's context of 512$/);
    await expect(failing.score(rewardDir, rows, { batchSize: 4 })).rejects.toThrow(expected);
    expect(failing.numLiveWorkers).toBe(0);
    await expect(failing.score(rewardDir, scoreRows, { batchSize: 4 })).rejects.toThrow(expected);
    await failing.close();
  });

  it('refuses a pool of 0 workers and labels that do not match the rows', async () => {
    await expect(ShardPool.create({ numWorkers: 0 })).rejects.toThrow('shard-pool: numWorkers must be an integer ≥ 1, got 0');
    await expect(pool.score(rewardDir, scoreRows, { batchSize: 4, labels: ['a'] })).rejects.toThrow('shard-pool: 1 labels for 11 rows');
  });
});


const readJsonl = (file: string) => fs.readFileSync(file, 'utf8').trim().split('\n').map((line) => JSON.parse(line));

/** Equal JSON values, numbers (rewards, log-probs) within 1e-6. */
function expectSameRows(actual: unknown, expected: unknown, where = 'rows'): void {
  if (typeof expected === 'number') {
    expect(typeof actual, where).toBe('number');
    expect(Math.abs((actual as number) - expected), where).toBeLessThan(1e-6);
  } else if (Array.isArray(expected)) {
    expect(Array.isArray(actual) && actual.length, where).toBe(expected.length);
    expected.forEach((v, i) => expectSameRows((actual as unknown[])[i], v, `${where}[${i}]`));
  } else if (expected !== null && typeof expected === 'object') {
    expect(Object.keys(actual as object).sort(), where).toEqual(Object.keys(expected).sort());
    for (const [k, v] of Object.entries(expected)) expectSameRows((actual as Record<string, unknown>)[k], v, `${where}.${k}`);
  } else {
    expect(actual, where).toEqual(expected);
  }
}

describe('--workers 2 on the command line gives the --workers 1 output', () => {
  it('tfalign sample: the same samples, rewards, SFT rows and pairs', async () => {
    const promptsFile = path.join(root, 'prompts.jsonl');
    fs.writeFileSync(promptsFile, PROMPTS.map((prompt, i) => JSON.stringify({ prompt, id: `p${i}` })).join('\n') + '\n');
    const common = ['sample', '--policy', policyDir, '--reward-model', rewardDir, '--prompts', promptsFile, '-k', '3', '--max-new-tokens', '6', '--seed', '11', '--backend', 'wasm'];
    await runCli(registerSampleCommands, [...common, '--out', path.join(root, 'rs-1')]);
    const create = vi.spyOn(ShardPool, 'create');
    try {
      await runCli(registerSampleCommands, [...common, '--out', path.join(root, 'rs-2'), '--workers', '2']);
      expect(create.mock.calls).toEqual([[{ numWorkers: 2 }]]);
    } finally {
      create.mockRestore();
    }
    for (const file of ['samples.jsonl', 'sft.jsonl', 'preferences.jsonl']) {
      const one = readJsonl(path.join(root, 'rs-1', file));
      expectSameRows(readJsonl(path.join(root, 'rs-2', file)), one, file);
    }
    expect(readJsonl(path.join(root, 'rs-1', 'samples.jsonl')).map((r) => r.id)).toEqual(['p0', 'p1', 'p2', 'p3', 'p4']);
  });

  it('tfalign rm score and tfalign logprobs: the same rows, rewards and log-probs', async () => {
    const scoreFile = path.join(root, 'score.jsonl');
    fs.writeFileSync(scoreFile, scoreRows.map((r, i) => JSON.stringify({ ...r, id: `r${i}` })).join('\n') + '\n');
    const score = ['rm', 'score', '--model', rewardDir, '--input', scoreFile, '--batch-size', '4', '--backend', 'wasm'];
    const create = vi.spyOn(ShardPool, 'create');
    try {
      await runCli(registerRmCommands, [...score, '--output', path.join(root, 'scored-1.jsonl')]);
      expect(create).not.toHaveBeenCalled();
      await runCli(registerRmCommands, [...score, '--output', path.join(root, 'scored-2.jsonl'), '--workers', '2']);
      const scored = readJsonl(path.join(root, 'scored-1.jsonl'));
      expect(scored.map((r) => r.id)).toEqual(scoreRows.map((_, i) => `r${i}`));
      expectSameRows(readJsonl(path.join(root, 'scored-2.jsonl')), scored, 'scored');

      const lpFile = path.join(root, 'lp.jsonl');
      const logprobRows = logprobRowsOf(tok);
      fs.writeFileSync(lpFile, logprobRows.map((r) => JSON.stringify({ prompt_ids: r.promptIds, response_ids: r.responseIds })).join('\n') + '\n');
      const logprobs = ['logprobs', '--model', policyDir, '--input', lpFile, '--batch-size', '3', '--backend', 'wasm'];
      const one = (await runCli(registerModelCommands, logprobs)).trim().split('\n').map((l) => JSON.parse(l));
      const two = (await runCli(registerModelCommands, [...logprobs, '--workers', '2'])).trim().split('\n').map((l) => JSON.parse(l));
      expect(create.mock.calls).toEqual([[{ numWorkers: 2 }], [{ numWorkers: 2 }]]);
      expect(one.map((r) => r.num_tokens)).toEqual(logprobRows.map((r) => r.responseIds.length));
      expectSameRows(two, one, 'logprobs');
    } finally {
      create.mockRestore();
    }
  });
});
