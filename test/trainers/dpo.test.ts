/**
 * The DPO trainer on a tiny model (configs/models/tiny.json, ~113k parameters) and a synthetic
 * preference set with one clear signal: for "What does the cat do?" the chosen answer is
 * "Sure! the cat reads a book." and the rejected one "No. the cat reads a book.". The starting
 * "SFT" model is trained here for 40 steps on BOTH responses (as an SFT model that generates both),
 * so it starts with no preference and with both responses likely — the setting in which plain DPO
 * is known to lower the chosen log-prob too.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../../src/tokenizer/bpe-trainer.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { tokenizePromptResponse } from '../../src/tokenizer/chat-template.js';
import { createModel } from '../../src/model/create.js';
import { loadPretrained } from '../../src/model/pretrained.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { trainingOptionsSchema } from '../../src/config/training.js';
import { runTrainingLoop, type LogRecord } from '../../src/train/loop.js';
import { batchTokenLogprobs, responseLogprobs } from '../../src/inference/token-logprobs.js';
import { causalLmLoss, causalLmUnits } from '../../src/tasks/causal-lm.js';
import { padRows, type TokenBatch } from '../../data/collate.js';
import { localEngine } from '../train/local-engine.js';
import { chosenNllLoss } from '../../losses/nll.js';
import { DPO_LOSSES } from '../../losses/dpo.js';
import { dpo, type DpoConfigInput, type DpoHooks, type DpoResult } from '../../src/trainers/dpo.js';
import { collatePairs, dpoLoss, dpoTerms, dpoUnits, evaluateDpo, splitDpoBatch, type DpoBatch, type DpoLossOptions, type DpoTerms } from '../../src/tasks/dpo.js';
import { evaluateObjective, normalizedLoss } from '../../src/train/objective.js';
import { computeReferenceLogps, pairHash, REFERENCE_LOGPS_FILE, ReferenceLogpsRowSchema } from '../../src/trainers/reference-logps.js';
import { type PreferencePairIds } from '../../src/tasks/dpo.js';
import { registerDpoCommands } from '../../src/cli/dpo.js';

const LN2 = Math.log(2);

/** xorshift32 picks, so the data are the same on every run. */
function picker(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
}

interface PairRow {
  prompt: string;
  chosen: string;
  rejected: string;
  edited?: string;
  strength?: string;
}

function makePairs(numPairs: number, seed: number): PairRow[] {
  const pick = picker(seed);
  const subjects = ['the cat', 'a dog', 'my friend', 'the fox', 'the bird'];
  const verbs = ['reads', 'writes', 'sees', 'finds'];
  const objects = ['a book', 'the river', 'some tokens', 'the question'];
  return Array.from({ length: numPairs }, () => {
    const content = `${subjects[pick(subjects.length)]} ${verbs[pick(verbs.length)]} ${objects[pick(objects.length)]}.`;
    const subject = content.split(' ').slice(0, 2).join(' ');
    return { prompt: `What does ${subject} do?`, chosen: `Sure! ${content}`, rejected: `No. ${content}` };
  });
}

