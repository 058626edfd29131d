/**
 * `tfalign report`: one self-contained HTML page about a run, read from its database and
 * readable offline — inline CSS and inline SVG, no script, no external resource, no URL.
 *
 * What the page shows, top to bottom:
 *   1. the run: name, status (and the process writing it, if any), config summary and full config;
 *   2. the per-round table of `tfalign status`: RM held-out accuracy, best-of-K reward gain, judge
 *      score, win rates, the policy chosen for the next round;
 *   3. metrics per round as line charts (`eval/judge_score`, `eval/win_rate_vs_*`, `rm/accuracy`,
 *      `sample/judge_gain`, `sample/best_of_k_gain`), the table with 95% intervals where recorded;
 *   4. the stages of every round: status, attempts, duration, error;
 *   5. training curves per stage: every metric logged with a step (`sft/train/loss`, …), one line
 *      per round;
 *   6. reward distributions of each round's samples, with the selected (best-of-K) ones drawn over
 *      them, on bins shared by all rounds so that they compare;
 *   7. every end-of-stage value per round.
 *
 * Every number comes from the store (`roundSummaries`, `metrics`, `samples`) — the same figures as
 * `tfalign status` — and every chart mark carries its number in `data-value` (see charts.ts).
 * All text from the database (names, paths, errors, the config) is escaped.
 */
import { writeFileAtomic } from '../util/atomic.js';
import * as path from 'node:path';
import { readRunLock, type LockHolder } from '../store/lock.js';
import type { RoundSummary, RunRecord, StageRecord } from '../store/records.js';
import { ROUND_STAGES, roundStages, stageRank, type StageName } from '../store/stages.js';
import type { RunStore } from '../store/store.js';
import { escapeHtml, formatValue, histogram, histogramEdges, lineChart, type ChartPoint, type ChartSeries } from './charts.js';

export { escapeHtml };

export interface ReportOptions {
  /** The project folder: shows who holds the run's lock and writes paths relative to it. */
  project?: string;
  /** Time printed in the footer; default now. */
  generatedAt?: Date;
  /** Most bins of a reward histogram; default 12. */
  maxRewardBins?: number;
}

/** A training curve: one metric of one stage, one series of (step, value) per round. */
export interface StageCurve {
  stage: StageName;
  /** The metric name without its stage prefix, e.g. `train/loss` for `sft/train/loss`. */
  name: string;
  /** The name as recorded, e.g. `sft/train/loss`. */
  metric: string;
  rounds: { round: number; points: ChartPoint[] }[];
}

/** The rewards of the samples one stage of one round drew. */
export interface RoundRewards {
  round: number;
  stage: StageName;
  rewards: number[];
  /** Rewards of the samples rejection sampling selected (a subset of `rewards`). */
  selectedRewards: number[];
  /** Samples without a reward (not scored). */
  numUnscored: number;
}

/** Everything the page shows, read from the store in one go. */
export interface RunReport {
  run: RunRecord;
  database: string;
  summaries: RoundSummary[];
  curves: StageCurve[];
  rewards: RoundRewards[];
  /** The process holding the run's write lock, when there is one. */
  lock: { holder: LockHolder; alive: boolean } | null;
}

/**
 * Step metrics that are bookkeeping, not curves: `total_steps` is logged with every training
 * record (for progress bars) and is constant.
 */
const NOT_CURVES = new Set(['total_steps']);

