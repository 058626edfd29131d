/**
 * A reward model's accuracy on labeled preference pairs: the fraction of pairs whose chosen
 * response gets the higher reward (a tie counts as wrong: the RM did not rank the pair), overall
 * and per strength level, each with a Wilson 95% interval (Llama 3 reports RM accuracy per
 * preference strength, §4.2.1).
 */
import { STRENGTHS, type Strength } from '../../data/rows.js';
import { wilsonInterval, type Interval } from './statistics.js';

export interface ScoredPair {
  strength: Strength;
  chosenReward: number;
  rejectedReward: number;
}

export interface AccuracyReport {
  numPairs: number;
  accuracy: Interval;
  /** Mean r_chosen − r_rejected. */
  margin: number;
  /** Per strength present in the pairs: its accuracy and number of pairs. */
  byStrength: Partial<Record<Strength, { numPairs: number; accuracy: Interval }>>;
}

export function preferenceAccuracy(pairs: readonly ScoredPair[]): AccuracyReport {
  let numCorrect = 0;
  let sumMargin = 0;
  const counts = new Map<Strength, { correct: number; total: number }>();
  for (const p of pairs) {
    if (!Number.isFinite(p.chosenReward) || !Number.isFinite(p.rejectedReward)) {
      throw new Error(`preferenceAccuracy: a reward is not finite (${p.chosenReward}, ${p.rejectedReward})`);
    }
    const correct = p.chosenReward > p.rejectedReward;
    numCorrect += correct ? 1 : 0;
    sumMargin += p.chosenReward - p.rejectedReward;
    const c = counts.get(p.strength) ?? { correct: 0, total: 0 };
    c.correct += correct ? 1 : 0;
    c.total++;
    counts.set(p.strength, c);
  }
  const byStrength: AccuracyReport['byStrength'] = {};
  for (const strength of STRENGTHS) {
    const c = counts.get(strength);
    if (c) byStrength[strength] = { numPairs: c.total, accuracy: wilsonInterval(c.correct, c.total) };
  }
  return { numPairs: pairs.length, accuracy: wilsonInterval(numCorrect, pairs.length), margin: pairs.length ? sumMargin / pairs.length : NaN, byStrength };
}
