import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../../src/tokenizer/bpe-trainer.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { createModel } from '../../src/model/create.js';
import { loadPretrained, savePretrained } from '../../src/model/pretrained.js';
import { readSafetensorsHeader } from '../../src/model/safetensors.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { FullAttention } from '../../src/model/attention.js';
import { tokenizePromptResponse } from '../../src/tokenizer/chat-template.js';
import { readPreferenceData, RewardConfigSchema, trainRewardModel, type ReadPreferenceOptions, type RewardTrainingResult } from '../../src/trainers/reward.js';
import { collatePreferences, evaluateRewardModel, rewardModelLoss, rewardModelUnits, type PreferenceBatch } from '../../src/tasks/reward-model.js';
import { evaluateObjective } from '../../src/train/objective.js';
import { scoreResponses } from '../../src/inference/reward-scoring.js';
import { responseLogprobs } from '../../src/inference/token-logprobs.js';
import { registerRmCommands } from '../../src/cli/rm.js';
import type { PreferenceRow } from '../../data/rows.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-rm-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

/** xorshift32: deterministic small integers for the synthetic data. */
function makePick(seed: number): (n: number) => number {
  let state = seed >>> 0 || 1;
  return (n) => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state % n;
  };
}

const WORDS = ['apple', 'river', 'stone', 'cloud', 'green', 'music', 'paper', 'light', 'table', 'water', 'horse', 'glass'];

/**
 * Preference rows with a clear signal: both responses are four words drawn from the same list,
 * the chosen one with a polite word (thanks, please, gladly) at a random place, the rejected one
 * with a rude word (whatever, nope, boring).
 */
function preferenceRows(numRows: number, seed: number): PreferenceRow[] {
  const pick = makePick(seed);
  const words = (n: number) => Array.from({ length: n }, () => WORDS[pick(WORDS.length)]);
  const withWord = (base: string[], word: string) => {
    const out = [...base];
    out.splice(pick(out.length + 1), 0, word);
    return out.join(' ');
  };
  return Array.from({ length: numRows }, () => {
    const [a, b] = words(2);
    const polite = ['thanks', 'please', 'gladly'][pick(3)];
    const rude = ['whatever', 'nope', 'boring'][pick(3)];
    return { prompt: `Tell me about ${a} and ${b}.`, chosen: withWord(words(4), polite), rejected: withWord(words(4), rude) };
  });
}

function writeRows(file: string, rows: unknown[]): string {
  fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

function program(): Command {
  const root = new Command('tfalign');
  root.exitOverride();
  registerRmCommands(root);
  return root;
}

const softplus = (x: number) => Math.log1p(Math.exp(x));
/** −log σ(better − worse), by hand. */
const bt = (better: number, worse: number) => softplus(-(better - worse));

let baseDir: string;
let tokenizer: Tokenizer;
let trainFile: string;
let evalFile: string;
let runDir: string;
let trained: RewardTrainingResult;
let evalRows: PreferenceRow[];
const readOpts: ReadPreferenceOptions = { maxPromptLength: 64, maxLength: 64, strengths: ['significantly_better', 'better'], skipInvalid: false };

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  const tokDir = path.join(tmpRoot, 'tok');
  const corpus = preferenceRows(200, 99).flatMap((r) => [r.prompt as string, r.chosen, r.rejected]);
  const tokenizerJson = trainByteLevelBpe([corpus.join('\n')], { vocabSize: 320 });
  writeTokenizerFolder(tokDir, { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson) });
  tokenizer = await Tokenizer.fromFolder(tokDir);
  baseDir = path.join(tmpRoot, 'base');
  (await createModel({ configFile: 'configs/models/tiny.json', tokenizerDir: tokDir, out: baseDir, seed: 3 })).dispose();
  trainFile = writeRows(path.join(tmpRoot, 'train.jsonl'), preferenceRows(192, 1));
  evalRows = preferenceRows(48, 2);
  evalFile = writeRows(path.join(tmpRoot, 'eval.jsonl'), evalRows);
  runDir = path.join(tmpRoot, 'run');
  trained = await trainRewardModel({
    model: baseDir,
    train: trainFile,
    eval: evalFile,
    out: runDir,
    backend: 'wasm',
    lr: 1e-3, // a random tiny model, not a pretrained one: Llama 3's 1e-5 would take thousands of steps
    batchSize: 16,
    maxSteps: 20,
    warmupRatio: 0.1,
    maxLength: 64,
    maxPromptLength: 64,
    logEvery: 5,
    seed: 7,
  });
});

