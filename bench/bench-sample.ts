/**
 * Rejection-sampling throughput and KV memory: `paged` (prompt prefilled once, shared by its K
 * samples, continuous batching, cascade attention) against the baselines `dense` (Hugging Face's
 * `generate(num_return_sequences=K)`: the prompt repeated K times, a contiguous per-sample cache)
 * and `none` (the whole sequence recomputed at every step).
 *
 * `configs/models/small.json`, random weights, wasm backend, random prompt tokens, temperature 1,
 * no stop tokens (every sample runs to max new tokens, so all modes do the same work).
 *   case 256:  8 prompts × 256 tokens, K = 16, 64 new tokens
 *   case 1024: 8 prompts × 1,024 tokens, K = 16, 64 new tokens
 * `none` costs O(length) forwards per token: it runs on a reduced workload (see `--none-*`, and
 * the `note` field), so its tokens/s is indicative only (shorter sequences flatter it).
 *
 * One JSON object per line on stdout, per case and mode: tokens/s, wall seconds, tokens per
 * CPU-second of this process (the figure to compare on a shared machine), peak KV bytes,
 * the ideal KV bytes for the same running sequences (each prompt once plus each sample's own
 * stored tokens), and ratios against `dense`. Issue targets: paged peak KV within 10% of ideal;
 * paged ≥ 2× dense tokens/s at 256-token prompts, more at 1,024.
 *
 *   npm run bench:sample                       # both cases, paged / dense / none
 *   npm run bench:sample -- --quick            # a small check in seconds
 *   npm run bench:sample -- --case 256 --modes paged,dense
 */
import { parseArgs } from 'node:util';
import { initBackend } from '../src/backend.js';
import { readJsonFile } from '../src/model/checkpoint-io.js';
import { parseLlamaConfig } from '../src/model/config.js';
import { initModel } from '../src/model/weights.js';
import { Rng } from '../src/util/rng.js';
import { KV_CACHE_KINDS, SamplingEngine, type KVCacheKind, type SamplingRequest, type SamplingStats } from '../samplers/engine.js';

interface BenchCase {
  name: string;
  numPrompts: number;
  promptLength: number;
  numSamples: number;
  maxNewTokens: number;
  /** Samples per prompt for `dense` when K would not fit (see the 1024 case). */
  denseNumSamples?: number;
}

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    case: { type: 'string', default: 'all' },
    modes: { type: 'string', default: KV_CACHE_KINDS.join(',') },
    config: { type: 'string', default: 'configs/models/small.json' },
    backend: { type: 'string', default: 'wasm' },
    'none-prompts': { type: 'string', default: '1' },
    'none-max-new-tokens': { type: 'string', default: '8' },
    'skip-none-at': { type: 'string', default: '1024' },
  },
});

const cases: BenchCase[] = args.quick
  ? [
      { name: '64', numPrompts: 2, promptLength: 64, numSamples: 4, maxNewTokens: 8 },
      { name: '256', numPrompts: 2, promptLength: 256, numSamples: 4, maxNewTokens: 8 },
    ]
  : [
      { name: '256', numPrompts: 8, promptLength: 256, numSamples: 16, maxNewTokens: 64 },
      // dense at K = 16 crashes the wasm backend here ("memory access out of bounds"): its prefill
      // attention over 16 × 1,024 tokens holds [16, 2, 3·1024, 1024] float scores several times
      // over (~1.6 GB at once). It runs at K = 8 instead; its time is mostly prefill, which scales
      // with K, so its tokens/s stands in for K = 16.
      { name: '1024', numPrompts: 8, promptLength: 1024, numSamples: 16, maxNewTokens: 64, denseNumSamples: 8 },
    ];
const selectedCases = args.case === 'all' ? cases : cases.filter((c) => c.name === args.case);
if (selectedCases.length === 0) throw new Error(`--case: expected all or one of ${cases.map((c) => c.name).join(', ')}, got "${args.case}"`);
const modes = args.modes.split(',').map((m) => m.trim()) as KVCacheKind[];
for (const mode of modes) if (!KV_CACHE_KINDS.includes(mode)) throw new Error(`--modes: unknown mode "${mode}" (paged, dense, none)`);
const nonePrompts = Number(args['none-prompts']);
const noneMaxNewTokens = Number(args['none-max-new-tokens']);
const skipNoneAt = new Set(args['skip-none-at'].split(',').filter((s) => s !== ''));

const backend = await initBackend(args.backend as 'wasm', { quiet: true });
const config = parseLlamaConfig(readJsonFile(args.config), args.config);
const model = initModel(config, 0);

function randomPrompts(benchCase: BenchCase, seed: number): SamplingRequest[] {
  const rng = new Rng(seed);
  return Array.from({ length: benchCase.numPrompts }, (_, p) => ({
    promptIds: Array.from({ length: benchCase.promptLength }, () => rng.nextInt(config.vocab_size)),
    numSamples: benchCase.numSamples,
    seed: 1000 * p,
  }));
}

