import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { DataError } from '../../src/util/errors.js';
import { readJsonl, writeJsonlAtomic } from '../../data/jsonl.js';
import { PreferenceRowSchema, SftRowSchema, TokenRowSchema } from '../../data/rows.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tfalign-jsonl-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes `text` to a fresh file in the test folder and returns its path. */
let numFiles = 0;
async function fileWith(text: string): Promise<string> {
  numFiles += 1;
  const file = join(dir, `f${numFiles}.jsonl`);
  await writeFile(file, text, 'utf8');
  return file;
}

/** The DataError `promise` rejects with (fails the test if it resolves or throws something else). */
async function dataErrorOf(promise: Promise<unknown>): Promise<DataError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DataError);
  return err as DataError;
}

const pref = (prompt: string, extra: object = {}): string => JSON.stringify({ prompt, chosen: 'good', rejected: 'bad', ...extra });

describe('readJsonl', () => {
  it('parses a valid file with a BOM, CRLF line ends and blank lines, numbering lines as an editor does', async () => {
    const text = '\uFEFF' + pref('a') + '\r\n\r\n   \r\n' + pref('b', { strength: 'slightly_better' }) + '\r\n' + pref('c') + '\r\n\r\n';
    const file = await fileWith(text);
    const { rows, numSkipped, skippedByReason } = await readJsonl(file, PreferenceRowSchema);
    expect(rows.map((r) => r.line)).toEqual([1, 4, 5]);
    expect(rows.map((r) => r.value.prompt)).toEqual(['a', 'b', 'c']);
    expect(rows[1]!.value).toEqual({ prompt: 'b', chosen: 'good', rejected: 'bad', strength: 'slightly_better' });
    expect(numSkipped).toBe(0);
    expect(skippedByReason).toEqual({});
  });

  it('reads a file larger than one stream chunk, with CRLF split across chunk boundaries', async () => {
    // 3000 rows of ~60 bytes = ~180 kB: several 64 kB chunks; line ends land at every offset mod 64 kB.
    const lines = Array.from({ length: 3000 }, (_, i) => JSON.stringify({ prompt: `p${i}`, response: 'x'.repeat(i % 37) }));
    const file = await fileWith(lines.join('\r\n'));
    const { rows } = await readJsonl(file, SftRowSchema);
    expect(rows).toHaveLength(3000);
    expect(rows[2999]).toEqual({ line: 3000, value: { prompt: 'p2999', response: 'x'.repeat(2999 % 37) } });
    expect(rows.every((r, i) => r.line === i + 1 && 'prompt' in r.value && r.value.prompt === `p${i}`)).toBe(true);
  });

  it('names file and line for malformed JSON', async () => {
    const file = await fileWith([pref('a'), pref('b'), '{"prompt": "c", }', pref('d')].join('\n'));
    const err = await dataErrorOf(readJsonl(file, PreferenceRowSchema));
    expect(err.message.startsWith(`${file}:3: invalid JSON: `)).toBe(true);
    expect(err.message).not.toContain('\n');
    expect([err.file, err.line, err.field]).toEqual([file, 3, undefined]);
  });

  it('gives the exact line for each kind of bad row', async () => {
    const cases: [z.ZodTypeAny, string, string][] = [
      [PreferenceRowSchema, JSON.stringify({ prompt: 'p', chosen: 'c' }), 'rejected: missing (expected string)'],
      [PreferenceRowSchema, JSON.stringify({ prompt: 'p', chosen: 7, rejected: 'r' }), 'chosen: expected string, got number'],
      [
        PreferenceRowSchema,
        pref('p', { strength: 'much_better' }),
        'strength: expected one of significantly_better | better | slightly_better | marginally_better, got "much_better"',
      ],
      [PreferenceRowSchema, JSON.stringify({ prompt: 'p', chosen: 'same', rejected: 'same' }), 'rejected: must differ from chosen'],
      [TokenRowSchema, JSON.stringify({ prompt_ids: [5, 9, -1], response_ids: [3] }), 'prompt_ids.2: must be >= 0, got -1'],
      [SftRowSchema, JSON.stringify({ question: 'q', answer: 'a' }), 'expected either {prompt, response} or {messages}, got {question, answer}'],
    ];
    for (const [schema, badLine, expected] of cases) {
      const good = schema === TokenRowSchema ? JSON.stringify({ prompt_ids: [1], response_ids: [2] }) : schema === SftRowSchema ? JSON.stringify({ prompt: 'p', response: 'r' }) : pref('ok');
      const file = await fileWith([good, '', badLine, good].join('\n'));
      const err = await dataErrorOf(readJsonl(file, schema));
      expect(err.message).toBe(`${file}:3: ${expected}`);
      expect(err.line).toBe(3);
    }
  });

  it('reports a missing file as FILE: no such file, and a folder as not a file', async () => {
    const missing = join(dir, 'absent.jsonl');
    const err = await dataErrorOf(readJsonl(missing, PreferenceRowSchema, { skipInvalid: true }));
    expect(err.message).toBe(`${missing}: no such file`);
    expect(err.line).toBeUndefined();
    const folderErr = await dataErrorOf(readJsonl(dir, PreferenceRowSchema));
    expect(folderErr.message).toBe(`${dir}: is a directory, not a file`);
  });

  it('with skipInvalid, keeps the good rows and counts the bad ones by reason', async () => {
    const file = await fileWith(
      [
        pref('a'), // 1 ok
        '{oops', // 2 invalid JSON
        JSON.stringify({ prompt: 'p', chosen: 1, rejected: 'r' }), // 3 chosen type
        pref('b', { strength: 'meh' }), // 4 strength
        JSON.stringify({ prompt: 'p', chosen: 2, rejected: 'r' }), // 5 chosen type again
        'not json at all', // 6 invalid JSON
        pref('c'), // 7 ok
        JSON.stringify({ prompt: 'p', chosen: 'x', rejected: 'x' }), // 8 identical
        JSON.stringify({ prompt: [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }], chosen: 'c', rejected: 'r' }), // 9
        pref('d', { strength: 'better' }), // 10 ok
      ].join('\n'),
    );
    const result = await readJsonl(file, PreferenceRowSchema, { skipInvalid: true });
    expect(result.rows.map((r) => [r.line, r.value.prompt])).toEqual([
      [1, 'a'],
      [7, 'c'],
      [10, 'd'],
    ]);
    expect(result.numSkipped).toBe(7);
    expect(result.skippedByReason).toEqual({
      'invalid JSON': 2,
      'chosen: expected string': 2,
      'strength: expected one of significantly_better | better | slightly_better | marginally_better': 1,
      'rejected: must differ from chosen': 1,
      'prompt: must end with a user message': 1,
    });
  });

  it('groups skipped rows whose bad field differs only by array index', async () => {
    const ids = (promptIds: number[]): string => JSON.stringify({ prompt_ids: promptIds, response_ids: [1] });
    const file = await fileWith([ids([1, -1]), ids([-5]), ids([0, 1]), ids([2, 2, -7])].join('\n'));
    const result = await readJsonl(file, TokenRowSchema, { skipInvalid: true });
    expect(result.rows.map((r) => r.line)).toEqual([3]);
    expect(result.skippedByReason).toEqual({ 'prompt_ids.*: must be >= 0': 3 });
  });

  it('stops after maxRows valid rows', async () => {
    const file = await fileWith([pref('a'), '{bad', pref('b'), pref('c'), '{bad'].join('\n'));
    const result = await readJsonl(file, PreferenceRowSchema, { maxRows: 2, skipInvalid: true });
    expect(result.rows.map((r) => r.value.prompt)).toEqual(['a', 'b']);
    expect(result.numSkipped).toBe(1);
    // Without skipInvalid the bad line 5 is never reached.
    expect((await readJsonl(file, PreferenceRowSchema, { maxRows: 1 })).rows).toHaveLength(1);
    await expect(readJsonl(file, PreferenceRowSchema, { maxRows: 1.5 })).rejects.toThrow(RangeError);
  });
});