function writeJsonl(file: string, rows: object[]): void {
  fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

let dir: string;
let sftDir: string;
let trainFile: string;
let evalFile: string;
let tok: Tokenizer;
let eotId: number;

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-dpo-'));
  // 1) tokenizer on the task's text
  const corpus = makePairs(200, 7).flatMap((r) => [r.prompt, r.chosen, r.rejected]).join('\n');
  const tokenizerJson = trainByteLevelBpe([corpus], { vocabSize: 320 });
  const tokDir = path.join(dir, 'tok');
  writeTokenizerFolder(tokDir, { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson) });
  tok = await Tokenizer.fromFolder(tokDir);
  eotId = tok.eotTokenId!;
  // 2) "SFT": 40 steps of response-only cross-entropy on chosen AND rejected responses
  const model = await createModel({ configFile: 'configs/models/tiny.json', tokenizerDir: tokDir, out: path.join(dir, 'base'), seed: 1 });
  const sequences = makePairs(64, 3).flatMap((r) =>
    [r.chosen, r.rejected].map((response) => {
      const { promptIds, responseIds } = tokenizePromptResponse(tok, r.prompt, response);
      return { ids: [...promptIds, ...responseIds], targetMask: [...promptIds.map(() => 0), ...responseIds.map(() => 1)] };
    }),
  );
  const options = trainingOptionsSchema({ lr: 3e-3, batchSize: 16, epochs: 1, warmupRatio: 0, lrDecay: 'constant', weightDecay: 0, maxGradNorm: 1 }).parse({ logEvery: 40 });
  const engine = localEngine<TokenBatch>(model, { loss: (batch) => causalLmLoss(model, batch), unitsOf: causalLmUnits }, options);
  await runTrainingLoop({
    runDir: path.join(dir, 'sft'),
    model,
    options,
    numSteps: 40,
    batchesAt: (step) => [padRows(Array.from({ length: 16 }, (_, i) => sequences[(step * 16 + i) % sequences.length]), tok.padTokenId!)],
    engine,
    numTokensOf: (batch) => batch.numRealTokens,
    tokenizerDir: tokDir,
  });
  await engine.close();
  model.dispose();
  sftDir = path.join(dir, 'sft');
  trainFile = path.join(dir, 'train.jsonl');
  evalFile = path.join(dir, 'eval.jsonl');
  writeJsonl(trainFile, makePairs(64, 11));
  writeJsonl(evalFile, makePairs(16, 99));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A config for the tiny task: lr 1e-3 (tiny models move slowly at Llama 3's 1e-5), constant schedule. */
function config(out: string, extra: Partial<DpoConfigInput> = {}): DpoConfigInput {
  return {
    model: sftDir,
    train: trainFile,
    eval: evalFile,
    out: path.join(dir, out),
    backend: 'wasm',
    lr: 1e-3,
    batchSize: 8,
    maxSteps: 20,
    warmupRatio: 0,
    lrDecay: 'constant',
    logEvery: 1,
    ...extra,
  };
}

async function runDpo(out: string, extra: Partial<DpoConfigInput> = {}, hooks: DpoHooks = {}): Promise<{ result: DpoResult; records: LogRecord[] }> {
  const records: LogRecord[] = [];
  const result = await dpo(config(out, extra), { ...hooks, onLog: (r) => (records.push(r), hooks.onLog?.(r)) });
  return { result, records };
}

/** The pairs of a preference file as the trainer builds them (chat template, edited → chosen). */
function pairsOf(rows: PairRow[]): PreferencePairIds[] {
  return rows.map((r) => {
    const chosen = tokenizePromptResponse(tok, r.prompt, r.edited ?? r.chosen);
    return { promptIds: chosen.promptIds, chosenIds: chosen.responseIds, rejectedIds: tokenizePromptResponse(tok, r.prompt, r.rejected).responseIds };
  });
}

function readReferenceRows(out: string) {
  return fs
    .readFileSync(path.join(dir, out, REFERENCE_LOGPS_FILE), 'utf8')
    .trim()
    .split('\n')
    .map((line) => ReferenceLogpsRowSchema.parse(JSON.parse(line)));
}

/** dpoTerms over the policy's token log-probs of `batch` (the log-probs disposed). */
function termsOf(model: LlamaModel, batch: DpoBatch, opts: DpoLossOptions): DpoTerms {
  const tokenLogps = batchTokenLogprobs(model, batch.tokens); // [2P, T−1]
  const terms = dpoTerms(tokenLogps, batch, opts);
  tokenLogps.dispose();
  return terms;
}

function lossOptions(nllCoefficient: number, formattingTokenIds: number[] = [tok.tokenToId('<|start_header_id|>')!, tok.tokenToId('<|end_header_id|>')!, eotId]): DpoLossOptions {
  return { loss: DPO_LOSSES.sigmoid, beta: 0.1, labelSmoothing: 0, nllCoefficient, formattingTokenIds };
}

describe('DPO at step 0 (policy == reference)', () => {
  it('the sigmoid loss over a real batch is ln 2 + α·NLL, the NLL computed separately', async () => {
    const model = await loadPretrained(sftDir);
    try {
      const opts = lossOptions(0.2);
      const pairs = pairsOf(makePairs(8, 11));
      // reference values by the precompute path (different batching than the policy's batch)
      const ref = computeReferenceLogps(model, pairs, { batchSize: 4, padId: tok.padTokenId!, formattingTokenIds: opts.formattingTokenIds });
      const batch = collatePairs(pairs, ref, tok.padTokenId!);
      const objective = (o: DpoLossOptions) => ({ loss: (b: DpoBatch) => dpoLoss(model, b, o), unitsOf: dpoUnits });
      const { loss, metrics, units } = evaluateObjective(objective(opts), [batch]);
      // NLL on its own: mean token cross-entropy over the chosen responses, <|eot_id|> included
      const chosenOnly = padRows(pairs.map((p) => ({ ids: [...p.promptIds, ...p.chosenIds], targetMask: [...p.promptIds.map(() => 0), ...p.chosenIds.map(() => 1)] })), tok.padTokenId!);
      const nll = tf.tidy(() =>
        chosenNllLoss(batchTokenLogprobs(model, chosenOnly), tf.tensor2d(chosenOnly.targets, [chosenOnly.batchSize, chosenOnly.seqLen - 1])).dataSync()[0],
      );
      expect(nll).toBeGreaterThan(0.3); // a real term, not a vanishing one
      expect(Math.abs(loss - (LN2 + 0.2 * nll))).toBeLessThan(1e-5);
      expect(Math.abs(metrics.nll_loss - nll)).toBeLessThan(1e-5);
      // the precomputed and the in-batch log-probs are bit-identical, so every pair is an exact tie
      // (r_w = r_l = 0) and ties count as not correct, as TRL's (chosen_rewards > rejected_rewards)
      expect([metrics['rewards/chosen'], metrics['rewards/rejected'], metrics['rewards/margins'], metrics['rewards/accuracies']]).toEqual([0, 0, 0, 0]);
      for (const part of splitDpoBatch(batch, 3)) {
        // other batch compositions and padding lengths: still exact ties
        const { sums, ...terms } = termsOf(model, part, opts);
        expect([...terms.chosenRewards.dataSync(), ...terms.rejectedRewards.dataSync()].every((r) => r === 0)).toBe(true);
        tf.dispose([...Object.values(sums), ...Object.values(terms)]);
      }
      expect(units).toEqual({ pairs: 8, chosen_tokens: chosenOnly.numTargets });
      const plain = evaluateObjective(objective(lossOptions(0)), [batch]);
      expect(Math.abs(plain.loss - LN2)).toBeLessThan(1e-5);
    } finally {
      model.dispose();
    }
  });

  it('the trainer logs loss = ln 2 + α·nll_loss at its first step, with rewards 0 and accuracies 0 (ties)', async () => {
    const { records } = await runDpo('first-step', { maxSteps: 1, nllCoefficient: 0.5 });
    const first = records.find((r) => r.split === 'train')!;
    expect(Math.abs(Number(first.loss) - (LN2 + 0.5 * Number(first.nll_loss)))).toBeLessThan(1e-5);
    expect([first['rewards/chosen'], first['rewards/rejected'], first['rewards/accuracies']]).toEqual([0, 0, 0]);
  });

  it('ipo divides each log-ratio by the response tokens it sums over (formatting tokens not counted)', async () => {
    const model = await loadPretrained(sftDir);
    try {
      const opts = { ...lossOptions(0), loss: DPO_LOSSES.ipo };
      const formatting = new Set(opts.formattingTokenIds);
      const pairs = pairsOf(makePairs(6, 12));
      const ref = computeReferenceLogps(model, pairs, { batchSize: 4, padId: tok.padTokenId!, formattingTokenIds: opts.formattingTokenIds });
      // reference 2 nats per counted chosen token below the policy: chosen log-ratio per token = 2,
      // rejected = 0 → h̄ = 2 → (2 − 1/(2·0.1))² = (2 − 5)² = 9 for every pair (ipo_sum would see 2·|y_w|)
      const counted = pairs.map((p) => p.chosenIds.filter((id) => !formatting.has(id)).length);
      expect(new Set(counted).size).toBeGreaterThan(1); // lengths differ, so a wrong count would show
      const shifted = { chosen: ref.chosen.map((v, i) => v - 2 * counted[i]!), rejected: ref.rejected };
      const batch = collatePairs(pairs, shifted, tok.padTokenId!);
      const terms = termsOf(model, batch, opts);
      for (const l of terms.losses.dataSync()) expect(l).toBeCloseTo(9, 3);
      for (const r of terms.chosenRewards.dataSync()) expect(r).toBeCloseTo(0.2, 5); // β · 2
      tf.dispose(Object.values(terms));
      const sum = termsOf(model, batch, { ...opts, loss: DPO_LOSSES.ipo_sum });
      Array.from(sum.losses.dataSync()).forEach((l, i) => expect(l).toBeCloseTo((2 * counted[i]! - 5) ** 2, 2));
      tf.dispose(Object.values(sum));
    } finally {
      model.dispose();
    }
  });
});

describe('DPO training on the synthetic preference set', () => {
  let plain: { result: DpoResult; records: LogRecord[] };
  let withNll: { result: DpoResult; records: LogRecord[] };
  let start: Record<string, number>;
  let refChosenMean: number;

  beforeAll(async () => {
    plain = await runDpo('plain', { nllCoefficient: 0, logEvery: 10 });
    withNll = await runDpo('nll', { nllCoefficient: 0.2, logEvery: 10 });
    // step 0: the starting model on the held-out pairs, with the stored reference values
    const evalRows = readReferenceRows('nll').filter((r) => r.split === 'eval');
    const model = await loadPretrained(sftDir);
    const pairs = pairsOf(makePairs(16, 99));
    start = evaluateDpo(model, [collatePairs(pairs, { chosen: evalRows.map((r) => r.chosen_logp), rejected: evalRows.map((r) => r.rejected_logp) }, tok.padTokenId!)], lossOptions(0.2));
    model.dispose();
    refChosenMean = evalRows.reduce((a, r) => a + r.chosen_logp, 0) / evalRows.length;
  });

  it('raises eval rewards/accuracies and the chosen-minus-rejected log-prob margin', () => {
    // Observed (wasm, this seed), eval pairs:
    //   step 0:  logps/chosen −8.923, logps/rejected −8.921 (margin −0.002 nats); rewards exactly 0 (the
    //            precomputed and in-batch sums are computed alike), so rewards/accuracies = 0: all ties;
    //   step 20, α = 0.2: rewards/accuracies 1, rewards/margins 3.27, log-prob margin +32.7 nats;
    //   step 20, α = 0:   rewards/accuracies 1, rewards/margins 6.71, log-prob margin +67.1 nats.
    const end = withNll.result.lastEval!;
    const startMargin = start['logps/chosen'] - start['logps/rejected'];
    const endMargin = Number(end['logps/chosen']) - Number(end['logps/rejected']);
    expect([start['rewards/chosen'], start['rewards/rejected']]).toEqual([0, 0]); // r = 0 at the reference, exactly
    expect(start['rewards/accuracies']).toBe(0); // ties count as not correct
    expect(Math.abs(startMargin)).toBeLessThan(1); // the SFT model saw both responses: no preference yet
    expect(endMargin - startMargin).toBeGreaterThan(15);
    expect(Number(end['rewards/accuracies'])).toBeGreaterThanOrEqual(0.9);
    expect(Number(end['rewards/accuracies']) - start['rewards/accuracies']).toBeGreaterThan(0.4);
    expect(Number(end['rewards/margins'])).toBeGreaterThan(1);
    expect(Number(plain.result.lastEval!['rewards/accuracies'])).toBeGreaterThanOrEqual(0.9);
  });

  it('the NLL term keeps logps/chosen from falling where plain DPO lets it fall', () => {
    // Observed (wasm, this seed), eval logps/chosen: −8.92 at the reference. Plain DPO (α = 0): −59.8
    // at step 10 (train batches: −44.3), −30.2 at step 20 — it fell 21 nats while logps/rejected fell
    // to −97.4. DPO + NLL (α = 0.2): −8.25 at step 20 — it rose 0.67 nats (rewards/chosen +0.067 vs
    // −2.13), with logps/rejected at −41.0. So the NLL term does what Llama 3 added it for here.
    const plainChosen = Number(plain.result.lastEval!['logps/chosen']);
    const nllChosen = Number(withNll.result.lastEval!['logps/chosen']);
    expect(refChosenMean - plainChosen).toBeGreaterThan(5); // plain DPO: chosen log-prob falls
    expect(nllChosen - plainChosen).toBeGreaterThan(5); // the NLL term keeps it up …
    expect(nllChosen).toBeGreaterThan(refChosenMean - 1); // … at (or above) where it started
    expect(Number(withNll.result.lastEval!['rewards/chosen'])).toBeGreaterThan(Number(plain.result.lastEval!['rewards/chosen']) + 0.5);
  });

  it('writes metrics.jsonl with TRL\'s names for train and eval', () => {
    const lines = fs.readFileSync(path.join(dir, 'nll', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as LogRecord);
    const names = ['rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins', 'logps/chosen', 'logps/rejected', 'nll_loss', 'loss'];
    for (const split of ['train', 'eval']) {
      const record = lines.find((l) => l.split === split)!;
      for (const name of names) expect(Number.isFinite(Number(record[name])), `${split} ${name}`).toBe(true);
    }
    expect(fs.existsSync(path.join(dir, 'nll', 'model.safetensors'))).toBe(true);
  });
});

describe('formatting tokens', () => {
  it('get exactly zero gradient in the DPO term and still train through the NLL term', async () => {
    const model = await loadPretrained(sftDir);
    try {
      const pairs = pairsOf(makePairs(4, 5));
      const batch = collatePairs(pairs, { chosen: [-5, -6, -7, -8], rejected: [-9, -8, -7, -6] }, tok.padTokenId!); // h ≠ 0: non-trivial gradients
      const tokenLogps = batchTokenLogprobs(model, batch.tokens); // [8, T−1]
      const gradOf = (opts: DpoLossOptions) => tf.grad((x: tf.Tensor) => normalizedLoss(dpoTerms(x as tf.Tensor2D, batch, opts).sums, dpoUnits(batch)))(tokenLogps).arraySync() as number[][];
      const dpoOnly = gradOf(lossOptions(0));
      const withNll = gradOf(lossOptions(0.2));
      const t = batch.tokens.seqLen - 1;
      let numFormatting = 0;
      let numOther = 0;
      for (let row = 0; row < 8; row++) {
        for (let i = 0; i < t; i++) {
          if (!batch.tokens.targets[row * t + i]) {
            expect(Math.abs(dpoOnly[row][i])).toBe(0); // prompt and padding
            continue;
          }
          if (batch.tokens.labels[row * t + i] === eotId) {
            numFormatting++;
            expect(Math.abs(dpoOnly[row][i])).toBe(0); // masked out of the DPO log-probs
            if (row < 4) expect(Math.abs(withNll[row][i])).toBeGreaterThan(0); // chosen <|eot_id|>: trained by the NLL
            else expect(Math.abs(withNll[row][i])).toBe(0); // rejected: no NLL term
          } else {
            numOther++;
            expect(Math.abs(dpoOnly[row][i])).toBeGreaterThan(0);
          }
        }
      }
      expect(numFormatting).toBe(8); // one <|eot_id|> per response
      expect(numOther).toBeGreaterThan(8 * 4);
      tokenLogps.dispose();
    } finally {
      model.dispose();
    }
  });

  it('are excluded from the precomputed reference log-probs (manual sum)', async () => {
    const out = 'formatting-ref';
    await runDpo(out, { maxSteps: 1 });
    const stored = readReferenceRows(out).filter((r) => r.split === 'eval');
    const pairs = pairsOf(makePairs(16, 99));
    const model = await loadPretrained(sftDir);
    try {
      // one sequence at a time, no batching: Σ of response token log-probs, skipping <|eot_id|>
      for (const i of [0, 5, 15]) {
        const { promptIds, chosenIds } = pairs[i];
        const [tokenLogps] = responseLogprobs(model, [{ promptIds, responseIds: chosenIds }], 1, tok.padTokenId!);
        expect(chosenIds[chosenIds.length - 1]).toBe(eotId);
        let masked = 0;
        for (let k = 0; k < chosenIds.length - 1; k++) masked += tokenLogps[k];
        const eotLogp = tokenLogps[chosenIds.length - 1];
        expect(Math.abs(stored[i].chosen_logp - masked)).toBeLessThan(1e-4);
        expect(Math.abs(stored[i].chosen_logp - (masked + eotLogp))).toBeGreaterThan(1e-3); // the unmasked sum differs
        expect(stored[i].hash).toBe(pairHash(pairs[i], lossOptions(0).formattingTokenIds));
      }
      // with masking off, the stored sums include <|eot_id|>
      const unmasked = computeReferenceLogps(model, pairs.slice(0, 1), { batchSize: 2, padId: tok.padTokenId!, formattingTokenIds: [] });
      const [all] = responseLogprobs(model, [{ promptIds: pairs[0].promptIds, responseIds: pairs[0].chosenIds }], 1, tok.padTokenId!);
      expect(Math.abs(unmasked.chosen[0] - all.reduce((a, b) => a + b, 0))).toBeLessThan(1e-4);
    } finally {
      model.dispose();
    }
  });
});

describe('reference log-probs', () => {
  it('are computed once and reused on resume; changed rows alone are recomputed', async () => {
    const out = 'resume';
    const file = path.join(dir, out, REFERENCE_LOGPS_FILE);
    const infos: { numComputed: number; numReused: number }[] = [];
    const onReference: DpoHooks['onReference'] = (info) => infos.push(info);
    const first = await runDpo(out, { maxSteps: 4, saveEvery: 2 }, { onReference });
    // the synthetic set repeats pairs (5 × 4 × 4 contents): each distinct pair is computed once
    const formattingIds = lossOptions(0).formattingTokenIds;
    const numDistinct = new Set(pairsOf([...makePairs(64, 11), ...makePairs(16, 99)]).map((p) => pairHash(p, formattingIds))).size;
    expect(numDistinct).toBeLessThan(80);
    expect(infos[0]).toMatchObject({ numComputed: numDistinct, numReused: 0 });
    expect(readReferenceRows(out)).toHaveLength(80); // still one row per pair
    const mtime = fs.statSync(file).mtimeMs;
    const resumed = await runDpo(out, { maxSteps: 6, saveEvery: 2, resume: true }, { onReference });
    expect(infos[1]).toMatchObject({ numComputed: 0, numReused: 80 });
    expect(fs.statSync(file).mtimeMs).toBe(mtime); // not rewritten
    expect(resumed.records.filter((r) => r.split === 'train').map((r) => r.step)).toEqual([5, 6]); // continued, not restarted
    expect(first.records.filter((r) => r.split === 'train').map((r) => r.step)).toEqual([1, 2, 3, 4]);
    // one changed training row: only its pair is computed again
    const rows = makePairs(64, 11);
    rows[3] = { ...rows[3], chosen: 'Sure! a new answer.' };
    const changedFile = path.join(dir, 'train-changed.jsonl');
    writeJsonl(changedFile, rows);
    await runDpo(out, { train: changedFile, maxSteps: 8, saveEvery: 2, resume: true }, { onReference });
    expect(infos[2]).toMatchObject({ numComputed: 1, numReused: 79 });
    expect(readReferenceRows(out).find((r) => r.split === 'train' && r.index === 3)!.hash).toBe(pairHash(pairsOf(rows)[3], lossOptions(0).formattingTokenIds));
  });

  it('precomputed holds one model (params + AdamW moments = 3× params); resident holds a second', async () => {
    const model = await loadPretrained(sftDir);
    const paramBytes = model.numParameters() * 4;
    model.dispose();
    const used: Record<string, number[]> = { precomputed: [], resident: [] };
    const losses: Record<string, number[]> = { precomputed: [], resident: [] };
    const numModels: Record<string, number> = {};
    for (const mode of ['precomputed', 'resident'] as const) {
      const baseline = tf.memory().numBytes;
      const { records } = await runDpo(`memory-${mode}`, { maxSteps: 4, referenceMode: mode }, {
        onStart: (info) => (numModels[mode] = info.numModelsLoaded),
        onLog: (r) => r.split === 'train' && used[mode].push(tf.memory().numBytes - baseline),
      });
      losses[mode] = records.filter((r) => r.split === 'train').map((r) => Number(r.loss));
      // Both models are released after the run. What stays (2× params) is the AdamW moments, which
      // runTrainingLoop does not dispose (src/train/loop.ts; reported); a leaked model would add 1× more.
      expect(tf.memory().numBytes - baseline).toBeLessThanOrEqual(2 * paramBytes);
    }
    // Observed: exactly 3.0 × and 4.0 × the parameter bytes between steps.
    for (const bytes of used.precomputed) expect(bytes / paramBytes).toBeCloseTo(3, 2);
    for (const bytes of used.resident) expect(bytes / paramBytes).toBeCloseTo(4, 2);
    expect(numModels).toEqual({ precomputed: 1, resident: 2 });
    // same loss at step 0 (record 1) and after 3 updates (record 4)
    expect(losses.precomputed).toHaveLength(4);
    losses.precomputed.forEach((loss, i) => expect(Math.abs(loss - losses.resident[i])).toBeLessThan(1e-5));
  });
});

describe('data', () => {
  it('uses edited as chosen and trains only on the configured strengths', async () => {
    const rows: PairRow[] = [
      { prompt: 'What does the cat do?', chosen: 'Sure! the cat reads.', rejected: 'No. the cat reads.', edited: 'Sure! the cat reads a book.' },
      { prompt: 'What does a dog do?', chosen: 'Sure! a dog sees.', rejected: 'No. a dog sees.', strength: 'slightly_better' },
      { prompt: 'What does the fox do?', chosen: 'Sure! the fox finds.', rejected: 'No. the fox finds.', strength: 'significantly_better' },
    ];
    const file = path.join(dir, 'edited.jsonl');
    writeJsonl(file, rows);
    let summary: string[] = [];
    await runDpo('edited', { train: file, eval: undefined, evalFraction: 0, maxSteps: 1 }, { onStart: (info) => (summary = info.dataSummary) });
    const stored = readReferenceRows('edited');
    const expected = pairsOf([rows[0], rows[2]]); // the slightly_better row is left out
    expect(stored.map((r) => r.hash)).toEqual(expected.map((p) => pairHash(p, lossOptions(0).formattingTokenIds)));
    expect(summary[0]).toContain('1 not of strength significantly_better/better');
  });
});

describe('bad config', () => {
  it.each([
    [{ beta: 0 }, /^dpo config: beta: /],
    [{ beta: -0.1 }, /^dpo config: beta: /],
    [{ formattingTokens: ['<|eot_id|>', '<|im_end|>'] }, /^dpo config: formattingTokens: "<\|im_end\|>" not in the tokenizer/],
    [{ lossType: 'ipo' as const, labelSmoothing: 0.1 }, /^dpo config: labelSmoothing = 0.1 is defined for the sigmoid loss only, not ipo$/],
    [{ nllCoefficient: -1 }, /^dpo config: nllCoefficient: /],
    [{ batchSize: 8, microBatchSize: 3 }, /^dpo config: microBatchSize: 3 must divide batchSize 8$/],
  ])('%j → one-line error naming the field, nothing written', async (extra, message) => {
    const out = path.join(dir, 'bad');
    const error = await dpo(config('bad', extra)).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toContain('\n');
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe('tfalign dpo', () => {
  function program(): Command {
    const p = new Command('tfalign');
    p.exitOverride();
    registerDpoCommands(p);
    return p;
  }

  it('runs from a config file with flags and --set overrides', async () => {
    const out = path.join(dir, 'cli');
    const configFile = path.join(dir, 'dpo.yaml');
    fs.writeFileSync(configFile, `model: ${sftDir}\ntrain: ${trainFile}\nout: /nowhere\nbeta: 0.5\nlr: 0.001\nwarmupRatio: 0\n`);
    const stderr = process.stderr.write;
    const [stdout, consoleError] = [console.log, console.error];
    let printed = '';
    process.stderr.write = (() => true) as typeof process.stderr.write;
    console.error = () => undefined;
    console.log = (line: string) => (printed += line);
    try {
      await program().parseAsync(['node', 'tfalign', 'dpo', '--config', configFile, '--out', out, '--nll-coefficient', '0.5', '--max-steps', '2', '--backend', 'wasm', '--set', 'logEvery=1', '--set', 'evalFraction=0.25']);
    } finally {
      process.stderr.write = stderr;
      [console.log, console.error] = [stdout, consoleError];
    }
    expect(printed).toMatch(/^dpo: saved .*\/cli \(\d+ tokens\/s, eval rewards\/accuracies [\d.]+\)$/);
    expect(fs.existsSync(path.join(out, 'config.json')) && fs.existsSync(path.join(out, 'model.safetensors'))).toBe(true); // --out is the model
    const lines = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as LogRecord);
    expect(lines.map((l) => `${l.step} ${l.split}`)).toEqual(['1 train', '2 train', '2 eval']);
    // --nll-coefficient 0.5 reached the loss: step 1 is at the reference
    expect(Math.abs(Number(lines[0].loss) - (LN2 + 0.5 * Number(lines[0].nll_loss)))).toBeLessThan(1e-5);
    // evalFraction 0.25 of 64 pairs held out → 48 + 16 reference rows
    expect(readReferenceRows('cli').filter((r) => r.split === 'eval')).toHaveLength(16);
    expect(fs.existsSync('/nowhere')).toBe(false);
  });

  it('reports a bad flag value as one line naming the field', async () => {
    const out = path.join(dir, 'cli-bad');
    await expect(program().parseAsync(['node', 'tfalign', 'dpo', '--model', sftDir, '--train', trainFile, '--out', out, '--beta', '0'])).rejects.toThrow(/^config: beta: /);
    expect(fs.existsSync(out)).toBe(false);
  });
});
