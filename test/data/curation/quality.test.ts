import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../../src/backend.js';
import { loadPretrained } from '../../../src/model/pretrained.js';
import type { LlamaModel } from '../../../src/model/llama.js';
import { Tokenizer } from '../../../src/tokenizer/tokenizer.js';
import { tokenizePromptResponse } from '../../../src/tokenizer/chat-template.js';
import { scoreResponses } from '../../../src/inference/reward-scoring.js';
import { FullAttention } from '../../../src/model/attention.js';
import { judgeQualityScores, rewardQualityScores, selectByQuality } from '../../../data/curation/quality.js';
import { difficultyScores } from '../../../data/curation/difficulty.js';
import type { CurationRow } from '../../../data/curation/row-text.js';
import { buildTinyCheckpoints } from './fixtures.js';

describe('selectByQuality', () => {
  it('keeps exactly the top quartile (hand-computed)', () => {
    // 8 rows: ⌈0.25 · 8⌉ = 2, the two highest rewards are 8 (row 4) and 7 (row 2)
    const rewards = [5, 1, 7, 3, 8, 2, 6, 4];
    const selection = selectByQuality(rewards);
    expect(selection.keptIndices).toEqual([2, 4]);
    expect(selection.keep).toEqual([false, false, true, false, true, false, false, false]);
    expect(selection.rewardBar).toBe(7);
    expect([selection.numKeptByReward, selection.numKeptByJudgeOnly, selection.numRemoved]).toEqual([2, 0, 6]);
    // 12 rows: ⌈3⌉ = 3 → rewards 11.5, 9, 8.25 (rows 7, 0, 10)
    const twelve = [9, -3, 0.5, 2, 8, -1, 7.5, 11.5, 4, 6, 8.25, 1];
    expect(selectByQuality(twelve).keptIndices).toEqual([0, 7, 10]);
    // 10 rows: ⌈2.5⌉ = 3 → bar at the 3rd highest, 0.9, shared by three rows: all five kept
    const tied = [0.3, -1.2, 2.5, 0.9, 0.9, -0.4, 1.7, 0.0, 0.9, -2.0];
    const withTies = selectByQuality(tied);
    expect(withTies.rewardBar).toBe(0.9);
    expect(withTies.keptIndices).toEqual([2, 3, 4, 6, 8]);
    // other fractions: half of 8 → 4 rows (8, 7, 6, 5)
    expect(selectByQuality(rewards, { topFraction: 0.5 }).keptIndices).toEqual([0, 2, 4, 6]);
    expect(selectByQuality(rewards, { topFraction: 1 }).keptIndices).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(selectByQuality([]).keptIndices).toEqual([]);
  });

  it('ORs the reward selection with the second scorer above its threshold', () => {
    const rewards = [5, 1, 7, 3, 8, 2, 6, 4];
    const judge = [0.9, 0.1, 0.2, 0.85, 0.5, 0.79, 0.8, 0.0];
    const selection = selectByQuality(rewards, {}, judge);
    // reward keeps 2, 4; the judge (≥ 0.8) keeps 0, 3, 6
    expect(selection.keptIndices).toEqual([0, 2, 3, 4, 6]);
    expect([selection.numKeptByReward, selection.numKeptByJudgeOnly, selection.numRemoved]).toEqual([2, 3, 3]);
    expect(selectByQuality(rewards, { judgeThreshold: 0.86 }, judge).keptIndices).toEqual([0, 2, 4]);
  });

  it('rejects bad input with a one-line message', () => {
    expect(() => selectByQuality([1, NaN])).toThrow('quality: rewards[1] is NaN');
    expect(() => selectByQuality([1, 2], {}, [0.5])).toThrow('quality: 1 judge scores for 2 rows');
    expect(() => selectByQuality([1], { topFraction: 0 })).toThrow(/^quality: options\.topFraction: /);
  });
});