describe('trainRewardModel', () => {
  it('raises held-out accuracy from chance to well above 50%', () => {
    const before = trained.initialEval!;
    const after = trained.lastEval!;
    console.log(`rm held-out accuracy: untrained ${before.accuracy.toFixed(3)} (margin ${before.margin.toFixed(4)}), trained ${Number(after.accuracy).toFixed(3)} (margin ${Number(after.margin).toFixed(3)})`);
    expect(before.accuracy).toBeGreaterThan(0.2);
    expect(before.accuracy).toBeLessThan(0.8);
    expect(Math.abs(before.margin)).toBeLessThan(0.05); // a fresh head (std 0.02) barely separates anything
    expect(after.accuracy).toBeGreaterThanOrEqual(0.9);
    expect(after.margin).toBeGreaterThan(1);
    expect(after.num_rows).toBe(48);
    expect(trained.numSteps).toBe(20);
    expect(trained.data.train).toMatchObject({ numRows: 192, numOtherStrengths: 0, numExamples: 192, numEdited: 0, numPairs: 192 });
    // metrics.jsonl: train lines every 5 steps with accuracy and margin, then the final eval
    const lines = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    console.log(lines.map((l) => `${l.split}@${l.step}: loss ${l.loss.toFixed(3)} accuracy ${l.accuracy.toFixed(3)} margin ${l.margin.toFixed(3)}`).join('\n'));
    expect(lines.map((l) => `${l.split}@${l.step}`)).toEqual(['train@5', 'train@10', 'train@15', 'train@20', 'eval@20']);
    expect(lines[3].loss).toBeLessThan(lines[0].loss / 4);
    expect(lines[3].margin).toBeGreaterThan(lines[0].margin + 1);
    expect(lines[4]).toMatchObject({ accuracy: after.accuracy, margin: after.margin });
  });

  it('saves a LlamaForSequenceClassification whose reload scores exactly what the trainer evaluated', async () => {
    const modelDir = runDir;
    const config = JSON.parse(fs.readFileSync(path.join(modelDir, 'config.json'), 'utf8'));
    expect(config.architectures).toEqual(['LlamaForSequenceClassification']);
    expect(config.num_labels).toBe(1);
    const header = readSafetensorsHeader(path.join(modelDir, 'model.safetensors'));
    expect(header.tensors.get('score.weight')!.shape).toEqual([1, 64]);
    expect(header.tensors.has('lm_head.weight')).toBe(false);
    expect(fs.existsSync(path.join(modelDir, 'tokenizer.json'))).toBe(true);

    // the reloaded model gives the trainer's final eval numbers (same rows, same micro-batches)
    const model = await loadPretrained(modelDir);
    const { examples } = await readPreferenceData(evalFile, tokenizer, readOpts);
    const batches = [0, 16, 32].map((i) => collatePreferences(examples.slice(i, i + 16), tokenizer.padTokenId!));
    const metrics = evaluateRewardModel(model, batches, { margin: false, centeringCoefficient: 0 });
    expect(metrics.accuracy).toBe(trained.lastEval!.accuracy);
    expect(metrics.margin).toBeCloseTo(Number(trained.lastEval!.margin), 6);
    expect(metrics.loss).toBeCloseTo(Number(trained.lastEval!.loss), 6);

    // save → load round trip: identical scores
    const rows = evalRows.slice(0, 6).map((r) => ({ prompt: r.prompt, response: r.chosen }));
    const scores = scoreResponses(model, tokenizer, rows, { batchSize: 4 });
    const copyDir = path.join(tmpRoot, 'rm-copy');
    await savePretrained(model, copyDir, { tokenizerDir: modelDir });
    const reloaded = await loadPretrained(copyDir);
    expect(scoreResponses(reloaded, tokenizer, rows, { batchSize: 4 })).toEqual(scores);
    model.dispose();
    reloaded.dispose();
  });
});

