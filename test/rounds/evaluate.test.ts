/**
 * The evaluate stage's numbers, recomputed outside the runner: the sampled judge score is the mean
 * of the judge scores in the stage's report, and the greedy scores (`eval/judge_score_greedy`,
 * `eval/base_judge_score_greedy`: how much of what a model knows its samples show) are the judge's
 * mean over one greedy answer per held-out prompt from the round's policy and from the base model,
 * with bootstrap 95% intervals over prompts.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AlignmentRun, readRunConfig } from '../../src/rounds/runner.js';
import { RunStore } from '../../src/store/store.js';
import { loadPretrained } from '../../src/model/pretrained.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { samplePolicy } from '../../samplers/policy-sampler.js';
import { score } from '../../data/synthetic/task.js';
import { bootstrapMeanInterval, mean } from '../../src/eval/statistics.js';

const FIXTURE = path.join(import.meta.dirname, 'fixtures', 'tiny-run.yaml');

/** The judge's scores of one greedy answer per prompt. */
async function greedyJudgeScores(dir: string, prompts: string[], maxNewTokens: number): Promise<number[]> {
  const policy = await loadPretrained(dir);
  try {
    const { samples } = samplePolicy(policy, await Tokenizer.fromFolder(dir), prompts, { numSamples: 1, seed: 12345, decoding: { maxNewTokens, temperature: 0, topK: 0, topP: 1 } });
    return samples.map(([s], j) => score(prompts[j]!, s!.text));
  } finally {
    policy.dispose();
  }
}

describe('evaluate stage', () => {
  it('reports the sampled judge score of its report and greedy judge scores of the policy and the base', async () => {
    const project = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-evaluate-'));
    // 16 held-out prompts, 2 samples each: a mean over 32 scores, greedy over 16
    const config = readRunConfig(FIXTURE, [`project=${project}`, 'rounds=1', 'prompts.heldout.synthetic=16', 'evaluate.samplesPerPrompt=2']);
    const run = await AlignmentRun.open(config);
    try {
      await run.run({ round: 1 });
    } finally {
      run.close();
    }
    const store = RunStore.open(path.join(project, 'tfalign.db'), { readonly: true });
    try {
      const metrics = Object.fromEntries(store.metrics('tiny', { round: 1, stage: 'evaluate' }).map((m) => [m.name, m.value]));
      const artifact = (round: number, stage: 'build_base' | 'dpo' | 'evaluate', name: string) =>
        path.resolve(project, store.artifacts('tiny', { round, stage }).find((a) => a.name === name)!.path);

      const report = fs.readFileSync(artifact(1, 'evaluate', 'eval-samples'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { prompt: string; samples: { text: string; judge_score: number }[] });
      expect(report).toHaveLength(16);
      const sampled = report.flatMap((r) => r.samples.map((s) => s.judge_score));
      expect(sampled).toHaveLength(32);
      report.forEach((r) => r.samples.forEach((s) => expect(s.judge_score).toBe(score(r.prompt, s.text))));
      expect(metrics['eval/judge_score']).toBeCloseTo(sampled.reduce((a, b) => a + b, 0) / sampled.length, 12);

      const prompts = report.map((r) => r.prompt);
      const maxNewTokens = config.sampling.maxNewTokens;
      for (const [name, dir] of [['eval/judge_score_greedy', artifact(1, 'dpo', 'policy')], ['eval/base_judge_score_greedy', artifact(0, 'build_base', 'base-model')]] as const) {
        const scores = await greedyJudgeScores(dir, prompts, maxNewTokens);
        expect(metrics[name], name).toBeCloseTo(mean(scores), 12);
        // a 95% bootstrap interval over prompts, as every score of the stage has
        const interval = bootstrapMeanInterval(scores, { seed: config.seed });
        expect([metrics[`${name}_ci_low`], metrics[`${name}_ci_high`]], name).toEqual([interval.low, interval.high]);
        expect(interval.low).toBeLessThanOrEqual(metrics[name]!);
        expect(interval.high).toBeGreaterThanOrEqual(metrics[name]!);
      }
    } finally {
      store.close();
    }
  }, 300_000);
});
