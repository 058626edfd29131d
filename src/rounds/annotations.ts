/**
 * Human preference annotations for a round whose `preferences.source` is `file`.
 *
 *   tfalign annotate export  → a file of response pairs for people to label (JSONL or CSV)
 *   tfalign annotate import  → the labeled pairs, validated, recorded in the store and written as
 *                              `PROJECT/RUN/round-N/annotations/preferences.jsonl` (the round copies it)
 *
 * An annotation row is `{id, prompt, response_a, response_b, preferred, strength, edited}`:
 * annotators fill `preferred` (a | b), `strength` (one of Llama 3's four levels, arXiv 2407.21783
 * §4.2.1: significantly_better, better, slightly_better, marginally_better) and optionally
 * `edited`, an improved version of the preferred response (ranked edited > chosen > rejected).
 * Rows left unlabeled are skipped, so a file can be imported while people are still labeling it.
 *
 * Export: for each prompt of the round's rejection-sampling samples, the reward model's best
 * sample and one other sample with a different text, drawn with a seeded generator per prompt.
 * Which of the two is `a` is a seeded coin flip, so that annotators cannot learn that one position
 * holds the reward model's favourite. Files start with `#` comment lines that explain the labels
 * (the importer skips them; for other readers, pandas' `comment='#'` or `grep -v '^#'`).
 *
 * CSV follows RFC 4180: CRLF record ends; fields holding a comma, a quote, CR or LF are quoted,
 * quotes doubled. The reader also takes LF line ends and a UTF-8 byte order mark (spreadsheets
 * write one). Formula injection (OWASP "CSV injection"): a spreadsheet runs a cell that starts
 * with `=`, `+`, `-`, `@`, TAB or CR as a formula, and sampled text can start with anything, so
 * such a cell is written with a leading `'` (which spreadsheets show as "text follows"), and the
 * reader removes it again; a cell that already starts with quotes before one of those characters
 * gets one more, so every text round-trips exactly (`neutralizeCsvCell` / `restoreCsvCell`).
 * Text is read strictly: invalid UTF-8 is an error naming the line.
 *
 * Import is all or nothing and idempotent: every row is checked before anything is recorded (the
 * first bad one throws `FILE:LINE: field: problem`); pairs already imported into the round with
 * the same label are skipped, and one imported before with a different label is an error. The
 * store is the record: `preferences.jsonl` is rewritten from every pair imported into the round,
 * so a second import adds to it, and rerunning an import that was killed after the store commit
 * repairs the file.
 */
import { writeFileAtomic } from '../util/atomic.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DataError, jsonErrorReason } from '../util/errors.js';
import { assertWellFormed, readUtf8File } from '../util/utf8.js';
import { readJsonl, writeJsonlAtomic } from '../../data/jsonl.js';
import { PreferenceRowSchema, STRENGTHS, type PreferenceRow, type Strength } from '../../data/rows.js';
import { Rng } from '../util/rng.js';
import { acquireRunLock } from '../store/lock.js';
import type { PreferenceInput, PreferenceRecord, SampleRecord } from '../store/records.js';
import type { RunStore } from '../store/store.js';
import type { RunLayout } from './layout.js';

/** Columns of an annotation file, in file order. */
export const ANNOTATION_COLUMNS = ['id', 'prompt', 'response_a', 'response_b', 'preferred', 'strength', 'edited'] as const;
export type AnnotationColumn = (typeof ANNOTATION_COLUMNS)[number];

/** Columns an imported file must have; `id` and `edited` may be left out by files made elsewhere. */
const REQUIRED_COLUMNS: readonly AnnotationColumn[] = ['prompt', 'response_a', 'response_b', 'preferred', 'strength'];

export const ANNOTATION_FORMATS = ['jsonl', 'csv'] as const;
export type AnnotationFormat = (typeof ANNOTATION_FORMATS)[number];

/** The stage whose preferences the imported pairs are. */
const STAGE = 'collect_preferences' as const;