function report(benchCase: BenchCase, mode: KVCacheKind, stats: SamplingStats, extra: Record<string, unknown>, dense?: SamplingStats): Record<string, unknown> {
  const row: Record<string, unknown> = {
    bench: 'sample',
    case: benchCase.name,
    mode,
    backend: backend.name,
    model: args.config,
    prompts: stats.numRequests,
    prompt_tokens: benchCase.promptLength,
    k: benchCase.numSamples,
    generated_tokens: stats.numGeneratedTokens,
    prefill_tokens: stats.numPrefillTokens,
    wall_s: Number(stats.wallSeconds.toFixed(2)),
    tokens_per_s: Number(stats.tokensPerSecond.toFixed(1)),
    peak_seqs: stats.peakNumSeqs,
    peak_kv_bytes: stats.peakKvBytes,
    ideal_kv_bytes: stats.idealKvBytes,
    peak_kv_over_ideal: mode === 'none' ? null : Number((stats.peakKvBytes / stats.idealKvBytes).toFixed(3)),
    peak_kv_bytes_per_seq: stats.peakNumSeqs > 0 ? Math.round(stats.peakKvBytes / stats.peakNumSeqs) : null,
    forward_passes: stats.numForwardPasses,
    waits: stats.numWaits,
    ...extra,
  };
  if (dense) {
    row.tokens_per_s_vs_dense = Number((stats.tokensPerSecond / dense.tokensPerSecond).toFixed(2));
    if (mode !== 'none') {
      row.peak_kv_vs_dense = Number((stats.peakKvBytes / dense.peakKvBytes).toFixed(3));
      // Per running sequence: dense decodes one prompt's K samples at a time, paged several prompts.
      row.peak_kv_per_seq_vs_dense = Number((stats.peakKvBytes / stats.peakNumSeqs / (dense.peakKvBytes / dense.peakNumSeqs)).toFixed(3));
    }
  }
  return row;
}

for (const benchCase of selectedCases) {
  const requests = randomPrompts(benchCase, 7);
  const decoding = { temperature: 1, maxNewTokens: benchCase.maxNewTokens, stopTokenIds: [] };
  // dense first: the other modes' ratios refer to it.
  const ordered = [...modes].sort((a, b) => (a === 'dense' ? -1 : b === 'dense' ? 1 : 0));
  let dense: SamplingStats | undefined;
  for (const mode of ordered) {
    if (mode === 'none' && skipNoneAt.has(benchCase.name)) {
      console.log(JSON.stringify({ bench: 'sample', case: benchCase.name, mode, skipped: true, note: `none recomputes ${benchCase.promptLength}+ tokens × K per generated token; skipped at this length (--skip-none-at)` }));
      continue;
    }
    const reduced = mode === 'none';
    const denseNumSamples = mode === 'dense' ? benchCase.denseNumSamples : undefined;
    let runRequests = reduced ? requests.slice(0, nonePrompts) : requests;
    if (denseNumSamples !== undefined) runRequests = runRequests.map((r) => ({ ...r, numSamples: denseNumSamples }));
    const runDecoding = reduced ? { ...decoding, maxNewTokens: Math.min(decoding.maxNewTokens, noneMaxNewTokens) } : decoding;
    const engine = new SamplingEngine({ model, kvCache: mode });
    const cpuBefore = process.cpuUsage();
    const { stats } = engine.generate(runRequests, runDecoding);
    const cpu = process.cpuUsage(cpuBefore);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    // CPU time of this process (all its threads) during the call: comparable on a shared machine where wall time is not.
    const extra: Record<string, unknown> = { max_new_tokens: runDecoding.maxNewTokens, cpu_s: Number(cpuSeconds.toFixed(2)), tokens_per_cpu_s: Number((stats.numGeneratedTokens / cpuSeconds).toFixed(1)) };
    if (mode === 'paged') Object.assign(extra, { num_blocks: stats.numBlocks, block_size: engine.options.blockSize, max_num_seqs: engine.options.maxNumSeqs });
    if (reduced) extra.note = `reduced workload: ${runRequests.length} prompt(s), ${runDecoding.maxNewTokens} new tokens (tokens/s not comparable: shorter sequences)`;
    if (denseNumSamples !== undefined) {
      extra.k = denseNumSamples;
      extra.note = `K = ${denseNumSamples}: K = ${benchCase.numSamples} exceeds the wasm heap in the prefill attention (K·H·P² float scores per layer)`;
    }
    const row = report(benchCase, mode, stats, extra, mode === 'dense' ? undefined : dense);
    console.log(JSON.stringify(row));
    if (mode === 'dense') dense = stats;
  }
}
model.dispose();