describe('head: logprob (the reward read through the LM head)', () => {
  const BETA = 2;
  const NLL = 0.5;
  let lpDir: string;
  let lp: RewardTrainingResult;
  beforeAll(async () => {
    lpDir = path.join(tmpRoot, 'run-logprob');
    lp = await trainRewardModel({
      model: baseDir, train: trainFile, eval: evalFile, out: lpDir, backend: 'wasm', head: 'logprob', beta: BETA, nllCoefficient: NLL,
      lr: 1e-3, batchSize: 16, maxSteps: 20, warmupRatio: 0.1, maxLength: 64, maxPromptLength: 64, logEvery: 5, seed: 7,
    });
  });

  /** β · mean log p of each response (its end-of-turn token included) under `model`'s LM head, by `responseLogprobs`. */
  const meanLogprobRewards = (model: LlamaModel, rows: { prompt: string; response: string }[]) =>
    responseLogprobs(model, rows.map((r) => tokenizePromptResponse(tokenizer, r.prompt, r.response)), 4, tokenizer.padTokenId!).map(
      (lps) => (BETA * lps.reduce((a, b) => a + b, 0)) / lps.length,
    );

  it('saves a LlamaForCausalLM marked tfalign_reward (no score head); untrained, it ranks by the LM\'s own log-likelihood', async () => {
    const config = JSON.parse(fs.readFileSync(path.join(lpDir, 'config.json'), 'utf8'));
    expect(config.architectures).toEqual(['LlamaForCausalLM']);
    expect(config.tfalign_reward).toEqual({ head: 'logprob', beta: BETA });
    expect(readSafetensorsHeader(path.join(lpDir, 'model.safetensors')).tensors.has('score.weight')).toBe(false);
    // before training, the eval accuracy is that of the base causal LM's mean log-prob
    const base = await loadPretrained(baseDir);
    const chosen = meanLogprobRewards(base, evalRows.map((r) => ({ prompt: r.prompt as string, response: r.chosen })));
    const rejected = meanLogprobRewards(base, evalRows.map((r) => ({ prompt: r.prompt as string, response: r.rejected })));
    base.dispose();
    expect(lp.initialEval!.accuracy).toBeCloseTo(chosen.filter((c, i) => c > rejected[i]!).length / evalRows.length, 9);
    expect(lp.lastEval!.accuracy).toBeGreaterThanOrEqual(0.9); // the polite word, learned through the LM head
    const lines = fs.readFileSync(path.join(lpDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0].nll_loss).toBeGreaterThan(0);
  });

  it('scores β · mean response log-prob, whatever the batch composition and padding', async () => {
    const model = await loadPretrained(lpDir);
    expect(model.dims).toMatchObject({ isRewardModel: true, rewardHead: 'logprob', rewardBeta: BETA });
    const rows = [...evalRows.slice(0, 5).map((r) => ({ prompt: r.prompt as string, response: r.chosen })), { prompt: 'Tell me about light.', response: 'thanks' }];
    const numTensors = tf.memory().numTensors;
    const alone = scoreResponses(model, tokenizer, rows, { batchSize: 1 });
    expect(tf.memory().numTensors).toBe(numTensors);
    const batched = scoreResponses(model, tokenizer, rows, { batchSize: 4 });
    const byHand = meanLogprobRewards(model, rows);
    alone.forEach((s, i) => {
      expect(Math.abs(batched[i]! - s)).toBeLessThan(1e-5);
      expect(Math.abs(byHand[i]! - s)).toBeLessThan(1e-5);
    });
    model.dispose();
  });

  it('loss = Bradley–Terry mean over ordered pairs + α · NLL per token of each row\'s best response', async () => {
    const model = await loadPretrained(lpDir);
    const editedRow: PreferenceRow = { prompt: 'Tell me about stone and water.', edited: 'thanks thanks light', chosen: 'music thanks paper', rejected: 'whatever glass', strength: 'better' };
    const plainRow: PreferenceRow = { prompt: 'Tell me about apple and horse.', chosen: 'horse water thanks', rejected: 'cloud whatever', strength: 'better' };
    const file = writeRows(path.join(tmpRoot, 'loss-logprob.jsonl'), [editedRow, plainRow]);
    const [edited, plain] = (await readPreferenceData(file, tokenizer, readOpts)).examples;
    const [e, c, r] = scoreResponses(model, tokenizer, [editedRow.edited!, editedRow.chosen, editedRow.rejected].map((response) => ({ prompt: editedRow.prompt as string, response })), { batchSize: 3 });
    const [c2, r2] = scoreResponses(model, tokenizer, [plainRow.chosen, plainRow.rejected].map((response) => ({ prompt: plainRow.prompt as string, response })), { batchSize: 2 });
    const best = responseLogprobs(model, [{ promptIds: edited!.promptIds, responseIds: edited!.responses[0]! }, { promptIds: plain!.promptIds, responseIds: plain!.responses[0]! }], 2, tokenizer.padTokenId!);
    const numBestTokens = best[0]!.length + best[1]!.length;
    const nllPerToken = -[...best[0]!, ...best[1]!].reduce((a, b) => a + b, 0) / numBestTokens;
    const batch = collatePreferences([edited!, plain!], tokenizer.padTokenId!);
    const result = evaluateObjective({ loss: (b: PreferenceBatch) => rewardModelLoss(model, b, { margin: false, centeringCoefficient: 0, nllCoefficient: NLL }), unitsOf: rewardModelUnits }, [batch]);
    expect(result.units).toEqual({ pairs: 4, rows: 2, best_tokens: numBestTokens });
    expect(result.loss).toBeCloseTo((bt(e!, c!) + bt(e!, r!) + bt(c!, r!) + bt(c2!, r2!)) / 4 + NLL * nllPerToken, 5);
    expect(result.metrics.nll_loss).toBeCloseTo(nllPerToken, 5);
    model.dispose();
  });

  it('refuses an NLL term without an LM head, and a head other than the reward model\'s own', async () => {
    const common = { train: trainFile, out: path.join(tmpRoot, 'refused'), backend: 'wasm' as const, maxSteps: 1, maxLength: 64, maxPromptLength: 64 };
    await expect(trainRewardModel({ ...common, model: baseDir, nllCoefficient: 1 })).rejects.toThrow('rm train config: nllCoefficient: needs head: logprob');
    await expect(trainRewardModel({ ...common, model: baseDir, head: 'logprob', lora: { r: 2 } })).rejects.toThrow('rm train config: lora: a logprob reward model trains all its weights');
    await expect(trainRewardModel({ ...common, model: runDir, head: 'logprob' })).rejects.toThrow('is a reward model with a score head; head is logprob');
    await expect(trainRewardModel({ ...common, model: lpDir, head: 'score' })).rejects.toThrow('is a reward model with a logprob head; head is score');
  });
});

