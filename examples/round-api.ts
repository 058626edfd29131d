/**
 * One alignment round through the public API, the way a script or a notebook drives it:
 *
 *   1. build a run config in code (validated by `RunConfigSchema` when the run opens),
 *   2. `AlignmentRun.open(config)` — creates the run in PROJECT/tfalign.db, or resumes it,
 *   3. `run.run({ round: 1 })` — the six stages of round 1 (stages already done are skipped),
 *   4. read the round's stages and metrics back from the store (`RunStore`, read-only),
 *   5. export the policy the round chose as a Hugging Face folder.
 *
 * Usage: node bin/run-ts.js examples/round-api.ts [PROJECT_DIR]     (default PROJECT_DIR: runs)
 *   TFALIGN_EXAMPLE_FAST=1   a tiny model and a few optimizer steps per stage: seconds, not minutes
 *                            (what test/examples/round-api.test.ts runs)
 *   otherwise                the quickstart's run (configs/quickstart.yaml), round 1 of 3
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AlignmentRun, RunStore, loadPretrained, readRunConfig, savePretrained, type RunConfigInput, type RunEvents } from 'tfalign';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ROUND = 1;

/**
 * A run small enough to finish in seconds on one CPU core: the tiny architecture from scratch,
 * a few hundred pretraining documents, 16 preference pairs and 8 rejection-sampled prompts per
 * round, a handful of steps per trainer. Every strength counts, as in the quickstart.
 */
function fastConfig(project: string): RunConfigInput {
  const everyStrength = ['significantly_better', 'better', 'slightly_better', 'marginally_better'] as const;
  const trainer = { batchSize: 8, maxSteps: 6, evalFraction: 0.25, maxLength: 64, maxPromptLength: 32, logEvery: 2 };
  return {
    name: 'api-example',
    project,
    backend: 'wasm',
    seed: 1,
    rounds: 2,
    base: {
      fromScratch: {
        architecture: path.join(REPO, 'configs', 'models', 'tiny.json'),
        numDocuments: 600,
        pretrain: { seqLen: 64, batchSize: 8, maxSteps: 20, lr: 0.003, logEvery: 5 },
      },
    },
    prompts: { train: { synthetic: 64 }, heldout: { synthetic: 8 } },
    preferences: { source: 'judge', judge: path.join(REPO, 'data', 'synthetic', 'judge.ts'), promptsPerRound: 16 },
    rewardModel: { ...trainer, lr: 0.001, strengths: [...everyStrength] },
    sampling: { k: 4, promptsPerRound: 8, maxNewTokens: 8 },
    sft: { ...trainer, lr: 0.001 },
    dpo: { ...trainer, lr: 0.0001, strengths: [...everyStrength] },
    evaluate: { samplesPerPrompt: 1 },
  };
}

/** The quickstart's config as the CLI reads it (paths resolved against the YAML file), written to `project`. */
function quickstartConfig(project: string): RunConfigInput {
  return readRunConfig(path.join(REPO, 'configs', 'quickstart.yaml'), [`project=${project}`]);
}

/** Progress on stderr, so that stdout holds only the results. */
const events: RunEvents = {
  onStage: ({ round, stage, status, seconds }) => {
    const where = round === 0 ? 'base' : `round ${round}`;
    process.stderr.write(`${where} · ${stage} ${status}${seconds === undefined ? '' : ` in ${seconds.toFixed(1)} s`}\n`);
  },
  onLine: (line) => process.stderr.write(`  ${line}\n`),
};

/** Left-aligned columns, like `tfalign status`. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(header), widths.map((w) => '─'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

const seconds = (start: string | null, end: string | null): string =>
  start === null || end === null ? '—' : ((Date.parse(end) - Date.parse(start)) / 1000).toFixed(1);

async function main(): Promise<void> {
  const project = path.resolve(process.argv[2] ?? 'runs');
  const fast = process.env.TFALIGN_EXAMPLE_FAST === '1';
  const config = fast ? fastConfig(project) : quickstartConfig(project);

  // 1–3) open (or resume) the run and do round 1; close releases the run's write lock.
  const run = await AlignmentRun.open(config);
  try {
    await run.run({ round: ROUND }, events);
  } finally {
    run.close();
  }
  const name = run.config.name;

  // 4) the round as the store recorded it. Read-only: works even while another process writes the run.
  const store = RunStore.open(run.layout.database, { readonly: true });
  let policyDir: string;
  try {
    const stages = store.stages(name, { round: ROUND });
    console.log(`run ${name}, round ${ROUND}: stages`);
    console.log(table(['stage', 'status', 'attempts', 'seconds'], stages.map((s) => [s.name, s.status, String(s.attempts), seconds(s.startedAt, s.endedAt)])));

    // Each stage's summary metrics are the ones recorded without a step; per-step training
    // metrics (e.g. `sft/train/loss` at every logged step) are there too, with their step.
    const summary = store.metrics(name, { round: ROUND }).filter((m) => m.step === null);
    console.log(`\nrun ${name}, round ${ROUND}: metrics`);
    console.log(table(['stage', 'metric', 'value'], summary.map((m) => [m.stage, m.name, m.value.toFixed(4)])));

    const round = store.rounds(name).find((r) => r.roundIndex === ROUND);
    if (round?.bestPolicyPath == null) throw new Error(`run ${name}: round ${ROUND} recorded no policy`);
    policyDir = round.bestPolicyPath;
  } finally {
    store.close();
  }

  // 5) the chosen policy as a Hugging Face folder (what `tfalign export` does).
  const out = path.join(project, 'exported', `${name}-round-${ROUND}`);
  const policy = await loadPretrained(policyDir);
  try {
    await savePretrained(policy, out, { tokenizerDir: policyDir });
  } finally {
    policy.dispose();
  }
  console.log(`\nexported the round ${ROUND} policy (${path.relative(project, policyDir)}) to ${out}`);
}

await main();