/** The stage that drew the samples people label. */
const SAMPLE_STAGE = 'rejection_sample' as const;

/** One row of an annotation file, every field a string (labels empty until someone fills them). */
export type AnnotationRow = Record<AnnotationColumn, string>;

/** A labeled row, turned into a preference pair. */
export interface LabeledPair {
  /** 1-based line of the row in its file (where its record starts). */
  line: number;
  /** The row's id, or null when empty. */
  id: string | null;
  prompt: string;
  chosen: string;
  rejected: string;
  strength: Strength;
  /** An improved chosen response, or null. */
  edited: string | null;
}

// ---- where imported preferences live -------------------------------------------------------------

/** `PROJECT/RUN/round-N/annotations/preferences.jsonl` (the round copies it): the imported pairs of round N, as PreferenceRowSchema rows. */
export function importedPreferencesPath(layout: RunLayout, round: number): string {
  assertRound(round, 'importedPreferencesPath');
  // Beside the stage folder, not in it: the runner empties a stage's folder before (re)running it.
  return path.join(layout.roundDir(round), 'annotations', 'preferences.jsonl');
}

/** Whether pairs were imported for round N (its preferences file exists). */
export function hasImportedPreferences(layout: RunLayout, round: number): boolean {
  return fs.existsSync(importedPreferencesPath(layout, round));
}

/** The imported pairs of round N, validated against PreferenceRowSchema. */
export async function readImportedPreferences(layout: RunLayout, round: number): Promise<PreferenceRow[]> {
  return (await readJsonl(importedPreferencesPath(layout, round), PreferenceRowSchema)).rows.map((r) => r.value);
}

function assertRound(round: number, where: string): void {
  if (!Number.isInteger(round) || round < 1) throw new Error(`${where}: round must be an integer >= 1, got ${round}`);
}

/** The format named, or the one the file's extension says (`.csv`; `.jsonl`, `.ndjson`). */
export function annotationFormatOf(file: string, format?: string): AnnotationFormat {
  if (format !== undefined) {
    if (!(ANNOTATION_FORMATS as readonly string[]).includes(format)) throw new Error(`--format: expected jsonl or csv, got "${format}"`);
    return format as AnnotationFormat;
  }
  const ext = path.extname(file).toLowerCase();
  if (ext === '.csv') return 'csv';
  if (ext === '.jsonl' || ext === '.ndjson') return 'jsonl';
  throw new Error(`${file}: cannot tell the format from the extension "${ext}"; name the file .jsonl or .csv, or pass --format jsonl|csv`);
}

// ---- export ----------------------------------------------------------------------------------

export interface AnnotationPairs {
  rows: AnnotationRow[];
  /** Prompts whose samples all have the same text: nothing to compare. */
  numSkippedIdentical: number;
}

/**
 * One pair per prompt: the sample with the highest reward (ties and unscored samples: the lowest
 * sample index wins) and a different-text sample drawn uniformly by `Rng(seed).fork(j)` for the
 * j-th prompt; the same generator's next draw decides whether the best is `a` or `b`. Prompts keep
 * the order of their first sample.
 */
export function buildAnnotationPairs(samples: readonly SampleRecord[], seed = 0): AnnotationPairs {
  const byPrompt = new Map<string, SampleRecord[]>();
  for (const s of samples) {
    const group = byPrompt.get(s.promptId) ?? [];
    byPrompt.set(s.promptId, group);
    group.push(s);
  }
  const rng = new Rng(seed);
  const rows: AnnotationRow[] = [];
  let numSkippedIdentical = 0;
  [...byPrompt.values()].forEach((group, j) => {
    const ordered = [...group].sort((x, y) => x.sampleIndex - y.sampleIndex);
    const rewardOf = (s: SampleRecord) => (s.reward === null || Number.isNaN(s.reward) ? -Infinity : s.reward);
    const best = ordered.reduce((top, s) => (rewardOf(s) > rewardOf(top) ? s : top));
    // Distinct texts only: a text the policy sampled five times is not five times as likely.
    const others = [...new Map(ordered.filter((s) => s.text !== best.text).map((s) => [s.text, s])).values()];
    if (others.length === 0) {
      numSkippedIdentical += 1;
      return;
    }
    const promptRng = rng.fork(j);
    const other = others[promptRng.nextInt(others.length)]!;
    const bestIsA = promptRng.next() < 0.5;
    const [a, b] = bestIsA ? [best, other] : [other, best];
    rows.push({ id: best.promptId, prompt: best.prompt, response_a: a.text, response_b: b.text, preferred: '', strength: '', edited: '' });
  });
  return { rows, numSkippedIdentical };
}