describe('strength filtering', () => {
  it('keeps exactly the rows of the allowed strengths (absent counts as better)', async () => {
    const base = preferenceRows(15, 5);
    const strengths = [
      ...Array(5).fill('significantly_better'),
      ...Array(4).fill('better'),
      ...Array(3).fill(undefined),
      ...Array(2).fill('slightly_better'),
      'marginally_better',
    ];
    const file = writeRows(
      path.join(tmpRoot, 'strengths.jsonl'),
      base.map((r, i) => (strengths[i] ? { ...r, strength: strengths[i] } : r)),
    );
    const llama3 = await readPreferenceData(file, tokenizer, readOpts);
    expect(llama3.summary).toMatchObject({ numRows: 15, numOtherStrengths: 3, numExamples: 12, numPairs: 12 });
    expect(llama3.summary.numByStrength).toEqual({ significantly_better: 5, better: 7 });
    expect(llama3.examples.map((e) => e.source)).toEqual(Array.from({ length: 12 }, (_, i) => `${file}:${i + 1}`));

    const weak = await readPreferenceData(file, tokenizer, { ...readOpts, strengths: ['slightly_better', 'marginally_better'] });
    expect(weak.summary).toMatchObject({ numOtherStrengths: 12, numExamples: 3 });
    expect(weak.examples.map((e) => e.source)).toEqual([13, 14, 15].map((l) => `${file}:${l}`));

    // skipInvalid: a bad row is counted, the rest kept
    fs.appendFileSync(file, '{"prompt": "Tell me about water.", "chosen": 3, "rejected": "nope"}\nnot json\n');
    await expect(readPreferenceData(file, tokenizer, readOpts)).rejects.toThrow(`${file}:16: chosen: expected string, got number`);
    const skipping = await readPreferenceData(file, tokenizer, { ...readOpts, skipInvalid: true });
    expect(skipping.summary).toMatchObject({ numRows: 15, numInvalid: 2, numExamples: 12 });

    expect(RewardConfigSchema.parse({ model: 'm', train: 't', out: 'o' }).strengths).toEqual(['significantly_better', 'better']);
    expect(RewardConfigSchema.safeParse({ model: 'm', train: 't', out: 'o', strengths: [] }).success).toBe(false);
  });
});

