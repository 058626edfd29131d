import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { digestPath } from '../../src/util/hash.js';
import type { ArtifactInput, MetricInput, PreferenceInput, SampleInput } from '../../src/store/records.js';
import { ROUND_STAGES, roundStages, validateStageOrder } from '../../src/store/stages.js';
import { RunStore, defaultStorePath } from '../../src/store/store.js';

let dir: string;
let file: string;
let store: RunStore;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-store-'));
  file = defaultStorePath(dir);
  store = RunStore.open(file);
  store.createRun('q', { numRounds: 2 }, 'hash-1');
});
afterEach(() => {
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const SHA_A = 'a'.repeat(64);
const SHA_B = 'b'.repeat(64);
const policy: ArtifactInput = { kind: 'checkpoint', name: 'policy', path: '/runs/q/round-1/sft', sha256: SHA_A, bytes: 1234 };
const dataset: ArtifactInput = { kind: 'dataset', name: 'selected', path: '/runs/q/round-1/selected.jsonl', sha256: SHA_B, numRows: 40, bytes: 999 };

/** Runs every stage of a round to done. */
function finishRound(round: number): void {
  for (const stage of ROUND_STAGES) {
    store.startStage('q', round, stage);
    store.completeStage('q', round, stage, []);
  }
}

describe('runs', () => {
  it('creates, resumes, refuses a changed config and replaces it with force', () => {
    expect(store.getRun('q')).toMatchObject({ name: 'q', config: { numRounds: 2 }, configHash: 'hash-1', status: 'created' });
    const resumed = store.createRun('q', { numRounds: 2 }, 'hash-1');
    expect(resumed.outcome).toBe('resumed');
    expect(() => store.createRun('q', { numRounds: 6 }, 'hash-2')).toThrow(
      'run "q" exists with config hash hash-1, but this config hashes to hash-2; choose a new run name, or force to continue the run under the new config',
    );
    store.startStage('q', 1, 'collect_preferences');
    store.completeStage('q', 1, 'collect_preferences', []);
    const forced = store.createRun('q', { numRounds: 6 }, 'hash-2', { force: true });
    expect(forced).toMatchObject({ outcome: 'config_replaced', previousConfigHash: 'hash-1', run: { config: { numRounds: 6 }, configHash: 'hash-2' } });
    expect(store.stageStatus('q', 1, 'collect_preferences')).toBe('done'); // progress kept

    expect(store.createRun('second', {}, 'h').outcome).toBe('created');
    expect(store.listRuns().map((r) => r.name)).toEqual(['q', 'second']);
    store.setRunStatus('second', 'done');
    expect(store.getRun('second')?.status).toBe('done');
    expect(store.getRun('nope')).toBeNull();
    expect(() => store.startStage('nope', 1, 'sft')).toThrow(`run "nope" not found in ${file}`);
    expect(() => store.createRun('bad name', {}, 'h')).toThrow('run name "bad name": must be');
  });
});

describe('stage lifecycle', () => {
  it('moves a stage through running, failed, running again and done, counting attempts', () => {
    expect(store.stageStatus('q', 1, 'sft')).toBe('pending');
    const started = store.startStage('q', 1, 'sft');
    expect(started).toMatchObject({ roundIndex: 1, name: 'sft', status: 'running', attempts: 1, endedAt: null, error: null });
    expect(store.rounds('q')).toMatchObject([{ roundIndex: 1, status: 'running' }]);
    expect(() => store.startStage('q', 1, 'sft')).toThrow('startStage: stage sft of round 1 of run "q" is already running (attempt 1 since');

    const failed = store.failStage('q', 1, 'sft', 'loss became NaN at step 12');
    expect(failed).toMatchObject({ status: 'failed', attempts: 1, error: 'loss became NaN at step 12' });
    expect(failed.endedAt).not.toBeNull();
    expect(store.rounds('q')[0].status).toBe('failed');
    expect(() => store.failStage('q', 1, 'sft', 'again')).toThrow('failStage: stage sft of round 1 of run "q" is failed, not running');

    expect(store.startStage('q', 1, 'sft')).toMatchObject({ status: 'running', attempts: 2, error: null, endedAt: null });
    expect(store.rounds('q')[0].status).toBe('running');
    const done = store.completeStage('q', 1, 'sft', [policy, dataset], [{ name: 'sft/loss', value: 1.25 }]);
    expect(done).toMatchObject({ status: 'done', attempts: 2 });
    expect(() => store.startStage('q', 1, 'sft')).toThrow('is already done; reset it to run it again');
    expect(() => store.completeStage('q', 1, 'sft', [])).toThrow('the stage is done, not running');
    expect(() => store.completeStage('q', 1, 'dpo', [])).toThrow('completeStage: stage dpo of round 1 of run "q": the stage is pending, not running');

    expect(store.artifacts('q', { round: 1, stage: 'sft' })).toMatchObject([
      { roundIndex: 1, stage: 'sft', kind: 'checkpoint', name: 'policy', sha256: SHA_A, numRows: null, bytes: 1234 },
      { kind: 'dataset', name: 'selected', numRows: 40, bytes: 999 },
    ]);
    expect(store.metrics('q', { stage: 'sft' })).toMatchObject([{ roundIndex: 1, stage: 'sft', step: null, name: 'sft/loss', value: 1.25 }]);

    store.completeRound('q', 1, '/runs/q/round-1/dpo');
    expect(store.rounds('q')[0]).toMatchObject({ status: 'done', bestPolicyPath: '/runs/q/round-1/dpo' });
  });

  it('keeps the policy a round chose in one place: recorded with the choosing stage, gone when that round is redone', () => {
    store.startStage('q', 0, 'build_base');
    store.completeStage('q', 0, 'build_base', [], [], { bestPolicyPath: '/runs/q/base/pretrain/model' });
    expect(store.bestPolicyAfter('q', 0)).toBe('/runs/q/base/pretrain/model');
    finishRound(1);
    // round 1's evaluate chose nothing new yet in this test: the base is still the best
    expect(store.bestPolicyAfter('q', 1)).toBe('/runs/q/base/pretrain/model');
    store.resetStage('q', 1, 'evaluate');
    store.startStage('q', 1, 'evaluate');
    store.completeStage('q', 1, 'evaluate', [], [], { bestPolicyPath: '/runs/q/round-1/dpo/run/model' });
    expect(store.bestPolicyAfter('q', 1)).toBe('/runs/q/round-1/dpo/run/model');
    expect(store.bestPolicyAfter('q', 2)).toBe('/runs/q/round-1/dpo/run/model');
    expect(store.rounds('q').map((r) => r.bestPolicyPath)).toEqual(['/runs/q/base/pretrain/model', '/runs/q/round-1/dpo/run/model']);
    // redoing round 1 from its dpo stage removes the choice evaluate made from it
    store.resetStage('q', 1, 'dpo');
    expect(store.bestPolicyAfter('q', 1)).toBe('/runs/q/base/pretrain/model');
  });

  it('records artifacts hashed from real files', () => {
    const folder = path.join(dir, 'policy');
    fs.mkdirSync(folder);
    fs.writeFileSync(path.join(folder, 'config.json'), '{}');
    fs.writeFileSync(path.join(folder, 'model.safetensors'), Buffer.alloc(100));
    store.startStage('q', 1, 'sft');
    store.completeStage('q', 1, 'sft', [{ kind: 'checkpoint', name: 'policy', path: folder, ...digestPath(folder) }]);
    const [recorded] = store.artifacts('q');
    expect(recorded.bytes).toBe(102);
    expect(recorded.sha256).toBe(digestPath(folder).sha256);
  });

  it('finds the first unfinished stage across rounds', () => {
    const order = roundStages();
    expect(store.firstUnfinishedStage('q', 2, order)).toEqual({ roundIndex: 1, stage: 'collect_preferences', status: 'pending' });
    finishRound(1);
    expect(store.firstUnfinishedStage('q', 1, order)).toBeNull();
    expect(store.firstUnfinishedStage('q', 2, order)).toEqual({ roundIndex: 2, stage: 'collect_preferences', status: 'pending' });
    store.startStage('q', 2, 'collect_preferences');
    store.completeStage('q', 2, 'collect_preferences', []);
    store.startStage('q', 2, 'train_reward_model');
    store.completeStage('q', 2, 'train_reward_model', []);
    store.startStage('q', 2, 'rejection_sample');
    store.failStage('q', 2, 'rejection_sample', 'out of memory');
    expect(store.firstUnfinishedStage('q', 2, order)).toEqual({ roundIndex: 2, stage: 'rejection_sample', status: 'failed' });
    // A later stage done out of order does not hide an earlier one.
    store.startStage('q', 2, 'dpo');
    store.completeStage('q', 2, 'dpo', []);
    expect(store.firstUnfinishedStage('q', 2, order)?.stage).toBe('rejection_sample');
    // With curation switched on, round 1 has a new stage to run.
    const curated = roundStages({ curate: true });
    expect(curated).toEqual(['collect_preferences', 'train_reward_model', 'rejection_sample', 'curate', 'sft', 'dpo', 'evaluate']);
    expect(store.firstUnfinishedStage('q', 2, curated)).toEqual({ roundIndex: 1, stage: 'curate', status: 'pending' });
    expect(() => store.firstUnfinishedStage('q', 2, ['sft', 'stf'])).toThrow('firstUnfinishedStage: stages.1: unknown stage "stf"; expected one of');
    expect(() => validateStageOrder(['sft', 'sft'])).toThrow('stages.1: stage "sft" is listed twice');
    expect(() => store.firstUnfinishedStage('q', 0, order)).toThrow('numRounds must be an integer >= 1, got 0');
  });

  it('lists stages in round order and refuses unknown stage names', () => {
    store.startStage('q', 1, 'sft');
    store.startStage('q', 1, 'collect_preferences');
    store.startStage('q', 2, 'collect_preferences');
    expect(store.stages('q').map((s) => `${s.roundIndex}/${s.name}`)).toEqual(['1/collect_preferences', '1/sft', '2/collect_preferences']);
    expect(store.stages('q', { round: 2 })).toHaveLength(1);
    expect(() => store.startStage('q', 1, 'stf' as 'sft')).toThrow('startStage: unknown stage "stf"');
    expect(() => store.startStage('q', -1, 'sft')).toThrow('startStage: round must be an integer >= 0, got -1');
  });
});

describe('completeStage is atomic', () => {
  function expectNothingRecorded(): void {
    expect(store.stageStatus('q', 1, 'sft')).toBe('running');
    expect(store.artifacts('q')).toEqual([]);
    expect(store.metrics('q')).toEqual([]);
  }

  it('rolls back when an artifact insert fails inside the transaction', () => {
    store.startStage('q', 1, 'sft');
    // A failure SQLite raises on the second artifact, after the stage row was updated and the first artifact inserted
    // (what a full disk or a constraint would do mid-transaction).
    const raw = new Database(file);
    raw.exec(`CREATE TRIGGER fail_second BEFORE INSERT ON artifacts WHEN NEW.name = 'selected'
              BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
    raw.close();
    expect(() => store.completeStage('q', 1, 'sft', [policy, dataset], [{ name: 'sft/loss', value: 1 }])).toThrow(
      'completeStage: stage sft of round 1 of run "q": artifact 2 ("selected"): injected failure',
    );
    expectNothingRecorded();
  });

  it('rolls back on a NOT NULL violation and on a duplicate artifact name', () => {
    store.startStage('q', 1, 'sft');
    // The row schema cannot catch this one: the column is NOT NULL in SQL, and a trigger nulls the value on its way in.
    const raw = new Database(file);
    raw.exec(`CREATE TRIGGER null_path BEFORE INSERT ON artifacts WHEN NEW.name = 'selected'
              BEGIN INSERT INTO artifacts (run_id, round_index, stage, kind, name, path, sha256, bytes, created_at)
                    VALUES (NEW.run_id, NEW.round_index, NEW.stage, NEW.kind, 'x', NULL, NEW.sha256, 0, NEW.created_at); END`);
    raw.close();
    expect(() => store.completeStage('q', 1, 'sft', [policy, dataset])).toThrow('artifact 2 ("selected"): NOT NULL constraint failed: artifacts.path');
    expectNothingRecorded();

    expect(() => store.completeStage('q', 1, 'sft', [policy, { ...policy, path: '/elsewhere' }])).toThrow(
      'artifact 2 ("policy"): UNIQUE constraint failed: artifacts.run_id, artifacts.round_index, artifacts.stage, artifacts.name',
    );
    expectNothingRecorded();
  });

  it('checks artifact rows before writing anything', () => {
    store.startStage('q', 1, 'sft');
    expect(() => store.completeStage('q', 1, 'sft', [policy, { ...dataset, sha256: 'abc' }])).toThrow(
      'completeStage: stage sft of round 1 of run "q": artifacts: row 2: sha256: must be 64 lowercase hex digits',
    );
    expect(() => store.completeStage('q', 1, 'sft', [{ ...policy, bytes: null as unknown as number }])).toThrow('artifacts: row 1: bytes:');
    expect(() => store.completeStage('q', 1, 'sft', [{ ...policy, kind: 'weights' as 'checkpoint' }])).toThrow('artifacts: row 1: kind:');
    expectNothingRecorded();
    // The stage can still complete afterwards.
    store.completeStage('q', 1, 'sft', [policy]);
    expect(store.stageStatus('q', 1, 'sft')).toBe('done');
  });
});

const sample = (promptId: string, sampleIndex: number, reward: number, selected = false): SampleInput => ({
  roundIndex: 1, stage: 'rejection_sample', promptId, prompt: `prompt ${promptId}`, sampleIndex, text: `answer ${sampleIndex}`, reward, numTokens: 5 + sampleIndex, finishReason: 'stop', selected,
});
const pref = (roundIndex: number, strength: PreferenceInput['strength'], chosen: string): PreferenceInput => ({
  roundIndex, stage: 'collect_preferences', prompt: 'p', chosen, rejected: 'bad', strength, source: 'judge',
});

describe('resume', () => {
  it('resetRunningStages puts running stages back to pending and deletes their partial rows', () => {
    finishRound(1);
    store.addMetrics('q', [{ roundIndex: 1, stage: 'sft', step: 1, name: 'sft/loss', value: 2 }]);
    store.startStage('q', 2, 'collect_preferences');
    store.addPreferences('q', [pref(2, 'better', 'good')]);
    store.completeStage('q', 2, 'collect_preferences', []);
    store.startStage('q', 2, 'train_reward_model');
    store.completeStage('q', 2, 'train_reward_model', [{ ...policy, name: 'reward_model' }]);
    store.startStage('q', 2, 'rejection_sample');
    store.addSamples('q', [sample('a', 0, 0.5), sample('a', 1, 0.7)].map((s) => ({ ...s, roundIndex: 2 })));
    store.addMetrics('q', [{ roundIndex: 2, stage: 'rejection_sample', name: 'sample/throughput', value: 10 }]);
    // The process is killed here: the stage stays running.

    const reset = store.resetRunningStages('q');
    expect(reset).toEqual([
      { roundIndex: 2, stage: 'rejection_sample', previousStatus: 'running', attempts: 1, startedAt: expect.any(String), removedArtifacts: [] },
    ]);
    const row = store.stages('q', { round: 2 }).find((s) => s.name === 'rejection_sample');
    expect(row).toMatchObject({ status: 'pending', attempts: 1, error: 'interrupted: attempt 1 stopped while running and was reset on resume' });
    expect(store.samples('q', 2)).toEqual([]);
    expect(store.metrics('q', { round: 2 })).toEqual([]);
    // Finished work is untouched.
    expect(store.preferences('q', { round: 2 })).toHaveLength(1);
    expect(store.metrics('q', { round: 1 })).toHaveLength(1);
    expect(store.artifacts('q', { round: 2 }).map((a) => a.name)).toEqual(['reward_model']);
    expect(store.firstUnfinishedStage('q', 2, ROUND_STAGES)).toEqual({ roundIndex: 2, stage: 'rejection_sample', status: 'pending' });
    expect(store.resetRunningStages('q')).toEqual([]);
    // The retry counts as attempt 2.
    expect(store.startStage('q', 2, 'rejection_sample').attempts).toBe(2);
  });

  it('keeps metrics when asked, for a stage resuming from a checkpoint', () => {
    store.startStage('q', 1, 'sft');
    store.addMetrics('q', [1, 2, 3, 4].map((step) => ({ roundIndex: 1, stage: 'sft' as const, step, name: 'sft/loss', value: 5 - step })));
    store.resetRunningStages('q', { keepMetrics: true });
    // The checkpoint was at step 2: steps 3 and 4 will be logged again.
    expect(store.deleteMetrics('q', 1, 'sft', { afterStep: 2 })).toBe(2);
    expect(store.metrics('q').map((m) => [m.step, m.value])).toEqual([[1, 4], [2, 3]]);
  });

  it('resetStage reopens a done stage and returns its artifacts for deletion', () => {
    store.startStage('q', 1, 'sft');
    store.completeStage('q', 1, 'sft', [policy]);
    const reset = store.resetStage('q', 1, 'sft');
    expect(reset).toMatchObject({ previousStatus: 'done', removedArtifacts: [{ name: 'policy', path: policy.path, sha256: SHA_A }] });
    expect(store.stageStatus('q', 1, 'sft')).toBe('pending');
    expect(store.artifacts('q')).toEqual([]);
    expect(() => store.resetStage('q', 1, 'dpo')).toThrow('resetStage: stage dpo of round 1 of run "q" was never started');
    store.startStage('q', 1, 'sft');
    expect(() => store.resetStage('q', 1, 'sft')).toThrow('is running; reset running stages on resume instead');
  });
});

describe('records', () => {
  it('stores samples and reads them back by round, stage and selection', () => {
    expect(store.addSamples('q', [sample('a', 0, 0.1), sample('a', 1, 0.9, true), sample('b', 0, -0.5, true)])).toBe(3);
    const rows = store.samples('q', 1);
    expect(rows).toHaveLength(3);
    expect(rows[1]).toEqual({ roundIndex: 1, stage: 'rejection_sample', promptId: 'a', prompt: 'prompt a', sampleIndex: 1, text: 'answer 1', reward: 0.9, numTokens: 6, finishReason: 'stop', selected: true });
    expect(store.samples('q', 1, { selected: true }).map((s) => [s.promptId, s.reward])).toEqual([['a', 0.9], ['b', -0.5]]);
    expect(store.samples('q', 1, { stage: 'collect_preferences' })).toEqual([]);
    expect(store.samples('q', 2)).toEqual([]);
    expect(() => store.addSamples('q', [sample('c', 0, 1), { ...sample('c', 1, 1), numTokens: -1 }])).toThrow('addSamples: row 2: numTokens:');
    expect(store.samples('q', 1)).toHaveLength(3); // the bad batch wrote nothing
    expect(() => store.addSamples('q', [sample('a', 0, 0.3)])).toThrow(/UNIQUE constraint failed/);
  });

  it('filters preferences by round, rounds so far and strength', () => {
    store.addPreferences('q', [pref(1, 'significantly_better', 'c1'), pref(1, 'marginally_better', 'c2'), { ...pref(1, 'better', 'c3'), edited: 'c3+' }]);
    store.addPreferences('q', [pref(2, 'better', 'c4'), { ...pref(2, 'slightly_better', 'c5'), source: 'file', promptId: 'p7' }]);
    store.addPreferences('q', [pref(3, 'better', 'c6')]);
    const chosen = (rows: { chosen: string }[]): string[] => rows.map((r) => r.chosen);
    expect(chosen(store.preferences('q'))).toEqual(['c1', 'c2', 'c3', 'c4', 'c5', 'c6']);
    expect(chosen(store.preferences('q', { round: 2 }))).toEqual(['c4', 'c5']);
    expect(chosen(store.preferences('q', { uptoRound: 2 }))).toEqual(['c1', 'c2', 'c3', 'c4', 'c5']);
    expect(chosen(store.preferences('q', { uptoRound: 2, strengths: ['significantly_better', 'better'] }))).toEqual(['c1', 'c3', 'c4']);
    const [edited] = store.preferences('q', { round: 1, strengths: ['better'] });
    expect(edited).toMatchObject({ edited: 'c3+', promptId: null, source: 'judge', strength: 'better' });
    expect(store.preferences('q', { round: 2 })[1]).toMatchObject({ promptId: 'p7', source: 'file', edited: null });
    expect(() => store.addPreferences('q', [{ ...pref(1, 'better', 'same'), rejected: 'same' }])).toThrow('addPreferences: row 1: rejected: must differ from chosen');
    expect(() => store.addPreferences('q', [pref(1, 'much_better' as 'better', 'x')])).toThrow('addPreferences: row 1: strength:');
    expect(() => store.preferences('q', { strengths: ['much_better' as 'better'] })).toThrow('preferences: unknown strength "much_better"');
  });

  it('inserts 10,000 metrics in one batch and filters them', () => {
    const rows: MetricInput[] = [];
    for (let step = 0; step < 5000; step++) {
      rows.push({ roundIndex: 1, stage: 'sft', step, name: 'sft/loss', value: 1 / (step + 1) });
      rows.push({ roundIndex: 1, stage: 'dpo', step, name: 'dpo/rewards/margins', value: step * 0.001 });
    }
    expect(store.addMetrics('q', rows)).toBe(10_000);
    const loss = store.metrics('q', { name: 'sft/loss' });
    expect(loss).toHaveLength(5000);
    expect(loss[4999]).toMatchObject({ step: 4999, value: 1 / 5000, stage: 'sft' });
    expect(store.metrics('q', { round: 1, stage: 'dpo' })).toHaveLength(5000);
    expect(store.metrics('q', { round: 2 })).toEqual([]);
  });

  it('keeps NaN and infinite metric values', () => {
    store.addMetrics('q', [
      { roundIndex: 1, stage: 'sft', step: 1, name: 'sft/loss', value: Number.NaN },
      { roundIndex: 1, stage: 'sft', step: 2, name: 'sft/loss', value: Number.POSITIVE_INFINITY },
    ]);
    expect(store.metrics('q').map((m) => m.value)).toEqual([Number.NaN, Number.POSITIVE_INFINITY]);
    expect(() => store.addMetrics('q', [{ roundIndex: 1, stage: 'sft', name: 'sft/loss', value: '1' as unknown as number }])).toThrow('addMetrics: row 1: value:');
  });

  it('summarizes each round with the latest value per metric name', () => {
    finishRound(1);
    store.startStage('q', 2, 'collect_preferences');
    store.addMetrics('q', [
      { roundIndex: 0, stage: 'evaluate', name: 'eval/judge_score', value: 0.31 },
      { roundIndex: 1, stage: 'train_reward_model', step: 10, name: 'rm/accuracy', value: 0.6 },
      { roundIndex: 1, stage: 'train_reward_model', step: 20, name: 'rm/accuracy', value: 0.72 },
      { roundIndex: 1, stage: 'rejection_sample', name: 'sample/best_of_k_gain', value: 0.41 },
      { roundIndex: 1, stage: 'evaluate', name: 'eval/judge_score', value: 0.55 },
      { roundIndex: 1, stage: 'evaluate', name: 'eval/win_rate_vs_previous', value: 0.8 },
      { roundIndex: 2, stage: 'train_reward_model', step: 10, name: 'rm/accuracy', value: 0.7 },
    ]);
    // Logged later, so it is the latest even with a smaller step.
    store.addMetrics('q', [{ roundIndex: 2, stage: 'train_reward_model', step: 5, name: 'rm/accuracy', value: 0.74 }]);
    store.completeRound('q', 1, '/runs/q/round-1/dpo');

    const summaries = store.roundSummaries('q');
    expect(summaries.map((s) => [s.roundIndex, s.status, s.bestPolicyPath])).toEqual([
      [0, 'pending', null],
      [1, 'done', '/runs/q/round-1/dpo'],
      [2, 'running', null],
    ]);
    expect(summaries[0].metrics).toEqual({ 'eval/judge_score': 0.31 });
    expect(summaries[1].metrics).toEqual({ 'rm/accuracy': 0.72, 'sample/best_of_k_gain': 0.41, 'eval/judge_score': 0.55, 'eval/win_rate_vs_previous': 0.8 });
    expect(summaries[2].metrics).toEqual({ 'rm/accuracy': 0.74 });
    expect(summaries[1].stages.map((s) => s.name)).toEqual([...ROUND_STAGES]);
    expect(summaries[2].stages.map((s) => [s.name, s.status])).toEqual([['collect_preferences', 'running']]);
  });
});

describe('concurrent access', () => {
  it('lets a reader read committed data while a writer holds a transaction', () => {
    const writer = new Database(file);
    writer.pragma('foreign_keys = ON');
    writer.exec('BEGIN IMMEDIATE');
    writer
      .prepare("INSERT INTO runs (name, created_at, updated_at, config_json, config_hash) VALUES ('uncommitted', 't', 't', '{}', 'h')")
      .run();
    const reader = RunStore.open(file, { readonly: true, busyTimeoutMs: 100 });
    // No SQLITE_BUSY, and no half-written transaction visible.
    expect(reader.listRuns().map((r) => r.name)).toEqual(['q']);
    expect(reader.journalMode).toBe('wal');
    // A second writer waits for the lock and gives up after its busy timeout.
    const secondWriter = RunStore.open(file, { busyTimeoutMs: 100 });
    expect(() => secondWriter.createRun('blocked', {}, 'h')).toThrow(/database is locked/);
    writer.exec('COMMIT');
    expect(reader.listRuns().map((r) => r.name)).toEqual(['q', 'uncommitted']);
    secondWriter.createRun('blocked', {}, 'h');
    expect(store.listRuns().map((r) => r.name)).toEqual(['q', 'uncommitted', 'blocked']);
    secondWriter.close();
    reader.close();
    writer.close();
  });
});