/** The `#` lines at the top of an exported file: what to fill in, and how. */
export function annotationHeader(run: string, round: number, numPairs: number, seed: number): string[] {
  return [
    `# tfalign annotations: run "${run}", round ${round}, ${numPairs} pairs of rejection-sampling samples (seed ${seed}).`,
    '# For each row fill in: preferred = a or b (the better of response_a and response_b; their order is random);',
    `# strength = how much better it is, one of: ${STRENGTHS.join(' | ')}`,
    '# (Llama 3 trains its reward model and DPO on significantly_better and better pairs only);',
    '# edited (optional) = your improved version of the preferred response, ranked above it.',
    '# Rows with preferred and strength left empty are skipped. Lines starting with # are comments.',
    `# Then: tfalign annotate import --run ${run} --round N FILE`,
  ];
}

/** A file's text: the header comment lines, then the rows. */
export function formatAnnotations(rows: readonly AnnotationRow[], format: AnnotationFormat, header: readonly string[] = []): string {
  if (format === 'jsonl') {
    const lines = rows.map((row) => JSON.stringify(Object.fromEntries(ANNOTATION_COLUMNS.map((c) => [c, row[c]]))));
    return [...header, ...lines].map((l) => `${l}\n`).join('');
  }
  const records = [ANNOTATION_COLUMNS, ...rows.map((row) => ANNOTATION_COLUMNS.map((c) => row[c]))].map(csvRecord);
  return [...header, ...records].map((l) => `${l}\r\n`).join('');
}

export interface ExportAnnotationsOptions {
  run: string;
  round: number;
  out: string;
  /** Default: from the extension of `out`. */
  format?: AnnotationFormat;
  /** Seed of the second sample of each pair and of the a/b order; default 0. */
  seed?: number;
}

export interface ExportAnnotationsResult {
  file: string;
  format: AnnotationFormat;
  numPairs: number;
  numSkippedIdentical: number;
}

/** Writes the round's pairs for labeling (atomically). The store may be open read-only. */
export function exportAnnotations(store: RunStore, options: ExportAnnotationsOptions): ExportAnnotationsResult {
  const { run, round, out } = options;
  assertRound(round, 'annotate export: --round');
  const seed = options.seed ?? 0;
  const format = annotationFormatOf(out, options.format);
  requireRun(store, run, 'annotate export');
  const samples = store.samples(run, round, { stage: SAMPLE_STAGE });
  if (samples.length === 0) {
    const status = store.stageStatus(run, round, SAMPLE_STAGE);
    throw new Error(`annotate export: run "${run}" round ${round} has no ${SAMPLE_STAGE} samples in ${store.file} (that stage is ${status})`);
  }
  const { rows, numSkippedIdentical } = buildAnnotationPairs(samples, seed);
  if (rows.length === 0) throw new Error(`annotate export: run "${run}" round ${round}: every prompt's samples are identical; there is nothing to compare`);
  writeFileAtomic(out, formatAnnotations(rows, format, annotationHeader(run, round, rows.length, seed)));
  return { file: out, format, numPairs: rows.length, numSkippedIdentical };
}

function requireRun(store: RunStore, run: string, where: string) {
  const record = store.getRun(run);
  if (record === null) throw new Error(`${where}: run "${run}" not found in ${store.file}`);
  return record;
}