describe('rewardModelLoss', () => {
  let model: LlamaModel;
  beforeAll(async () => {
    model = await loadPretrained(runDir);
  });
  afterAll(() => model.dispose());

  const editedRow: PreferenceRow = { prompt: 'Tell me about stone and water.', edited: 'thanks thanks light', chosen: 'music thanks paper', rejected: 'whatever glass', strength: 'better' };
  const plainRow: PreferenceRow = { prompt: 'Tell me about apple and horse.', chosen: 'horse water thanks', rejected: 'cloud whatever', strength: 'significantly_better' };

  async function tokenized(rows: PreferenceRow[]) {
    const file = writeRows(path.join(tmpRoot, `loss-${rows.length}.jsonl`), rows);
    return (await readPreferenceData(file, tokenizer, readOpts)).examples;
  }
  const rewardsOf = (prompt: string, responses: string[]) =>
    scoreResponses(model, tokenizer, responses.map((response) => ({ prompt, response })), { batchSize: 1 });

  it('gives an edited row 3 pairs, and the loss is the mean of their Bradley–Terry terms', async () => {
    const [e, c, r] = rewardsOf(editedRow.prompt as string, [editedRow.edited!, editedRow.chosen, editedRow.rejected]);
    const [c2, r2] = rewardsOf(plainRow.prompt as string, [plainRow.chosen, plainRow.rejected]);
    const [edited, plain] = await tokenized([editedRow, plainRow]);
    expect(edited.responses.length).toBe(3);

    const single = collatePreferences([edited], tokenizer.padTokenId!);
    expect(single.numPairs).toBe(3);
    const objective = (centeringCoefficient: number) => ({ loss: (b: PreferenceBatch) => rewardModelLoss(model, b, { margin: false, centeringCoefficient }), unitsOf: rewardModelUnits });
    const one = evaluateObjective(objective(0), [single]);
    const byHand = (bt(e, c) + bt(e, r) + bt(c, r)) / 3;
    expect(one.units).toEqual({ pairs: 3, rows: 1, best_tokens: edited.responses[0]!.length });
    expect(one.loss).toBeCloseTo(byHand, 5);
    expect(one.metrics.margin).toBeCloseTo(c - r, 5);
    expect(one.metrics.accuracy).toBe(c > r ? 1 : 0);

    // with a row without an edit beside it: 3 + 1 pairs, mean over the 4
    const mixed = collatePreferences([edited, plain], tokenizer.padTokenId!);
    expect(mixed.numRanks).toBe(3);
    expect(Array.from(mixed.validMask)).toEqual([1, 1, 1, 0, 1, 1]);
    const two = evaluateObjective(objective(0.01), [mixed]);
    const center = (a: number, b: number) => 0.01 * (a + b) ** 2;
    const mixedByHand = (bt(e, c) + center(e, c) + bt(e, r) + center(e, r) + bt(c, r) + center(c, r) + bt(c2, r2) + center(c2, r2)) / 4;
    expect(two.units).toEqual({ pairs: 4, rows: 2, best_tokens: edited.responses[0]!.length + plain.responses[0]!.length });
    expect(two.loss).toBeCloseTo(mixedByHand, 5);
  });

  it('applies the Llama 2 margin per strength when asked, and refuses it with edits', async () => {
    const [c, r] = rewardsOf(editedRow.prompt as string, [editedRow.chosen, editedRow.rejected]);
    const [c2, r2] = rewardsOf(plainRow.prompt as string, [plainRow.chosen, plainRow.rejected]);
    const withoutEdit = { ...editedRow, edited: undefined };
    const rows = await tokenized([withoutEdit, plainRow]);
    const batch = collatePreferences(rows, tokenizer.padTokenId!);
    expect(batch.numRanks).toBe(2);
    const numTensors = tf.memory().numTensors;
    const out = rewardModelLoss(model, batch, { margin: true, centeringCoefficient: 0 });
    expect(tf.memory().numTensors).toBe(numTensors + 1); // only the loss sum survives
    const loss = out.sums.pairs.dataSync()[0] / 2;
    out.sums.pairs.dispose();
    expect(loss).toBeCloseTo((softplus(-(c - r - 2 / 3)) + softplus(-(c2 - r2 - 1))) / 2, 5); // better: 2/3, significantly: 1

    const withEdit = collatePreferences(await tokenized([editedRow]), tokenizer.padTokenId!);
    expect(() => rewardModelLoss(model, withEdit, { margin: true, centeringCoefficient: 0 })).toThrow('margin is defined for chosen/rejected pairs only');
  });
});

