/**
 * Kill-and-resume of a real run (issue 5): `tfalign run` on a two-round tiny config is killed
 * with SIGKILL at several points — in the middle of pretraining the base model, in the middle of
 * round 1's SFT, right after round 1's DPO finished, and in the middle of round 2's reward-model
 * training — and run again each time, until it completes. Then the database and the files are
 * checked: every stage done exactly once, attempts counting the kills, recorded hashes equal to the
 * files on disk, nothing finished before a kill redone, no partial output left behind.
 *
 * While round 2 is paused (SIGSTOP, so the moment cannot slip away on a loaded machine) a second
 * `tfalign run` is refused naming the holder's pid, and `tfalign status` still answers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunStore } from '../../src/store/store.js';
import { digestPath } from '../../src/util/hash.js';
import { ROUND_STAGES, type StageName } from '../../src/store/stages.js';
import type { ArtifactRecord, RoundSummary, StageRecord } from '../../src/store/records.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = path.join(REPO, 'bin', 'tfalign.js');
const FIXTURE = path.join(REPO, 'test', 'rounds', 'fixtures', 'tiny-run.yaml');
const RUN = 'tiny';
const NUM_ROUNDS = 2;
/** The fixture's training lengths: progress lines `  STAGE k/16` every 2 steps. */
const RM_AND_SFT_STEPS = 16;
const RM_AND_SFT_LOG_EVERY = 2;

let project: string;
/** Children still running, killed if a test fails or times out while waiting on one. */
const liveChildren = new Set<ChildProcess>();

beforeAll(() => {
  project = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-resume-'));
});
afterAll(() => {
  for (const child of liveChildren) child.kill('SIGKILL');
  fs.rmSync(project, { recursive: true, force: true });
});

// ---- the CLI as a child process ---------------------------------------------------------------

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface CliProcess {
  child: ChildProcess;
  /** Every complete stderr line so far. */
  lines: string[];
  /**
   * Resolves with the last line once lines matching `patterns` have appeared in this order (each
   * after the previous one); rejects, with the stderr, if the process exits first.
   */
  waitForLines(patterns: readonly RegExp[]): Promise<string>;
  exited: Promise<Exit>;
}

function startCli(args: readonly string[]): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: REPO, env: { ...process.env, TFALIGN_DEBUG: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const listeners = new Set<(line: string) => void>();
  let stdout = '';
  let stderr = '';
  let partial = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    stderr += text;
    const parts = (partial + text).split('\n');
    partial = parts.pop()!;
    for (const line of parts) {
      lines.push(line);
      for (const listener of [...listeners]) listener(line);
    }
  });
  liveChildren.add(child);
  const exited = new Promise<Exit>((resolve) =>
    child.on('close', (code, signal) => {
      liveChildren.delete(child);
      resolve({ code, signal, stdout, stderr });
    }),
  );
  const waitForLines = (patterns: readonly RegExp[]): Promise<string> =>
    new Promise((resolve, reject) => {
      let numMatched = 0;
      const listener = (line: string): void => {
        if (!patterns[numMatched]!.test(line)) return;
        numMatched++;
        if (numMatched < patterns.length) return;
        listeners.delete(listener);
        resolve(line);
      };
      for (const line of lines) if (numMatched < patterns.length && patterns[numMatched]!.test(line)) numMatched++;
      if (numMatched === patterns.length) return resolve(lines[lines.length - 1]!);
      listeners.add(listener);
      void exited.then((e) => {
        if (!listeners.delete(listener)) return;
        reject(new Error(`tfalign exited (code ${e.code}, signal ${e.signal}) before ${patterns.slice(numMatched).join(' then ')}; stderr:\n${e.stderr.slice(-3000)}`));
      });
    });
  return { child, lines, waitForLines, exited };
}

function startRun(): CliProcess {
  return startCli(['run', '--config', FIXTURE, '--set', `project=${project}`]);
}

/** Runs a short CLI command to its end. */
async function cli(args: readonly string[]): Promise<Exit> {
  return startCli(args).exited;
}

