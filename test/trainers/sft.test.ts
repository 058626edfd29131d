/**
 * The SFT recipe on a tiny model (configs/models/tiny.json) and a synthetic task with a clear
 * pattern: "count from A to B" → "A A+1 … B", "count down from B to A" → "B B−1 … A".
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../../src/tokenizer/bpe-trainer.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { tokenizePromptResponse } from '../../src/tokenizer/chat-template.js';
import { createModel } from '../../src/model/create.js';
import { loadPretrained } from '../../src/model/pretrained.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { causalLmLoss } from '../../src/tasks/causal-lm.js';
import { SftBatches, SftConfigSchema, evaluateSft, loadSftData, readSftFile, sft, type SftConfigInput } from '../../src/trainers/sft.js';
import { registerSftCommands } from '../../src/cli/sft.js';
import { packRows, padRows, type TokenBatch } from '../../data/collate.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-sft-'));
const tokDir = path.join(root, 'tok');
const baseDir = path.join(root, 'base');
const trainFile = path.join(root, 'count.jsonl');
let tok: Tokenizer;

/** 72 rows: every 1 ≤ A < B ≤ 9, counting up and down. */
function countingRows(): { prompt: string; response: string }[] {
  const rows: { prompt: string; response: string }[] = [];
  for (let a = 1; a <= 9; a++) {
    for (let b = a + 1; b <= 9; b++) {
      const up = Array.from({ length: b - a + 1 }, (_, i) => a + i);
      rows.push({ prompt: `count from ${a} to ${b}`, response: up.join(' ') });
      rows.push({ prompt: `count down from ${b} to ${a}`, response: [...up].reverse().join(' ') });
    }
  }
  return rows;
}

function writeJsonl(file: string, rows: unknown[]): string {
  fs.writeFileSync(file, rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n');
  return file;
}

/** A config for the tiny task: lr far above the recipe's 1e-5 so that a few dozen steps show learning. */
function taskConfig(out: string, over: Partial<SftConfigInput> = {}): SftConfigInput {
  return {
    model: baseDir, train: trainFile, out, maxLength: 128, maxPromptLength: 96, lr: 3e-3, batchSize: 8, maxSteps: 40,
    warmupRatio: 0.1, evalFraction: 0.2, logEvery: 10, seed: 7, ...over,
  };
}

function maxAbsDiff(a: LlamaModel, b: LlamaModel): number {
  let diff = 0;
  for (const [name, p] of a.params) {
    const x = p.dataSync();
    const y = b.params.get(name)!.dataSync();
    for (let i = 0; i < x.length; i++) diff = Math.max(diff, Math.abs(x[i] - y[i]));
  }
  return diff;
}

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  const texts = countingRows().flatMap((r) => [r.prompt, r.response]);
  texts.push('What does the cat say?', 'The cat says meow.', 'And the dog?', 'The dog says woof, loudly.');
  const tokenizerJson = trainByteLevelBpe([texts.join('\n')], { vocabSize: 300 });
  writeTokenizerFolder(tokDir, { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson) });
  tok = await Tokenizer.fromFolder(tokDir);
  (await createModel({ configFile: 'configs/models/tiny.json', tokenizerDir: tokDir, out: baseDir, seed: 1 })).dispose();
  writeJsonl(trainFile, countingRows());
});

afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

describe('SftConfigSchema', () => {
  it('carries the Llama 3 SFT defaults and the tokenize defaults', () => {
    const c = SftConfigSchema.parse({ model: 'm', train: 't.jsonl', out: 'o' });
    expect([c.lr, c.batchSize, c.epochs, c.warmupRatio, c.lrDecay, c.weightDecay, c.maxGradNorm]).toEqual([1e-5, 8, 1, 0.03, 'cosine', 0, 1]);
    expect([c.maxPromptLength, c.maxLength, c.chat, c.packing, c.skipInvalid, c.resume, c.eval]).toEqual([512, 1024, undefined, false, false, false, undefined]);
  });
});