describe('scoreResponses', () => {
  it('reads the score at the last token, the end-of-turn token after the response', async () => {
    const model = await loadPretrained(runDir);
    const prompt = 'Tell me about river and cloud.';
    const response = 'cloud gladly river';
    const { promptIds, responseIds } = tokenizePromptResponse(tokenizer, prompt, response);
    const ids = [...promptIds, ...responseIds];
    expect(ids.at(-1)).toBe(tokenizer.eotTokenId);
    const byHand = tf.tidy(() => {
      const hidden = model.forward(tf.tensor2d([ids], [1, ids.length], 'int32'), new FullAttention({ batchSize: 1, seqLen: ids.length })); // [1, L, C]
      const last = tf.reshape(tf.slice(hidden, [0, ids.length - 1, 0], [1, 1, 64]), [1, 64]); // [1, C]
      return tf.matMul(last, model.params.get('score.weight')!).dataSync()[0];
    });
    const [score] = scoreResponses(model, tokenizer, [{ prompt, response }, { prompt, response: 'a much longer response about water' }], { batchSize: 2 });
    expect(Math.abs(score - byHand)).toBeLessThan(1e-5);
    model.dispose();
  });

  it('gives the same score whatever the batch composition and padding', async () => {
    const model = await loadPretrained(runDir);
    const rows = [
      ...evalRows.slice(0, 5).map((r) => ({ prompt: r.prompt, response: r.chosen })),
      { prompt: 'Tell me about light.', response: 'thanks' },
      { prompt: [{ role: 'system' as const, content: 'Be brief.' }, { role: 'user' as const, content: 'Tell me about glass and music and water and stone.' }], response: 'glass whatever music paper light table horse' },
    ];
    const numTensors = tf.memory().numTensors;
    const alone = scoreResponses(model, tokenizer, rows, { batchSize: 1 });
    for (const batchSize of [2, 3, 7]) {
      const batched = scoreResponses(model, tokenizer, rows, { batchSize });
      batched.forEach((s, i) => expect(Math.abs(s - alone[i])).toBeLessThan(1e-5));
    }
    // reversed input order: each row meets other neighbours, scores follow their rows
    const reversed = scoreResponses(model, tokenizer, [...rows].reverse(), { batchSize: 3 }).reverse();
    reversed.forEach((s, i) => expect(Math.abs(s - alone[i])).toBeLessThan(1e-5));
    // the keyword is what the trained model rewards
    expect(alone[5]).toBeGreaterThan(alone[6]);
    expect(tf.memory().numTensors).toBe(numTensors); // scoring leaves no tensor behind
    expect(() => scoreResponses(model, tokenizer, [{ prompt: 'x', response: 'water '.repeat(600) }], { batchSize: 1 })).toThrow(
      "rows[0]: response: prompt + response are",
    );
    model.dispose();
  });
});