// ---- reading labeled files -------------------------------------------------------------------

/** A row as read from a file: each field's text (absent fields are undefined) and the line it starts on. */
interface RawRow {
  line: number;
  fields: Partial<Record<AnnotationColumn, { value: unknown; line: number }>>;
}

export interface ParsedAnnotations {
  pairs: LabeledPair[];
  /** Rows whose preferred, strength and edited are all empty. */
  numUnlabeled: number;
}

/** Reads and validates an annotation file; the first problem throws `FILE:LINE: field: problem`. */
export function readAnnotationFile(file: string, format?: AnnotationFormat): ParsedAnnotations {
  const resolved = annotationFormatOf(file, format);
  return parseAnnotations(readUtf8File(file), file, resolved);
}

/** Validates the text of an annotation file (`file` names it in errors). */
export function parseAnnotations(text: string, file: string, format: AnnotationFormat): ParsedAnnotations {
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  const rows = format === 'jsonl' ? jsonlRows(body, file) : csvRows(body, file);
  const pairs: LabeledPair[] = [];
  let numUnlabeled = 0;
  for (const row of rows) {
    const pair = labeledPair(row, file);
    if (pair === null) numUnlabeled += 1;
    else pairs.push(pair);
  }
  return { pairs, numUnlabeled };
}

function jsonlRows(text: string, file: string): RawRow[] {
  const rows: RawRow[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = i + 1;
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    let json: unknown;
    try {
      json = JSON.parse(trimmed);
    } catch (err) {
      throw new DataError(file, line, undefined, jsonErrorReason(err));
    }
    assertWellFormed(json, file, line);
    if (json === null || typeof json !== 'object' || Array.isArray(json)) {
      throw new DataError(file, line, undefined, `expected an object with ${REQUIRED_COLUMNS.join(', ')}, got ${json === null ? 'null' : Array.isArray(json) ? 'array' : typeof json}`);
    }
    const fields: RawRow['fields'] = {};
    for (const column of ANNOTATION_COLUMNS) {
      if (column in json) fields[column] = { value: (json as Record<string, unknown>)[column], line };
    }
    rows.push({ line, fields });
  });
  return rows;
}

function csvRows(text: string, file: string): RawRow[] {
  const records = parseCsv(text, file, { skipLeadingComments: true });
  const header = records[0];
  if (header === undefined) throw new DataError(file, undefined, undefined, 'no header row (expected the columns ' + ANNOTATION_COLUMNS.join(',') + ')');
  const names = header.fields.map((f) => f.value.trim());
  const index = new Map<string, number>();
  names.forEach((name, i) => {
    if (index.has(name) && (ANNOTATION_COLUMNS as readonly string[]).includes(name)) throw new DataError(file, header.line, 'header', `column "${name}" appears twice`);
    index.set(name, i);
  });
  for (const column of REQUIRED_COLUMNS) {
    if (!index.has(column)) throw new DataError(file, header.line, 'header', `missing column "${column}" (expected ${ANNOTATION_COLUMNS.join(',')})`);
  }
  return records.slice(1).map((record) => {
    if (record.fields.length !== names.length) {
      throw new DataError(file, record.line, undefined, `expected ${names.length} fields as in the header, got ${record.fields.length} (quote fields that hold commas)`);
    }
    const fields: RawRow['fields'] = {};
    for (const column of ANNOTATION_COLUMNS) {
      const i = index.get(column);
      if (i !== undefined) fields[column] = { ...record.fields[i]!, value: restoreCsvCell(record.fields[i]!.value) };
    }
    return { line: record.line, fields };
  });
}

/** The field as text: absent or null is ''; anything but a string is an error. */
function textField(row: RawRow, column: AnnotationColumn, file: string): string {
  const field = row.fields[column];
  if (field === undefined || field.value === null || field.value === undefined) return '';
  if (typeof field.value !== 'string') {
    throw new DataError(file, field.line, column, `expected string, got ${Array.isArray(field.value) ? 'array' : typeof field.value}`);
  }
  return field.value;
}

