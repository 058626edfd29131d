/**
 * JSON Lines in and out.
 *
 * `readJsonl` streams a file line by line and validates every row against a zod schema; the first
 * bad row throws a one-line `DataError` (`data/train.jsonl:17: chosen: expected string, got number`),
 * or, with `skipInvalid`, bad rows are counted by reason and left out.
 * Text is decoded strictly: invalid UTF-8 and unpaired surrogates (`"\ud800"`) are errors naming
 * the line, never replaced with U+FFFD.
 * `writeJsonlAtomic` writes under the output policy of `atomic.ts`: a temporary file beside the
 * target renamed into place (a reader never sees half a file, a failed write leaves the old file),
 * written through a symbolic link, written directly into a FIFO or a device.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { z } from 'zod';
import { DataError, jsonErrorReason, rowErrorMap } from '../src/util/errors.js';
import { OutputFile } from '../src/util/atomic.js';
import { assertWellFormed, decodeUtf8Line } from '../src/util/utf8.js';

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
  let lineNumber = 0;
  try {
    for await (const bytes of readLines(handle)) {
      lineNumber += 1;
      const decoded = decodeUtf8Line(bytes, file, lineNumber);
      const text = lineNumber === 1 && decoded.charCodeAt(0) === 0xfeff ? decoded.slice(1) : decoded;
      if (text.trim() === '') continue;

      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch (err) {
        skip(new DataError(file, lineNumber, undefined, jsonErrorReason(err)));
        continue;
      }
      try {
        assertWellFormed(json, file, lineNumber);
      } catch (err) {
        skip(err as DataError);
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
    await handle.close().catch(() => undefined);
  }
  return result;
}

/**
 * Writes `rows` as JSON Lines to `file` under the output policy of `atomic.ts`: to a temporary
 * file in the same directory, flushed to disk and renamed over `file` only once every row is
 * written (through a symbolic link to the file it names; directly into a FIFO or a device). If the
 * iterable throws or a row cannot be serialised, the temporary file is removed and the error
 * rethrown; an existing `file` is then left as it was. Creates missing parent folders.
 *
 * @returns the number of rows written.
 */
export async function writeJsonlAtomic(file: string, rows: AsyncIterable<unknown> | Iterable<unknown>): Promise<number> {
  const out = OutputFile.open(file);
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
        out.write(chunk.join(''));
        chunk = [];
        numChunkChars = 0;
      }
    }
    out.write(chunk.join(''));
  } catch (err) {
    out.abort();
    throw err;
  }
  out.commit();
  return numRows;
}

const WRITE_CHUNK_CHARS = 1 << 20;
const READ_CHUNK_BYTES = 1 << 20;

/** The lines of a file as raw bytes (without `\n` or a `\r\n` end), read in 1 MiB chunks. */
async function* readLines(handle: FileHandle): AsyncGenerator<Buffer> {
  const buffer = Buffer.allocUnsafe(READ_CHUNK_BYTES);
  let pending: Buffer[] = [];
  const take = (tail: Buffer): Buffer => {
    const line = pending.length === 0 ? tail : Buffer.concat([...pending, tail]);
    pending = [];
    return line.length > 0 && line[line.length - 1] === 0x0d ? line.subarray(0, line.length - 1) : line;
  };
  for (;;) {
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
    if (bytesRead === 0) break;
    const chunk = buffer.subarray(0, bytesRead);
    let start = 0;
    for (let nl = chunk.indexOf(0x0a, start); nl >= 0; nl = chunk.indexOf(0x0a, start)) {
      yield take(Buffer.from(chunk.subarray(start, nl)));
      start = nl + 1;
    }
    if (start < chunk.length) pending.push(Buffer.from(chunk.subarray(start)));
  }
  if (pending.length > 0) yield take(Buffer.alloc(0));
}

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
