import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/util/rng.js';
import { PreferenceRowSchema, SftRowSchema } from '../../data/rows.js';
import { bestIndex, buildRejectionRows, choosePair, scorePrompts, type RewardInput, type SampledPrompt, type ScoredSample } from '../../samplers/rejection.js';

const sample = (text: string, reward: number): ScoredSample => ({ text, reward, numTokens: text.length, finishReason: 'stop' });

describe('rejection sampling: best-of-K and pairs', () => {
  it('bestIndex is the argmax, the first on ties, and refuses NaN', () => {
    expect(bestIndex([0.1, 2.5, -1, 2.5])).toBe(1);
    expect(bestIndex([-3])).toBe(0);
    expect(() => bestIndex([])).toThrow('samplers/rejection: bestIndex: no rewards');
    expect(() => bestIndex([1, NaN])).toThrow('samplers/rejection: bestIndex: reward 1 is NaN');
  });

  it('scores every sample with one scorer call and keeps prompt order', () => {
    const prompts: SampledPrompt[] = [
      { prompt: 'p0', id: 'a', samples: [{ text: 'xx', numTokens: 2, finishReason: 'stop' }, { text: 'yyy', numTokens: 3, finishReason: 'length' }] },
      { prompt: [{ role: 'user', content: 'p1' }], samples: [{ text: 'z', numTokens: 1, finishReason: 'stop' }] },
    ];
    const calls: RewardInput[][] = [];
    // Reward = response length + 10 · prompt index, so the mapping back is checkable.
    const scored = scorePrompts(prompts, (rows) => {
      calls.push([...rows]);
      return rows.map((r) => r.response.length + (typeof r.prompt === 'string' ? 0 : 10));
    });
    expect(calls).toHaveLength(1);
    expect(calls[0]!.map((r) => r.response)).toEqual(['xx', 'yyy', 'z']);
    expect(scored.map((p) => p.samples.map((s) => s.reward))).toEqual([[2, 3], [11]]);
    expect(scored[0]!.id).toBe('a');
    expect(() => scorePrompts(prompts, () => [1, 2])).toThrow('samplers/rejection: the scorer returned 2 rewards for 3 samples');
    expect(() => scorePrompts(prompts, () => [1, Infinity, 2])).toThrow('samplers/rejection: prompts[0].samples[1]: reward is Infinity');
  });

  it('best-worst pairs the best with the lowest reward among different texts', () => {
    const samples = [sample('a', 0.5), sample('b', 2), sample('c', -1), sample('b', 2), sample('d', 0)];
    expect(choosePair(samples, 'best-worst', 0, new Rng(0))).toEqual({ chosen: 1, rejected: 2 });
    // A gap of 3 is met exactly (2 − (−1) = 3); 3.01 is not.
    expect(choosePair(samples, 'best-worst', 3, new Rng(0))).toEqual({ chosen: 1, rejected: 2 });
    expect(choosePair(samples, 'best-worst', 3.01, new Rng(0))).toEqual({ skipped: 'gap' });
    // The worst sample repeats the best text: the next different one is taken.
    expect(choosePair([sample('same', 1), sample('other', 0.5), sample('same', 1)], 'best-worst', 0, new Rng(0))).toEqual({ chosen: 0, rejected: 1 });
    expect(choosePair([sample('same', 1), sample('same', 0)], 'best-worst', 0, new Rng(0))).toEqual({ skipped: 'identical' });
  });

  it('best-random draws the rejected sample uniformly among the others, reproducibly', () => {
    const samples = [sample('a', 0), sample('b', 3), sample('c', 1), sample('d', 2)];
    const counts = new Map<number, number>();
    for (let i = 0; i < 3000; i++) {
      const pair = choosePair(samples, 'best-random', 0, new Rng(1).fork(i));
      if ('skipped' in pair) throw new Error('unexpected skip');
      expect(pair.chosen).toBe(1);
      counts.set(pair.rejected, (counts.get(pair.rejected) ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).toEqual([0, 2, 3]); // never the best itself
    for (const c of counts.values()) expect(c / 3000).toBeCloseTo(1 / 3, 1);
    expect(choosePair(samples, 'best-random', 0, new Rng(9))).toEqual(choosePair(samples, 'best-random', 0, new Rng(9)));
  });

  it('builds samples, SFT and preference rows, and the summary (hand-worked)', () => {
    const prompts = [
      { prompt: 'What is 2+2?', id: 'q1', samples: [sample('4', 1.5), sample('5', -0.5), sample('four', 1.0)] },
      { prompt: [{ role: 'system' as const, content: 'Be brief.' }, { role: 'user' as const, content: 'Hi' }], samples: [sample('Hello', 0.2), sample('Hey', 0.3)] },
      { prompt: 'Same?', samples: [sample('yes', 0), sample('yes', 0)] },
    ];
    const rows = buildRejectionRows(prompts, { minRewardGap: 0.5 });
    expect(rows.samples[0]).toEqual({
      id: 'q1',
      prompt: 'What is 2+2?',
      samples: [
        { text: '4', reward: 1.5, num_tokens: 1, finish_reason: 'stop' },
        { text: '5', reward: -0.5, num_tokens: 1, finish_reason: 'stop' },
        { text: 'four', reward: 1.0, num_tokens: 4, finish_reason: 'stop' },
      ],
      best: 0,
    });
    expect(rows.samples.map((r) => r.best)).toEqual([0, 1, 0]);
    expect(rows.sft).toEqual([
      { id: 'q1', prompt: 'What is 2+2?', response: '4' },
      { messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hey' }] },
      { prompt: 'Same?', response: 'yes' },
    ]);
    for (const row of rows.sft) expect(SftRowSchema.safeParse(row).success).toBe(true);
    // Prompt 2's gap 0.1 is below 0.5, prompt 3 has one text only: one pair.
    expect(rows.preferences).toEqual([{ id: 'q1', prompt: 'What is 2+2?', chosen: '4', rejected: '5', chosen_reward: 1.5, rejected_reward: -0.5 }]);
    for (const row of rows.preferences) expect(PreferenceRowSchema.safeParse(row).success).toBe(true);
    // rewards 1.5 −0.5 1.0 0.2 0.3 0 0 → mean 2.5 / 7; best per prompt 1.5, 0.3, 0 → mean 0.6.
    expect(rows.summary.numPrompts).toBe(3);
    expect(rows.summary.numSamples).toBe(7);
    expect(rows.summary.rewardMean).toBeCloseTo(2.5 / 7, 12);
    expect(rows.summary.bestOfKMean).toBeCloseTo(0.6, 12);
    expect(rows.summary.gain).toBeCloseTo(0.6 - 2.5 / 7, 12);
    expect(rows.summary).toMatchObject({ numPairs: 1, numSkippedGap: 1, numSkippedIdentical: 1 });
    // Without the gap, prompt 2 gives a pair too.
    expect(buildRejectionRows(prompts).summary.numPairs).toBe(2);
    expect(() => buildRejectionRows(prompts, { pairStrategy: 'best-best' as 'best-worst' })).toThrow();
  });
});