/** The line of a field for error messages (the row's line when the field is absent). */
const lineOf = (row: RawRow, column: AnnotationColumn) => row.fields[column]?.line ?? row.line;

/** Strength as people write it: any case, spaces or hyphens for underscores ("Slightly better"). */
function normalizeStrength(text: string): string {
  return text.trim().toLowerCase().replace(/[\s-]+/g, '_');
}

/** A labeled row as a pair, null for an unlabeled one; a half-labeled or inconsistent row throws. */
function labeledPair(row: RawRow, file: string): LabeledPair | null {
  const preferredText = textField(row, 'preferred', file).trim();
  const strengthText = textField(row, 'strength', file).trim();
  const editedText = textField(row, 'edited', file);
  if (preferredText === '' && strengthText === '' && editedText.trim() === '') return null;

  const fail = (column: AnnotationColumn, reason: string): never => {
    throw new DataError(file, lineOf(row, column), column, reason);
  };
  for (const column of REQUIRED_COLUMNS) if (row.fields[column] === undefined) fail(column, 'missing (expected string)');
  const prompt = textField(row, 'prompt', file);
  const responseA = textField(row, 'response_a', file);
  const responseB = textField(row, 'response_b', file);
  const id = textField(row, 'id', file).trim();
  if (prompt.trim() === '') fail('prompt', 'must not be empty');
  if (responseA === responseB) fail('response_b', 'must differ from response_a');

  const preferred = preferredText.toLowerCase();
  if (preferred === '') fail('preferred', 'missing (label the pair: a or b)');
  if (preferred !== 'a' && preferred !== 'b') fail('preferred', `expected a or b, got ${JSON.stringify(preferredText)}`);
  const strength = normalizeStrength(strengthText);
  if (strength === '') fail('strength', `missing (expected one of ${STRENGTHS.join(' | ')})`);
  if (!(STRENGTHS as readonly string[]).includes(strength)) fail('strength', `expected one of ${STRENGTHS.join(' | ')}, got ${JSON.stringify(strengthText)}`);

  const [chosen, rejected] = preferred === 'a' ? [responseA, responseB] : [responseB, responseA];
  const rejectedColumn = preferred === 'a' ? 'response_b' : 'response_a';
  // An "edit" that repeats the chosen response is no edit; one that repeats the rejected response would rank it above itself.
  const edited: string | null = editedText.trim() === '' || editedText === chosen ? null : editedText;
  if (edited === rejected) fail('edited', `same as the rejected response (${rejectedColumn}); leave it empty or write an improved preferred response`);
  return { line: row.line, id: id === '' ? null : id, prompt, chosen, rejected, strength: strength as Strength, edited };
}

// ---- import ----------------------------------------------------------------------------------

export interface ImportAnnotationsOptions {
  round: number;
  file: string;
  /** Default: from the file's extension. */
  format?: AnnotationFormat;
}

export interface ImportAnnotationsResult {
  /** Pairs recorded now. */
  numImported: number;
  /** Labeled rows skipped because the same pair with the same label was imported before (or earlier in the file). */
  numAlreadyImported: number;
  /** Rows without labels, skipped. */
  numUnlabeled: number;
  /** Pairs imported into the round in all, this import included. */
  numInRound: number;
  /** The round's imported preferences file. */
  preferencesFile: string;
  /** The run config's `preferences.source` (the pairs are used by a round only when it is `file`). */
  configuredSource: string | undefined;
}

/** Identity of a pair: the prompt and the two responses, in either order. */
function pairKey(prompt: string, x: string, y: string): string {
  return JSON.stringify([prompt, ...[x, y].sort()]);
}

const sameLabel = (p: { chosen: string; rejected: string; strength: Strength; edited: string | null }, q: typeof p) =>
  p.chosen === q.chosen && p.rejected === q.rejected && p.strength === q.strength && p.edited === q.edited;

