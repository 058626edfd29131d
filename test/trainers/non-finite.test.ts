/**
 * NaN/Inf produced by a model (issue 11, item 11): loaded weights are checked at load (see
 * test/cli/hostile-inputs.test.ts); a model whose outputs still overflow — here one whose weights
 * were set to Infinity in memory — makes `rm score` and the DPO reference pass stop with an error
 * naming the row, instead of writing `"reward": null` or a reference file of nulls.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { parseLlamaConfig } from '../../src/model/config.js';
import { initModel, toRewardModel } from '../../src/model/weights.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { buildTokenizerConfig, trainByteLevelBpe } from '../../src/tokenizer/bpe-trainer.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { scoreResponses } from '../../src/inference/reward-scoring.js';
import { loadOrComputeReferenceLogps } from '../../src/trainers/reference-logps.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-nonfinite-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

let tok: Tokenizer;
let causal: LlamaModel;

/** Sets every value of the final norm to `value` (finite weights elsewhere). */
function poison(model: LlamaModel, value: number): void {
  const norm = model.params.get('model.norm.weight')!;
  norm.assign(tf.fill(norm.shape, value));
}

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
  const json = trainByteLevelBpe(['the cat sat on the mat. the dog ran.'.repeat(20)], { vocabSize: 280 });
  tok = Tokenizer.fromJson(json, buildTokenizerConfig(json));
  const config = parseLlamaConfig({ vocab_size: tok.vocabSize, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 64, tie_word_embeddings: true });
  causal = initModel(config, 1);
});

describe('non-finite outputs', () => {
  it('rm score: a reward that is not finite is an error naming the row', () => {
    const rm = toRewardModel(causal, 2);
    const rows = [{ prompt: 'the cat', response: ' sat.' }, { prompt: 'the dog', response: ' ran.' }];
    expect(scoreResponses(rm, tok, rows, { batchSize: 2 }).every(Number.isFinite)).toBe(true);
    poison(rm, Number.POSITIVE_INFINITY);
    expect(() => scoreResponses(rm, tok, rows, { batchSize: 2, describeRow: (i) => `scores.jsonl:${i + 1}` })).toThrow(
      /^scores\.jsonl:1: reward is (NaN|-?Infinity): the reward model's output is not finite/,
    );
    rm.dispose();
  });

  it('dpo reference log-probs: a value that is not finite stops before the file is written', async () => {
    const file = path.join(root, 'reference_logps.jsonl');
    const pairs = [{ promptIds: tok.encode('the cat'), chosenIds: tok.encode(' sat.'), rejectedIds: tok.encode(' ran.') }];
    poison(causal, Number.POSITIVE_INFINITY);
    await expect(loadOrComputeReferenceLogps({ file, model: causal, train: pairs, eval: [], reuse: false, batchSize: 2, padId: 0, formattingTokenIds: [] })).rejects.toThrow(
      `dpo: reference log-prob of train pair 1 is NaN: the reference model's output is not finite; nothing was written to ${file}`,
    );
    expect(fs.existsSync(file)).toBe(false);
  });
});
