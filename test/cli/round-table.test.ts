/**
 * The per-round table `tfalign run`, `status` and `npm start` print: every score and rate with its
 * 95% interval (issue 10), the greedy score beside the sampled one, the base model's line, the
 * kept policy, and the reward-hacking warning.
 */
import { describe, expect, it } from 'vitest';
import { roundTable } from '../../src/cli/run.js';
import type { RoundSummary } from '../../src/store/records.js';

function round(roundIndex: number, metrics: Record<string, number>): RoundSummary {
  return { runName: 'r', roundIndex, status: 'done', stages: [], metrics } as unknown as RoundSummary;
}

const withCi = (name: string, estimate: number, low: number, high: number): Record<string, number> => ({ [name]: estimate, [`${name}_ci_low`]: low, [`${name}_ci_high`]: high });

const round1 = {
  ...withCi('rm/accuracy', 0.804, 0.764, 0.839),
  ...withCi('sample/judge_gain', 0.176, 0.167, 0.186),
  'sample/best_of_k_gain': 0.748,
  'rm/spearman_judge': 0.686,
  ...withCi('eval/judge_score', 0.712, 0.691, 0.731),
  ...withCi('eval/judge_score_greedy', 0.822, 0.8, 0.843),
  ...withCi('eval/win_rate_vs_previous', 0.79, 0.761, 0.818),
  ...withCi('eval/win_rate_vs_base', 0.79, 0.761, 0.818),
  ...withCi('eval/base_judge_score', 0.542, 0.522, 0.562),
  ...withCi('eval/base_judge_score_greedy', 0.701, 0.677, 0.725),
  'eval/selected': 1,
  'eval/num_prompts': 256,
  'rm/num_eval_pairs': 434,
};
const round2 = {
  ...round1,
  ...withCi('sample/judge_gain', -0.02, -0.03, -0.01),
  'sample/best_of_k_gain': 0.3,
  'sample/reward_hacking': 1,
  ...withCi('eval/judge_score', 0.7, 0.68, 0.72),
  'eval/previous_judge_score': 0.712,
  'eval/selected': 0,
};

describe('round table', () => {
  const lines = roundTable([round(0, {}), round(1, round1), round(2, round2)], 6).split('\n');
  const cells = (line: string) => line.split(/ {2,}/).map((c) => c.trim());

  it('gives every score and rate its 95% interval, in its column', () => {
    const header = cells(lines[0]!);
    expect(header).toEqual(['round', 'status', 'rm acc [95% CI]', 'judge gain of best-of-K [95% CI]', 'rm gain', 'rm–judge ρ', 'judge score [95% CI]', 'greedy [95% CI]', 'win vs prev [95% CI]', 'win vs base [95% CI]', 'policy', 'best so far']);
    expect(cells(lines[2]!)).toEqual(['1', 'done', '0.804 [0.764, 0.839]', '0.176 [0.167, 0.186]', '0.748', '0.686', '0.712 [0.691, 0.731]', '0.822 [0.800, 0.843]', '0.790 [0.761, 0.818]', '0.790 [0.761, 0.818]', 'new best', '0.712']);
  });

  it('carries the previous best forward when a round\'s policy is not kept', () => {
    expect(cells(lines[3]!).slice(-2)).toEqual(['kept previous', '0.712']);
  });

  it('ends with the base model, the held-out sizes and the reward-hacking warning', () => {
    expect(lines.slice(4)).toEqual([
      'base model judge score: 0.542 [0.522, 0.562]; greedy 0.701 [0.677, 0.725]',
      "held out: 434 fixed preference pairs for every round's RM (labels: the judge's score); 256 prompts for the policy scores and win rates. Intervals: Wilson (accuracy), bootstrap over prompts (the rest).",
      "warning: round 2: reward hacking — best-of-K raised the RM's score (0.300) while the judge's fell (-0.020)",
    ]);
  });

  it('shows a dash where a metric was not recorded (an older run without greedy scores)', () => {
    const older = Object.fromEntries(Object.entries(round1).filter(([name]) => !name.includes('_greedy')));
    const table = roundTable([round(1, older)], 6).split('\n');
    expect(cells(table[2]!)[7]).toBe('—');
    expect(table[3]).toBe('base model judge score: 0.542 [0.522, 0.562]');
  });
});
