import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { STRENGTHS, type PreferenceRow, type Strength } from '../../data/rows.js';
import { registerAnnotateCommands } from '../../src/cli/annotate.js';
import {
  ANNOTATION_COLUMNS,
  buildAnnotationPairs,
  csvRecord,
  exportAnnotations,
  formatAnnotations,
  hasImportedPreferences,
  importAnnotations,
  importedPreferencesPath,
  neutralizeCsvCell,
  parseCsv,
  readImportedPreferences,
  restoreCsvCell,
  type AnnotationRow,
} from '../../src/rounds/annotations.js';
import { RunLayout } from '../../src/rounds/layout.js';
import { RunLockedError, acquireRunLock } from '../../src/store/lock.js';
import type { SampleInput } from '../../src/store/records.js';
import { RunStore, defaultStorePath } from '../../src/store/store.js';

/**
 * Round 1's rejection-sampling samples: [prompt id, prompt, [text, reward][]]. Texts hold commas,
 * quotes, LF and CRLF newlines, a leading #, an empty response; one prompt has nothing to compare.
 */
const SAMPLES: [string, string, [string, number | null][]][] = [
  ['p-comma', 'List fruits, please.', [['apples, pears', 0.5], ['say "hi"', 0.9], ['line one\nline two', 0.1], ['apples, pears', 0.2]]],
  ['p-quote', 'He said "go", then\nleft', [['"quoted"', 0.3], ['a\r\nb', 0.3], ['#hash first', -1], ['', null]]],
  ['p-same', 'same', [['x', 1], ['x', 2], ['x', 3]]],
  ['p-null', 'unscored', [['u1', null], ['u2', null]]],
  ['p-plain', 'plain', [['one', 1], ['two', 3], ['three', 2]]],
];
/** The reward model's pick per prompt: highest reward, ties to the lower index, unscored last. */
const BEST: Record<string, string> = { 'p-comma': 'say "hi"', 'p-quote': '"quoted"', 'p-null': 'u1', 'p-plain': 'two' };
const PROMPT_OF = Object.fromEntries(SAMPLES.map(([id, prompt]) => [id, prompt]));

let dir: string;
let store: RunStore;
let layout: RunLayout;