describe('sft', () => {
  it('lowers the held-out response loss; prompt positions get exactly zero gradient', async () => {
    const out = path.join(root, 'learn');
    const config = SftConfigSchema.parse(taskConfig(out));
    const data = await loadSftData(config, tok);
    expect([data.report.numTrainRows, data.report.numEvalRows]).toEqual([58, 14]); // round(72 · 0.2) = 14 held out
    const batches = new SftBatches(data, config, tok.padTokenId!);
    const base = await loadPretrained(baseDir);

    // Gradient of the SFT loss w.r.t. the final hidden states (what the LM head reads), through
    // causalLmLoss itself: a probe model adds δ (zeros) to them, and ∂loss/∂δ at position t is the
    // head's gradient there. Prompt and padding positions must get exactly 0 (the head does not
    // even run there: only target positions are scored), response positions must not.
    const batch = batches.evalBatches[0];
    const [b, t] = [batch.batchSize, batch.seqLen];
    const grad = tf.tidy(() => {
      const probeLoss = (delta: tf.Tensor) => {
        const probe = Object.create(base) as LlamaModel;
        probe.forward = (ids, ctx) => tf.add(base.forward(ids, ctx), delta) as tf.Tensor3D;
        return causalLmLoss(probe, batch).sums.tokens;
      };
      const g = tf.grad(probeLoss)(tf.zeros([b, t, base.dims.hiddenSize])); // [B, T, C]
      const predicting = tf.slice(g, [0, 0, 0], [b, t - 1, base.dims.hiddenSize]); // [B, T−1, C]: position t predicts t+1
      return tf.sum(tf.abs(predicting), -1).dataSync() as Float32Array; // [B·(T−1)]
    });
    let numZero = 0;
    grad.forEach((g, i) => {
      if (batch.targets[i] === 0) {
        expect(g).toBe(0);
        numZero++;
      } else expect(g).toBeGreaterThan(0);
    });
    expect(numZero).toBeGreaterThan(batch.numTargets); // prompts (with the chat header) outnumber responses here

    const initial = evaluateSft(base, batches.evalBatches);
    base.dispose();
    const logged: number[] = [];
    const result = await sft(config, { onLog: (r) => r.split === 'train' && logged.push(r.step) });
    const final = result.lastEval!;
    // Observed (wasm, seed 7): response loss 5.619 → 1.874 after 40 steps; prompt loss 5.588 → 5.730.
    console.log(`sft learn: response loss ${initial.loss.toFixed(3)} → ${Number(final.loss).toFixed(3)}; prompt loss ${initial.prompt_loss.toFixed(3)} → ${Number(final.prompt_loss).toFixed(3)}`);
    expect(initial.loss).toBeGreaterThan(0.9 * Math.log(tok.vocabSize)); // a random model: about ln V
    expect(Number(final.loss)).toBeLessThan(0.7 * initial.loss);
    expect(Number(final.perplexity)).toBeCloseTo(Math.exp(Number(final.loss)), 4);
    // The prompt is not what was trained: its loss fell by far less than the response loss.
    expect(initial.prompt_loss - Number(final.prompt_loss)).toBeLessThan(0.5 * (initial.loss - Number(final.loss)));
    expect(logged).toEqual([10, 20, 30, 40]);
    expect(result.numSteps).toBe(40);
    expect(result.data.train.tokenize.summary()).toBe('72 rows: 72 kept, 0 dropped, 0 prompts truncated');
    expect(result.paddingFraction).toBeGreaterThan(0);
    expect(result.paddingFraction).toBeLessThan(0.5);

    // The saved model gives the logged eval loss again.
    const trained = await loadPretrained(result.modelDir);
    expect(evaluateSft(trained, batches.evalBatches).loss).toBeCloseTo(Number(final.loss), 5);
    trained.dispose();
    const metrics = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics.at(-1)).toMatchObject({ step: 40, split: 'eval' });
  });

  it('packing gives the loss of padded rows (same targets and tokens, within 1e-5)', async () => {
    const config = SftConfigSchema.parse(taskConfig(path.join(root, 'unused')));
    const { trainRows } = await loadSftData(config, tok);
    const rows = trainRows.slice(0, 12);
    const padded = padRows(rows, tok.padTokenId!);
    const packed = packRows(rows, { seqLen: 128, padId: tok.padTokenId!, allowSplit: false });
    expect(packed.batchSize).toBeLessThan(rows.length);
    expect(packed.numTargets).toBe(padded.numTargets);
    const model = await loadPretrained(baseDir);
    const meanOf = (batch: TokenBatch) => tf.tidy(() => causalLmLoss(model, batch).sums.tokens.dataSync()[0]) / batch.numTargets;
    const [lossPadded, lossPacked] = [meanOf(padded), meanOf(packed)];
    model.dispose();
    expect(Math.abs(lossPadded - lossPacked)).toBeLessThan(1e-5);
    expect(lossPadded).toBeGreaterThan(1); // an untrained model: a real loss, not a degenerate 0
    expect(packed.numRealTokens).toBe(padded.numRealTokens);
  });

  it('trains with packing end to end (batchSize counts packed sequences)', async () => {
    const result = await sft(taskConfig(path.join(root, 'packed'), { packing: true, maxSteps: 3, batchSize: 2, logEvery: 1 }));
    expect(result.data.numTrainSequences).toBeLessThan(result.data.numTrainRows);
    expect(result.lastTrain?.step).toBe(3);
    expect(Number.isFinite(Number(result.lastEval?.loss))).toBe(true);
  });

  it('multi-turn rows: targets are exactly the assistant tokens and their terminators', async () => {
    const conversations = [
      [
        { role: 'system', content: 'You answer briefly.' },
        { role: 'user', content: 'What does the cat say?' },
        { role: 'assistant', content: 'The cat says meow.' },
        { role: 'user', content: 'And the dog?' },
        { role: 'assistant', content: 'The dog says woof, loudly.' },
      ],
      [
        { role: 'user', content: 'count from 2 to 5' },
        { role: 'assistant', content: '2 3 4 5' },
      ],
    ];
    const file = writeJsonl(path.join(root, 'chat.jsonl'), conversations.map((messages) => ({ messages })));
    const { rows, report } = await readSftFile(file, tok, { maxPromptLength: 512, maxLength: 512, skipInvalid: false });
    expect(report.tokenize.numKept).toBe(2);
    const eot = tok.eotTokenId!;
    rows.forEach((row, r) => {
      const assistant = conversations[r].filter((m) => m.role === 'assistant');
      const expected = assistant.flatMap((m) => [...tok.encode(m.content), eot]);
      const targets = row.ids.filter((_, i) => row.targetMask[i] === 1);
      expect(targets).toEqual(expected);
      expect(targets.length).toBe(assistant.reduce((n, m) => n + tok.encode(m.content).length + 1, 0));
    });
    // The collator counts the same targets (no assistant token is a row's first token).
    const batch = padRows(rows, tok.padTokenId!);
    expect(batch.numTargets).toBe(rows.reduce((n, row) => n + row.targetMask.filter(Boolean).length, 0));
    expect(tok.decode(rows[0].ids.filter((_, i) => rows[0].targetMask[i] === 1))).toBe('The cat says meow.<|eot_id|>The dog says woof, loudly.<|eot_id|>');
  });

  it('a malformed row stops with FILE:LINE: field: problem before out is written; skipInvalid counts it', async () => {
    const rows: unknown[] = countingRows().slice(0, 10);
    rows.splice(2, 0, { prompt: 'count from 1 to 3', response: 3 }); // line 3
    rows.splice(5, 0, '{"prompt": "count to'); // line 6: not JSON
    const file = writeJsonl(path.join(root, 'bad.jsonl'), rows);
    const out = path.join(root, 'bad-run');
    await expect(sft(taskConfig(out, { train: file }))).rejects.toThrow(`${file}:3: response: expected string, got number`);
    expect(fs.existsSync(out)).toBe(false);

    const config = SftConfigSchema.parse(taskConfig(out, { train: file, skipInvalid: true }));
    const { report } = await loadSftData(config, tok);
    expect(report.train.numInvalid).toBe(2);
    expect(report.train.invalidByReason).toEqual({ 'response: expected string': 1, 'invalid JSON': 1 });
    expect(report.train.tokenize.numRows).toBe(10);
    expect(report.numTrainRows + report.numEvalRows).toBe(10);
  });

  it('a row the template cannot tokenize (a second BOS, with parseSpecialTokens) stops with FILE:LINE, or is skipped and counted', async () => {
    const file = writeJsonl(path.join(root, 'bos.jsonl'), [...countingRows().slice(0, 3), { prompt: 'count from 1 to 2', response: '<|begin_of_text|>1 2' }]);
    // By default the text "<|begin_of_text|>" is plain: the row trains, with one BOS (issue 11).
    const plain = await readSftFile(file, tok, { maxPromptLength: 96, maxLength: 128, skipInvalid: false });
    expect(plain.rows).toHaveLength(4);
    expect(plain.rows[3]!.ids.filter((id) => id === tok.bosTokenId)).toHaveLength(1);
    const opts = { maxPromptLength: 96, maxLength: 128, parseSpecialTokens: true };
    await expect(readSftFile(file, tok, { ...opts, skipInvalid: false })).rejects.toThrow(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:4: chat template: prompt \\+ response: BOS id \\d+ at positions`));
    const { rows, report } = await readSftFile(file, tok, { ...opts, skipInvalid: true });
    expect(rows).toHaveLength(3);
    expect(report.invalidByReason).toEqual({ 'cannot tokenize': 1 });
    expect(report.tokenize.summary()).toBe('3 rows: 3 kept, 0 dropped, 0 prompts truncated');
  });

  it('a row longer than maxLength is dropped and counted, never cut', async () => {
    const long = { prompt: 'count from 1 to 9', response: Array.from({ length: 40 }, (_, i) => String((i % 9) + 1)).join(' ') };
    const rows = [...countingRows().slice(0, 6), long];
    const file = writeJsonl(path.join(root, 'long.jsonl'), rows);
    const fullLength = (r: { prompt: string; response: string }) => {
      const parts = tokenizePromptResponse(tok, r.prompt, r.response);
      return parts.promptIds.length + parts.responseIds.length;
    };
    expect(fullLength(long)).toBeGreaterThan(64);
    const { rows: kept, report } = await readSftFile(file, tok, { maxPromptLength: 48, maxLength: 64, skipInvalid: false });
    expect(report.tokenize.summary()).toBe('7 rows: 6 kept, 1 dropped (too_long: 1), 0 prompts truncated');
    expect(kept.map((r) => r.ids.length)).toEqual(rows.slice(0, 6).map(fullLength)); // every kept row whole
  });

  it('rejects a reward model and a maxLength beyond the context, before writing out', async () => {
    const rmDir = path.join(root, 'rm');
    fs.mkdirSync(rmDir);
    const cfg = JSON.parse(fs.readFileSync(path.join(baseDir, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(rmDir, 'config.json'), JSON.stringify({ ...cfg, architectures: ['LlamaForSequenceClassification'] }));
    const out = path.join(root, 'rejected');
    await expect(sft(taskConfig(out, { model: rmDir }))).rejects.toThrow(`sft: ${rmDir} is a reward model; SFT needs a causal LM`);
    await expect(sft(taskConfig(out, { maxLength: 1024 }))).rejects.toThrow("sft: maxLength 1024 exceeds the model's max_position_embeddings 512");
    expect(fs.existsSync(out)).toBe(false);
  });

  it('resume: 4 steps then resume to 6 equals an uninterrupted 6-step run', async () => {
    // The learning-rate schedule's length is maxSteps, so a 4-step run's cosine differs from the
    // first 4 steps of a 6-step run; with a constant rate and no warmup the two schedules agree
    // on steps 1–4, and resuming (weights, AdamW moments and step from checkpoint-4) must then
    // reproduce the straight run. Observed: identical weights (max |Δ| = 0).
    const common = { lrDecay: 'constant', warmupRatio: 0, lr: 3e-3, logEvery: 1, saveTotalLimit: 0 } as const;
    const straightOut = path.join(root, 'straight');
    const resumedOut = path.join(root, 'resumed');
    await sft(taskConfig(straightOut, { ...common, maxSteps: 6 }));
    await sft(taskConfig(resumedOut, { ...common, maxSteps: 4, saveEvery: 2 }));
    expect(fs.readdirSync(resumedOut).filter((n) => n.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-2', 'checkpoint-4']);
    // the 4-step model is out itself (TRL's output_dir), its files listed in the marker
    const fourSteps = await loadPretrained(resumedOut);
    const checkpoint4 = await loadPretrained(path.join(resumedOut, 'checkpoint-4'));
    expect(maxAbsDiff(fourSteps, checkpoint4)).toBe(0);
    fourSteps.dispose();
    checkpoint4.dispose();
    // a stale file of the previous final model (listed in the marker) goes on resume; a user's own file stays
    const markerFile = path.join(resumedOut, '.tfalign-output.json');
    const marker = JSON.parse(fs.readFileSync(markerFile, 'utf8'));
    expect(marker.files).toContain('model.safetensors');
    fs.writeFileSync(markerFile, JSON.stringify({ ...marker, files: [...marker.files, 'stale-shard.safetensors'] }));
    fs.writeFileSync(path.join(resumedOut, 'stale-shard.safetensors'), 'x');
    fs.writeFileSync(path.join(resumedOut, 'notes.txt'), 'mine');
    const steps: number[] = [];
    await sft(taskConfig(resumedOut, { ...common, maxSteps: 6, saveEvery: 2, resume: true }), { onLog: (r) => r.split === 'train' && steps.push(r.step) });
    expect(steps).toEqual([5, 6]); // only the remaining steps ran
    expect(fs.existsSync(path.join(resumedOut, 'stale-shard.safetensors'))).toBe(false);
    expect(fs.readFileSync(path.join(resumedOut, 'notes.txt'), 'utf8')).toBe('mine');
    expect(fs.readdirSync(resumedOut).filter((n) => n.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-2', 'checkpoint-4', 'checkpoint-6']);
    const after = JSON.parse(fs.readFileSync(markerFile, 'utf8'));
    expect(after).toMatchObject({ command: 'sft', model: marker.model, modelPath: marker.modelPath }); // the starting model's hash is kept for the next --resume
    expect(after.files).not.toContain('stale-shard.safetensors');
    const straight = await loadPretrained(straightOut);
    const resumed = await loadPretrained(resumedOut);
    expect(maxAbsDiff(straight, resumed)).toBeLessThan(1e-6);
    const base = await loadPretrained(baseDir);
    expect(maxAbsDiff(straight, base)).toBeGreaterThan(1e-3); // training did change the weights
    for (const m of [straight, resumed, base]) m.dispose();
    const metricSteps = fs.readFileSync(path.join(resumedOut, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.split === 'train').map((r) => r.step);
    expect(metricSteps).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('leaves no tensors behind: numTensors after a run equals before', async () => {
    // Runs above already warmed up anything created once per process (wasm kernels).
    const before = tf.memory().numTensors;
    await sft(taskConfig(path.join(root, 'count-tensors'), { maxSteps: 3, evalEvery: 1, logEvery: 1 }));
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('tfalign sft', () => {
  it('runs from a config file with flags and --set, one line per log step and a summary', async () => {
    const configFile = path.join(root, 'sft.yaml');
    const out = path.join(root, 'cli-run');
    fs.writeFileSync(configFile, [`model: ${baseDir}`, `train: ${trainFile}`, 'maxLength: 128', 'maxSteps: 100', 'lr: 0.003', 'batchSize: 8'].join('\n') + '\n');
    const program = new Command('tfalign');
    program.exitOverride();
    registerSftCommands(program);
    const stderr: string[] = [];
    const stdout: string[] = [];
    const errSpy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      stderr.push(String(chunk));
      return true;
    });
    const logSpy = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void stdout.push(args.join(' ')));
    const errorSpy = vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => void stderr.push(args.join(' ') + '\n'));
    try {
      await program.parseAsync(['node', 'tfalign', 'sft', '--config', configFile, '--out', out, '--max-steps', '4', '--batch-size', '4', '--set', 'logEvery=2', '--set', 'evalFraction=0.1']);
    } finally {
      errSpy.mockRestore();
      logSpy.mockRestore();
      errorSpy.mockRestore();
    }
    const text = stderr.join('');
    expect(text).toContain(`sft: ${trainFile}: 72 rows: 72 kept, 0 dropped, 0 prompts truncated`);
    expect(text).toContain('sft: 65 training rows, 7 held out, 4 steps'); // round(72 · 0.1) = 7
    expect(text.split('\n').filter((l) => /^sft [24]\/4 {2}loss /.test(l))).toHaveLength(2); // not a TTY: one line per log step
    expect(stdout).toHaveLength(1);
    expect(stdout[0]).toMatch(new RegExp(`^sft: saved ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: 4 steps, final eval loss \\d+\\.\\d{4} \\(perplexity \\d+\\.\\d\\d\\), \\d+ tokens/s, \\d+\\.\\d% padding$`));
    expect(fs.existsSync(path.join(out, 'model.safetensors'))).toBe(true);
  });

  it('a missing required field is one line naming it', async () => {
    const program = new Command('tfalign');
    program.exitOverride();
    registerSftCommands(program);
    await expect(program.parseAsync(['node', 'tfalign', 'sft', '--model', baseDir, '--out', path.join(root, 'x')])).rejects.toThrow('config: train: Required');
  });
});