/**
 * Validates a labeled file and records its pairs as round `round`'s preferences (`source: file`,
 * stage `collect_preferences`), then rewrites the round's preferences file from the store. Takes
 * the run's write lock, so it is refused while a run is in progress; refused too once the round's
 * collect_preferences stage has started (it would not see the new pairs).
 */
export async function importAnnotations(store: RunStore, layout: RunLayout, options: ImportAnnotationsOptions): Promise<ImportAnnotationsResult> {
  const { round, file } = options;
  const run = layout.name;
  assertRound(round, 'annotate import: --round');
  const record = requireRun(store, run, 'annotate import');
  const parsed = readAnnotationFile(file, options.format);
  if (parsed.pairs.length === 0) throw new DataError(file, undefined, undefined, `no labeled rows (fill in preferred and strength; unlabeled rows: ${parsed.numUnlabeled})`);

  const lock = acquireRunLock(layout.project, run);
  try {
    const status = store.stageStatus(run, round, STAGE);
    if (status === 'running' || status === 'done') {
      throw new Error(`annotate import: stage ${STAGE} of round ${round} of run "${run}" is ${status}; pairs imported now would not be used (import before the round starts)`);
    }
    const existing = store.preferences(run, { round }).filter((p) => p.stage === STAGE && p.source === 'file');
    const known = new Map<string, Pick<PreferenceRecord, 'chosen' | 'rejected' | 'strength' | 'edited'> & { where: string }>();
    for (const p of existing) known.set(pairKey(p.prompt, p.chosen, p.rejected), { ...p, where: 'imported before' });
    const fresh: LabeledPair[] = [];
    let numAlreadyImported = 0;
    for (const pair of parsed.pairs) {
      const key = pairKey(pair.prompt, pair.chosen, pair.rejected);
      const previous = known.get(key);
      if (previous === undefined) {
        known.set(key, { ...pair, where: `labeled on line ${pair.line}` });
        fresh.push(pair);
      } else if (sameLabel(previous, pair)) {
        numAlreadyImported += 1;
      } else {
        const label = `${previous.chosen === pair.chosen ? 'same' : 'the other'} response preferred, ${previous.strength}${previous.edited === null ? '' : ', edited'}`;
        throw new DataError(file, pair.line, 'preferred', `this pair was ${previous.where} with a different label (${label})`);
      }
    }
    const inputs: PreferenceInput[] = fresh.map((p) => ({
      roundIndex: round, stage: STAGE, promptId: p.id, prompt: p.prompt, chosen: p.chosen, rejected: p.rejected, edited: p.edited, strength: p.strength, source: 'file',
    }));
    if (inputs.length > 0) store.addPreferences(run, inputs);

    // The store is the record; the file is rewritten from it (all of the round's imported pairs).
    const all = store.preferences(run, { round }).filter((p) => p.stage === STAGE && p.source === 'file');
    const rows = all.map((p) => PreferenceRowSchema.parse(preferenceRowOf(p)));
    const preferencesFile = importedPreferencesPath(layout, round);
    await writeJsonlAtomic(preferencesFile, rows);
    const source = (record.config as { preferences?: { source?: unknown } } | null)?.preferences?.source;
    return {
      numImported: inputs.length,
      numAlreadyImported,
      numUnlabeled: parsed.numUnlabeled,
      numInRound: all.length,
      preferencesFile,
      configuredSource: typeof source === 'string' ? source : undefined,
    };
  } finally {
    lock.release();
  }
}

/** A stored pair in PreferenceRowSchema form (what the reward model and DPO stages read). */
function preferenceRowOf(p: PreferenceRecord): PreferenceRow {
  return {
    prompt: p.prompt,
    chosen: p.chosen,
    rejected: p.rejected,
    strength: p.strength,
    ...(p.edited !== null ? { edited: p.edited } : {}),
    ...(p.promptId !== null ? { id: p.promptId } : {}),
  };
}

