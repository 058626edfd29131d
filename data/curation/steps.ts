/**
 * The curation steps on files, as `tfalign data clean|dedup|score` and the rounds run them:
 * read a JSONL file of SFT or preference rows (`CurationRowSchema`, extra fields kept), curate,
 * write the kept rows atomically, write removed rows to an optional rejects file as
 * `{line, rule, detail, row}` (`line`: 1-based line in the input), and return a `CurationReport`
 * — rows in, removed per rule, rows out — that the caller prints (`formatReport`) or records.
 *
 * Models are loaded by the caller and passed in; nothing here touches a backend or a store.
 */
import { readJsonl, writeJsonlAtomic, type JsonlRow } from '../jsonl.js';
import type { LlamaModel } from '../../src/model/llama.js';
import type { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { CurationRowSchema, dedupText, SCORE_FIELDS, numericField, type CurationRow } from './row-text.js';
import { cleanRows, type CleaningOptionsInput } from './rules.js';
import { findDuplicates, parseDedupOptions, type DedupOptionsInput } from './dedup.js';
import { parseSemanticOptions, semanticDedupRows, type SemanticDedupOptionsInput } from './semantic-dedup.js';
import { judgeQualityScores, rewardQualityScores, selectByQuality, type QualityOptionsInput, type ResponseScorer } from './quality.js';
import { difficultyScores } from './difficulty.js';
import type { Topic } from './topics.js';

/** What one step did: the numbers a summary table shows and a run records. */
export interface CurationReport {
  step: 'clean' | 'dedup' | 'score';
  input: string;
  out: string;
  rejects: string | undefined;
  /** Valid rows read. */
  numIn: number;
  /** Malformed rows left out (with `skipInvalid`; otherwise the first one is an error). */
  numInvalid: number;
  /** Rows removed per rule, every rule of the step present, in the order the rules run. */
  removed: Record<string, number>;
  /** Rows written to `out`. */
  numOut: number;
  /** Further facts worth a line (LSH cut, reward bar, k). */
  notes: string[];
  /** The topic mix of the kept rows, when tagging ran. */
  topics?: Topic[];
}

/** A row of a rejects file. */
export interface RejectRecord {
  line: number;
  rule: string;
  detail: string;
  row: unknown;
}

/** Rows read from a curation input file, with their lines. */
export interface CurationInput {
  file: string;
  rows: JsonlRow<CurationRow>[];
  /** Malformed rows left out (with `skipInvalid`). */
  numInvalid: number;
}

/**
 * Reads and validates a curation input (`CurationRowSchema`); the first malformed row is a
 * `DataError` (`FILE:LINE: field: problem`) unless `skipInvalid`. A caller that loads models reads
 * first, so that a bad row fails before any model is loaded, and passes the result as `input`.
 */
export async function readCurationRows(file: string, skipInvalid = false): Promise<CurationInput> {
  const { rows, numSkipped } = await readJsonl(file, CurationRowSchema, { skipInvalid });
  return { file, rows, numInvalid: numSkipped };
}

interface FileOptions {
  /** The input file, or its rows already read with `readCurationRows`. */
  input: string | CurationInput;
  out: string;
  /** Where removed rows go as `{line, rule, detail, row}`; none when undefined. */
  rejects?: string;
  /** Skip (and count) malformed rows instead of stopping at the first. */
  skipInvalid?: boolean;
}

async function readRows(opts: FileOptions): Promise<CurationInput> {
  return typeof opts.input === 'string' ? readCurationRows(opts.input, opts.skipInvalid ?? false) : opts.input;
}

async function writeOutputs(opts: FileOptions, kept: unknown[], rejects: RejectRecord[]): Promise<void> {
  await writeJsonlAtomic(opts.out, kept);
  if (opts.rejects !== undefined) await writeJsonlAtomic(opts.rejects, rejects.sort((a, b) => a.line - b.line));
}

// ---- clean -------------------------------------------------------------------------------------

export interface CleanFileOptions extends FileOptions {
  /** Rule thresholds (`CleaningOptionsSchema`). */
  options?: CleaningOptionsInput;
  /** Token counter for `tooLong.maxTokens`. */
  countTokens?: (text: string) => number;
}

/** `data clean`: the cleaning rules over a file. */
export async function cleanFile(opts: CleanFileOptions): Promise<CurationReport> {
  const { file: input, rows, numInvalid } = await readRows(opts);
  const result = cleanRows(
    rows.map((r) => r.value),
    opts.options ?? {},
    { countTokens: opts.countTokens },
  );
  const rejects = result.rejected.map((r) => ({ line: rows[r.index]!.line, rule: r.rule, detail: r.detail, row: r.row }));
  await writeOutputs(opts, result.kept, rejects);
  return {
    step: 'clean', input, out: opts.out, rejects: opts.rejects, numIn: rows.length, numInvalid,
    removed: { ...result.countsByRule }, numOut: result.kept.length, notes: [],
  };
}

// ---- dedup -------------------------------------------------------------------------------------

export interface DedupFileOptions extends FileOptions {
  /** Exact and MinHash options (`DedupOptionsSchema`). */
  options?: DedupOptionsInput;
  /** Semantic deduplication after exact/near, with this embedding model. */
  semantic?: { model: LlamaModel; tokenizer: Tokenizer; options?: SemanticDedupOptionsInput };
  /** Progress of the embedding pass: rows embedded so far, of all. */
  onEmbedBatch?: (numDone: number, numTotal: number) => void;
}

/**
 * `data dedup`: exact (and with `near`, MinHash) duplicates first — cheap, and they would only
 * waste embedding time — then, with `semantic`, the greedy semantic selection on what is left.
 * Rows carrying a `quality` score keep their best-scored copy; otherwise the first occurrence.
 * With semantic topic tagging, kept rows gain `topic` (cluster index) and `topic_label`.
 */
export async function dedupFile(opts: DedupFileOptions): Promise<CurationReport> {
  const { file: input, rows, numInvalid } = await readRows(opts);
  const options = parseDedupOptions(opts.options ?? {});
  const values = rows.map((r) => r.value);
  const notes: string[] = [];
  const removed: Record<string, number> = { exact: 0, near: 0 };
  const rejects: RejectRecord[] = [];
  const quality = values.map((row) => numericField(row, SCORE_FIELDS.quality));
  const hasQuality = quality.some((q) => q !== undefined);

  // 1) exact and near duplicates
  const lexical = findDuplicates(values.map((row) => dedupText(row, options.on)), options, hasQuality ? quality : undefined);
  removed.exact = lexical.numExact;
  removed.near = lexical.numNear;
  if (lexical.lsh) notes.push(`minhash: ${options.numPermutations} permutations, ${lexical.lsh.numBands} bands × ${lexical.lsh.rowsPerBand} rows, ${lexical.numCandidatePairs} candidate pairs verified`);
  for (const d of lexical.duplicates) {
    const similarity = d.kind === 'near' ? ` (Jaccard ${d.similarity.toFixed(3)})` : '';
    rejects.push({ line: rows[d.index]!.line, rule: d.kind, detail: `${d.kind} duplicate of line ${rows[d.duplicateOf]!.line}${similarity}`, row: values[d.index] });
  }
  const keptIndices = lexical.keptIndices;
  let outRows: unknown[] = keptIndices.map((i) => values[i]);

  // 2) semantic duplicates among the survivors
  let topics: Topic[] | undefined;
  if (opts.semantic) {
    const semanticOptions = parseSemanticOptions(opts.semantic.options ?? {});
    const survivors = keptIndices.map((i) => values[i]!);
    const semantic = semanticDedupRows(opts.semantic.model, opts.semantic.tokenizer, survivors, semanticOptions, {
      onBatch: opts.onEmbedBatch,
      describeRow: (k) => `${input}:${rows[keptIndices[k]!]!.line}`,
    });
    removed.semantic = semantic.duplicates.length;
    notes.push(`semantic: ${semantic.numClusters} clusters (k-means ${semantic.numIterations} iterations${semantic.converged ? '' : ', not converged'}), cosine threshold ${semanticOptions.similarity}`);
    for (const d of semantic.duplicates) {
      const index = keptIndices[d.index]!;
      const of = keptIndices[d.duplicateOf]!;
      rejects.push({ line: rows[index]!.line, rule: 'semantic', detail: `semantic duplicate of line ${rows[of]!.line} (cosine ${d.similarity.toFixed(4)}, cluster ${d.cluster})`, row: values[index] });
    }
    const tags = semantic.topics;
    outRows = semantic.keptIndices.map((k, position) => {
      const row = survivors[k]!;
      if (tags === undefined) return row;
      const topic = tags.assignments[position]!;
      return { ...row, topic, topic_label: tags.topics[topic]!.label.join(' ') };
    });
    topics = tags?.topics;
  }
  await writeOutputs(opts, outRows, rejects);
  return { step: 'dedup', input, out: opts.out, rejects: opts.rejects, numIn: rows.length, numInvalid, removed, numOut: outRows.length, notes, topics };
}

// ---- score -------------------------------------------------------------------------------------

export interface ScoreFileOptions extends FileOptions {
  /** The reward model that scores quality, with its tokenizer. */
  rewardModel: { model: LlamaModel; tokenizer: Tokenizer };
  /** Selection (`QualityOptionsSchema`): top fraction, judge threshold. */
  options?: QualityOptionsInput;
  /** Optional second scorer, OR-ed with the reward top fraction. */
  judge?: ResponseScorer;
  /** Optional policy whose mean token NLL is stored as `difficulty`. */
  difficultyModel?: { model: LlamaModel; tokenizer: Tokenizer };
  /** Sequences per forward pass. Default 8. */
  batchSize?: number;
  /** Chat template on or off; default: when the tokenizer has one. */
  chat?: boolean;
}

/**
 * `data score`: adds `quality` (reward), `judge_score` (with a judge) and `difficulty` (with a
 * policy) to every row, keeps the rows `selectByQuality` selects, and writes the others, scores
 * included, to the rejects file under the rule `quality`.
 */
export async function scoreFile(opts: ScoreFileOptions): Promise<CurationReport> {
  const { file: input, rows, numInvalid } = await readRows(opts);
  const values = rows.map((r) => r.value);
  const scoring = { batchSize: opts.batchSize ?? 8, chat: opts.chat, describeRow: (i: number) => `${input}:${rows[i]!.line}` };
  if (!opts.rewardModel.model.dims.isRewardModel) throw new Error('data score: the reward model is a causal LM; give a reward model (rm train\'s OUT)');
  const rewards = rewardQualityScores(opts.rewardModel.model, opts.rewardModel.tokenizer, values, scoring);
  const judgeScores = opts.judge ? judgeQualityScores(opts.judge, values, scoring.describeRow) : undefined;
  const difficulty = opts.difficultyModel ? difficultyScores(opts.difficultyModel.model, opts.difficultyModel.tokenizer, values, scoring) : undefined;
  const selection = selectByQuality(rewards, opts.options ?? {}, judgeScores);
  const scored = values.map((row, i) => ({
    ...row,
    [SCORE_FIELDS.quality]: rewards[i],
    ...(judgeScores ? { [SCORE_FIELDS.judge]: judgeScores[i] } : {}),
    ...(difficulty ? { [SCORE_FIELDS.difficulty]: difficulty[i] } : {}),
  }));
  const kept = selection.keptIndices.map((i) => scored[i]);
  const rejects: RejectRecord[] = [];
  const judgePart = judgeScores ? ` and judge score below its threshold` : '';
  scored.forEach((row, i) => {
    if (selection.keep[i]) return;
    rejects.push({ line: rows[i]!.line, rule: 'quality', detail: `reward ${rewards[i]!.toFixed(4)} below the top-fraction bar ${selection.rewardBar.toFixed(4)}${judgePart}`, row });
  });
  await writeOutputs(opts, kept, rejects);
  const notes = [`reward bar ${Number.isFinite(selection.rewardBar) ? selection.rewardBar.toFixed(4) : 'none'}: ${selection.numKeptByReward} rows kept by reward`];
  if (judgeScores) notes.push(`${selection.numKeptByJudgeOnly} more kept by the judge`);
  if (difficulty && difficulty.length > 0) notes.push(`difficulty (mean token NLL): mean ${(difficulty.reduce((a, b) => a + b, 0) / difficulty.length).toFixed(4)}`);
  return {
    step: 'score', input, out: opts.out, rejects: opts.rejects, numIn: rows.length, numInvalid,
    removed: { quality: selection.numRemoved }, numOut: kept.length, notes,
  };
}

// ---- summary -----------------------------------------------------------------------------------

/**
 * The summary table of a report, e.g.
 *
 *     data clean: in.jsonl → out.jsonl
 *       rows in              1000
 *       − empty                 3
 *       − truncated            12
 *       rows out              985
 *
 * then the notes, the rejects file and, after tagging, the topic mix (rows and label per topic).
 */
export function formatReport(report: CurationReport): string {
  const entries: [string, number][] = [['rows in', report.numIn]];
  if (report.numInvalid > 0) entries.push(['(malformed, skipped)', report.numInvalid]);
  for (const [rule, count] of Object.entries(report.removed)) entries.push([`− ${rule}`, count]);
  entries.push(['rows out', report.numOut]);
  const labelWidth = Math.max(...entries.map(([label]) => label.length));
  const numberWidth = Math.max(...entries.map(([, n]) => String(n).length));
  const lines = [`data ${report.step}: ${report.input} → ${report.out}`];
  for (const [label, n] of entries) lines.push(`  ${label.padEnd(labelWidth)}  ${String(n).padStart(numberWidth)}`);
  for (const note of report.notes) lines.push(`  ${note}`);
  if (report.rejects !== undefined) lines.push(`  rejects: ${report.rejects}`);
  if (report.topics !== undefined) {
    const rowsWidth = Math.max(4, ...report.topics.map((t) => String(t.numRows).length));
    lines.push(`  topic  ${'rows'.padStart(rowsWidth)}  label`);
    for (const topic of report.topics) {
      lines.push(`  ${String(topic.cluster).padStart(5)}  ${String(topic.numRows).padStart(rowsWidth)}  ${topic.label.join(' ') || '(no distinctive words)'}`);
    }
  }
  return lines.join('\n');
}
