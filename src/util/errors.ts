/**
 * One-line errors for bad input rows: `data/train.jsonl:17: chosen: expected string, got number`.
 *
 * Every reader of user data throws a `DataError` whose message names the file, the 1-based line
 * and the field (dotted zod path, array indices included: `prompt.0.role`), so that the CLI can
 * print it as is and exit non-zero. Zod's own messages ("Expected string, received number",
 * "Invalid input") are rewritten here into that register; a union names its shapes instead of
 * saying "Invalid input".
 *
 * Two ways in, which give the same text:
 * - `rowErrorMap`, passed to `safeParse(value, { errorMap: rowErrorMap })` (what `readJsonl` does),
 *   also sees the offending value and can say `got -3`;
 * - `formatZodIssue` works from an issue alone (e.g. one from a plain `schema.parse`), rewriting zod's
 *   default messages and picking the branch of a union that the row evidently meant.
 */
import { z } from 'zod';

/** A bad input file or row. `message` is the whole line to print: `FILE:LINE: FIELD: REASON`. */
export class DataError extends Error {
  override readonly name = 'DataError';

  /**
   * @param file   the path as the user gave it
   * @param line   1-based line number; undefined when the file as a whole is at fault
   * @param field  dotted path inside the row (`prompt.0.role`); undefined for the whole row
   * @param reason what is wrong, e.g. `expected string, got number`
   */
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    readonly field: string | undefined,
    readonly reason: string,
  ) {
    super(formatDataLine(file, line, field, reason));
  }

  /** The error for one zod issue found in `file` at `line` (see `formatZodIssue`). */
  static fromZodIssue(file: string, line: number | undefined, issue: z.ZodIssue): DataError {
    const { field, reason } = explainIssue(issue);
    return new DataError(file, line, field, reason);
  }
}

/** `FILE:LINE: FIELD: REASON`, leaving out the parts that are undefined. */
export function formatDataLine(file: string, line: number | undefined, field: string | undefined, reason: string): string {
  const where = line === undefined ? file : `${file}:${line}`;
  return field === undefined || field === '' ? `${where}: ${reason}` : `${where}: ${field}: ${reason}`;
}

/**
 * The one-line message for a zod issue: `FILE:LINE: path.joined.with.dots: message`.
 * For a union that the row matches in no branch, the branch the row evidently meant is reported
 * (see `pickUnionBranch`); when none stands out, the union's own message is used.
 */
export function formatZodIssue(file: string, line: number | undefined, issue: z.ZodIssue): string {
  const { field, reason } = explainIssue(issue);
  return formatDataLine(file, line, field, reason);
}

/** Field (dotted path, undefined for the row itself) and readable reason for one issue. */
export function explainIssue(issue: z.ZodIssue): { field: string | undefined; reason: string } {
  if (issue.code === z.ZodIssueCode.invalid_union) {
    const branchIssue = pickUnionBranch(issue);
    if (branchIssue !== undefined) return explainIssue(branchIssue);
  }
  const field = issue.path.length > 0 ? issue.path.join('.') : undefined;
  const reason = hasDefaultMessage(issue) ? describeIssue(issue, NO_DATA) : issue.message;
  return { field, reason };
}

/**
 * The first issue of the one union branch the value was evidently meant for, or undefined.
 *
 * A branch is ruled out when the value has the wrong type at the union's own path (a number where
 * both a string and an array would do), or when one of the branch's top-level fields is missing
 * (`{prompt, response}` when the row has no `response`). If exactly one branch survives, its error
 * is the useful one: `{messages: [...]}` without an assistant turn gets "must contain at least one
 * assistant message", not "expected either {prompt, response} or {messages}".
 */
export function pickUnionBranch(issue: z.ZodInvalidUnionIssue): z.ZodIssue | undefined {
  const depth = issue.path.length;
  const isRuledOut = (branchIssue: z.ZodIssue): boolean => {
    if (branchIssue.code === z.ZodIssueCode.invalid_type) {
      if (branchIssue.path.length === depth) return true;
      return branchIssue.path.length === depth + 1 && branchIssue.received === z.ZodParsedType.undefined;
    }
    if (branchIssue.code === z.ZodIssueCode.invalid_literal) return branchIssue.path.length <= depth + 1;
    return false;
  };
  const survivors = issue.unionErrors.filter((branch) => branch.issues.length > 0 && !branch.issues.some(isRuledOut));
  return survivors.length === 1 ? survivors[0]!.issues[0] : undefined;
}

/**
 * A contextual error map: readable messages for zod's built-in checks, with the offending value
 * where it helps (`must be >= 0, got -3`). Messages set by a schema (`.refine(…, { message })`,
 * a union's `unionErrorMap`) are kept.
 */
export const rowErrorMap: z.ZodErrorMap = (issue, ctx) => {
  const zodDefault = z.defaultErrorMap(issue, { data: ctx.data, defaultError: '' }).message;
  if (ctx.defaultError !== zodDefault) return { message: ctx.defaultError };
  return { message: describeIssue(issue, ctx.data) };
};

/**
 * A schema-bound error map for a union: `expected EXPECTED, got …` instead of "Invalid input",
 * e.g. `unionErrorMap('a string or a list of messages')` gives
 * `expected a string or a list of messages, got number` and, for an absent field,
 * `missing (expected a string or a list of messages)`. Other issues pass through unchanged.
 */
export function unionErrorMap(expected: string): z.ZodErrorMap {
  return (issue, ctx) => {
    if (issue.code !== z.ZodIssueCode.invalid_union) return { message: ctx.defaultError };
    if (ctx.data === undefined) return { message: `missing (expected ${expected})` };
    return { message: `expected ${expected}, got ${describeValue(ctx.data)}` };
  };
}