/** Reads what the report shows; a run that does not exist is a one-line error naming the database. */
export function collectRunReport(store: RunStore, runName: string, options: ReportOptions = {}): RunReport {
  const run = store.getRun(runName);
  if (run === null) {
    const names = store.listRuns().map((r) => r.name);
    throw new Error(`report: run "${runName}" not found in ${store.file} (${names.length === 0 ? 'it holds no runs' : `runs: ${names.join(', ')}`})`);
  }
  const summaries = store.roundSummaries(runName);
  const stageNames = [...new Set(store.stages(runName).map((s) => s.name))].sort((a, b) => stageRank(a) - stageRank(b));

  const curves: StageCurve[] = [];
  for (const stage of stageNames) {
    const byMetric = new Map<string, Map<number, ChartPoint[]>>();
    for (const m of store.metrics(runName, { stage })) {
      if (m.step === null) continue;
      const name = m.name.startsWith(`${stage}/`) ? m.name.slice(stage.length + 1) : m.name;
      if (NOT_CURVES.has(name.split('/').at(-1)!)) continue;
      const perRound = byMetric.get(m.name) ?? new Map<number, ChartPoint[]>();
      byMetric.set(m.name, perRound);
      const points = perRound.get(m.roundIndex) ?? [];
      perRound.set(m.roundIndex, points);
      points.push({ x: m.step, y: m.value });
    }
    const stageCurves = [...byMetric].map(([metric, perRound]): StageCurve => ({
      stage,
      metric,
      name: metric.startsWith(`${stage}/`) ? metric.slice(stage.length + 1) : metric,
      rounds: [...perRound].sort(([a], [b]) => a - b).map(([round, points]) => ({ round, points: points.sort((p, q) => p.x - q.x) })),
    }));
    curves.push(...stageCurves.sort((a, b) => curveOrder(a.name) - curveOrder(b.name) || a.name.localeCompare(b.name)));
  }

  const rewards: RoundRewards[] = [];
  for (const summary of summaries) {
    const byStage = new Map<StageName, RoundRewards>();
    for (const sample of store.samples(runName, summary.roundIndex)) {
      let entry = byStage.get(sample.stage);
      if (entry === undefined) {
        entry = { round: summary.roundIndex, stage: sample.stage, rewards: [], selectedRewards: [], numUnscored: 0 };
        byStage.set(sample.stage, entry);
      }
      if (sample.reward === null || !Number.isFinite(sample.reward)) {
        entry.numUnscored += 1;
        continue;
      }
      entry.rewards.push(sample.reward);
      if (sample.selected) entry.selectedRewards.push(sample.reward);
    }
    rewards.push(...[...byStage.values()].sort((a, b) => stageRank(a.stage) - stageRank(b.stage)));
  }

  const lock = options.project === undefined ? null : readRunLock(options.project, runName);
  return { run, database: store.file, summaries, curves, rewards, lock: lock === null ? null : { holder: lock.holder, alive: lock.alive } };
}

/** Loss first, then the other training metrics, then held-out ones. */
function curveOrder(name: string): number {
  if (name === 'train/loss') return 0;
  if (name.startsWith('train/')) return 1;
  if (name === 'eval/loss') return 2;
  return 3;
}

// ---- the page ----------------------------------------------------------------------------------

/** The per-round metrics drawn as line charts: id, title, series (metric names), y range kept. */
interface RoundChart {
  id: string;
  title: string;
  metrics: (names: readonly string[]) => string[];
  yInclude?: readonly [number, number];
}
const ROUND_CHARTS: readonly RoundChart[] = [
  {
    id: 'eval/judge_score',
    title: 'Judge score on held-out prompts (this round\'s policy and the base model; sampled, and greedy: what each knows)',
    metrics: () => ['eval/judge_score', 'eval/base_judge_score', 'eval/judge_score_greedy', 'eval/base_judge_score_greedy'],
  },
  { id: 'eval/win_rate_vs', title: 'Win rates of the round\'s policy on held-out prompts', metrics: winRateMetrics, yInclude: [0, 1] },
  { id: 'rm/accuracy', title: 'Reward model held-out accuracy', metrics: () => ['rm/accuracy'], yInclude: [0, 1] },
  { id: 'sample/judge_gain', title: 'What best-of-K selection bought, as the judge measures it (selected sample minus mean sample)', metrics: () => ['sample/judge_gain'] },
  { id: 'sample/best_of_k_gain', title: 'Best-of-K reward gain in the reward model\'s own units (best sample minus mean sample)', metrics: () => ['sample/best_of_k_gain'] },
];

