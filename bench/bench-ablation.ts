/**
 * Ablations of the quickstart: does each stage of the recipe earn its place? The quickstart
 * (configs/quickstart.yaml, 3 rounds) runs in four variants, each with several seeds:
 *
 *   full            the recipe as shipped
 *   random-select   rejection sampling keeps a uniformly random sample instead of the RM's best
 *   no-dpo          DPO skipped: the SFT model is each round's policy
 *   no-sft          SFT on the selected samples skipped: DPO starts from the previous policy
 *
 * The measure is the held-out judge score of the policy carried forward after the last round
 * (the judge is independent of the RM that selected samples), with its gain over the base model;
 * per variant, mean ± sd over seeds. One JSON object per line on stdout: one per run, then one
 * summary per variant.
 *
 *   node bin/run-ts.js bench/bench-ablation.ts [--seeds 0,1,2] [--variants full,random-select,no-dpo,no-sft] [--out DIR] [--set key=value …]
 *
 * Variants of one seed share that seed's base model (built once by the first variant, then given
 * as `base.model`), so they differ only in the stage under test. Each run is a child process
 * (`tfalign run`), run one after another so each has the machine's cores.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readRunConfig } from '../src/rounds/runner.js';
import { RunStore } from '../src/store/store.js';
import { RunLayout } from '../src/rounds/layout.js';
import { mean, standardDeviation } from '../src/eval/statistics.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const VARIANTS: Record<string, string[]> = {
  full: [],
  'random-select': ['sampling.selection=random'],
  'no-dpo': ['dpo.enabled=false'],
  'no-sft': ['sft.enabled=false'],
};

function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const seeds = (argValue('--seeds') ?? '0,1,2').split(',').map(Number);
const variants = (argValue('--variants') ?? Object.keys(VARIANTS).join(',')).split(',');
for (const v of variants) if (!(v in VARIANTS)) throw new Error(`--variants: unknown variant "${v}" (${Object.keys(VARIANTS).join(', ')})`);
const extraSets = process.argv.flatMap((a, i) => (process.argv[i - 1] === '--set' ? [a] : []));
const outRoot = path.resolve(argValue('--out') ?? fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-ablation-')));
fs.mkdirSync(outRoot, { recursive: true });

interface RunResult {
  variant: string;
  seed: number;
  finalJudgeScore: number;
  baseJudgeScore: number;
  gainOverBase: number;
  lastCandidateScore: number;
  winRateVsBase: number;
  seconds: number;
}

/** The judge score of the policy carried forward after the last round, from the run's database. */
function readResult(project: string, name: string): Omit<RunResult, 'variant' | 'seed' | 'seconds'> {
  const store = RunStore.open(new RunLayout(project, name).database, { readonly: true });
  try {
    const rounds = store.roundSummaries(name).filter((s) => s.roundIndex > 0);
    const last = rounds[rounds.length - 1]!.metrics;
    const base = rounds[0]!.metrics['eval/base_judge_score']!;
    // the carried-forward policy's score: this round's candidate if it was kept, else the previous best
    const carried = [...rounds].reverse().find((r) => r.metrics['eval/selected'] === 1)?.metrics;
    const finalJudgeScore = carried?.['eval/judge_score'] ?? base;
    return {
      finalJudgeScore,
      baseJudgeScore: base,
      gainOverBase: finalJudgeScore - base,
      lastCandidateScore: last['eval/judge_score']!,
      winRateVsBase: carried?.['eval/win_rate_vs_base'] ?? 0.5,
    };
  } finally {
    store.close();
  }
}

const results: RunResult[] = [];
for (const seed of seeds) {
  let baseModel: string | undefined;
  for (const variant of variants) {
    const name = `${variant}-s${seed}`;
    const project = path.join(outRoot, 'runs');
    const config = readRunConfig(path.join(root, 'configs/quickstart.yaml'), [...extraSets, ...VARIANTS[variant]!, `seed=${seed}`, `name=${name}`, `project=${project}`]);
    if (baseModel !== undefined) {
      delete config.base.fromScratch;
      config.base.model = baseModel;
    }
    const file = path.join(outRoot, `${name}.json`);
    fs.writeFileSync(file, JSON.stringify(config, null, 2));
    const started = performance.now();
    const child = spawnSync(process.execPath, [path.join(root, 'bin/tfalign.js'), 'run', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    if (child.status !== 0) throw new Error(`${name}: tfalign run exited ${child.status}: ${child.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    fs.writeFileSync(path.join(outRoot, `${name}.log`), child.stderr);
    baseModel ??= path.join(new RunLayout(project, name).baseDir, 'pretrain');
    const result: RunResult = { variant, seed, ...readResult(project, name), seconds: (performance.now() - started) / 1000 };
    results.push(result);
    console.log(JSON.stringify({ bench: 'ablation', ...result }));
  }
}
for (const variant of variants) {
  const rows = results.filter((r) => r.variant === variant);
  const finals = rows.map((r) => r.finalJudgeScore);
  const gains = rows.map((r) => r.gainOverBase);
  console.log(
    JSON.stringify({
      bench: 'ablation-summary',
      variant,
      num_seeds: rows.length,
      final_judge_score_mean: mean(finals),
      final_judge_score_sd: standardDeviation(finals),
      gain_over_base_mean: mean(gains),
      gain_over_base_sd: standardDeviation(gains),
      win_rate_vs_base_mean: mean(rows.map((r) => r.winRateVsBase)),
      out: outRoot,
    }),
  );
}