// ---- CSV (RFC 4180) --------------------------------------------------------------------------

/** A CSV record: its fields with the line each starts on, and the line the record starts on. */
export interface CsvRecord {
  line: number;
  fields: { value: string; line: number }[];
}

/** Cells a spreadsheet would run as a formula (after any leading `'` added by `neutralizeCsvCell`). */
const FORMULA_START = /^'*[=+\-@\t\r]/;

/** A cell safe to open in a spreadsheet: a leading `'` before a formula start (see the file comment). */
export function neutralizeCsvCell(cell: string): string {
  return FORMULA_START.test(cell) ? `'${cell}` : cell;
}

/** The text `neutralizeCsvCell` was given: its added `'` removed. */
export function restoreCsvCell(cell: string): string {
  return cell.startsWith("'") && FORMULA_START.test(cell) ? cell.slice(1) : cell;
}

/**
 * One CSV record (no line end): cells neutralized against formula injection, then fields with a
 * comma, quote, CR or LF (or a leading #) quoted, quotes doubled.
 */
export function csvRecord(fields: readonly string[]): string {
  return fields
    .map(neutralizeCsvCell)
    .map((f) => (/[",\r\n]/.test(f) || f.startsWith('#') ? `"${f.replace(/"/g, '""')}"` : f))
    .join(',');
}

/**
 * Parses CSV text into records. Line ends may be CRLF, LF or CR, inside quoted fields too (kept as
 * written). Empty lines are skipped; with `skipLeadingComments`, so are lines starting with `#`
 * before the first record. Errors: a quote inside an unquoted field, text after a closing quote,
 * a quoted field never closed.
 */
export function parseCsv(text: string, file: string, options: { skipLeadingComments?: boolean } = {}): CsvRecord[] {
  const records: CsvRecord[] = [];
  let line = 1;
  let i = 0;
  const n = text.length;
  /** Consumes a line end at i (CRLF, LF or CR), counting the line; false when there is none. */
  const lineEnd = (): boolean => {
    if (text[i] === '\r') {
      i += text[i + 1] === '\n' ? 2 : 1;
    } else if (text[i] === '\n') {
      i += 1;
    } else {
      return false;
    }
    line += 1;
    return true;
  };
  while (i < n) {
    if (lineEnd()) continue; // an empty line
    if (options.skipLeadingComments === true && records.length === 0 && text[i] === '#') {
      while (i < n && text[i] !== '\n' && text[i] !== '\r') i++;
      continue;
    }
    const record: CsvRecord = { line, fields: [] };
    for (;;) {
      const fieldLine = line;
      let value = '';
      if (text[i] === '"') {
        i += 1;
        for (;;) {
          if (i >= n) throw new DataError(file, fieldLine, undefined, 'quoted field is never closed (a missing closing quote)');
          const c = text[i]!;
          if (c === '"') {
            if (text[i + 1] === '"') {
              value += '"';
              i += 2;
              continue;
            }
            i += 1;
            break;
          }
          if (c === '\r' || c === '\n') {
            const start = i;
            lineEnd();
            value += text.slice(start, i);
            continue;
          }
          value += c;
          i += 1;
        }
        if (i < n && text[i] !== ',' && text[i] !== '\r' && text[i] !== '\n') {
          throw new DataError(file, line, undefined, `text after a closing quote (field ${record.fields.length + 1}); double quotes inside a quoted field`);
        }
      } else {
        const start = i;
        while (i < n && text[i] !== ',' && text[i] !== '\r' && text[i] !== '\n') {
          if (text[i] === '"') throw new DataError(file, line, undefined, `quote inside an unquoted field (field ${record.fields.length + 1}); quote the whole field and double the quote`);
          i++;
        }
        value = text.slice(start, i);
      }
      record.fields.push({ value, line: fieldLine });
      if (text[i] === ',') {
        i += 1;
        continue;
      }
      lineEnd();
      break;
    }
    records.push(record);
  }
  return records;
}