function sampleInputs(): SampleInput[] {
  const rows = SAMPLES.flatMap(([promptId, prompt, samples]) =>
    samples.map(([text, reward], i): SampleInput => ({
      roundIndex: 1, stage: 'rejection_sample', promptId, prompt, sampleIndex: i, text, reward, numTokens: 3, finishReason: 'stop', selected: text === BEST[promptId] && i === samples.findIndex(([t]) => t === text),
    })),
  );
  // Samples of another stage are not offered for labeling.
  rows.push({ roundIndex: 1, stage: 'evaluate', promptId: 'p-eval', prompt: 'held out', sampleIndex: 0, text: 'e1', reward: 1, numTokens: 1, finishReason: 'stop', selected: false });
  rows.push({ roundIndex: 1, stage: 'evaluate', promptId: 'p-eval', prompt: 'held out', sampleIndex: 1, text: 'e2', reward: 0, numTokens: 1, finishReason: 'stop', selected: false });
  return rows;
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-annotate-'));
  store = RunStore.open(defaultStorePath(dir));
  store.createRun('q', { name: 'q', rounds: 3, preferences: { source: 'file' } }, 'h');
  store.addSamples('q', sampleInputs());
  layout = new RunLayout(dir, 'q');
});
afterEach(() => {
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The data rows of an exported JSONL file (comment lines skipped). */
const jsonlData = (file: string): AnnotationRow[] =>
  fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('#')).map((l) => JSON.parse(l) as AnnotationRow);
const commentLines = (text: string) => text.split(/\r?\n/).filter((l) => l.startsWith('#'));

/** Labels: the RM's best preferred in rows 0..2 with strengths by row, row 0 edited, row 3 left empty. */
const EDIT = 'apples, "pears" and\nplums';
function label(rows: readonly AnnotationRow[]): AnnotationRow[] {
  return rows.map((row, i) => {
    if (i === 3) return row;
    const preferred = row.response_a === BEST[row.id] ? 'a' : 'b';
    return { ...row, preferred: i === 1 ? preferred.toUpperCase() : preferred, strength: i === 2 ? 'Slightly Better' : STRENGTHS[i]!, edited: i === 0 ? EDIT : '' };
  });
}

/** What the store and the preferences file must hold for the labeled rows 0..2 of `rows`. */
function expectedPreferences(rows: readonly AnnotationRow[]) {
  return rows.slice(0, 3).map((row, i) => {
    const best = BEST[row.id]!;
    const other = row.response_a === best ? row.response_b : row.response_a;
    const strength: Strength = (['significantly_better', 'better', 'slightly_better'] as const)[i]!;
    return { id: row.id, prompt: PROMPT_OF[row.id]!, chosen: best, rejected: other, strength, edited: i === 0 ? EDIT : null };
  });
}

function storedPreferences(round: number) {
  return store.preferences('q', { round }).map((p) => ({
    id: p.promptId, prompt: p.prompt, chosen: p.chosen, rejected: p.rejected, strength: p.strength, edited: p.edited, source: p.source, stage: p.stage,
  }));
}

describe('pairs for labeling', () => {
  it('pairs the best sample with a different one per prompt, seeded, in random positions', () => {
    const samples = store.samples('q', 1, { stage: 'rejection_sample' });
    const { rows, numSkippedIdentical } = buildAnnotationPairs(samples, 3);
    expect(numSkippedIdentical).toBe(1); // p-same
    expect(rows.map((r) => r.id)).toEqual(['p-comma', 'p-quote', 'p-null', 'p-plain']);
    for (const row of rows) {
      const texts = SAMPLES.find(([id]) => id === row.id)![2].map(([t]) => t);
      expect([row.response_a, row.response_b]).toContain(BEST[row.id]);
      expect(row.response_a).not.toBe(row.response_b);
      expect(texts).toContain(row.response_a);
      expect(texts).toContain(row.response_b);
      expect(row.prompt).toBe(PROMPT_OF[row.id]);
      expect([row.preferred, row.strength, row.edited]).toEqual(['', '', '']);
    }
    expect(buildAnnotationPairs(samples, 3)).toEqual({ rows, numSkippedIdentical }); // same seed, same file
    // Over seeds, the best lands in both positions and every other distinct text is drawn.
    const seeds = Array.from({ length: 24 }, (_, s) => buildAnnotationPairs(samples, s).rows);
    expect(new Set(seeds.map((r) => r[3]!.response_a === 'two'))).toEqual(new Set([true, false]));
    expect(new Set(seeds.map((r) => (r[3]!.response_a === 'two' ? r[3]!.response_b : r[3]!.response_a)))).toEqual(new Set(['one', 'three']));
    expect(new Set(seeds.map((r) => (r[0]!.response_a === 'say "hi"' ? r[0]!.response_b : r[0]!.response_a)))).toEqual(new Set(['apples, pears', 'line one\nline two']));
  });

  it('encodes CSV per RFC 4180 and parses it back with line numbers', () => {
    expect(csvRecord(['plain', 'a,b', 'say "hi"', 'x\ny', '#c', ''])).toBe('plain,"a,b","say ""hi""","x\ny","#c",');
    const records = parseCsv('a,"b,c","d ""e"""\r\n"f\ng",,\n\nlast', 'x.csv');
    expect(records).toEqual([
      { line: 1, fields: [{ value: 'a', line: 1 }, { value: 'b,c', line: 1 }, { value: 'd "e"', line: 1 }] },
      { line: 2, fields: [{ value: 'f\ng', line: 2 }, { value: '', line: 3 }, { value: '', line: 3 }] },
      { line: 5, fields: [{ value: 'last', line: 5 }] },
    ]);
    expect(() => parseCsv('a,"b\n', 'x.csv')).toThrow('x.csv:1: quoted field is never closed (a missing closing quote)');
    expect(() => parseCsv('ok\na,b"c', 'x.csv')).toThrow('x.csv:2: quote inside an unquoted field (field 2); quote the whole field and double the quote');
    expect(() => parseCsv('"a"b,c', 'x.csv')).toThrow('x.csv:1: text after a closing quote (field 1); double quotes inside a quoted field');
    expect(parseCsv('# note, with "quotes\nh1,h2\n#not a comment,x', 'x.csv', { skipLeadingComments: true }).map((r) => r.fields.map((f) => f.value))).toEqual([
      ['h1', 'h2'],
      ['#not a comment', 'x'],
    ]);
  });
});

describe('export and import round trip', () => {
  it('JSONL: exports, imports the labeled rows into the store and the round file, and is idempotent', async () => {
    const out = path.join(dir, 'labels', 'round1.jsonl');
    const exported = exportAnnotations(store, { run: 'q', round: 1, out, seed: 3 });
    expect(exported).toEqual({ file: out, format: 'jsonl', numPairs: 4, numSkippedIdentical: 1 });
    const text = fs.readFileSync(out, 'utf8');
    const comments = commentLines(text);
    expect(comments[0]).toBe('# tfalign annotations: run "q", round 1, 4 pairs of rejection-sampling samples (seed 3).');
    expect(comments.join('\n')).toContain(`# strength = how much better it is, one of: ${STRENGTHS.join(' | ')}`);
    const rows = jsonlData(out);
    expect(rows).toEqual(buildAnnotationPairs(store.samples('q', 1, { stage: 'rejection_sample' }), 3).rows);
    expect(rows.map((r) => Object.keys(r))).toEqual(rows.map(() => [...ANNOTATION_COLUMNS]));

    expect(hasImportedPreferences(layout, 2)).toBe(false);
    const labeled = path.join(dir, 'labels', 'round1-labeled.jsonl');
    fs.writeFileSync(labeled, formatAnnotations(label(rows), 'jsonl', comments));
    const result = await importAnnotations(store, layout, { round: 2, file: labeled });
    const file = path.join(dir, 'q', 'round-2', 'annotations', 'preferences.jsonl');
    expect(result).toEqual({ numImported: 3, numAlreadyImported: 0, numUnlabeled: 1, numInRound: 3, preferencesFile: file, configuredSource: 'file' });
    expect(importedPreferencesPath(layout, 2)).toBe(file);
    expect(hasImportedPreferences(layout, 2)).toBe(true);

    const expected = expectedPreferences(rows);
    expect(storedPreferences(2)).toEqual(expected.map((p) => ({ ...p, source: 'file', stage: 'collect_preferences' })));
    const fileRows: PreferenceRow[] = expected.map(({ id, prompt, chosen, rejected, strength, edited }) => ({ prompt, chosen, rejected, ...(edited === null ? {} : { edited }), strength, id }));
    expect(await readImportedPreferences(layout, 2)).toEqual(fileRows);
    expect(fs.readFileSync(file, 'utf8')).toBe(fileRows.map((r) => JSON.stringify(r) + '\n').join(''));

    // Importing the same file again records nothing new.
    expect(await importAnnotations(store, layout, { round: 2, file: labeled })).toMatchObject({ numImported: 0, numAlreadyImported: 3, numInRound: 3 });
    expect(store.preferences('q', { round: 2 })).toHaveLength(3);

    // Labeling the last row later adds just that pair.
    const more = label(rows).map((row, i) => (i === 3 ? { ...row, preferred: row.response_a === 'two' ? 'a' : 'b', strength: 'marginally_better' } : row));
    fs.writeFileSync(labeled, formatAnnotations(more, 'jsonl'));
    expect(await importAnnotations(store, layout, { round: 2, file: labeled })).toMatchObject({ numImported: 1, numAlreadyImported: 3, numUnlabeled: 0, numInRound: 4 });
    expect((await readImportedPreferences(layout, 2)).map((r) => [r.id, r.chosen, r.strength])).toEqual([
      ...fileRows.map((r) => [r.id, r.chosen, r.strength]),
      ['p-plain', 'two', 'marginally_better'],
    ]);

    // A pair relabeled differently is refused, naming its line; nothing changes.
    const flipped = more.map((row, i) => (i === 0 ? { ...row, preferred: row.preferred === 'a' ? 'b' : 'a', edited: '' } : row));
    fs.writeFileSync(labeled, formatAnnotations(flipped, 'jsonl'));
    await expect(importAnnotations(store, layout, { round: 2, file: labeled })).rejects.toThrow(
      `${labeled}:1: preferred: this pair was imported before with a different label (the other response preferred, significantly_better, edited)`,
    );
    expect(store.preferences('q', { round: 2 })).toHaveLength(4);
  });

  it('CSV: quotes commas, quotes and newlines on export and imports them unchanged', async () => {
    const out = path.join(dir, 'round1.csv');
    expect(exportAnnotations(store, { run: 'q', round: 1, out, seed: 3 })).toMatchObject({ format: 'csv', numPairs: 4 });
    const text = fs.readFileSync(out, 'utf8');
    const asJsonl = buildAnnotationPairs(store.samples('q', 1, { stage: 'rejection_sample' }), 3).rows;
    // RFC 4180: CRLF after each record; the header; quoted fields with doubled quotes.
    expect(text.split('\r\n').find((l) => !l.startsWith('#'))).toBe('id,prompt,response_a,response_b,preferred,strength,edited');
    expect(text).toContain('"List fruits, please."');
    expect(text).toContain('"say ""hi"""');
    expect(text).toContain('"He said ""go"", then\nleft"');
    expect(text.endsWith('\r\n')).toBe(true);
    const records = parseCsv(text, out, { skipLeadingComments: true });
    expect(records.slice(1).map((r) => Object.fromEntries(ANNOTATION_COLUMNS.map((c, i) => [c, r.fields[i]!.value])))).toEqual(asJsonl);

    // Labeled in a spreadsheet: a byte order mark, and the header comment kept.
    const labeled = path.join(dir, 'round1-labeled.csv');
    fs.writeFileSync(labeled, '\ufeff' + formatAnnotations(label(asJsonl), 'csv', commentLines(text)));
    const result = await importAnnotations(store, layout, { round: 1, file: labeled });
    expect(result).toMatchObject({ numImported: 3, numUnlabeled: 1, numInRound: 3 });
    expect(storedPreferences(1)).toEqual(expectedPreferences(asJsonl).map((p) => ({ ...p, source: 'file', stage: 'collect_preferences' })));
    expect((await readImportedPreferences(layout, 1)).map((r) => r.edited)).toEqual([EDIT, undefined, undefined]);
  });
});

describe('CSV formula injection (issue 11)', () => {
  /** Texts a spreadsheet would run, texts that already look escaped, and harmless ones. */
  const HOSTILE = ['=HYPERLINK("http://x","y")', '+1+2', '-2+3', '@SUM(A1)', '\tcmd', '\rcmd', "'=already quoted", "''+twice", "'plain quote", 'safe = text'];

  it('neutralises cells that start with = + - @ TAB CR, and restores exactly what was written', () => {
    for (const text of HOSTILE) {
      const cell = neutralizeCsvCell(text);
      expect(/^[=+\-@\t\r]/.test(cell), text).toBe(false);
      expect(restoreCsvCell(cell)).toBe(text);
    }
    expect(neutralizeCsvCell('=1')).toBe("'=1");
    expect(neutralizeCsvCell("'=1")).toBe("''=1");
    expect(neutralizeCsvCell("'plain quote")).toBe("'plain quote");
    expect(neutralizeCsvCell('plain')).toBe('plain');
  });

  it('exports no cell a spreadsheet would execute, and imports the labels back to the exact texts', async () => {
    store.createRun('f', { name: 'f', rounds: 1, preferences: { source: 'file' } }, 'h');
    store.addSamples('f', HOSTILE.flatMap((text, j) => [
      { roundIndex: 1, stage: 'rejection_sample' as const, promptId: `p${j}`, prompt: `=prompt ${j}`, sampleIndex: 0, text, reward: 1, numTokens: 1, finishReason: 'stop', selected: true },
      { roundIndex: 1, stage: 'rejection_sample' as const, promptId: `p${j}`, prompt: `=prompt ${j}`, sampleIndex: 1, text: `@other ${j}`, reward: 0, numTokens: 1, finishReason: 'stop', selected: false },
    ]));
    const out = path.join(dir, 'hostile.csv');
    expect(exportAnnotations(store, { run: 'f', round: 1, out }).numPairs).toBe(HOSTILE.length);
    const text = fs.readFileSync(out, 'utf8');
    const records = parseCsv(text, out, { skipLeadingComments: true });
    for (const record of records) for (const field of record.fields) expect(/^[=+\-@\t\r]/.test(field.value), JSON.stringify(field.value)).toBe(false);
    // Every row labeled "the best sample is better": the stored pairs hold the texts as sampled.
    const rows = records.slice(1).map((r) => Object.fromEntries(ANNOTATION_COLUMNS.map((c, i) => [c, r.fields[i]!.value])) as AnnotationRow);
    const labeled = rows.map((row) => ({ ...row, preferred: restoreCsvCell(row.response_a).startsWith('@other') ? 'b' : 'a', strength: 'better' }));
    const labeledFile = path.join(dir, 'hostile-labeled.csv');
    fs.writeFileSync(labeledFile, [ANNOTATION_COLUMNS.join(','), ...labeled.map((row) => ANNOTATION_COLUMNS.map((c) => row[c]).map((f) => (/[",\r\n]/.test(f) ? `"${f.replace(/"/g, '""')}"` : f)).join(','))].join('\r\n') + '\r\n');
    await importAnnotations(store, new RunLayout(dir, 'f'), { round: 1, file: labeledFile });
    const stored = store.preferences('f', { round: 1 });
    expect(stored.map((p) => p.chosen).sort()).toEqual([...HOSTILE].sort());
    expect(stored.map((p) => p.prompt).sort()).toEqual(HOSTILE.map((_, j) => `=prompt ${j}`).sort());
    expect(stored.every((p) => p.rejected.startsWith('@other '))).toBe(true);
  });

  it('refuses a labeled file that is not UTF-8, naming the line', async () => {
    const file = path.join(dir, 'latin1.csv');
    fs.writeFileSync(file, Buffer.concat([Buffer.from(`${ANNOTATION_COLUMNS.join(',')}\r\ng,caf`), Buffer.from([0xe9]), Buffer.from(',x,y,a,better,\r\n')]));
    await expect(importAnnotations(store, layout, { round: 1, file })).rejects.toThrow(`${file}:2: invalid UTF-8 (0xE9 at byte 6 of the line); save the file as UTF-8`);
    expect(store.preferences('q')).toEqual([]);
  });
});

describe('validation', () => {
  const GOOD = { id: 'g', prompt: 'P', response_a: 'x', response_b: 'y', preferred: 'a', strength: 'better', edited: '' };
  const jsonl = (bad: unknown) => `# comment\n${JSON.stringify(GOOD)}\n${typeof bad === 'string' ? bad : JSON.stringify(bad)}\n`;
  const header = ANNOTATION_COLUMNS.join(',');

  const cases: [name: string, file: string, text: string, line: string][] = [
    ['invalid JSON', 'bad.jsonl', jsonl('{"prompt": '), ':3: invalid JSON: '],
    ['not an object', 'bad.jsonl', jsonl([1]), ':3: expected an object with prompt, response_a, response_b, preferred, strength, got array'],
    ['preferred not a or b', 'bad.jsonl', jsonl({ ...GOOD, preferred: 'c' }), ':3: preferred: expected a or b, got "c"'],
    ['strength without preferred', 'bad.jsonl', jsonl({ ...GOOD, preferred: '' }), ':3: preferred: missing (label the pair: a or b)'],
    ['unknown strength', 'bad.jsonl', jsonl({ ...GOOD, strength: 'much better' }), ':3: strength: expected one of significantly_better | better | slightly_better | marginally_better, got "much better"'],
    ['preferred without strength', 'bad.jsonl', jsonl({ ...GOOD, strength: ' ' }), ':3: strength: missing (expected one of significantly_better | better | slightly_better | marginally_better)'],
    ['edited repeats the rejected response', 'bad.jsonl', jsonl({ ...GOOD, edited: 'y' }), ':3: edited: same as the rejected response (response_b); leave it empty or write an improved preferred response'],
    ['equal responses', 'bad.jsonl', jsonl({ ...GOOD, response_b: 'x' }), ':3: response_b: must differ from response_a'],
    ['empty prompt', 'bad.jsonl', jsonl({ ...GOOD, prompt: ' ' }), ':3: prompt: must not be empty'],
    ['a number for a response', 'bad.jsonl', jsonl({ ...GOOD, response_a: 7 }), ':3: response_a: expected string, got number'],
    ['a missing response', 'bad.jsonl', jsonl({ ...GOOD, response_b: undefined }), ':3: response_b: missing (expected string)'],
    ['no labels at all', 'bad.jsonl', `# c\n${JSON.stringify({ ...GOOD, preferred: '', strength: '' })}\n`, ': no labeled rows (fill in preferred and strength; unlabeled rows: 1)'],
    ['CSV without a strength column', 'bad.csv', `# c\nid,prompt,response_a,response_b,preferred\n`, ':2: header: missing column "strength" (expected id,prompt,response_a,response_b,preferred,strength,edited)'],
    ['CSV row with an unquoted comma', 'bad.csv', `${header}\ng,P,x,y,a,better,\ng,P,x, y,z,a,better,\n`, ':3: expected 7 fields as in the header, got 8 (quote fields that hold commas)'],
    ['CSV quote never closed', 'bad.csv', `${header}\ng,"P,x,y,a,better,\n`, ':2: quoted field is never closed (a missing closing quote)'],
    // The bad field is on line 4: the quoted prompt of the record starting on line 3 spans two lines.
    ['CSV field after a multi-line prompt', 'bad.csv', `${header}\ng,P,x,y,a,better,\nh,"two\nlines",x,y,x,better,\n`, ':4: preferred: expected a or b, got "x"'],
  ];
  it.each(cases)('%s: one line naming file, line and field; nothing recorded', async (_name, name, text, message) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    const escaped = (file + message).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    await expect(importAnnotations(store, layout, { round: 1, file })).rejects.toThrow(new RegExp(`^${escaped}${message.endsWith(': ') ? '' : '$'}`));
    expect(store.preferences('q')).toEqual([]);
    expect(fs.existsSync(layout.stageDir(1, 'collect_preferences'))).toBe(false);
  });

  it('refuses a missing file, a round already collected, a locked run and an unknown run', async () => {
    const missing = path.join(dir, 'missing.jsonl');
    await expect(importAnnotations(store, layout, { round: 1, file: missing })).rejects.toThrow(`${missing}: no such file`);
    const file = path.join(dir, 'ok.jsonl');
    fs.writeFileSync(file, `${JSON.stringify({ id: 'g', prompt: 'P', response_a: 'x', response_b: 'y', preferred: 'b', strength: 'better' })}\n`);

    store.startStage('q', 3, 'collect_preferences');
    await expect(importAnnotations(store, layout, { round: 3, file })).rejects.toThrow(
      'annotate import: stage collect_preferences of round 3 of run "q" is running; pairs imported now would not be used (import before the round starts)',
    );
    const lock = acquireRunLock(dir, 'q');
    try {
      await expect(importAnnotations(store, layout, { round: 1, file })).rejects.toThrow(RunLockedError);
    } finally {
      lock.release();
    }
    await expect(importAnnotations(store, new RunLayout(dir, 'nope'), { round: 1, file })).rejects.toThrow(`annotate import: run "nope" not found in ${defaultStorePath(dir)}`);
    expect(store.preferences('q')).toEqual([]);
    // And once all is well, the row goes in with b preferred.
    await importAnnotations(store, layout, { round: 1, file });
    expect(storedPreferences(1)).toEqual([{ id: 'g', prompt: 'P', chosen: 'y', rejected: 'x', strength: 'better', edited: null, source: 'file', stage: 'collect_preferences' }]);
  });

  it('refuses to export a round without samples, or an unknown format', () => {
    expect(() => exportAnnotations(store, { run: 'q', round: 2, out: path.join(dir, 'r2.jsonl') })).toThrow(
      `annotate export: run "q" round 2 has no rejection_sample samples in ${defaultStorePath(dir)} (that stage is pending)`,
    );
    expect(() => exportAnnotations(store, { run: 'q', round: 1, out: path.join(dir, 'r1.txt') })).toThrow(
      `${path.join(dir, 'r1.txt')}: cannot tell the format from the extension ".txt"; name the file .jsonl or .csv, or pass --format jsonl|csv`,
    );
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('r'))).toEqual([]);
  });
});

describe('tfalign annotate', () => {
  async function run(...args: string[]): Promise<string[]> {
    const program = new Command('tfalign');
    program.exitOverride();
    registerAnnotateCommands(program);
    const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    const err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      await program.parseAsync(['node', 'tfalign', 'annotate', ...args]);
      return [...log.mock.calls, ...err.mock.calls].map((c) => String(c[0]));
    } finally {
      log.mockRestore();
      err.mockRestore();
    }
  }

  it('exports with --format csv and imports the labeled file', async () => {
    const out = path.join(dir, 'pairs.txt');
    expect(await run('export', '--project', dir, '--run', 'q', '--round', '1', '--out', out, '--format', 'csv', '--seed', '3')).toEqual([
      `annotate export: 4 pairs from round 1 of run "q" (1 prompts skipped: all their samples are identical) -> ${out}`,
    ]);
    const records = parseCsv(fs.readFileSync(out, 'utf8'), out, { skipLeadingComments: true });
    const rows = records.slice(1).map((r) => Object.fromEntries(ANNOTATION_COLUMNS.map((c, i) => [c, r.fields[i]!.value])) as AnnotationRow);
    const labeled = path.join(dir, 'labeled.csv');
    fs.writeFileSync(labeled, formatAnnotations(label(rows), 'csv'));
    expect(await run('import', labeled, '--project', dir, '--run', 'q', '--round', '1')).toEqual([
      `annotate import: 3 pairs recorded for round 1 of run "q" (skipped: 1 unlabeled); the round has 3 imported pairs in ${importedPreferencesPath(layout, 1)}`,
    ]);
    expect(storedPreferences(1)).toHaveLength(3);
  });

  it('names the run and the database when the run is unknown', async () => {
    await expect(run('export', '--project', dir, '--run', 'nope', '--round', '1', '--out', path.join(dir, 'x.jsonl'))).rejects.toThrow(
      `annotate export: run "nope" not found in ${defaultStorePath(dir)}`,
    );
    const empty = path.join(dir, 'empty');
    fs.mkdirSync(empty);
    await expect(run('import', path.join(dir, 'x.jsonl'), '--project', empty, '--run', 'q', '--round', '1')).rejects.toThrow(
      `${defaultStorePath(empty)}: no such database`,
    );
    expect(fs.existsSync(defaultStorePath(empty))).toBe(false);
  });
});
