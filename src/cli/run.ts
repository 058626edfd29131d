/**
 * Iterative rounds from the command line: `run` (every round), `round N` (one round or one
 * stage), `status` (rounds and stages with key metrics; read-only, works while a run holds the
 * lock), `export` (a round's policy or reward model as an HF folder), and `quickstart`.
 */
import type { Command } from 'commander';
import { example, intArg, openStoreReadOnly, overwriteOption, progress, staleRunNote } from './common.js';
import type { AlignmentRun, RunEvents } from '../rounds/runner.js';
import { ROUND_STAGES, roundStages } from '../store/stages.js';
import { RunLayout } from '../rounds/layout.js';
import { RunStore } from '../store/store.js';
import type { RoundSummary } from '../store/records.js';
import { packageFile } from '../util/package-root.js';

const collect = (value: string, previous: string[]) => [...previous, value];

/** Stages `--stage` accepts: a round's stages, curate included. */
const ROUND_STAGE_CHOICES = roundStages({ curate: true });

/** Console output for a run: stage lines, a progress bar per training stage, summaries. */
export function consoleEvents(): RunEvents {
  let bar: ReturnType<typeof progress> | undefined;
  return {
    onStage: ({ round, stage, status, seconds }) => {
      bar?.done();
      bar = undefined;
      const where = round === 0 ? 'base' : `round ${round}`;
      if (status === 'start') console.error(`${where} · ${stage} …`);
      else if (status === 'done') console.error(`${where} · ${stage} done in ${seconds?.toFixed(1)} s`);
      else if (status === 'skipped') console.error(`${where} · ${stage} already done`);
      else console.error(`${where} · ${stage} was interrupted: its partial output was removed and it starts over`);
    },
    onLine: (line) => {
      bar?.done();
      bar = undefined;
      console.error(`  ${line}`);
    },
    onTrainLog: (_round, stage, record) => {
      if (record.split !== 'train') return;
      bar ??= progress(`  ${stage}`, Number(record.total_steps ?? record.step));
      bar.update(record.step, { loss: record.loss, 'tok/s': record.tokens_per_s });
    },
  };
}

function fmt(v: number | undefined, digits = 3): string {
  return v === undefined || Number.isNaN(v) ? '—' : v.toFixed(digits);
}

/** `0.812 [0.771, 0.848]`: an estimate with its 95% interval, when the metrics carry one. */
function withInterval(m: Record<string, number>, name: string, digits = 3): string {
  const low = m[`${name}_ci_low`];
  const high = m[`${name}_ci_high`];
  return low === undefined || high === undefined ? fmt(m[name], digits) : `${fmt(m[name], digits)} [${fmt(low, digits)}, ${fmt(high, digits)}]`;
}

/**
 * The per-round table: the RM's accuracy on the fixed held-out pairs, what best-of-K selection
 * bought as the judge measures it (and in the RM's own units), RM–judge rank agreement, the
 * held-out judge score (sampled, and greedy: what the policy knows) and win rates, each with its
 * 95% interval where one was recorded. `numStages`: stages per round of the run (7 with curate).
 */
