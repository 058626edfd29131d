/**
 * `tfalign quantize` and `tfalign eval quantization` through the real binary, and quantized
 * folders through the commands that load models (generate, rm score, sample).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { initBackend } from '../../src/backend.js';
import { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../../src/tokenizer/bpe-trainer.js';
import { createModel } from '../../src/model/create.js';
import { savePretrained } from '../../src/model/pretrained.js';
import { toRewardModel } from '../../src/model/weights.js';
import { readSafetensorsHeader } from '../../src/model/safetensors.js';
import { ksStatistic, mean } from '../../src/eval/statistics.js';

function tfalign(...args: string[]) {
  const r = spawnSync(process.execPath, ['bin/tfalign.js', ...args, '--backend', 'wasm'], { encoding: 'utf8', timeout: 300_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-quant-cli-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const at = (...parts: string[]) => path.join(dir, ...parts);
const readJsonl = (file: string) => fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  const words = ['apple', 'river', 'stone', 'cloud', 'green', 'music', 'paper', 'light'];
  const corpus = Array.from({ length: 300 }, (_, i) => `${words[i % 8]} ${words[(i * 5) % 8]} ${words[(i * 3 + 1) % 8]}.`);
  const tokenizerJson = trainByteLevelBpe([corpus.join('\n')], { vocabSize: 300 });
  writeTokenizerFolder(at('tok'), { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson) });
  // tiny.json with 4 layers, so the default rule (first and last layers kept) quantizes two
  const tiny = JSON.parse(fs.readFileSync('configs/models/tiny.json', 'utf8'));
  fs.writeFileSync(at('tiny4.json'), JSON.stringify({ ...tiny, num_hidden_layers: 4, initializer_range: 0.1 }));
  const policy = await createModel({ configFile: at('tiny4.json'), tokenizerDir: at('tok'), out: at('policy'), seed: 3 });
  const rm = toRewardModel(policy, 5);
  await savePretrained(rm, at('rm'), { tokenizerDir: at('tok') });
  policy.dispose();
  rm.dispose();
  fs.writeFileSync(at('prompts.jsonl'), ['reverse: a r s', 'sort: 3 1 2', 'repeat 2: cloud', 'initials: green music', 'sort: 9 4 7 1'].map((p, j) => JSON.stringify({ prompt: p, id: `p${j}` })).join('\n') + '\n');
  fs.writeFileSync(at('tiny2.json'), JSON.stringify(tiny));
  fs.writeFileSync(at('corpus.txt'), corpus.join('\n\n'));
  const two = await createModel({ configFile: at('tiny2.json'), tokenizerDir: at('tok'), out: at('two'), seed: 1 });
  two.dispose();
});

describe('tfalign quantize', () => {
  it('writes an FBGEMM FP8 folder that generate, sample and eval quantization load', () => {
    const q = tfalign('quantize', '--model', at('policy'), '--scheme', 'fp8-rowwise', '--out', at('fp8'));
    expect(q.status, q.stderr).toBe(0);
    expect(q.stdout).toMatch(/^quantize: 6 projections to fp8-rowwise in [\d.]+ s; their weights 0\.26 MiB → 0\.07 MiB \(0\.262×\), all weights 0\.78 MiB → 0\.59 MiB -> /);
    const config = JSON.parse(fs.readFileSync(at('fp8', 'config.json'), 'utf8'));
    expect(config.quantization_config.quant_method).toBe('fbgemm_fp8');
    expect(config.quantization_config.activation_scale_ub).toBe(1200);
    expect(fs.existsSync(at('fp8', 'tokenizer.json'))).toBe(true);
    const header = readSafetensorsHeader(at('fp8', 'model.safetensors'));
    expect([...header.tensors].filter(([, t]) => t.dtype === 'F8_E4M3').map(([n]) => n)).toEqual(
      [1, 2].flatMap((l) => ['down_proj', 'gate_proj', 'up_proj'].map((p) => `model.layers.${l}.mlp.${p}.weight`)),
    );

    const g = tfalign('generate', '--model', at('fp8'), '--prompt', 'apple', '--temperature', '0', '--max-new-tokens', '8', '--json');
    expect(g.status, g.stderr).toBe(0);
    expect(JSON.parse(g.stdout.trim().split('\n')[0]!).token_ids.length).toBe(8);

    const s = tfalign('sample', '--policy', at('fp8'), '--reward-model', at('rm'), '--prompts', at('prompts.jsonl'), '-k', '3', '--max-new-tokens', '6', '--out', at('rs-fp8'));
    expect(s.status, s.stderr).toBe(0);
    expect(readJsonl(at('rs-fp8', 'samples.jsonl'))).toHaveLength(5);
  });

  it('eval quantization: same seeds as tfalign sample, statistics recomputable from samples.jsonl, an HTML overlay', () => {
    expect(tfalign('quantize', '--model', at('policy'), '--scheme', 'fp8-rowwise', '--out', at('fp8-e')).status).toBe(0);
    const e = tfalign('eval', 'quantization', '--policy', at('policy'), '--quantized', at('fp8-e'), '--reward-model', at('rm'), '--prompts', at('prompts.jsonl'), '-k', '4', '--max-new-tokens', '6', '--seed', '7', '--judge', 'data/synthetic/judge.ts', '--out', at('eval'));
    expect(e.status, e.stderr).toBe(0);
    expect(e.stdout).toMatch(/^eval quantization: 5 prompts × 4 samples; reward mean -?[\d.]+ → -?[\d.]+, difference -?[\d.]+ \[-?[\d.]+, -?[\d.]+\] \(95%\), KS D [\d.]+/);
    const summary = JSON.parse(fs.readFileSync(at('eval', 'summary.json'), 'utf8'));
    const rows = readJsonl(at('eval', 'samples.jsonl'));
    expect(rows).toHaveLength(20);
    const full = rows.map((r) => r.full_reward as number);
    const quantized = rows.map((r) => r.quantized_reward as number);
    expect(summary.reward.full.mean).toBeCloseTo(mean(full), 10);
    expect(summary.reward.quantized.mean).toBeCloseTo(mean(quantized), 10);
    expect(summary.reward.meanDifference.estimate).toBeCloseTo(mean(quantized) - mean(full), 10);
    expect(summary.reward.meanDifference.low).toBeLessThanOrEqual(summary.reward.meanDifference.high);
    expect(summary.reward.ks.statistic).toBeCloseTo(ksStatistic(full, quantized), 12);
    expect(summary.judge.full.n).toBe(20);
    for (const r of rows) expect(r.full_judge).toBeGreaterThanOrEqual(0);
    expect(summary.numQuantizedWeights).toBe(6);
    expect(summary.quantization.scheme).toBe('fp8-rowwise');
    expect(summary.weightBytes.quantized.quantizedBytes / summary.weightBytes.quantized.quantizedAsFloatBytes).toBeLessThan(0.27);
    expect(summary.greedy.identicalFraction).toBeGreaterThanOrEqual(0);
    expect(summary.greedy.identicalFraction).toBeLessThanOrEqual(1);
    // the full-precision side is exactly what `tfalign sample` draws with the same seed
    const s = tfalign('sample', '--policy', at('policy'), '--reward-model', at('rm'), '--prompts', at('prompts.jsonl'), '-k', '4', '--max-new-tokens', '6', '--seed', '7', '--out', at('rs-full'));
    expect(s.status, s.stderr).toBe(0);
    const sampled = readJsonl(at('rs-full', 'samples.jsonl'));
    expect(rows.map((r) => r.full)).toEqual(sampled.flatMap((p) => p.samples.map((x: { text: string }) => x.text)));
    sampled.flatMap((p) => p.samples.map((x: { reward: number }) => x.reward)).forEach((r: number, i: number) => expect(full[i]).toBeCloseTo(r, 5));
    const html = fs.readFileSync(at('eval', 'report.html'), 'utf8');
    expect(html).toContain('data-chart="reward"');
    expect(html).toContain('data-chart="judge"');
    expect(html.match(/<rect class="bar"[^>]*data-series="quantized"/g)!.length).toBeGreaterThan(0);
    expect(html.match(/<rect class="bar"[^>]*data-series="full precision"/g)!.length).toBeGreaterThan(0);
  });

  it('rm score reads an INT8 reward model (all layers, per-tensor, weights only)', () => {
    const q = tfalign('quantize', '--model', at('rm'), '--scheme', 'int8-absmax', '--weight-grouping', 'per-tensor', '--weights-only', '--all-layers', '--out', at('rm-int8'));
    expect(q.status, q.stderr).toBe(0);
    const config = JSON.parse(fs.readFileSync(at('rm-int8', 'config.json'), 'utf8'));
    expect(config.quantization_config.config_groups.group_0.weights.strategy).toBe('tensor');
    expect(config.quantization_config.config_groups.group_0.input_activations).toBeNull();
    fs.writeFileSync(at('score.jsonl'), '{"prompt": "apple", "response": " river stone."}\n');
    const full = tfalign('rm', 'score', '--model', at('rm'), '--input', at('score.jsonl'));
    const int8 = tfalign('rm', 'score', '--model', at('rm-int8'), '--input', at('score.jsonl'));
    expect(int8.status, int8.stderr).toBe(0);
    const a = JSON.parse(full.stdout.trim()).reward;
    const b = JSON.parse(int8.stdout.trim()).reward;
    expect(b).not.toBe(a);
    expect(Math.abs(b - a)).toBeLessThan(0.05 * Math.max(1, Math.abs(a)));
  });

  it('bad input: one line, exit 1, nothing written', () => {
    if (!fs.existsSync(at('fp8'))) expect(tfalign('quantize', '--model', at('policy'), '--scheme', 'fp8-rowwise', '--out', at('fp8')).status).toBe(0);
    const cases: [string[], RegExp][] = [
      [['quantize', '--model', at('policy'), '--scheme', 'int4', '--out', at('x1')], /--scheme.*int4.*(invalid|Allowed choices)/i],
      [['quantize', '--model', at('two'), '--scheme', 'fp8-rowwise', '--out', at('x2')], /^error: quantize: no projection selected \(2 layers, first and last kept in full precision\)/],
      [['quantize', '--model', at('policy'), '--scheme', 'fp8-rowwise', '--activation-scale-ub', 'big', '--out', at('x3')], /^error: --activation-scale-ub: expected a positive number or "none", got "big"/],
      [['quantize', '--model', at('policy'), '--scheme', 'fp8-rowwise', '--projections', 'up_proj,mlp', '--out', at('x4')], /^error: quantize: projections\.1: /],
      [['quantize', '--model', at('fp8'), '--scheme', 'fp8-rowwise', '--out', at('x5')], /^error: quantize: .*fp8: is already quantized/],
      [['pretrain', '--model', at('fp8'), '--corpus', at('corpus.txt'), '--out', at('x7'), '--max-steps', '2', '--seq-len', '16'], /(^|\n)error: train: the model is quantized \(8-bit weights are frozen\); set lora to train adapters over it \(QLoRA\), or train the full-precision model and quantize the result$/],
      [['eval', 'quantization', '--policy', at('policy'), '--quantized', at('policy'), '--reward-model', at('rm'), '--prompts', at('prompts.jsonl'), '-k', '1', '--max-new-tokens', '2', '--out', at('x6')], /^error: --quantized: .* is not quantized/],
    ];
    for (const [args, message] of cases) {
      const r = tfalign(...args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr.trim().split('\n').filter((l) => !l.startsWith('backend:')).join('\n'), args.join(' ')).toMatch(message);
    }
    for (const x of ['x1', 'x2', 'x3', 'x4', 'x5']) expect(fs.existsSync(at(x)), x).toBe(false);
  });
});