describe('writeJsonlAtomic', () => {
  /** Files in the test folder whose name starts with `prefix` (the target and any temporaries). */
  async function filesStartingWith(prefix: string): Promise<string[]> {
    return (await readdir(dir)).filter((name) => name.startsWith(prefix)).sort();
  }

  it('writes rows that readJsonl reads back, from sync and async iterables', async () => {
    const rows = [
      { prompt: 'p1', response: 'r1' },
      { prompt: 'ünïcødé \u2028 "quoted"\nnewline', response: '' },
    ];
    const file = join(dir, 'sub', 'out.jsonl');
    expect(await writeJsonlAtomic(file, rows)).toBe(2);
    expect(await readFile(file, 'utf8')).toBe(rows.map((r) => JSON.stringify(r) + '\n').join(''));
    expect((await readJsonl(file, SftRowSchema)).rows.map((r) => r.value)).toEqual(rows);

    async function* generate(): AsyncGenerator<object> {
      for (let i = 0; i < 3; i++) yield { i };
    }
    expect(await writeJsonlAtomic(file, generate())).toBe(3);
    expect(await readFile(file, 'utf8')).toBe('{"i":0}\n{"i":1}\n{"i":2}\n');
    expect(await readdir(join(dir, 'sub'))).toEqual(['out.jsonl']);
  });

  it('leaves no file at all when the iterable throws midway', async () => {
    const file = join(dir, 'midway.jsonl');
    function* failing(): Generator<object> {
      yield { a: 1 };
      yield { a: 2 };
      throw new Error('source broke');
    }
    await expect(writeJsonlAtomic(file, failing())).rejects.toThrow('source broke');
    expect(await filesStartingWith('midway.jsonl')).toEqual([]);
  });

  it('replaces an existing file only once all rows are written, and keeps it on failure', async () => {
    const file = join(dir, 'replace.jsonl');
    await writeFile(file, 'old\n', 'utf8');
    const seenDuringWrite: string[] = [];
    async function* rows(): AsyncGenerator<object> {
      yield { n: 1 };
      // A temporary file exists beside the target, and the target still holds the old content.
      seenDuringWrite.push(await readFile(file, 'utf8'));
      expect((await filesStartingWith('replace.jsonl')).length).toBe(2);
      yield { n: 2 };
    }
    expect(await writeJsonlAtomic(file, rows())).toBe(2);
    expect(seenDuringWrite).toEqual(['old\n']);
    expect(await readFile(file, 'utf8')).toBe('{"n":1}\n{"n":2}\n');
    expect(await filesStartingWith('replace.jsonl')).toEqual(['replace.jsonl']);

    async function* failing(): AsyncGenerator<object> {
      yield { n: 3 };
      throw new Error('disk on fire');
    }
    await expect(writeJsonlAtomic(file, failing())).rejects.toThrow('disk on fire');
    expect(await readFile(file, 'utf8')).toBe('{"n":1}\n{"n":2}\n');
    expect(await filesStartingWith('replace.jsonl')).toEqual(['replace.jsonl']);
  });

  it('refuses a row JSON cannot hold, naming the row, and cleans up', async () => {
    const file = join(dir, 'bigint.jsonl');
    const err = await dataErrorOf(writeJsonlAtomic(file, [{ a: 1 }, { b: 2n }]));
    expect(err.message).toBe(`${file}:2: cannot write row as JSON: Do not know how to serialize a BigInt`);
    const undefinedErr = await dataErrorOf(writeJsonlAtomic(file, [undefined]));
    expect(undefinedErr.message).toBe(`${file}:1: cannot write row as JSON: got undefined`);
    expect(await filesStartingWith('bigint.jsonl')).toEqual([]);
  });
});
