/**
 * The HTML report of `tfalign eval quantization`: the settings, the score comparisons (reward
 * model, judge) as a table, and each score distribution as a histogram overlay (full precision
 * and quantized on shared bins). Self-contained like the run report: no scripts, no external files.
 */
import type { QuantizationEvalResult, ScoreComparison } from '../pipelines/quantization-eval.js';
import { escapeHtml, formatValue, histogram, histogramEdges } from './charts.js';
import { STYLE } from './html.js';

function row(cells: string[], header = false): string {
  const tag = header ? 'th' : 'td';
  return `<tr>${cells.map((c) => `<${tag}>${escapeHtml(c)}</${tag}>`).join('')}</tr>`;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(2)} MiB`;
}

function comparisonSection(id: string, title: string, c: ScoreComparison): string {
  const min = Math.min(...c.fullScores, ...c.quantizedScores);
  const max = Math.max(...c.fullScores, ...c.quantizedScores);
  const edges = histogramEdges(min, max, 20);
  const table = [
    '<table class="comparison">',
    row(['', 'n', 'mean', 'sd'], true),
    row(['full precision', String(c.full.n), formatValue(c.full.mean, 4), formatValue(c.full.sd, 4)]),
    row(['quantized', String(c.quantized.n), formatValue(c.quantized.mean, 4), formatValue(c.quantized.sd, 4)]),
    '</table>',
    '<table class="comparison">',
    row(['mean difference (quantized − full)', `${formatValue(c.meanDifference.estimate, 4)} [${formatValue(c.meanDifference.low, 4)}, ${formatValue(c.meanDifference.high, 4)}] (95%, bootstrap over prompts)`]),
    row(['0 inside the interval', c.zeroInInterval ? 'yes' : 'no']),
    row(['Kolmogorov–Smirnov D', `${formatValue(c.ks.statistic, 4)} (p = ${formatValue(c.ks.pValue, 3)})`]),
    '</table>',
  ].join('\n');
  const chart = histogram(
    [
      { name: 'full precision', values: c.fullScores },
      { name: 'quantized', values: c.quantizedScores },
    ],
    { id, title: `${title}: score distributions`, xTitle: title, edges },
  );
  return `<section id="${escapeHtml(id)}"><h2>${escapeHtml(title)}</h2>\n${table}\n${chart}</section>`;
}

export interface QuantizationReportInfo {
  policyDir: string;
  quantizedDir: string;
  rewardModelDir: string;
  promptsFile: string;
  generatedAt?: Date;
}

export function renderQuantizationReport(result: QuantizationEvalResult, info: QuantizationReportInfo): string {
  const q = result.quantization;
  const b = result.weightBytes;
  const settings = [
    '<table class="settings">',
    row(['policy', info.policyDir]),
    row(['quantized policy', info.quantizedDir]),
    row(['reward model', info.rewardModelDir]),
    row(['prompts', `${info.promptsFile} (${result.numPrompts} prompts × ${result.numSamplesPerPrompt} samples, same seeds for both)`]),
    row(['scheme', `${q.scheme}${q.scheme === 'int8-absmax' ? `, ${q.weightGrouping} weights` : ''}, activations ${q.activations}${q.scheme === 'fp8-rowwise' && q.activations === 'per-token' ? `, activation scale bound ${q.activationScaleUpperBound ?? 'none'}` : ''}`]),
    row(['quantized projections', `${result.numQuantizedWeights} (${q.projections.join(', ')}${q.keepFirstAndLastLayers ? '; first and last layers kept' : ''})`]),
    row(['resident weights', `${mib(b.full.totalBytes)} → ${mib(b.quantized.totalBytes)}; quantized projections ${mib(b.quantized.quantizedAsFloatBytes)} → ${mib(b.quantized.quantizedBytes)} (${formatValue(b.quantized.quantizedBytes / Math.max(1, b.quantized.quantizedAsFloatBytes), 3)}×)`]),
    row(['identical samples (same seed)', formatValue(result.identicalSampleFraction, 3)]),
    row(['identical greedy outputs', `${formatValue(result.greedy.identicalFraction, 3)} (agree for ${formatValue(result.greedy.meanCommonPrefixChars, 1)} of ${formatValue(result.greedy.meanChars, 1)} characters on average)`]),
    row(['sampling tokens/s', `full ${formatValue(result.sampling.full.tokensPerSecond, 1)}, quantized ${formatValue(result.sampling.quantized.tokensPerSecond, 1)}`]),
    '</table>',
  ].join('\n');
  const sections = [comparisonSection('reward', 'reward-model score', result.reward)];
  if (result.judge) sections.push(comparisonSection('judge', 'judge score', result.judge));
  const generatedAt = (info.generatedAt ?? new Date()).toISOString();
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${escapeHtml(`tfalign quantization eval: ${info.quantizedDir}`)}</title>`,
    `<style>${STYLE}</style>`,
    '</head>',
    '<body>',
    `<h1>Quantization eval: ${escapeHtml(q.scheme)}</h1>`,
    `<section id="settings">${settings}</section>`,
    ...sections,
    `<footer>Written by tfalign eval quantization at ${escapeHtml(generatedAt)}. Self-contained: no scripts, no external resources.</footer>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}