/**
 * A short description of a JSON value's kind for messages: `number`, `string`, `null`, `array`,
 * and for objects the keys they have, `{prompt, chosen}` (the first six), since "got object" says
 * nothing when the row is an object of the wrong shape.
 */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'object') {
    const keys = Object.keys(value);
    const shown = keys.slice(0, 6).join(', ');
    return keys.length > 6 ? `{${shown}, …}` : `{${shown}}`;
  }
  return typeof value;
}

/** Marks "the offending value is not known" (`formatZodIssue` has only the issue). */
const NO_DATA: unique symbol = Symbol('no data');

/** True when the issue still carries zod's built-in English message. */
function hasDefaultMessage(issue: z.ZodIssue): boolean {
  return issue.message === z.defaultErrorMap(issue, { data: undefined, defaultError: '' }).message;
}

/** `, got X` when the offending value is known, else nothing. */
function gotSuffix(data: unknown, show: (value: unknown) => string): string {
  return data === NO_DATA ? '' : `, got ${show(data)}`;
}

/** Readable text for an issue of one of zod's built-in checks; `data` is the value, or NO_DATA. */
function describeIssue(issue: z.ZodIssueOptionalMessage, data: unknown): string {
  switch (issue.code) {
    case z.ZodIssueCode.invalid_type:
      if (issue.received === z.ZodParsedType.undefined) return `missing (expected ${issue.expected})`;
      return `expected ${issue.expected}, got ${issue.received}`;
    case z.ZodIssueCode.invalid_literal:
      return `expected ${JSON.stringify(issue.expected)}${gotSuffix(data, (v) => JSON.stringify(v))}`;
    case z.ZodIssueCode.invalid_enum_value:
      return `expected one of ${issue.options.join(' | ')}, got ${JSON.stringify(issue.received)}`;
    case z.ZodIssueCode.unrecognized_keys:
      return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
    case z.ZodIssueCode.invalid_union:
      return describeUnion(issue, data);
    case z.ZodIssueCode.too_small:
      return describeBound(issue.type, 'at least', Number(issue.minimum), issue.inclusive, data);
    case z.ZodIssueCode.too_big:
      return describeBound(issue.type, 'at most', Number(issue.maximum), issue.inclusive, data);
    default:
      return z.defaultErrorMap(issue, { data: data === NO_DATA ? undefined : data, defaultError: '' }).message;
  }
}

/**
 * A union that no branch accepts. When every branch failed on the value's type at the union's own
 * path, the expected types are listed (`expected string or array, got number`); otherwise the value
 * matches none of the shapes.
 */
function describeUnion(issue: z.ZodInvalidUnionIssue, data: unknown): string {
  const depth = issue.path.length;
  const expectedTypes: string[] = [];
  let received: string | undefined;
  for (const branch of issue.unionErrors) {
    const typeIssue = branch.issues.find((i) => i.code === z.ZodIssueCode.invalid_type && i.path.length === depth);
    if (typeIssue === undefined || typeIssue.code !== z.ZodIssueCode.invalid_type) {
      return `matches none of the allowed shapes${gotSuffix(data, describeValue)}`;
    }
    expectedTypes.push(typeIssue.expected);
    received = typeIssue.received;
  }
  if (received === z.ZodParsedType.undefined) return `missing (expected ${expectedTypes.join(' or ')})`;
  return `expected ${expectedTypes.join(' or ')}, got ${received}`;
}

/** `must not be empty`, `must have at least 2 items, got 1`, `must be >= 0, got -3`, … */
function describeBound(
  type: 'array' | 'string' | 'number' | 'set' | 'date' | 'bigint',
  side: 'at least' | 'at most',
  bound: number,
  inclusive: boolean,
  data: unknown,
): string {
  if (type === 'string' || type === 'array' || type === 'set') {
    if (side === 'at least' && bound === 1 && inclusive) return 'must not be empty';
    const unit = type === 'string' ? 'character' : 'item';
    const limit = inclusive ? bound : side === 'at least' ? bound + 1 : bound - 1;
    const size = (v: unknown): string => {
      if (typeof v === 'string' || Array.isArray(v)) return String(v.length);
      return v instanceof Set ? String(v.size) : describeValue(v);
    };
    return `must have ${side} ${limit} ${unit}${limit === 1 ? '' : 's'}${gotSuffix(data, size)}`;
  }
  const op = side === 'at least' ? (inclusive ? '>=' : '>') : inclusive ? '<=' : '<';
  return `must be ${op} ${bound}${gotSuffix(data, (v) => String(v))}`;
}

/**
 * The reason of a `JSON.parse` error without the input text V8 quotes in it (`Unexpected token
 * 'h', "hello" is not valid JSON` echoes the file's first bytes, which may be binary or private):
 * `invalid JSON: unexpected character`, `invalid JSON: unterminated string at column 9`.
 */
export function jsonErrorReason(err: unknown): string {
  const message = (err as Error | undefined)?.message ?? String(err);
  const position = /at position (\d+)/.exec(message);
  const where = position ? ` at column ${Number(position[1]) + 1}` : '';
  let kind: string;
  if (message.startsWith('Unexpected end of JSON input')) kind = 'unexpected end of input';
  else if (message.startsWith('Unexpected token')) kind = 'unexpected character';
  else kind = message.replace(/\s*(in JSON )?at position \d+[\s\S]*$/, '').replace(/,?\s*"[\s\S]*" is not valid JSON$/, '').replace(/\s*in JSON$/, '');
  return `invalid JSON: ${kind.charAt(0).toLowerCase()}${kind.slice(1)}${where}`;
}