describe('model-based scores', () => {
  const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-quality-'));
  let policy: LlamaModel;
  let rewardModel: LlamaModel;
  let tokenizer: Tokenizer;
  const ROWS: CurationRow[] = [
    { prompt: 'Tell me about rivers.', response: 'The river flows.' },
    {
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Tell me about bread.' },
        { role: 'assistant', content: 'bake bread' },
        { role: 'user', content: 'And stone?' },
        { role: 'assistant', content: 'The stone is light and the water flows about it.' },
      ],
    },
    { prompt: [{ role: 'user', content: 'music?' }], chosen: 'music paper light', rejected: 'no', id: 'p' },
  ];

  beforeAll(async () => {
    await initBackend('wasm', { quiet: true });
    const dirs = await buildTinyCheckpoints(tmpRoot);
    policy = await loadPretrained(dirs.policyDir);
    rewardModel = await loadPretrained(dirs.rewardDir);
    tokenizer = await Tokenizer.fromFolder(dirs.policyDir);
  });
  afterAll(() => {
    policy?.dispose();
    rewardModel?.dispose();
    fs.rmSync(tmpRoot, { recursive: true, force: true });
  });

  it('scores each row\'s main response with the reward model, as rm score would', () => {
    const batched = rewardQualityScores(rewardModel, tokenizer, ROWS, { batchSize: 3 });
    // the same (prompt, response) pairs scored one by one
    const expected = [
      scoreResponses(rewardModel, tokenizer, [{ prompt: 'Tell me about rivers.', response: 'The river flows.' }], { batchSize: 1 })[0]!,
      scoreResponses(rewardModel, tokenizer, [{ prompt: (ROWS[1] as { messages: never[] }).messages.slice(0, 4), response: 'The stone is light and the water flows about it.' }], { batchSize: 1 })[0]!,
      scoreResponses(rewardModel, tokenizer, [{ prompt: 'music?', response: 'music paper light' }], { batchSize: 1 })[0]!,
    ];
    batched.forEach((score, i) => expect(Math.abs(score - expected[i]!)).toBeLessThan(1e-5));
    expect(new Set(batched.map((s) => s.toFixed(6))).size).toBe(3);
  });

  it('stores the policy\'s mean token NLL of the response (reference: one unpadded forward per row)', () => {
    const numTensors = tf.memory().numTensors;
    const difficulty = difficultyScores(policy, tokenizer, ROWS, { batchSize: 3 });
    expect(tf.memory().numTensors).toBe(numTensors);
    const reference = (prompt: string | { role: 'system' | 'user' | 'assistant'; content: string }[], response: string): number => {
      const { promptIds, responseIds } = tokenizePromptResponse(tokenizer, prompt, response);
      const ids = [...promptIds, ...responseIds];
      const logps = tf.tidy(() => {
        const hidden = policy.forward(tf.tensor2d([ids], [1, ids.length], 'int32'), new FullAttention({ batchSize: 1, seqLen: ids.length })); // [1, T, C]
        return tf.logSoftmax(policy.logits(hidden)).arraySync() as number[][][]; // [1, T, V]
      });
      let sum = 0;
      responseIds.forEach((id, k) => {
        sum += logps[0]![promptIds.length + k - 1]![id]!; // token P+k is predicted at position P+k−1
      });
      return -sum / responseIds.length;
    };
    const expected = [
      reference('Tell me about rivers.', 'The river flows.'),
      reference((ROWS[1] as { messages: { role: 'system' | 'user' | 'assistant'; content: string }[] }).messages.slice(0, 4), 'The stone is light and the water flows about it.'),
      reference('music?', 'music paper light'),
    ];
    difficulty.forEach((d, i) => expect(Math.abs(d - expected[i]!)).toBeLessThan(1e-4));
    // a random policy over ~320 tokens: NLL near ln(320) ≈ 5.77
    for (const d of difficulty) expect(Math.abs(d - Math.log(tokenizer.vocabSize))).toBeLessThan(1);
    expect(() => difficultyScores(rewardModel, tokenizer, ROWS, { batchSize: 2 })).toThrow('difficulty: the model is a reward model; difficulty needs a causal LM (the policy)');
  });

  it('asks a second scorer for each row with the prompt as text', () => {
    const seen: [string, string][] = [];
    const scores = judgeQualityScores({ score: (prompt, response) => (seen.push([prompt, response]), response.length / 100) }, ROWS);
    expect(seen).toEqual([
      ['Tell me about rivers.', 'The river flows.'],
      ['Be brief.\n\nTell me about bread.\n\nbake bread\n\nAnd stone?', 'The stone is light and the water flows about it.'],
      ['music?', 'music paper light'],
    ]);
    expect(scores).toEqual([0.16, 0.48, 0.17]);
    expect(() => judgeQualityScores({ score: () => NaN }, ROWS, (i) => `in.jsonl:${i + 1}`)).toThrow('in.jsonl:1: judge score is NaN, expected a finite number');
  });
});