export function roundTable(summaries: readonly RoundSummary[], numStages: number = ROUND_STAGES.length): string {
  const header = ['round', 'status', 'rm acc [95% CI]', 'judge gain of best-of-K [95% CI]', 'rm gain', 'rm–judge ρ', 'judge score [95% CI]', 'greedy [95% CI]', 'win vs prev [95% CI]', 'win vs base [95% CI]', 'policy', 'best so far'];
  const hasJudge = summaries.some((s) => s.metrics['eval/judge_score'] !== undefined);
  const score = hasJudge ? 'eval/judge_score' : 'eval/rm_score';
  const rows = summaries
    .filter((s) => s.roundIndex > 0)
    .map((s) => {
      const m = s.metrics;
      const done = s.stages.filter((x) => x.status === 'done').length;
      return [
        String(s.roundIndex),
        s.status === 'done' ? 'done' : `${done}/${numStages} stages`,
        withInterval(m, 'rm/accuracy'),
        withInterval(m, 'sample/judge_gain'),
        fmt(m['sample/best_of_k_gain']),
        fmt(m['rm/spearman_judge']),
        withInterval(m, score),
        withInterval(m, `${score}_greedy`),
        withInterval(m, 'eval/win_rate_vs_previous'),
        withInterval(m, 'eval/win_rate_vs_base'),
        m['eval/selected'] === undefined ? '—' : m['eval/selected'] ? 'new best' : 'kept previous',
        // the score of the policy the next round starts from
        fmt(m['eval/selected'] ? m[score] : (m['eval/previous_judge_score'] ?? m['eval/previous_rm_score'])),
      ];
    });
  if (!hasJudge) header[6] = 'rm score [95% CI]';
  const firstRound = summaries.find((s) => s.roundIndex === 1)?.metrics ?? {};
  const baseName = hasJudge ? 'eval/base_judge_score' : 'eval/base_rm_score';
  const baseGreedy = `${baseName}_greedy`;
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const lines = [line(header), widths.map((w) => '─'.repeat(w)).join('  '), ...rows.map(line)];
  if (firstRound[baseName] !== undefined) {
    const greedy = firstRound[baseGreedy] !== undefined ? `; greedy ${withInterval(firstRound, baseGreedy)}` : '';
    lines.push(`base model ${hasJudge ? 'judge' : 'rm'} score: ${withInterval(firstRound, baseName)}${greedy}`);
  }
  const numEval = firstRound['eval/num_prompts'];
  const numRmEval = summaries.find((s) => s.metrics['rm/num_eval_pairs'] !== undefined)?.metrics['rm/num_eval_pairs'];
  if (numEval !== undefined || numRmEval !== undefined) {
    lines.push(
      `held out: ${numRmEval !== undefined ? `${numRmEval} fixed preference pairs for every round's RM (labels: the judge's score)` : 'RM accuracy on a split of the training pairs'}` +
        `${numEval !== undefined ? `; ${numEval} prompts for the policy scores and win rates` : ''}. Intervals: Wilson (accuracy), bootstrap over prompts (the rest).`,
    );
  }
  for (const s of summaries) {
    if (s.metrics['sample/reward_hacking'] === 1) {
      lines.push(`warning: round ${s.roundIndex}: reward hacking — best-of-K raised the RM's score (${fmt(s.metrics['sample/best_of_k_gain'])}) while the judge's fell (${fmt(s.metrics['sample/judge_gain'])})`);
    }
  }
  return lines.join('\n');
}

/** Stages per round of a recorded run (its config decides whether curate runs). */
function stagesPerRound(store: RunStore, name: string): number {
  const config = store.getRun(name)?.config as { curate?: { enabled?: boolean } } | undefined;
  return ROUND_STAGES.length + (config?.curate?.enabled ? 1 : 0);
}

async function runWithConfig(file: string, sets: string[], force: boolean, selection: Parameters<AlignmentRun['run']>[0]): Promise<AlignmentRun> {
  const { AlignmentRun, readRunConfig } = await import('../rounds/runner.js');
  const config = readRunConfig(file, sets);
  const run = await AlignmentRun.open(config, { force, source: file });
  try {
    await run.run(selection, consoleEvents());
  } finally {
    run.close();
  }
  return run;
}

function printStatus(project: string, name: string): void {
  const store = openStoreReadOnly(project);
  try {
    console.log(roundTable(store.roundSummaries(name), stagesPerRound(store, name)));
  } finally {
    store.close();
  }
}

/** What `preferences.judge` is, said wherever a command may load one. */
export const JUDGE_TRUST_NOTE =
  '\nJudge modules: preferences.judge names a JS/TS module that is imported and run inside this process with your\n' +
  'permissions (files, network, environment). It is code, not data: name only modules you trust. It is loaded\n' +
  "after the run's lock is held, and never by status, report, export or annotate.\n";

export const QUICKSTART_CONFIG = packageFile('configs', 'quickstart.yaml');

