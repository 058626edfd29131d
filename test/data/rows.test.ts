import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { DataError, describeValue, formatDataLine, formatZodIssue, rowErrorMap } from '../../src/util/errors.js';
import {
  ConversationSchema,
  DEFAULT_STRENGTH,
  MessageSchema,
  PreferenceRowSchema,
  PromptRowSchema,
  STRENGTHS,
  ScoreRowSchema,
  SftRowSchema,
  TokenRowSchema,
  filterByStrength,
  sftRowToMessages,
  strengthOf,
  strengthsAtLeast,
  toMessages,
  type PreferenceRow,
  type SftRow,
} from '../../data/rows.js';

/** The one-line message for `value` at line 7 of f.jsonl, parsed with the readable error map. */
function errorLine(schema: z.ZodTypeAny, value: unknown): string {
  const parsed = schema.safeParse(value, { errorMap: rowErrorMap });
  if (parsed.success) throw new Error(`expected ${JSON.stringify(value)} to be refused`);
  return formatZodIssue('f.jsonl', 7, parsed.error.issues[0]!);
}

/** Same, from a plain `safeParse` (no error map): formatZodIssue must still give readable text. */
function errorLineWithoutMap(schema: z.ZodTypeAny, value: unknown): string {
  const parsed = schema.safeParse(value);
  if (parsed.success) throw new Error(`expected ${JSON.stringify(value)} to be refused`);
  return formatZodIssue('f.jsonl', 7, parsed.error.issues[0]!);
}

describe('SftRowSchema', () => {
  it('accepts both shapes and keeps the id', () => {
    expect(SftRowSchema.parse({ prompt: 'p', response: 'r', id: 'a', extra: 1 })).toEqual({ prompt: 'p', response: 'r', id: 'a' });
    const chat = { messages: [{ role: 'system', content: 's' }, { role: 'user', content: 'u' }, { role: 'assistant', content: 'a' }] };
    expect(SftRowSchema.parse(chat)).toEqual(chat);
  });

  it('names both shapes when the row matches neither', () => {
    expect(errorLine(SftRowSchema, { text: 'x' })).toBe('f.jsonl:7: expected either {prompt, response} or {messages}, got {text}');
    expect(errorLine(SftRowSchema, { prompt: 'x' })).toBe('f.jsonl:7: expected either {prompt, response} or {messages}, got {prompt}');
    expect(errorLine(SftRowSchema, 'just text')).toBe('f.jsonl:7: expected either {prompt, response} or {messages}, got string');
  });

  it('reports the error inside the shape the row evidently meant', () => {
    expect(errorLine(SftRowSchema, { prompt: 'x', response: 5 })).toBe('f.jsonl:7: response: expected string, got number');
    expect(errorLine(SftRowSchema, { prompt: '', response: 'y' })).toBe('f.jsonl:7: prompt: must not be empty');
    expect(errorLine(SftRowSchema, { messages: [{ role: 'user', content: 'hi' }] })).toBe(
      'f.jsonl:7: messages: must contain at least one assistant message',
    );
    expect(errorLine(SftRowSchema, { messages: [{ role: 'user' }] })).toBe('f.jsonl:7: messages.0.content: missing (expected string)');
  });
});

