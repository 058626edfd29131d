/**
 * Strict text input: every reader of user files (JSONL, CSV, configs, corpora) decodes UTF-8 with
 * these, so that invalid bytes and unpaired surrogates are errors naming the file and line instead
 * of being replaced with U+FFFD (which would train a model on, or hash, text nobody wrote).
 */
import * as fs from 'node:fs';
import { DataError } from './errors.js';

/** A high surrogate not followed by a low one, or a low one not preceded by a high one (code units, no `u` flag). */
const UNPAIRED_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** True when `text` holds no unpaired surrogate (`String.prototype.isWellFormed`, ES2024). */
export function isWellFormedText(text: string): boolean {
  return !UNPAIRED_SURROGATE.test(text);
}

const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Byte offset of the first invalid UTF-8 sequence in `bytes` (overlong forms, surrogate code
 * points, values above U+10FFFF and truncated sequences included), or -1 when it is valid.
 */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    // [length, lowest second byte, highest second byte] per lead byte (RFC 3629 table 3-7)
    let length: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) length = 2;
    else if (b >= 0xe0 && b <= 0xef) {
      length = 3;
      if (b === 0xe0) lo = 0xa0;
      if (b === 0xed) hi = 0x9f; // U+D800..U+DFFF are not characters
    } else if (b >= 0xf0 && b <= 0xf4) {
      length = 4;
      if (b === 0xf0) lo = 0x90;
      if (b === 0xf4) hi = 0x8f;
    } else return i;
    if (i + length > bytes.length) return i;
    if (bytes[i + 1]! < lo || bytes[i + 1]! > hi) return i;
    for (let k = 2; k < length; k++) if ((bytes[i + k]! & 0xc0) !== 0x80) return i;
    i += length;
  }
  return -1;
}

/** `invalid UTF-8 (0xFF at byte 12 of the line); save the file as UTF-8`. */
function invalidUtf8Reason(bytes: Uint8Array, at: number, lineStart: number): string {
  const hex = `0x${bytes[at]!.toString(16).toUpperCase().padStart(2, '0')}`;
  return `invalid UTF-8 (${hex} at byte ${at - lineStart + 1} of the line); save the file as UTF-8`;
}

/** The text of one line's bytes; invalid UTF-8 throws `FILE:LINE: invalid UTF-8 (…)`. */
export function decodeUtf8Line(bytes: Uint8Array, file: string, line: number): string {
  try {
    return decoder.decode(bytes);
  } catch {
    throw new DataError(file, line, undefined, invalidUtf8Reason(bytes, firstInvalidUtf8(bytes), 0));
  }
}

/** Reads a whole text file strictly (a UTF-8 BOM is dropped); errors name the file and the line. */
export function readUtf8File(file: string): string {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new DataError(file, undefined, undefined, 'no such file');
    if (code === 'EISDIR') throw new DataError(file, undefined, undefined, 'is a directory, not a file');
    if (code === 'EACCES' || code === 'EPERM') throw new DataError(file, undefined, undefined, 'permission denied');
    throw err;
  }
  const at = firstInvalidUtf8(bytes);
  if (at >= 0) {
    let line = 1;
    let lineStart = 0;
    for (let i = 0; i < at; i++) {
      if (bytes[i] === 0x0a) {
        line++;
        lineStart = i + 1;
      }
    }
    throw new DataError(file, line, undefined, invalidUtf8Reason(bytes, at, lineStart));
  }
  const text = decoder.decode(bytes);
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/**
 * The dotted path of the first string (or object key) in a parsed JSON value that holds an
 * unpaired surrogate (`"\ud800"` escapes parse into one), or undefined. The root is `''`.
 */
export function findUnpairedSurrogate(value: unknown, at = ''): string | undefined {
  if (typeof value === 'string') return isWellFormedText(value) ? undefined : at;
  if (value === null || typeof value !== 'object') return undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findUnpairedSurrogate(value[i], at === '' ? String(i) : `${at}.${i}`);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  for (const [key, item] of Object.entries(value)) {
    const keyPath = at === '' ? key : `${at}.${key}`;
    if (!isWellFormedText(key)) return keyPath;
    const found = findUnpairedSurrogate(item, keyPath);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** Throws `FILE:LINE: FIELD: unpaired surrogate …` when a parsed row holds one. */
export function assertWellFormed(value: unknown, file: string, line: number | undefined): void {
  const field = findUnpairedSurrogate(value);
  if (field !== undefined) throw new DataError(file, line, field === '' ? undefined : field, 'unpaired UTF-16 surrogate (a lone \\ud800–\\udfff escape is not text)');
}