describe('tfalign rm', () => {
  it('rm score writes the input rows, in order, with reward = scoreResponses', async () => {
    const input = writeRows(path.join(tmpRoot, 'score-in.jsonl'), [
      { id: 'a', prompt: 'Tell me about water.', response: 'water thanks', note: 'kept' },
      { prompt: [{ role: 'user', content: 'Tell me about stone.' }], response: 'whatever stone' },
      { id: 'c', prompt: 'Tell me about paper and light.', response: 'paper light glass thanks' },
    ]);
    const output = path.join(tmpRoot, 'scored', 'out.jsonl');
    const errSpy = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    await program().parseAsync(['node', 'tfalign', 'rm', 'score', '--model', runDir, '--input', input, '--output', output, '--batch-size', '2', '--backend', 'wasm']);
    errSpy.mockRestore();
    const out = fs.readFileSync(output, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const model = await loadPretrained(runDir);
    const inputRows = fs.readFileSync(input, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const expected = scoreResponses(model, tokenizer, inputRows, { batchSize: 2 });
    expect(out).toEqual(inputRows.map((r, i) => ({ ...r, reward: expected[i] })));
    expect(out[0].reward).toBeGreaterThan(out[1].reward);

    // to standard output when no --output is given
    const writes: string[] = [];
    const outSpy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => (writes.push(String(chunk)), true));
    await program().parseAsync(['node', 'tfalign', 'rm', 'score', '--model', runDir, '--input', input, '--backend', 'wasm']);
    outSpy.mockRestore();
    const printed = writes.join('').trim().split('\n').map((l) => JSON.parse(l));
    printed.forEach((row, i) => expect(Math.abs(row.reward - expected[i])).toBeLessThan(1e-5));
    model.dispose();
  });

  it('rm train runs from a config file with --set overrides and flags', async () => {
    const configFile = path.join(tmpRoot, 'rm.yaml');
    const out = path.join(tmpRoot, 'run-cli');
    fs.writeFileSync(configFile, [`model: ${baseDir}`, `train: ${trainFile}`, `out: ${out}`, 'backend: wasm', 'lr: 0.001', 'maxLength: 64', 'batchSize: 8', 'maxSteps: 50'].join('\n'));
    const logSpy = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    const errSpy = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const stderrSpy = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      await program().parseAsync(['node', 'tfalign', 'rm', 'train', '--config', configFile, '--set', 'maxSteps=2', '--set', 'evalFraction=0.25', '--batch-size', '4']);
    } finally {
      stderrSpy.mockRestore();
    }
    const errors = errSpy.mock.calls.map((c) => String(c[0]));
    const logs = logSpy.mock.calls.map((c) => String(c[0]));
    errSpy.mockRestore();
    logSpy.mockRestore();
    expect(errors).toContain('rm train: 144 training rows, 48 held out, 2 steps');
    expect(logs[0]).toMatch(/^rm train: saved .*run-cli after 2 steps, eval accuracy \d\.\d{4} → \d\.\d{4}, margin -?\d\.\d{4}$/);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).architectures).toEqual(['LlamaForSequenceClassification']);
  });

  it('rejects bad rows with FILE:LINE: field: problem and writes nothing', async () => {
    const badScore = writeRows(path.join(tmpRoot, 'bad-score.jsonl'), [
      { prompt: 'Tell me about water.', response: 'water' },
      { prompt: 'Tell me about stone.', response: 'stone' },
      { prompt: 'Tell me about glass.', response: 5 },
    ]);
    const output = path.join(tmpRoot, 'never', 'scored.jsonl');
    await expect(
      program().parseAsync(['node', 'tfalign', 'rm', 'score', '--model', runDir, '--input', badScore, '--output', output, '--backend', 'wasm']),
    ).rejects.toThrow(`${badScore}:3: response: expected string, got number`);
    expect(fs.existsSync(path.dirname(output))).toBe(false);

    const rows = preferenceRows(4, 11);
    const badTrain = writeRows(path.join(tmpRoot, 'bad-train.jsonl'), [rows[0], rows[1], { ...rows[2], rejected: rows[2].chosen }, rows[3]]);
    const out = path.join(tmpRoot, 'run-never');
    await expect(
      program().parseAsync(['node', 'tfalign', 'rm', 'train', '--model', baseDir, '--train', badTrain, '--out', out, '--max-length', '64', '--backend', 'wasm']),
    ).rejects.toThrow(`${badTrain}:3: rejected: must differ from chosen`);
    await expect(
      program().parseAsync(['node', 'tfalign', 'rm', 'train', '--model', baseDir, '--train', badTrain, '--out', out, '--backend', 'wasm']),
    ).rejects.toThrow("maxLength 1024 exceeds the model's max_position_embeddings 512");
    expect(fs.existsSync(out)).toBe(false);
  });
});