async function killHard(run: CliProcess): Promise<Exit> {
  run.child.kill('SIGKILL');
  const exit = await run.exited;
  expect(exit.signal).toBe('SIGKILL');
  return exit;
}

// ---- what the database says -------------------------------------------------------------------

interface Snapshot {
  stages: StageRecord[];
  artifacts: ArtifactRecord[];
}

function readSnapshot(): Snapshot {
  const store = RunStore.open(path.join(project, 'tfalign.db'), { readonly: true });
  try {
    return { stages: store.stages(RUN), artifacts: store.artifacts(RUN) };
  } finally {
    store.close();
  }
}

const key = (round: number, stage: string): string => `${round}/${stage}`;

function stageOf(snapshot: Snapshot, round: number, stage: StageName): StageRecord | undefined {
  return snapshot.stages.find((s) => s.roundIndex === round && s.name === stage);
}

/** Stage lines as the CLI prints them (src/cli/run.ts consoleEvents). */
const where = (round: number): string => (round === 0 ? 'base' : `round ${round}`);
const startLine = (round: number, stage: string) => new RegExp(`^${where(round)} · ${stage} …$`);
const doneLine = (round: number, stage: string) => new RegExp(`^${where(round)} · ${stage} done in [0-9.]+ s$`);
const progressLine = (stage: string, step: number) => new RegExp(`^  ${stage} ${step}/\\d+ `);

/** Every file and folder under `dir`, relative, `/`-separated. */
function walk(dir: string, rel = ''): string[] {
  return fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).flatMap((entry) => {
    const child = rel === '' ? entry.name : `${rel}/${entry.name}`;
    return entry.isDirectory() ? [child, ...walk(dir, child)] : [child];
  });
}

/** Plants what a kill during a checkpoint write would leave: a half-written `.tmp-` folder and a stray file. */
function plantPartialOutput(stageDir: string): string[] {
  const planted = [path.join(stageDir, 'run', 'model.tmp-999999-deadbeef'), path.join(stageDir, 'partial-output.marker')];
  fs.mkdirSync(planted[0]!, { recursive: true });
  fs.writeFileSync(path.join(planted[0]!, 'model.safetensors'), 'half a checkpoint');
  fs.writeFileSync(planted[1]!, 'left by the killed attempt');
  return planted;
}

// ---- the test -----------------------------------------------------------------------------------

