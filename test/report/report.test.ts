import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { registerReportCommands } from '../../src/cli/report.js';
import { binValues, escapeHtml, histogramEdges, niceAxis, niceStep } from '../../src/report/charts.js';
import { collectRunReport, renderRunReport } from '../../src/report/html.js';
import { writeFileAtomic } from '../../src/util/atomic.js';
import type { SampleInput, StageMetricInput } from '../../src/store/records.js';
import type { StageName } from '../../src/store/stages.js';
import { RunStore, defaultStorePath } from '../../src/store/store.js';

// ---- reading the page back -------------------------------------------------------------------

const ENTITIES: Record<string, string> = { '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#39;': "'", '&amp;': '&' };
const decode = (s: string) => s.replace(/&(lt|gt|quot|#39|amp);/g, (e) => ENTITIES[e]!);

/** Attributes of every `<tag …>` in `html`, values decoded. */
function tags(html: string, tag: string): Record<string, string>[] {
  return [...html.matchAll(new RegExp(`<${tag}\\b([^>]*)>`, 'g'))].map((m) =>
    Object.fromEntries([...m[1]!.matchAll(/([\w-]+)="([^"]*)"/g)].map((a) => [a[1]!, decode(a[2]!)])),
  );
}

/** The markup of the figure whose `data-chart` is `id` (ids are written escaped). */
function figure(html: string, id: string): string {
  const start = html.indexOf(`data-chart="${escapeHtml(id)}"`);
  expect(start, `chart ${id}`).toBeGreaterThan(0);
  const open = html.lastIndexOf('<figure', start);
  return html.slice(open, html.indexOf('</figure>', start) + '</figure>'.length);
}

/** The points of a line chart as [series, x, value]. */
const points = (fig: string) => tags(fig, 'circle').map((c) => [c['data-series'], Number(c['data-x']), Number(c['data-value'])]);

/** The bar counts of one series of a histogram, by bin. */
const bars = (fig: string, series: string) =>
  tags(fig, 'rect')
    .filter((r) => r['data-series'] === series)
    .map((r) => Number(r['data-value']));

/** The `<tr>` of a table row `data-round`. */
function row(html: string, round: string): string {
  const start = html.indexOf(`<tr data-round="${round}">`);
  expect(start, `row ${round}`).toBeGreaterThan(0);
  return html.slice(start, html.indexOf('</tr>', start));
}

/** `[text, data-value]` of the cell of `metric` in a table row. */
function cell(rowHtml: string, metric: string): [string, string | undefined] {
  const m = new RegExp(`<td class="num[^"]*" data-metric="${escapeHtml(metric).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}"(?: data-value="([^"]*)")?(?: data-ci-low="[^"]*" data-ci-high="[^"]*")?>([^<]*)(?: <span class="ci">[^<]*</span>)?</td>`).exec(rowHtml);
  expect(m, `cell ${metric}`).not.toBeNull();
  return [m![2]!, m![1]];
}

// ---- a run with known numbers ----------------------------------------------------------------

let dir: string;
let store: RunStore;

const HOSTILE = '<script>alert("x")</script>&judge.ts';
const CONFIG = {
  name: 'q',
  rounds: 3,
  seed: 7,
  backend: 'wasm',
  base: { fromScratch: { architecture: 'configs/models/tiny.json' } },
  prompts: { train: { synthetic: 640 }, heldout: 'prompts/heldout.jsonl' },
  preferences: { source: 'judge', judge: HOSTILE },
  sampling: { k: 4, promptsPerRound: 2 },
  dpo: { beta: 0.1, nllCoefficient: 0.2 },
};
const WIN_VS_ODD = 'eval/win_rate_vs_<b>&"odd"';
const FAILURE = 'loss became NaN at step 3 <b>&</b> "stopped"';

/** Per round: end-of-stage metrics (the figures of `tfalign status`). */
const ROUND_METRICS = {
  1: { 'rm/accuracy': 0.625, 'sample/best_of_k_gain': 0.84375, 'eval/judge_score': 0.41666666666666669, 'eval/base_judge_score': 0.25, 'eval/judge_score_greedy': 0.5625, 'eval/judge_score_greedy_ci_low': 0.5, 'eval/judge_score_greedy_ci_high': 0.625, 'eval/base_judge_score_greedy': 0.375, 'eval/win_rate_vs_previous': 0.6, 'eval/win_rate_vs_base': 0.6, 'eval/selected': 1 },
  2: { 'rm/accuracy': 0.8125, 'sample/best_of_k_gain': 0.6875, 'eval/judge_score': 0.5, 'eval/base_judge_score': 0.25, 'eval/win_rate_vs_previous': 0.55, 'eval/win_rate_vs_base': 0.7, 'eval/selected': 0 },
} as const;

/** Rewards of rejection sampling: [prompt id, rewards of samples 0..K-1 (null = unscored)]. */
const REWARDS: Record<1 | 2, [string, (number | null)[]][]> = {
  1: [['p0', [-1, 0.25, 1.5, 0]], ['p1', [-0.5, 0.5, 2, 1]], ['p2', [null]]],
  2: [['p0', [0, 0.5]], ['p1', [1, 1.75]]],
};
const SFT_LOSS: Record<1 | 2, [number, number][]> = { 1: [[10, 2.5], [20, 1.75], [30, Number.NaN], [40, 1.125]], 2: [[10, 2.25], [20, 1.5]] };

function samplesOf(round: 1 | 2): SampleInput[] {
  return REWARDS[round].flatMap(([promptId, rewards]) => {
    const finite = rewards.filter((r): r is number => r !== null);
    const best = finite.length === 0 ? -1 : rewards.indexOf(Math.max(...finite));
    return rewards.map((reward, i) => ({
      roundIndex: round, stage: 'rejection_sample' as const, promptId, prompt: `prompt ${promptId}`, sampleIndex: i,
      text: `sample ${i} of ${promptId}`, reward, numTokens: 5, finishReason: 'stop', selected: i === best,
    }));
  });
}

function finish(round: number, stage: StageName, metrics: StageMetricInput[] = []): void {
  store.startStage('q', round, stage);
  store.completeStage('q', round, stage, [], metrics);
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-report-'));
  store = RunStore.open(defaultStorePath(dir));
  store.createRun('q', CONFIG, 'hash-q');
  finish(0, 'build_base', [{ name: 'pretrain/loss', value: 3.5 }]);
  for (const round of [1, 2] as const) {
    const m = ROUND_METRICS[round];
    finish(round, 'collect_preferences', [{ name: 'pref/num_pairs', value: 12 }]);
    finish(round, 'train_reward_model', [
      { step: 1, name: 'train_reward_model/train/loss', value: 0.75 - round / 10 },
      { step: 1, name: 'train_reward_model/train/total_steps', value: 2 },
      { step: 2, name: 'train_reward_model/train/loss', value: 0.5 - round / 10 },
      { step: 2, name: 'train_reward_model/train/total_steps', value: 2 },
      { name: 'rm/accuracy', value: m['rm/accuracy'] },
    ]);
    store.startStage('q', round, 'rejection_sample');
    store.addSamples('q', samplesOf(round));
    store.completeStage('q', round, 'rejection_sample', [], [{ name: 'sample/best_of_k_gain', value: m['sample/best_of_k_gain'] }]);
    finish(round, 'sft', SFT_LOSS[round].map(([step, value]) => ({ step, name: 'sft/train/loss', value })));
    finish(round, 'dpo');
    const evalMetrics = Object.entries(m)
      .filter(([name]) => name !== 'rm/accuracy' && name !== 'sample/best_of_k_gain')
      .map(([name, value]): StageMetricInput => ({ name, value }));
    if (round === 1) evalMetrics.push({ name: WIN_VS_ODD, value: 0.25 }, { name: 'eval/rm_score', value: Number.NaN });
    finish(round, 'evaluate', evalMetrics);
    store.completeRound('q', round, path.join(dir, 'q', `round-${round}`, 'dpo', 'run'));
  }
  finish(3, 'collect_preferences');
  store.startStage('q', 3, 'train_reward_model');
  store.failStage('q', 3, 'train_reward_model', FAILURE);
});
afterEach(() => {
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function render(): string {
  return renderRunReport(collectRunReport(store, 'q', { project: dir }), { project: dir, generatedAt: new Date('2026-01-02T03:04:05Z') });
}

describe('report page', () => {
  it('draws the per-round metrics with the recorded values', () => {
    const html = render();
    expect(points(figure(html, 'rm/accuracy'))).toEqual([['rm/accuracy', 1, 0.625], ['rm/accuracy', 2, 0.8125]]);
    expect(points(figure(html, 'sample/best_of_k_gain'))).toEqual([['sample/best_of_k_gain', 1, 0.84375], ['sample/best_of_k_gain', 2, 0.6875]]);
    expect(points(figure(html, 'eval/judge_score'))).toEqual([
      ['eval/judge_score', 1, 0.41666666666666669],
      ['eval/judge_score', 2, 0.5],
      ['eval/base_judge_score', 1, 0.25],
      ['eval/base_judge_score', 2, 0.25],
      ['eval/judge_score_greedy', 1, 0.5625], // recorded in round 1 only
      ['eval/base_judge_score_greedy', 1, 0.375],
    ]);
    // Every eval/win_rate_vs_* series, previous and base first; the odd name only has round 1.
    expect(points(figure(html, 'eval/win_rate_vs'))).toEqual([
      ['eval/win_rate_vs_previous', 1, 0.6],
      ['eval/win_rate_vs_previous', 2, 0.55],
      ['eval/win_rate_vs_base', 1, 0.6],
      ['eval/win_rate_vs_base', 2, 0.7],
      [WIN_VS_ODD, 1, 0.25],
    ]);
  });

  it('draws a training curve per stage metric, one series per round, with gaps for NaN and no bookkeeping metrics', () => {
    const html = render();
    expect(points(figure(html, 'sft/train/loss'))).toEqual([
      ['round 1', 10, 2.5],
      ['round 1', 20, 1.75],
      ['round 1', 40, 1.125], // step 30 was NaN: no point
      ['round 2', 10, 2.25],
      ['round 2', 20, 1.5],
    ]);
    // The line of round 1 breaks at the NaN: two segments (two M commands).
    const lines = tags(figure(html, 'sft/train/loss'), 'path');
    expect(lines.map((p) => p.d!.match(/M/g)!.length)).toEqual([2, 1]);
    expect(points(figure(html, 'train_reward_model/train/loss'))).toEqual([
      ['round 1', 1, 0.75 - 0.1],
      ['round 1', 2, 0.5 - 0.1],
      ['round 2', 1, 0.75 - 0.2],
      ['round 2', 2, 0.5 - 0.2],
    ]);
    expect(html).not.toContain('data-chart="train_reward_model/train/total_steps"');
  });

  it('draws reward histograms per round on shared bins, with the selected samples and summary attributes', () => {
    const html = render();
    // All rewards of the run lie in [-1, 2]: 12 bins would be 0.25 wide, the nice step at or above is 0.5:
    // edges -1, -0.5, 0, 0.5, 1, 1.5, 2 (the last bin includes 2).
    const round1 = figure(html, 'rewards/round-1/rejection_sample');
    expect(tags(round1, 'rect').filter((r) => r['data-series'] === 'all samples').map((r) => [Number(r['data-lo']), Number(r['data-hi'])])).toEqual([
      [-1, -0.5], [-0.5, 0], [0, 0.5], [0.5, 1], [1, 1.5], [1.5, 2],
    ]);
    // Round 1 rewards -1 | -0.5 | 0, 0.25 | 0.5 | 1 | 1.5, 2; the best of each prompt is 1.5 and 2.
    expect(bars(round1, 'all samples')).toEqual([1, 1, 2, 1, 1, 2]);
    expect(bars(round1, 'selected (best of K)')).toEqual([0, 0, 0, 0, 0, 2]);
    // (−1 − 0.5 + 0 + 0.25 + 0.5 + 1 + 1.5 + 2) / 8 = 3.75 / 8; the null reward is left out and counted.
    expect(tags(round1, 'figure')[0]).toMatchObject({ 'data-n': '8', 'data-mean': String(3.75 / 8), 'data-min': '-1', 'data-max': '2' });
    expect(round1).toContain('8 samples, mean reward 0.469, 1 unscored');
    const round2 = figure(html, 'rewards/round-2/rejection_sample');
    expect(bars(round2, 'all samples')).toEqual([0, 0, 1, 1, 1, 1]);
    // Round 2: 0, 0.5 (best of p0) | 1, 1.75 (best of p1).
    expect(bars(round2, 'selected (best of K)')).toEqual([0, 0, 0, 1, 0, 1]);
  });

  it('shows the per-round table with the numbers, the chosen policy and the base row', () => {
    const html = render();
    const r1 = row(html, '1');
    expect(cell(r1, 'rm/accuracy')).toEqual(['0.625', '0.625']);
    expect(cell(r1, 'sample/best_of_k_gain')).toEqual(['0.844', '0.84375']);
    expect(cell(r1, 'eval/judge_score')).toEqual(['0.417', String(0.41666666666666669)]);
    expect(cell(r1, 'eval/win_rate_vs_previous')).toEqual(['0.600', '0.6']);
    expect(cell(r1, WIN_VS_ODD)).toEqual(['0.250', '0.25']);
    expect(decode(r1)).toContain("this round's policy (new best)");
    expect(r1).toContain(`<code>${path.join('q', 'round-1', 'dpo', 'run')}</code>`);
    const r2 = row(html, '2');
    expect(cell(r2, 'eval/win_rate_vs_base')).toEqual(['0.700', '0.7']);
    expect(cell(r2, WIN_VS_ODD)).toEqual(['—', undefined]);
    expect(r2).toContain('kept the previous best');
    expect(row(html, '3')).toContain('1/6 stages, train_reward_model failed');
    expect(cell(row(html, 'base'), 'eval/base_judge_score')).toEqual(['0.250', '0.25']);
    // greedy scores beside the sampled ones, with the interval when one was recorded
    expect(cell(r1, 'eval/judge_score_greedy')).toEqual(['0.563', '0.5625']);
    expect(r1).toContain('data-ci-low="0.5" data-ci-high="0.625"');
    expect(cell(row(html, 'base'), 'eval/base_judge_score_greedy')).toEqual(['0.375', '0.375']);
    expect(cell(r2, 'eval/judge_score_greedy')).toEqual(['—', undefined]);
    // Headers in order: win rates vs previous, vs base, then others.
    const headers = [...html.matchAll(/<th>win rate vs ([^<]*)<\/th>/g)].map((m) => decode(m[1]!));
    expect(headers).toEqual(['previous', 'base', '<b>&"odd"']);
    // NaN is shown as a dash in the table of all values.
    expect(html).toMatch(/<td class="num missing" data-metric="eval\/rm_score">—<\/td>/);
  });

  it('is self-contained and escapes every text from the database', () => {
    const html = render();
    expect(html).not.toMatch(/http/i);
    expect(html).not.toMatch(/<script|<link|<img|\ssrc=|\shref=|@import|url\(/i);
    expect(html).not.toContain(HOSTILE);
    expect(html).toContain(escapeHtml(HOSTILE)); // in the config summary and the full config
    expect(html).not.toContain(FAILURE);
    expect(html).toContain(escapeHtml(`round 3 · train_reward_model (failed): ${FAILURE}`));
    expect(html).not.toContain('<b>');
    expect(html).toContain('<dt>K</dt><dd>4</dd>');
    expect(html).toContain('<dt>train</dt><dd>640 synthetic prompts</dd>');
    expect(html).toContain('2026-01-02T03:04:05.000Z');
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
  });

  it('says so when a run has no rounds yet', () => {
    store.createRun('empty', {}, 'h');
    const html = renderRunReport(collectRunReport(store, 'empty'));
    expect(html).toContain('No round has started yet.');
    expect(html).toContain('No training metrics recorded yet.');
    expect(html).toContain('No scored samples recorded yet.');
    expect(tags(html, 'circle')).toEqual([]);
  });
});

describe('chart helpers', () => {
  it('picks nice steps, axes and histogram bins', () => {
    expect([niceStep(0.25), niceStep(0.3), niceStep(1), niceStep(1.01), niceStep(7), niceStep(0.0012)]).toEqual([0.5, 0.5, 1, 2, 10, 0.002]);
    // [0.13, 0.91] in at most 5 intervals: raw 0.156 → 0.2; widened to whole steps 0 … 1.
    expect(niceAxis(0.13, 0.91)).toEqual({ min: 0, max: 1, step: 0.2, ticks: [0, 0.2, 0.4, 0.6, 0.8, 1] });
    // One value 2: widened by 10% to [1.8, 2.2]; raw step 0.08 → 0.1.
    expect(niceAxis(2, 2).ticks).toEqual([1.8, 1.9, 2, 2.1, 2.2]);
    expect(histogramEdges(-1, 2, 12)).toEqual([-1, -0.5, 0, 0.5, 1, 1.5, 2]);
    expect(histogramEdges(0.3, 0.3, 4)).toEqual([0.28, 0.29, 0.3, 0.31, 0.32]);
    // Half-open bins, the last one closed; outside values and NaN are not counted.
    expect(binValues([0, 0.49, 0.5, 1, 1.5, -0.1, 1.6, Number.NaN], [0, 0.5, 1, 1.5])).toEqual([2, 1, 2]);
    expect(escapeHtml(`a<b>&"c"'d'`)).toBe('a&lt;b&gt;&amp;&quot;c&quot;&#39;d&#39;');
  });
});

describe('writeFileAtomic', () => {
  it('replaces the file and leaves no temporary file, also when the write fails', () => {
    const target = path.join(dir, 'out', 'page.html');
    writeFileAtomic(target, 'first');
    writeFileAtomic(target, 'second');
    expect(fs.readFileSync(target, 'utf8')).toBe('second');
    expect(fs.readdirSync(path.dirname(target))).toEqual(['page.html']);
    const blocked = path.join(dir, 'out', 'a-folder');
    fs.mkdirSync(blocked);
    expect(() => writeFileAtomic(blocked, 'x')).toThrow();
    expect(fs.readdirSync(path.dirname(target)).sort()).toEqual(['a-folder', 'page.html']);
  });
});

describe('tfalign report', () => {
  async function run(...args: string[]): Promise<string[]> {
    const program = new Command('tfalign');
    program.exitOverride();
    registerReportCommands(program);
    const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    try {
      await program.parseAsync(['node', 'tfalign', 'report', ...args]);
      return log.mock.calls.map((c) => String(c[0]));
    } finally {
      log.mockRestore();
    }
  }

  it('writes the page from the database, read-only while the run is open for writing', async () => {
    const out = path.join(dir, 'reports', 'q.html');
    const lines = await run('--project', dir, '--run', 'q', '--out', out);
    expect(lines).toEqual([expect.stringMatching(new RegExp(`^report: ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(\\d+ KiB\\): run "q", 3 rounds, 2 training curves$`))]);
    const html = fs.readFileSync(out, 'utf8');
    expect(points(figure(html, 'rm/accuracy'))).toEqual([['rm/accuracy', 1, 0.625], ['rm/accuracy', 2, 0.8125]]);
    expect(fs.readdirSync(path.dirname(out))).toEqual(['q.html']);
  });

  it('names the run and the database when the run is unknown, and writes nothing', async () => {
    const out = path.join(dir, 'reports', 'nope.html');
    await expect(run('--project', dir, '--run', 'nope', '--out', out)).rejects.toThrow(
      new RegExp(`^report: run "nope" not found in ${defaultStorePath(dir).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(runs: q\\)$`),
    );
    expect(fs.existsSync(path.dirname(out))).toBe(false);
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-report-empty-'));
    try {
      await expect(run('--project', empty, '--run', 'q', '--out', out)).rejects.toThrow(`${defaultStorePath(empty)}: no such database`);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });
});