/** Renders the page. Pure: the same report gives the same HTML. */
export function renderRunReport(report: RunReport, options: ReportOptions = {}): string {
  const { run } = report;
  const generatedAt = (options.generatedAt ?? new Date()).toISOString();
  const body = [
    headerSection(report, options),
    configSection(run.config),
    roundsSection(report, options),
    roundChartsSection(report),
    stagesSection(report),
    curvesSection(report),
    rewardsSection(report, options),
    allMetricsSection(report),
  ].join('\n');
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${escapeHtml(`tfalign report: ${run.name}`)}</title>`,
    `<style>${STYLE}</style>`,
    '</head>',
    '<body>',
    body,
    `<footer>Written by tfalign report at ${escapeHtml(generatedAt)} from ${escapeHtml(report.database)}. Self-contained: no scripts, no external resources.</footer>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

function headerSection(report: RunReport, options: ReportOptions): string {
  const { run, summaries } = report;
  const rounds = summaries.filter((s) => s.roundIndex > 0);
  const numRounds = configValue(run.config, 'rounds');
  const numDone = rounds.filter((s) => s.status === 'done').length;
  const rows: [string, string][] = [
    ['status', run.status],
    ['rounds done', typeof numRounds === 'number' ? `${numDone} of ${numRounds}` : String(numDone)],
    ['created', run.createdAt],
    ['updated', run.updatedAt],
    ['config hash', run.configHash],
    ['database', report.database],
  ];
  if (options.project !== undefined) rows.push(['run folder', path.join(options.project, run.name)]);
  if (report.lock !== null) {
    const h = report.lock.holder;
    rows.push(['writer', `${report.lock.alive ? 'pid' : 'stale lock of pid'} ${h.pid} on ${h.hostname} since ${h.startedAt}: ${h.command}`]);
  }
  return (
    `<header><h1>${escapeHtml(run.name)}</h1><p class="subtitle">tfalign run report</p>` +
    `<table class="meta">${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</table></header>`
  );
}

/** The value at a dotted path of an unknown JSON value, or undefined. */
function configValue(config: unknown, dotted: string): unknown {
  let node: unknown = config;
  for (const key of dotted.split('.')) {
    if (node === null || typeof node !== 'object' || Array.isArray(node)) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

function describeConfigValue(value: unknown): string {
  if (Array.isArray(value)) return value.map(describeConfigValue).join(', ');
  if (value !== null && typeof value === 'object') {
    const synthetic = (value as Record<string, unknown>).synthetic;
    if (typeof synthetic === 'number' && Object.keys(value).length === 1) return `${synthetic} synthetic prompts`;
    return JSON.stringify(value);
  }
  return String(value);
}

/** The config fields a reader looks for first, by section; absent ones are left out. */
const CONFIG_SUMMARY: readonly [section: string, fields: readonly [label: string, dotted: string][]][] = [
  ['run', [['rounds', 'rounds'], ['seed', 'seed'], ['backend', 'backend'], ['project', 'project']]],
  ['base model', [['model', 'base.model'], ['from scratch', 'base.fromScratch.architecture'], ['pretraining steps', 'base.fromScratch.pretrain.maxSteps']]],
  ['prompts', [['train', 'prompts.train'], ['held-out', 'prompts.heldout']]],
  ['preferences', [['source', 'preferences.source'], ['judge', 'preferences.judge'], ['prompts per round', 'preferences.promptsPerRound']]],
  ['reward model', [['lr', 'rewardModel.lr'], ['steps', 'rewardModel.maxSteps'], ['margin', 'rewardModel.margin'], ['strengths', 'rewardModel.strengths']]],
  ['rejection sampling', [['K', 'sampling.k'], ['prompts per round', 'sampling.promptsPerRound'], ['temperature', 'sampling.temperature'], ['max new tokens', 'sampling.maxNewTokens']]],
  ['SFT', [['lr', 'sft.lr'], ['steps', 'sft.maxSteps'], ['from', 'sft.from'], ['data', 'sft.data']]],
  ['DPO', [['lr', 'dpo.lr'], ['steps', 'dpo.maxSteps'], ['β', 'dpo.beta'], ['NLL coefficient', 'dpo.nllCoefficient'], ['loss', 'dpo.lossType'], ['data', 'dpo.data'], ['strengths', 'dpo.strengths']]],
];

function configSection(config: unknown): string {
  const groups = CONFIG_SUMMARY.map(([section, fields]) => {
    const items = fields
      .map(([label, dotted]) => [label, configValue(config, dotted)] as const)
      .filter(([, value]) => value !== undefined)
      .map(([label, value]) => `<dt>${escapeHtml(label)}</dt><dd>${escapeHtml(describeConfigValue(value))}</dd>`);
    return items.length === 0 ? '' : `<div class="config-group"><h3>${escapeHtml(section)}</h3><dl>${items.join('')}</dl></div>`;
  }).join('');
  return (
    '<section id="config"><h2>Config</h2>' +
    `<div class="config-summary">${groups}</div>` +
    `<details><summary>Full resolved config</summary><pre>${escapeHtml(JSON.stringify(config, null, 2) ?? 'null')}</pre></details></section>`
  );
}

/** A table cell for a metric value: 3 decimals shown, the exact value in `data-value`. */
/** A metric's cell; with `metrics` holding `<metric>_ci_low/high`, its 95% interval follows the value (and rides in data-ci-low/high). */
function metricCell(metric: string, value: number | undefined, metrics: Record<string, number> = {}): string {
  if (value === undefined || Number.isNaN(value)) return `<td class="num missing" data-metric="${escapeHtml(metric)}">—</td>`;
  const low = metrics[`${metric}_ci_low`];
  const high = metrics[`${metric}_ci_high`];
  const interval = low !== undefined && high !== undefined ? ` <span class="ci">[${escapeHtml(formatValue(low))}, ${escapeHtml(formatValue(high))}]</span>` : '';
  const ciData = interval ? ` data-ci-low="${String(low)}" data-ci-high="${String(high)}"` : '';
  return `<td class="num" data-metric="${escapeHtml(metric)}" data-value="${String(value)}"${ciData}>${escapeHtml(formatValue(value))}${interval}</td>`;
}

/** The path relative to the project folder when it lies inside it (shorter, and the same on every machine). */
function shortPath(file: string, project: string | undefined): string {
  if (project === undefined) return file;
  const relative = path.relative(path.resolve(project), path.resolve(file));
  return relative.startsWith('..') || path.isAbsolute(relative) ? file : relative;
}

/** The `eval/win_rate_vs_*` metrics among `names`: vs previous, then vs base, then any others alphabetically. */
function winRateMetrics(names: readonly string[]): string[] {
  const winRates = new Set(names.filter((n) => n.startsWith('eval/win_rate_vs_')));
  const rank = (n: string) => (n === 'eval/win_rate_vs_previous' ? 0 : n === 'eval/win_rate_vs_base' ? 1 : 2);
  return [...winRates].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

function roundStatus(summary: RoundSummary): string {
  if (summary.status === 'done') return 'done';
  const expected = roundStages({ curate: summary.stages.some((s) => s.name === 'curate') }).length;
  const numDone = summary.stages.filter((s) => s.status === 'done').length;
  const failed = summary.stages.find((s) => s.status === 'failed');
  const running = summary.stages.find((s) => s.status === 'running');
  return `${numDone}/${expected} stages${failed ? `, ${failed.name} failed` : running ? `, ${running.name} running` : ''}`;
}

function roundsSection(report: RunReport, options: ReportOptions): string {
  const rounds = report.summaries.filter((s) => s.roundIndex > 0);
  if (rounds.length === 0) return '<section id="rounds"><h2>Rounds</h2><p class="no-data">No round has started yet.</p></section>';
  const winRates = winRateMetrics(rounds.flatMap((s) => Object.keys(s.metrics)));
  const columns: [label: string, metric: string][] = [
    ['RM held-out accuracy [95% CI]', 'rm/accuracy'],
    ['judge gain of best-of-K [95% CI]', 'sample/judge_gain'],
    ['RM gain of best-of-K (RM units)', 'sample/best_of_k_gain'],
    ['RM–judge Spearman', 'rm/spearman_judge'],
    ['judge score [95% CI]', 'eval/judge_score'],
    ['greedy judge score [95% CI]', 'eval/judge_score_greedy'],
    ...winRates.map((m): [string, string] => [`win rate vs ${m.slice('eval/win_rate_vs_'.length)}`, m]),
  ];
  const header = `<tr><th>round</th><th>status</th>${columns.map(([label]) => `<th>${escapeHtml(label)}</th>`).join('')}<th>chosen policy</th></tr>`;
  const rows = rounds.map((s) => {
    const selected = s.metrics['eval/selected'];
    const choice = selected === undefined || Number.isNaN(selected) ? '—' : selected ? 'this round\'s policy (new best)' : 'kept the previous best';
    const policy = s.bestPolicyPath === null ? '' : `<br><code>${escapeHtml(shortPath(s.bestPolicyPath, options.project))}</code>`;
    return (
      `<tr data-round="${s.roundIndex}"><th>${s.roundIndex}</th><td>${escapeHtml(roundStatus(s))}</td>` +
      columns.map(([, metric]) => metricCell(metric, s.metrics[metric], s.metrics)).join('') +
      `<td class="policy">${escapeHtml(choice)}${policy}</td></tr>`
    );
  });
  const base = rounds[0]?.metrics['eval/base_judge_score'];
  const baseRow =
    base === undefined
      ? ''
      : `<tr data-round="base"><th>base</th><td>—</td>${columns.map(([, metric]) => baseCell(metric, rounds[0]!.metrics)).join('')}<td class="policy">the starting model</td></tr>`;
  return `<section id="rounds"><h2>Rounds</h2><table class="rounds">${header}${baseRow}${rows.join('')}</table></section>`;
}

/** The base row's cell under `metric`'s column: the base model's judge scores (sampled, greedy), nothing else. */
function baseCell(metric: string, metrics: Record<string, number>): string {
  if (metric !== 'eval/judge_score' && metric !== 'eval/judge_score_greedy') return '<td class="num missing">—</td>';
  const base = metric.replace('eval/', 'eval/base_');
  return metricCell(base, metrics[base], metrics);
}

function roundChartsSection(report: RunReport): string {
  const rounds = report.summaries.filter((s) => s.roundIndex > 0);
  const names = [...new Set(rounds.flatMap((s) => Object.keys(s.metrics)))].sort();
  const charts = ROUND_CHARTS.map((chart) => {
    const series: ChartSeries[] = chart
      .metrics(names)
      .map((metric) => ({
        name: metric,
        points: rounds.filter((s) => s.metrics[metric] !== undefined).map((s) => ({ x: s.roundIndex, y: s.metrics[metric]! })),
      }))
      .filter((s) => s.points.length > 0);
    return lineChart(series, { id: chart.id, title: chart.title, xTitle: 'round', integerX: true, yInclude: chart.yInclude, emptyMessage: 'not recorded yet' });
  });
  return `<section id="round-metrics"><h2>Metrics per round</h2><div class="charts">${charts.join('')}</div></section>`;
}

function stageCell(stage: StageRecord | undefined): string {
  if (stage === undefined) return '<td class="stage pending">—</td>';
  const seconds =
    stage.startedAt !== null && stage.endedAt !== null ? (Date.parse(stage.endedAt) - Date.parse(stage.startedAt)) / 1000 : undefined;
  const parts: string[] = [stage.status];
  if (seconds !== undefined && Number.isFinite(seconds)) parts.push(`${seconds.toFixed(1)} s`);
  if (stage.attempts > 1) parts.push(`${stage.attempts} attempts`);
  const title = stage.error === null ? '' : ` title="${escapeHtml(stage.error)}"`;
  return `<td class="stage ${escapeHtml(stage.status)}"${title}>${escapeHtml(parts.join(' · '))}</td>`;
}

function stagesSection(report: RunReport): string {
  const { summaries } = report;
  if (summaries.length === 0) return '';
  // The six round stages always (a missing one shows as not started), plus curate and build_base when present.
  const names = [...new Set<StageName>([...ROUND_STAGES, ...summaries.flatMap((s) => s.stages.map((x) => x.name))])].sort((a, b) => stageRank(a) - stageRank(b));
  const header = `<tr><th>round</th>${names.map((n) => `<th>${escapeHtml(n)}</th>`).join('')}</tr>`;
  const rows = summaries.map(
    (s) => `<tr><th>${s.roundIndex === 0 ? 'base' : s.roundIndex}</th>${names.map((n) => stageCell(s.stages.find((x) => x.name === n))).join('')}</tr>`,
  );
  const errors = summaries.flatMap((s) =>
    s.stages.filter((x) => x.error !== null).map((x) => `<li>${escapeHtml(`${s.roundIndex === 0 ? 'base' : `round ${s.roundIndex}`} · ${x.name} (${x.status}): ${x.error}`)}</li>`),
  );
  return (
    `<section id="stages"><h2>Stages</h2><table class="stages">${header}${rows.join('')}</table>` +
    (errors.length === 0 ? '' : `<h3>Errors</h3><ul class="errors">${errors.join('')}</ul>`) +
    '</section>'
  );
}

function curvesSection(report: RunReport): string {
  if (report.curves.length === 0) return '<section id="training"><h2>Training curves</h2><p class="no-data">No training metrics recorded yet.</p></section>';
  const stages = [...new Set(report.curves.map((c) => c.stage))];
  const blocks = stages.map((stage) => {
    const charts = report.curves
      .filter((c) => c.stage === stage)
      .map((c) =>
        lineChart(
          c.rounds.map((r) => ({ name: r.round === 0 ? 'base' : `round ${r.round}`, points: r.points })),
          { id: c.metric, title: c.name, xTitle: 'step' },
        ),
      );
    return `<h3>${escapeHtml(stage)}</h3><div class="charts">${charts.join('')}</div>`;
  });
  return `<section id="training"><h2>Training curves</h2>${blocks.join('')}</section>`;
}

function rewardsSection(report: RunReport, options: ReportOptions): string {
  const scored = report.rewards.filter((r) => r.rewards.length > 0);
  if (scored.length === 0) return '<section id="rewards"><h2>Reward distributions</h2><p class="no-data">No scored samples recorded yet.</p></section>';
  const all = scored.flatMap((r) => r.rewards);
  // Shared bins and y scale: the rounds' histograms compare at a glance.
  const edges = histogramEdges(Math.min(...all), Math.max(...all), options.maxRewardBins ?? 12);
  const charts = scored.map((r) => {
    const mean = r.rewards.reduce((a, b) => a + b, 0) / r.rewards.length;
    const where = r.round === 0 ? 'base' : `round ${r.round}`;
    const unscored = r.numUnscored > 0 ? `, ${r.numUnscored} unscored` : '';
    return histogram(
      [
        { name: 'all samples', values: r.rewards },
        { name: 'selected (best of K)', values: r.selectedRewards },
      ],
      { id: `rewards/round-${r.round}/${r.stage}`, title: `${where} · ${r.stage}: ${r.rewards.length} samples, mean reward ${formatValue(mean)}${unscored}`, xTitle: 'reward', edges },
    );
  });
  return `<section id="rewards"><h2>Reward distributions of samples</h2><div class="charts">${charts.join('')}</div></section>`;
}

function allMetricsSection(report: RunReport): string {
  const curveMetrics = new Set(report.curves.map((c) => c.metric));
  const { summaries } = report;
  const names = [...new Set(summaries.flatMap((s) => Object.keys(s.metrics)))].filter((n) => !curveMetrics.has(n)).sort();
  if (names.length === 0) return '';
  const header = `<tr><th>metric</th>${summaries.map((s) => `<th>${s.roundIndex === 0 ? 'base' : `round ${s.roundIndex}`}</th>`).join('')}</tr>`;
  const rows = names.map((n) => `<tr><th><code>${escapeHtml(n)}</code></th>${summaries.map((s) => metricCell(n, s.metrics[n])).join('')}</tr>`);
  return `<section id="all-metrics"><h2>All end-of-stage values</h2><table class="metrics">${header}${rows.join('')}</table></section>`;
}

export const STYLE = `
:root { color-scheme: light; --ink: #1d2329; --muted: #5b6670; --line: #d8dde2; --bg: #ffffff; --band: #f4f6f8; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1320px; padding: 24px 28px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg); }
h1 { margin: 0; font-size: 26px; } h2 { margin: 32px 0 12px; font-size: 19px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { margin: 18px 0 8px; font-size: 15px; } .subtitle { margin: 0 0 12px; color: var(--muted); }
table { border-collapse: collapse; } th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
table.meta th { color: var(--muted); font-weight: 500; } td.num { text-align: right; font-variant-numeric: tabular-nums; } td.num .ci { color: var(--muted); font-size: 0.85em; }
td.missing { color: var(--muted); text-align: center; } tr:nth-child(even) td { background: var(--band); }
td.stage.done { color: #1b6e3a; } td.stage.failed { color: #b42318; font-weight: 600; } td.stage.running { color: #9a6700; } td.stage.pending { color: var(--muted); }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; } pre { background: var(--band); padding: 12px; overflow: auto; max-height: 480px; }
.config-summary { display: flex; flex-wrap: wrap; gap: 8px 32px; } .config-group dl { display: grid; grid-template-columns: auto auto; gap: 2px 12px; margin: 0; }
.config-group dt { color: var(--muted); } .config-group dd { margin: 0; word-break: break-all; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; } figure.chart { margin: 0; padding: 8px 10px; border: 1px solid var(--line); border-radius: 6px; width: 424px; }
figure.chart figcaption { font-weight: 600; margin-bottom: 4px; } svg.plot { display: block; max-width: 100%; height: auto; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; color: var(--muted); margin-top: 4px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; }
.no-data { color: var(--muted); font-style: italic; } ul.errors { color: #b42318; } td.policy code { color: var(--muted); }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
`;

/** Reads the run from the store, renders the page and writes it atomically; returns its size. */
export function writeRunReport(store: RunStore, runName: string, outFile: string, options: ReportOptions = {}): { file: string; bytes: number; report: RunReport } {
  const report = collectRunReport(store, runName, options);
  const html = renderRunReport(report, options);
  writeFileAtomic(outFile, html);
  return { file: outFile, bytes: Buffer.byteLength(html, 'utf8'), report };
}