describe('tfalign run: kill -9 at several points, then resume', () => {
  /** DB state right after each kill, before the next run: what must survive untouched. */
  const snapshots: { label: string; snapshot: Snapshot }[] = [];
  /** Kills per (round, stage) that hit the stage while it was running. */
  const interrupted = new Map<string, number>();
  const planted: string[] = [];
  const timings: string[] = [];

  const noteInterrupted = (snapshot: Snapshot, round: number, stage: StageName): void => {
    const record = stageOf(snapshot, round, stage);
    // The kill landed while the stage ran (not after it finished): the test's premise.
    expect(record?.status, `${key(round, stage)} when killed`).toBe('running');
    expect(record?.attempts).toBe(1);
    interrupted.set(key(round, stage), (interrupted.get(key(round, stage)) ?? 0) + 1);
  };

  it('1: killed while pretraining the base model', async () => {
    const started = performance.now();
    const run = startRun();
    await run.waitForLines([startLine(0, 'build_base'), progressLine('build_base', 5)]);
    await killHard(run);
    const snapshot = readSnapshot();
    noteInterrupted(snapshot, 0, 'build_base');
    expect(snapshot.artifacts).toEqual([]);
    snapshots.push({ label: 'after kill 1', snapshot });
    planted.push(...plantPartialOutput(path.join(project, RUN, 'base', 'pretrain')));
    timings.push(`kill 1: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }, 240_000);

  it('2: resumed, then killed in the middle of round 1 SFT', async () => {
    const started = performance.now();
    const run = startRun();
    await run.waitForLines([startLine(1, 'sft'), progressLine('sft', RM_AND_SFT_LOG_EVERY)]);
    await killHard(run);
    expect(run.lines).toContain('base · build_base was interrupted: its partial output was removed and it starts over');
    const snapshot = readSnapshot();
    noteInterrupted(snapshot, 1, 'sft');
    for (const stage of ['collect_preferences', 'train_reward_model', 'rejection_sample'] as const) expect(stageOf(snapshot, 1, stage)?.status).toBe('done');
    expect(stageOf(snapshot, 0, 'build_base')).toMatchObject({ status: 'done', attempts: 2 });
    // The killed attempt had begun writing its folder.
    expect(fs.existsSync(path.join(project, RUN, 'round-1', 'sft', 'train.jsonl'))).toBe(true);
    snapshots.push({ label: 'after kill 2', snapshot });
    planted.push(...plantPartialOutput(path.join(project, RUN, 'round-1', 'sft')));
    timings.push(`kill 2: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }, 240_000);

  it('3: resumed, then killed right after round 1 DPO finished', async () => {
    const started = performance.now();
    const run = startRun();
    await run.waitForLines([doneLine(1, 'dpo')]);
    await killHard(run);
    expect(run.lines).toContain('round 1 · sft was interrupted: its partial output was removed and it starts over');
    for (const [round, stage] of [[0, 'build_base'], [1, 'collect_preferences'], [1, 'train_reward_model'], [1, 'rejection_sample']] as const) {
      expect(run.lines).toContain(`${where(round)} · ${stage} already done`);
    }
    expect(run.lines.some((l) => startLine(1, 'train_reward_model').test(l))).toBe(false);
    const snapshot = readSnapshot();
    expect(stageOf(snapshot, 1, 'sft')).toMatchObject({ status: 'done', attempts: 2 });
    expect(stageOf(snapshot, 1, 'dpo')).toMatchObject({ status: 'done', attempts: 1 });
    // The kill came between DPO's end and evaluate's start, or just after evaluate started: both
    // are legitimate moments; a running evaluate must then be redone.
    const evaluate = stageOf(snapshot, 1, 'evaluate');
    expect([undefined, 'running']).toContain(evaluate?.status);
    if (evaluate?.status === 'running') interrupted.set(key(1, 'evaluate'), 1);
    snapshots.push({ label: 'after kill 3', snapshot });
    timings.push(`kill 3: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }, 240_000);

  it('4: resumed; while round 2 trains its reward model a second writer is refused and status works; then killed', async () => {
    const started = performance.now();
    const run = startRun();
    await run.waitForLines([startLine(2, 'train_reward_model'), progressLine('train_reward_model', RM_AND_SFT_LOG_EVERY)]);
    run.child.kill('SIGSTOP'); // hold it mid-stage while other processes look at the run
    try {
      const second = await cli(['run', '--config', FIXTURE, '--set', `project=${project}`]);
      expect(second.code).toBe(1);
      // One clear line naming the holder, no stack trace.
      const errors = second.stderr.split('\n').filter((l) => l.startsWith('error: '));
      expect(errors).toHaveLength(1);
      expect(errors[0]).toContain(`run "${RUN}" is being written by pid ${run.child.pid} on host ${os.hostname()}`);
      expect(second.stderr).not.toMatch(/^\s+at /m);

      const status = await cli(['status', '--project', project, '--run', RUN, '--json']);
      expect(status.code).toBe(0);
      const report = JSON.parse(status.stdout) as { run: { name: string; status: string }; rounds: RoundSummary[] };
      expect(report.run).toMatchObject({ name: RUN, status: 'running' });
      const round2 = report.rounds.find((r) => r.roundIndex === 2)!;
      expect(round2.stages.map((s) => [s.name, s.status])).toEqual([
        ['collect_preferences', 'done'],
        ['train_reward_model', 'running'],
      ]);
      expect(report.rounds.find((r) => r.roundIndex === 1)!.status).toBe('done');

      const table = await cli(['status', '--project', project, '--run', RUN]);
      expect(table.code).toBe(0);
      expect(table.stdout).toMatch(/^2\s+1\/6 stages/m);
    } finally {
      await killHard(run); // SIGKILL ends a stopped process too
    }
    const snapshot = readSnapshot();
    noteInterrupted(snapshot, 2, 'train_reward_model');
    if (interrupted.has(key(1, 'evaluate'))) expect(run.lines).toContain('round 1 · evaluate was interrupted: its partial output was removed and it starts over');
    else expect(run.lines.some((l) => l.startsWith('round 1 · evaluate was interrupted'))).toBe(false);
    expect(run.lines).toContain('round 1 · dpo already done');
    snapshots.push({ label: 'after kill 4', snapshot });
    planted.push(...plantPartialOutput(path.join(project, RUN, 'round-2', 'train_reward_model')));
    timings.push(`kill 4: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }, 240_000);

  it('5: resumed to the end; every stage done once, nothing redone, nothing partial left', async () => {
    const started = performance.now();
    const last = await startRun().exited;
    expect(last.code, last.stderr.slice(-3000)).toBe(0);
    expect(last.stderr).toContain('round 2 · train_reward_model was interrupted: its partial output was removed and it starts over');
    expect(last.stdout).toMatch(/^2\s+done\s/m); // the final round table
    timings.push(`final run: ${((performance.now() - started) / 1000).toFixed(1)} s`);

    // Status: every stage of every round done exactly once; attempts count the kills that hit it.
    const status = await cli(['status', '--project', project, '--run', RUN, '--json']);
    expect(status.code).toBe(0);
    const report = JSON.parse(status.stdout) as { run: { status: string }; rounds: RoundSummary[] };
    expect(report.run.status).toBe('done');
    expect(report.rounds.map((r) => r.roundIndex)).toEqual([0, 1, 2]);
    const expectedStages: [number, StageName][] = [[0, 'build_base'], ...[1, 2].flatMap((round) => ROUND_STAGES.map((s) => [round, s] as [number, StageName]))];
    const actualStages = report.rounds.flatMap((r) => r.stages.map((s) => [s.roundIndex, s.name, s.status, s.attempts]));
    expect(actualStages).toEqual(expectedStages.map(([round, stage]) => [round, stage, 'done', 1 + (interrupted.get(key(round, stage)) ?? 0)]));
    expect(interrupted.get(key(0, 'build_base'))).toBe(1);
    expect(interrupted.get(key(1, 'sft'))).toBe(1);
    expect(interrupted.get(key(2, 'train_reward_model'))).toBe(1);
    for (const round of [1, 2]) {
      const summary = report.rounds.find((r) => r.roundIndex === round)!;
      expect(summary.status).toBe('done');
      expect(summary.bestPolicyPath).toMatch(/round-\d\/dpo\/run$|base\/pretrain$/); // the run folder is the model
      expect(fs.existsSync(path.join(summary.bestPolicyPath!, 'model.safetensors'))).toBe(true);
    }

    const store = RunStore.open(path.join(project, 'tfalign.db'), { readonly: true });
    try {
      // Artifacts: one record per name per stage, hashes equal to the files on disk.
      const artifacts = store.artifacts(RUN);
      const names = artifacts.map((a) => `${a.roundIndex}/${a.stage}/${a.name}`);
      const perRound = {
        collect_preferences: ['preferences'],
        train_reward_model: ['rm-train', 'reward-model'],
        rejection_sample: ['samples', 'sft', 'rs-preferences'],
        sft: ['sft-train', 'sft-model'],
        dpo: ['dpo-train', 'policy'],
        evaluate: ['eval-samples'],
      };
      const expectedNames = ['0/build_base/base-model'];
      for (let round = 1; round <= NUM_ROUNDS; round++) {
        for (const [stage, stageNames] of Object.entries(perRound)) {
          expectedNames.push(...stageNames.map((n) => `${round}/${stage}/${n}`));
          // round 1 also builds the fixed reward-model eval set every round's RM is measured on
          if (round === 1 && stage === 'collect_preferences') expectedNames.push('1/collect_preferences/rm-eval');
        }
      }
      expect(names).toEqual(expectedNames);
      for (const a of artifacts) {
        expect(a.path.startsWith(path.join(project, RUN) + path.sep), a.path).toBe(true);
        expect(digestPath(a.path), `${a.roundIndex}/${a.stage}/${a.name}`).toEqual({ sha256: a.sha256, bytes: a.bytes });
      }

      // Nothing finished before a kill was redone: same end time, same artifacts (path, hash, time).
      const final = { stages: store.stages(RUN), artifacts };
      for (const { label, snapshot } of snapshots) {
        for (const before of snapshot.stages.filter((s) => s.status === 'done')) {
          const after = stageOf(final, before.roundIndex, before.name)!;
          expect(after, `${label}: ${key(before.roundIndex, before.name)}`).toEqual(before);
          const artifactsOf = (s: Snapshot) => s.artifacts.filter((a) => a.roundIndex === before.roundIndex && a.stage === before.name);
          expect(artifactsOf(final), `${label}: artifacts of ${key(before.roundIndex, before.name)}`).toEqual(artifactsOf(snapshot));
        }
      }

      // Metrics: every stage has its summary metrics, and training stages one row per logged step
      // (none left over from a killed attempt).
      for (const [round, stage] of expectedStages) expect(store.metrics(RUN, { round, stage }).length, key(round, stage)).toBeGreaterThan(0);
      expect(store.metrics(RUN, { round: 0, stage: 'build_base', name: 'pretrain/loss' })).toHaveLength(1);
      const loggedSteps = Array.from({ length: RM_AND_SFT_STEPS / RM_AND_SFT_LOG_EVERY }, (_, i) => (i + 1) * RM_AND_SFT_LOG_EVERY);
      for (const round of [1, 2]) {
        for (const stage of ['train_reward_model', 'sft'] as const) {
          const losses = store.metrics(RUN, { round, stage, name: `${stage}/train/loss` });
          expect(losses.map((m) => m.step), `${key(round, stage)} steps`).toEqual(loggedSteps);
          expect(losses.every((m) => Number.isFinite(m.value))).toBe(true);
        }
        expect(store.metrics(RUN, { round, stage: 'evaluate', name: 'eval/judge_score' })).toHaveLength(1);
        expect(store.metrics(RUN, { round, stage: 'train_reward_model', name: 'rm/accuracy' })).toHaveLength(1);
        // DPO is evaluated on the same fixed held-out pairs as every RM (all strengths kept here).
        const [numFixedPairs] = store.metrics(RUN, { round: 1, stage: 'collect_preferences', name: 'rm_eval/num_pairs' });
        expect(store.metrics(RUN, { round, stage: 'dpo', name: 'dpo/num_eval_pairs' }).map((m) => m.value)).toEqual([numFixedPairs!.value]);

        // Samples and preferences: exactly one stage's worth per round.
        expect(store.samples(RUN, round, { stage: 'rejection_sample' })).toHaveLength(8 * 4); // promptsPerRound × k
        expect(store.samples(RUN, round, { stage: 'rejection_sample', selected: true })).toHaveLength(8);
        const numPairs = artifacts.find((a) => a.roundIndex === round && a.name === 'preferences')!.numRows;
        expect(store.preferences(RUN, { round })).toHaveLength(numPairs!);
      }
    } finally {
      store.close();
    }

    // Files: the planted partial output is gone, no temporary folder anywhere, no lock left.
    for (const file of planted) expect(fs.existsSync(file), file).toBe(false);
    const everything = walk(project);
    expect(everything.filter((p) => /\.tmp-|\.old-|\.stale-/.test(p))).toEqual([]);
    expect(fs.readdirSync(path.join(project, '.tfalign', 'locks'))).toEqual([]);
    console.log(`resume test timings: ${timings.join(', ')}`);
  }, 240_000);
});
