/**
 * Curation throughput on synthetic rows, one JSON object per line on stdout:
 *
 *   minhash   exact + MinHash/LSH near-duplicate removal (`findDuplicates`, default options:
 *             3-word shingles, 128 permutations, threshold 0.8 → 13 bands × 7 rows), rows/s
 *   semantic  semantic deduplication (`semanticDedupRows`): embedding with a random model of
 *             `--config` (mean-pooled last hidden states), k-means with ⌈√N⌉ clusters, greedy
 *             selection; rows/s overall and the seconds of each phase
 *
 * Rows: `--rows` (10,000) {prompt, response} rows drawn from 96 common words (prompts 6–12
 * words, responses 16–32), of which 10% are exact copies of an earlier row with case and
 * punctuation changed and 10% near copies with one response word replaced, so both kinds of
 * duplicates are found and the verification path runs. The tokenizer is a byte-level BPE of 512
 * ids trained on the same words (about 1.7 tokens per word; ~58 tokens per row with BOS).
 *
 *   node bin/run-ts.js bench/bench-curation.ts                 # 10,000 rows, tiny.json, wasm
 *   node bin/run-ts.js bench/bench-curation.ts --rows 2000 --only minhash
 */
import * as os from 'node:os';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { initBackend, type BackendName } from '../src/backend.js';
import { readJsonFile } from '../src/model/checkpoint-io.js';
import { parseLlamaConfig } from '../src/model/config.js';
import { initModel } from '../src/model/weights.js';
import { Rng } from '../src/util/rng.js';
import { Tokenizer } from '../src/tokenizer/tokenizer.js';
import { buildTokenizerConfig, trainByteLevelBpe } from '../src/tokenizer/bpe-trainer.js';
import { findDuplicates } from '../data/curation/dedup.js';
import { dedupText, rowText, type CurationRow } from '../data/curation/row-text.js';
import { centerEmbeddings, embedTexts } from '../data/curation/embed.js';
import { semanticDedup } from '../data/curation/semantic-dedup.js';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '10000' },
    only: { type: 'string', default: 'minhash,semantic' },
    config: { type: 'string', default: 'configs/models/tiny.json' },
    backend: { type: 'string', default: 'wasm' },
    'batch-size': { type: 'string', default: '64' },
    'max-tokens': { type: 'string', default: '64' },
    seed: { type: 'string', default: '0' },
  },
});

const WORDS = (
  'the a river water stone cloud bread music paper light tree fish bird star rain snow leaf rock milk book door lamp ship road ' +
  'hill lake frog bear wolf duck rose corn salt gold ring bell kite drum hat cup pen box key map egg owl fox bee ant pig cow ' +
  'hen fig jam red blue green big small old new fast slow warm cold is are was has can will and or but with from into over ' +
  'under near far how why what when where who tell me about explain show'
).split(' ');

/** Synthetic rows with 10% exact and 10% near duplicates (module doc). */
function syntheticRows(numRows: number, seed: number): CurationRow[] {
  const rng = new Rng(seed);
  const sentence = (min: number, max: number) => Array.from({ length: min + rng.nextInt(max - min + 1) }, () => WORDS[rng.nextInt(WORDS.length)]!);
  const rows: CurationRow[] = [];
  for (let i = 0; i < numRows; i++) {
    const kind = i < 10 ? 0 : rng.nextInt(10);
    if (kind === 0 && i >= 10) {
      const source = rows[rng.nextInt(rows.length)] as { prompt: string; response: string };
      rows.push({ prompt: source.prompt.toUpperCase(), response: `${source.response}!` });
    } else if (kind === 1 && i >= 10) {
      const source = rows[rng.nextInt(rows.length)] as { prompt: string; response: string };
      const words = source.response.split(' ');
      words[rng.nextInt(words.length)] = 'changed';
      rows.push({ prompt: source.prompt, response: words.join(' ') });
    } else {
      rows.push({ prompt: `${sentence(6, 12).join(' ')}?`, response: `${sentence(16, 32).join(' ')}.` });
    }
  }
  return rows;
}

function machine(): Record<string, string | number> {
  return { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.cpus().length, node: process.version };
}

const numRows = Number(args.rows);
const seed = Number(args.seed);
const only = new Set(args.only.split(','));
const rows = syntheticRows(numRows, seed);

if (only.has('minhash')) {
  const texts = rows.map((row) => dedupText(row, 'row'));
  findDuplicates(texts.slice(0, 200), { near: true }); // warm-up (JIT)
  const start = performance.now();
  const result = findDuplicates(texts, { near: true, seed });
  const seconds = (performance.now() - start) / 1000;
  console.log(
    JSON.stringify({
      bench: 'curation', case: 'minhash', rows: numRows, removed_exact: result.numExact, removed_near: result.numNear, kept: result.keptIndices.length,
      bands: result.lsh?.numBands, rows_per_band: result.lsh?.rowsPerBand, candidate_pairs: result.numCandidatePairs,
      seconds: Number(seconds.toFixed(3)), rows_per_s: Math.round(numRows / seconds), ...machine(),
    }),
  );
}

if (only.has('semantic')) {
  const backend = await initBackend(args.backend as BackendName, { quiet: true });
  const tokenizerJson = trainByteLevelBpe([Array.from({ length: 300 }, (_, i) => WORDS.slice(i % 50, (i % 50) + 12).join(' ')).join('\n')], { vocabSize: 512 });
  const tokenizer = Tokenizer.fromJson(tokenizerJson, buildTokenizerConfig(tokenizerJson));
  const raw = readJsonFile(args.config) as Record<string, unknown>;
  const config = parseLlamaConfig({ ...raw, vocab_size: tokenizer.vocabSize, bos_token_id: tokenizer.bosTokenId ?? null }, args.config);
  const model = initModel(config, seed);
  const texts = rows.map(rowText);
  const embedOptions = { batchSize: Number(args['batch-size']), maxTokens: Number(args['max-tokens']) };
  embedTexts(model, tokenizer, texts.slice(0, embedOptions.batchSize), embedOptions); // warm-up
  const numTokens = texts.reduce((n, text) => n + Math.min(embedOptions.maxTokens, tokenizer.encode(text).length + 1), 0);
  const start = performance.now();
  const embeddings = embedTexts(model, tokenizer, texts, embedOptions);
  centerEmbeddings(embeddings);
  const embedSeconds = (performance.now() - start) / 1000;
  const clusterStart = performance.now();
  const result = semanticDedup(embeddings, { similarity: 0.95, seed });
  const clusterSeconds = (performance.now() - clusterStart) / 1000;
  const seconds = embedSeconds + clusterSeconds;
  model.dispose();
  console.log(
    JSON.stringify({
      bench: 'curation', case: 'semantic', backend: backend.name, model: args.config, rows: numRows, tokens: numTokens, clusters: result.numClusters,
      kmeans_iterations: result.numIterations, removed: result.duplicates.length, kept: result.keptIndices.length,
      embed_s: Number(embedSeconds.toFixed(2)), kmeans_greedy_s: Number(clusterSeconds.toFixed(2)), seconds: Number(seconds.toFixed(2)),
      rows_per_s: Math.round(numRows / seconds), embed_tokens_per_s: Math.round(numTokens / embedSeconds), num_tensors_after: tf.memory().numTensors, ...machine(),
    }),
  );
}
