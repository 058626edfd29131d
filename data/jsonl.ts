/**
 * JSON Lines in and out.
 *
 * `readJsonl` streams a file line by line and validates every row against a zod schema; the first
 * bad row throws a one-line `DataError` (`data/train.jsonl:17: chosen: expected string, got number`),
 * or, with `skipInvalid`, bad rows are counted by reason and left out.
 * `writeJsonlAtomic` writes to a temporary file beside the target and renames it into place, so a
 * reader never sees half a file and a failed write leaves the old file (or none) untouched.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import type { z } from 'zod';
import { DataError, rowErrorMap } from './errors.js';

export interface ReadJsonlOptions {
  /** Skip rows that are not valid JSON or fail the schema, counting them by reason, instead of throwing. Default false. */
  skipInvalid?: boolean;
  /** Stop after this many valid rows (a non-negative integer). Default: read the whole file. */
  maxRows?: number;
}

/** One valid row and the 1-based line it came from (for later error messages). */
export interface JsonlRow<T> {
  line: number;
  value: T;
}

export interface ReadJsonlResult<T> {
  /** The valid rows in file order. */
  rows: JsonlRow<T>[];
  /** Rows left out because of `skipInvalid` (0 otherwise). */
  numSkipped: number;
  /**
   * Skipped rows per reason. The key is the field with array indices as `*` and the reason without
   * the offending value, so that rows failing the same way share a key: `invalid JSON`,
   * `chosen: expected string`, `prompt_ids.*: must be >= 0`, `rejected: must differ from chosen`.
   */
  skippedByReason: Record<string, number>;
}

/**
 * Reads a JSONL file and validates each non-blank line with `schema`.
 *
 * Lines are numbered from 1 as an editor shows them (blank lines count but are ignored); a UTF-8
 * BOM on the first line is dropped and CRLF line ends are accepted. The file is streamed: only the
 * current line and the parsed rows are held in memory.
 *
 * @throws DataError `FILE: no such file` when the file does not exist, and, unless `skipInvalid`,
 *   `FILE:LINE: invalid JSON: …` or `FILE:LINE: FIELD: REASON` for the first bad row.
 */
export async function readJsonl<T>(
  file: string,
  schema: z.ZodType<T, z.ZodTypeDef, unknown>,
  opts: ReadJsonlOptions = {},
): Promise<ReadJsonlResult<T>> {
  const { skipInvalid = false, maxRows = Infinity } = opts;
  if (maxRows !== Infinity && !(Number.isInteger(maxRows) && maxRows >= 0)) {
    throw new RangeError(`readJsonl: maxRows must be a non-negative integer, got ${maxRows}`);
  }
  const result: ReadJsonlResult<T> = { rows: [], numSkipped: 0, skippedByReason: {} };
  if (maxRows === 0) return result;

  const skip = (error: DataError): void => {
    if (!skipInvalid) throw error;
    const key = skipReasonKey(error);
    result.numSkipped += 1;
    result.skippedByReason[key] = (result.skippedByReason[key] ?? 0) + 1;
  };

  const handle = await openForReading(file);
  // The stream owns the handle from here on: it closes it when it ends or is destroyed.
  const stream = handle.createReadStream({ encoding: 'utf8' });
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  let lineNumber = 0;
  try {
    for await (const rawLine of lines) {
      lineNumber += 1;
      const text = lineNumber === 1 && rawLine.charCodeAt(0) === 0xfeff ? rawLine.slice(1) : rawLine;
      if (text.trim() === '') continue;

      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch (err) {
        skip(new DataError(file, lineNumber, undefined, `invalid JSON: ${(err as Error).message}`));
        continue;
      }
      const parsed = schema.safeParse(json, { errorMap: rowErrorMap });
      if (!parsed.success) {
        skip(DataError.fromZodIssue(file, lineNumber, parsed.error.issues[0]!));
        continue;
      }
      result.rows.push({ line: lineNumber, value: parsed.data });
      if (result.rows.length >= maxRows) break;
    }
  } catch (err) {
    if (err instanceof DataError) throw err;
    throw fileError(file, err);
  } finally {
    lines.close();
    stream.destroy();
  }
  return result;
}

/**
 * Writes `rows` as JSON Lines to `file`, atomically: the rows go to `FILE.tmp-<pid>-<random>` in
 * the same directory, which is flushed to disk and renamed over `file` only once every row is
 * written. If the iterable throws or a row cannot be serialised, the temporary file is removed and
 * the error rethrown; an existing `file` is then left as it was. Creates missing parent folders.
 *
 * @returns the number of rows written.
 */
export async function writeJsonlAtomic(file: string, rows: AsyncIterable<unknown> | Iterable<unknown>): Promise<number> {
  await mkdir(dirname(file), { recursive: true });
  const tmpFile = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const handle = await open(tmpFile, 'wx');
  let isClosed = false;
  let numRows = 0;
  try {
    // Rows are joined into chunks of about WRITE_CHUNK_CHARS so that small rows cost one write per chunk.
    let chunk: string[] = [];
    let numChunkChars = 0;
    for await (const row of rows) {
      const text = serialiseRow(file, numRows + 1, row);
      chunk.push(text, '\n');
      numChunkChars += text.length + 1;
      numRows += 1;
      if (numChunkChars >= WRITE_CHUNK_CHARS) {
        await writeAll(handle, chunk.join(''));
        chunk = [];
        numChunkChars = 0;
      }
    }
    await writeAll(handle, chunk.join(''));
    await handle.sync();
    await handle.close();
    isClosed = true;
    await rename(tmpFile, file);
  } catch (err) {
    if (!isClosed) await handle.close().catch(() => undefined);
    await rm(tmpFile, { force: true });
    throw err;
  }
  return numRows;
}

const WRITE_CHUNK_CHARS = 1 << 20;

/** Opens `file` for reading, turning "does not exist" and friends into a one-line DataError. */
async function openForReading(file: string): Promise<FileHandle> {
  try {
    return await open(file, 'r');
  } catch (err) {
    throw fileError(file, err);
  }
}

/** A file-level DataError (`FILE: no such file`) for an fs error; other errors pass through. */
function fileError(file: string, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') return new DataError(file, undefined, undefined, 'no such file');
  if (code === 'EISDIR') return new DataError(file, undefined, undefined, 'is a directory, not a file');
  if (code === 'EACCES' || code === 'EPERM') return new DataError(file, undefined, undefined, 'permission denied');
  return err;
}

/** One row as a JSON line; a value JSON cannot hold (undefined, a function, a BigInt, a cycle) is a DataError. */
function serialiseRow(file: string, lineNumber: number, row: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(row);
  } catch (err) {
    throw new DataError(file, lineNumber, undefined, `cannot write row as JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  if (text === undefined) throw new DataError(file, lineNumber, undefined, `cannot write row as JSON: got ${typeof row}`);
  return text;
}

/** Writes the whole string at the handle's current position (a single write may be partial). */
async function writeAll(handle: FileHandle, text: string): Promise<void> {
  const bytes = Buffer.from(text, 'utf8');
  let offset = 0;
  while (offset < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, offset, bytes.length - offset);
    offset += bytesWritten;
  }
}

/** The `skippedByReason` key: field with indices as `*`, reason without its trailing `, got …`. */
function skipReasonKey(error: DataError): string {
  if (error.reason.startsWith('invalid JSON')) return 'invalid JSON';
  const reason = error.reason.replace(/, got .*$/, '');
  if (error.field === undefined) return reason;
  const field = error.field
    .split('.')
    .map((part) => (/^\d+$/.test(part) ? '*' : part))
    .join('.');
  return `${field}: ${reason}`;
}