export function registerRunCommands(program: Command): void {
  program
    .command('run')
    .description('run every round of a config (resumes where it stopped)')
    .requiredOption('--config <file>', 'run config (YAML or JSON)')
    .option('--set <key=value>', 'override a config field (repeatable)', collect, [])
    .option('--force', 'continue a run whose config changed')
    .addHelpText('after', example('tfalign run --config configs/quickstart.yaml', 'tfalign run --config configs/llama3.yaml --set base.model=models/Llama-3.2-1B'))
    .addHelpText('after', JUDGE_TRUST_NOTE)
    .action(async (o) => {
      const run = await runWithConfig(o.config, o.set, Boolean(o.force), {});
      printStatus(run.config.project, run.config.name);
    });

  program
    .command('round')
    .description('run one round, or one stage of it (--stage redoes that stage)')
    .argument('<n>', 'round number (1-based)', intArg('round', { min: 1 }))
    .requiredOption('--config <file>', 'run config (YAML or JSON)')
    .option('--stage <name>', `one stage: ${ROUND_STAGE_CHOICES.join(', ')}`)
    .option('--set <key=value>', 'override a config field (repeatable)', collect, [])
    .option('--force', 'continue a run whose config changed')
    .addHelpText('after', example('tfalign round 2 --config configs/quickstart.yaml', 'tfalign round 2 --config configs/quickstart.yaml --stage evaluate'))
    .addHelpText('after', JUDGE_TRUST_NOTE)
    .action(async (n: number, o) => {
      if (o.stage !== undefined && !(ROUND_STAGE_CHOICES as readonly string[]).includes(o.stage)) {
        throw new Error(`--stage: unknown stage "${o.stage}"; expected one of ${ROUND_STAGE_CHOICES.join(', ')}`);
      }
      const run = await runWithConfig(o.config, o.set, Boolean(o.force), { round: n, stage: o.stage });
      printStatus(run.config.project, run.config.name);
    });

  program
    .command('status')
    .description('rounds and stages of a run with their key metrics (read-only)')
    .option('--project <dir>', 'project folder holding tfalign.db', '.')
    .option('--run <name>', 'run name (default: the only run, or list them)')
    .option('--json', 'print JSON')
    .addHelpText('after', example('tfalign status --project runs --run quickstart'))
    .action((o) => {
      const store = openStoreReadOnly(o.project);
      try {
        const runs = store.listRuns();
        const name = o.run ?? (runs.length === 1 ? runs[0]!.name : undefined);
        if (name === undefined) {
          console.log(runs.length === 0 ? 'no runs' : `runs: ${runs.map((r) => `${r.name} (${r.status})`).join(', ')}; pick one with --run`);
          return;
        }
        const note = staleRunNote(o.project, store.getRun(name) ?? { name, status: '' });
        if (note !== undefined) console.error(note);
        const summaries = store.roundSummaries(name);
        if (o.json) console.log(JSON.stringify({ run: store.getRun(name), rounds: summaries }, null, 2));
        else console.log(roundTable(summaries, stagesPerRound(store, name)));
      } finally {
        store.close();
      }
    });

  program
    .command('export')
    .description("write a round's policy (or reward model) as a Hugging Face folder")
    .requiredOption('--run <name>', 'run name')
    .requiredOption('--round <n>', 'round number', intArg('--round', { min: 1 }))
    .requiredOption('--out <dir>', 'folder to write (new, empty, or a previous export; never a recorded artifact)')
    .option('--project <dir>', 'project folder holding tfalign.db', '.')
    .option('--what <kind>', 'policy (the round\'s chosen best policy) or reward-model', 'policy')
    .option('--dtype <dtype>', 'F32 or BF16', 'F32')
    .addOption(overwriteOption())
    .addHelpText('after', example('tfalign export --project runs --run quickstart --round 3 --out models/aligned'))
    .action(async (o) => {
      const { EXPORT_KINDS, exportRound } = await import('../rounds/export.js');
      if (!(EXPORT_KINDS as readonly string[]).includes(o.what)) throw new Error(`--what: expected policy or reward-model, got "${o.what}"`);
      if (o.dtype !== 'F32' && o.dtype !== 'BF16') throw new Error(`--dtype: expected F32 or BF16, got "${o.dtype}"`);
      const store = openStoreReadOnly(o.project);
      try {
        const source = await exportRound(store, { run: o.run, round: o.round, what: o.what, out: o.out, dtype: o.dtype, overwrite: Boolean(o.overwrite) });
        console.log(`export: ${source} -> ${o.out}`);
      } finally {
        store.close();
      }
    });

  program
    .command('quickstart')
    .description('build a small model from scratch and align it over 3 rounds on a checkable task (configs/quickstart.yaml)')
    .option('--project <dir>', 'where the run is written', 'runs')
    .option('--set <key=value>', 'override a config field (repeatable)', collect, [])
    .addHelpText('after', example('tfalign quickstart', 'tfalign quickstart --set rounds=4'))
    .action(async (o) => {
      const started = performance.now();
      const run = await runWithConfig(QUICKSTART_CONFIG, [`project=${o.project}`, ...o.set], false, {});
      console.log(`\nquickstart: ${((performance.now() - started) / 1000).toFixed(0)} s; run folder ${new RunLayout(run.config.project, run.config.name).runDir}\n`);
      printStatus(run.config.project, run.config.name);
    });
}