describe('PreferenceRowSchema', () => {
  const valid = { prompt: 'p', chosen: 'c', rejected: 'r' };

  it('accepts a string or a conversation ending with a user turn, and all four strengths', () => {
    expect(PreferenceRowSchema.parse(valid)).toEqual(valid);
    const conversation = [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }];
    expect(PreferenceRowSchema.parse({ ...valid, prompt: conversation, edited: 'e', id: '1' }).prompt).toEqual(conversation);
    for (const strength of STRENGTHS) expect(PreferenceRowSchema.parse({ ...valid, strength }).strength).toBe(strength);
  });

  it('gives one exact line per kind of mistake', () => {
    expect(errorLine(PreferenceRowSchema, { prompt: 'p', chosen: 'c' })).toBe('f.jsonl:7: rejected: missing (expected string)');
    expect(errorLine(PreferenceRowSchema, { ...valid, chosen: 5 })).toBe('f.jsonl:7: chosen: expected string, got number');
    expect(errorLine(PreferenceRowSchema, { ...valid, strength: 'much_better' })).toBe(
      'f.jsonl:7: strength: expected one of significantly_better | better | slightly_better | marginally_better, got "much_better"',
    );
    expect(errorLine(PreferenceRowSchema, { ...valid, rejected: 'c' })).toBe('f.jsonl:7: rejected: must differ from chosen');
    expect(errorLine(PreferenceRowSchema, { chosen: 'c', rejected: 'r' })).toBe(
      'f.jsonl:7: prompt: missing (expected a string or a list of messages)',
    );
    expect(errorLine(PreferenceRowSchema, { ...valid, prompt: 3 })).toBe('f.jsonl:7: prompt: expected a string or a list of messages, got number');
    expect(errorLine(PreferenceRowSchema, [valid])).toBe('f.jsonl:7: expected object, got array');
  });

  it('checks the conversation: roles, non-empty, last turn from the user', () => {
    expect(errorLine(PreferenceRowSchema, { ...valid, prompt: [{ role: 'bot', content: 'x' }] })).toBe(
      'f.jsonl:7: prompt.0.role: expected one of system | user | assistant, got "bot"',
    );
    const endsWithAssistant = [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }];
    expect(errorLine(PreferenceRowSchema, { ...valid, prompt: endsWithAssistant })).toBe(
      'f.jsonl:7: prompt: must end with a user message, got assistant',
    );
    expect(errorLine(PreferenceRowSchema, { ...valid, prompt: [] })).toBe(
      'f.jsonl:7: prompt: must not be empty (the conversation needs a user message)',
    );
  });

  it('gives the same text from a plain safeParse, except the offending number', () => {
    expect(errorLineWithoutMap(PreferenceRowSchema, { ...valid, chosen: 5 })).toBe('f.jsonl:7: chosen: expected string, got number');
    expect(errorLineWithoutMap(PreferenceRowSchema, { ...valid, strength: 'x' })).toBe(
      'f.jsonl:7: strength: expected one of significantly_better | better | slightly_better | marginally_better, got "x"',
    );
    expect(errorLineWithoutMap(SftRowSchema, { a: 1 })).toBe('f.jsonl:7: expected either {prompt, response} or {messages}, got {a}');
    expect(errorLineWithoutMap(TokenRowSchema, { prompt_ids: [1, -3], response_ids: [] })).toBe('f.jsonl:7: prompt_ids.1: must be >= 0');
  });
});

describe('TokenRowSchema, PromptRowSchema, ScoreRowSchema', () => {
  it('accepts text or token ids for logprobs', () => {
    expect(TokenRowSchema.parse({ prompt: '', response: 'r' })).toEqual({ prompt: '', response: 'r' });
    expect(TokenRowSchema.parse({ prompt_ids: [1, 0, 7], response_ids: [] })).toEqual({ prompt_ids: [1, 0, 7], response_ids: [] });
  });

  it('refuses negative, fractional and missing token ids', () => {
    expect(errorLine(TokenRowSchema, { prompt_ids: [1, -3], response_ids: [2] })).toBe('f.jsonl:7: prompt_ids.1: must be >= 0, got -3');
    expect(errorLine(TokenRowSchema, { prompt_ids: [1], response_ids: [2.5] })).toBe('f.jsonl:7: response_ids.0: expected integer, got float');
    expect(errorLine(TokenRowSchema, { prompt_ids: [], response_ids: [2] })).toBe('f.jsonl:7: prompt_ids: must not be empty');
    expect(errorLine(TokenRowSchema, { prompt: 'p', response: 5 })).toBe('f.jsonl:7: response: expected string, got number');
    expect(errorLine(TokenRowSchema, { prompt_ids: [1] })).toBe(
      'f.jsonl:7: expected either {prompt, response} or {prompt_ids, response_ids}, got {prompt_ids}',
    );
  });

  it('parses prompts and score rows', () => {
    expect(PromptRowSchema.parse({ prompt: 'hi', id: 'x' })).toEqual({ prompt: 'hi', id: 'x' });
    expect(errorLine(PromptRowSchema, { prompt: '' })).toBe('f.jsonl:7: prompt: must not be empty');
    expect(ScoreRowSchema.parse({ prompt: [{ role: 'user', content: 'q' }], response: 'a' }).response).toBe('a');
    expect(errorLine(ScoreRowSchema, { prompt: 'q' })).toBe('f.jsonl:7: response: missing (expected string)');
  });
});

describe('schema documentation', () => {
  /** Every field of every object schema reachable from `schema` must carry a description. */
  function undocumentedFields(schema: z.ZodTypeAny, path: string): string[] {
    const def = schema._def as { typeName: z.ZodFirstPartyTypeKind };
    switch (def.typeName) {
      case z.ZodFirstPartyTypeKind.ZodObject: {
        const shape = (schema as z.AnyZodObject).shape as Record<string, z.ZodTypeAny>;
        return Object.entries(shape).flatMap(([key, field]) => {
          const here = field.description === undefined ? [`${path}.${key}`] : [];
          return [...here, ...undocumentedFields(field, `${path}.${key}`)];
        });
      }
      case z.ZodFirstPartyTypeKind.ZodUnion:
        return (schema as z.ZodUnion<[z.ZodTypeAny, ...z.ZodTypeAny[]]>).options.flatMap((o, i) => undocumentedFields(o, `${path}|${i}`));
      case z.ZodFirstPartyTypeKind.ZodEffects:
        return undocumentedFields((schema as z.ZodEffects<z.ZodTypeAny>).innerType(), path);
      case z.ZodFirstPartyTypeKind.ZodOptional:
        return undocumentedFields((schema as z.ZodOptional<z.ZodTypeAny>).unwrap(), path);
      case z.ZodFirstPartyTypeKind.ZodArray:
        return undocumentedFields((schema as z.ZodArray<z.ZodTypeAny>).element, `${path}[]`);
      default:
        return [];
    }
  }

  it('describes every field of every row schema', () => {
    const schemas = { MessageSchema, ConversationSchema, SftRowSchema, PreferenceRowSchema, PromptRowSchema, TokenRowSchema, ScoreRowSchema };
    for (const [name, schema] of Object.entries(schemas)) {
      expect(schema.description, name).toBeTypeOf('string');
      expect(undocumentedFields(schema, name)).toEqual([]);
    }
  });
});

describe('normalisers and strength filtering', () => {
  it('turns prompts and SFT rows into messages', () => {
    expect(toMessages('hi')).toEqual([{ role: 'user', content: 'hi' }]);
    const conversation = [{ role: 'system' as const, content: 's' }, { role: 'user' as const, content: 'u' }];
    const copy = toMessages(conversation);
    expect(copy).toEqual(conversation);
    expect(copy).not.toBe(conversation);
    const pair: SftRow = { prompt: 'p', response: 'r' };
    expect(sftRowToMessages(pair)).toEqual([{ role: 'user', content: 'p' }, { role: 'assistant', content: 'r' }]);
    const chat: SftRow = { messages: [{ role: 'user', content: 'u' }, { role: 'assistant', content: 'a' }] };
    expect(sftRowToMessages(chat)).toEqual(chat.messages);
  });

  it('orders strengths strongest first and counts a missing strength as better', () => {
    expect(STRENGTHS).toEqual(['significantly_better', 'better', 'slightly_better', 'marginally_better']);
    expect(DEFAULT_STRENGTH).toBe('better');
    expect(strengthsAtLeast('better')).toEqual(['significantly_better', 'better']);
    expect(strengthsAtLeast('marginally_better')).toEqual([...STRENGTHS]);
    expect(strengthOf({})).toBe('better');

    const rows: PreferenceRow[] = [
      { prompt: 'a', chosen: 'c', rejected: 'r', strength: 'significantly_better' },
      { prompt: 'b', chosen: 'c', rejected: 'r' },
      { prompt: 'c', chosen: 'c', rejected: 'r', strength: 'slightly_better' },
      { prompt: 'd', chosen: 'c', rejected: 'r', strength: 'better' },
      { prompt: 'e', chosen: 'c', rejected: 'r', strength: 'marginally_better' },
    ];
    expect(filterByStrength(rows, strengthsAtLeast('better')).map((r) => r.prompt)).toEqual(['a', 'b', 'd']);
    expect(filterByStrength(rows, ['significantly_better']).map((r) => r.prompt)).toEqual(['a']);
    expect(filterByStrength(rows, ['slightly_better', 'marginally_better']).map((r) => r.prompt)).toEqual(['c', 'e']);
  });
});

describe('DataError', () => {
  it('carries file, line and field and formats one line', () => {
    const err = new DataError('d.jsonl', 17, 'chosen', 'expected string, got number');
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('DataError');
    expect(err.message).toBe('d.jsonl:17: chosen: expected string, got number');
    expect([err.file, err.line, err.field, err.reason]).toEqual(['d.jsonl', 17, 'chosen', 'expected string, got number']);
    expect(formatDataLine('d.jsonl', undefined, undefined, 'no such file')).toBe('d.jsonl: no such file');
    expect(formatDataLine('d.jsonl', 3, undefined, 'invalid JSON: x')).toBe('d.jsonl:3: invalid JSON: x');
  });

  it('describes values by kind, objects by their keys', () => {
    expect([describeValue(undefined), describeValue(null), describeValue([1]), describeValue(1), describeValue('s')]).toEqual([
      'nothing',
      'null',
      'array',
      'number',
      'string',
    ]);
    expect(describeValue({})).toBe('{}');
    expect(describeValue({ a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7 })).toBe('{a, b, c, d, e, f, …}');
  });
});
