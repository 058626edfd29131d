/**
 * What the curation steps read from a row: every step accepts SFT rows (`{prompt, response}` or
 * `{messages}`) and preference rows (`{prompt, chosen, rejected, edited?}`), keeps every other
 * field as it is (scores, `finish_reason`, ids, metadata) and needs from a row only a few texts:
 *
 * | view                 | `{prompt, response}` | `{messages}`                              | preference row                 |
 * |----------------------|----------------------|-------------------------------------------|--------------------------------|
 * | `trainedResponses`   | response             | every assistant turn                      | chosen, edited                 |
 * | `mainResponse`       | response             | the last assistant turn                   | chosen                         |
 * | `promptMessages`     | one user turn        | the turns before the last assistant turn  | the prompt                     |
 * | `rowText`            | prompt + response    | every turn                                | prompt + chosen, rejected, edited |
 *
 * `trainedResponses` are the texts a trainer pushes the model towards, so they are what the
 * cleaning rules check; `rejected` is left out of it on purpose (see `rules.ts`). `mainResponse`
 * is the one response a reward model scores and a policy's difficulty is measured on.
 */
import { z } from 'zod';
import { unionErrorMap } from '../../src/util/errors.js';
import { PreferenceRowSchema, SftRowSchema, toMessages, type Message } from '../rows.js';

/**
 * Refuses the fields that mark another row shape, so that a row is exactly one of the three and
 * the views below can tell them apart by their keys (`{prompt, response, chosen}` is an error).
 */
function refuseFields<Output extends object, Input>(schema: z.ZodType<Output, z.ZodTypeDef, Input>, fields: readonly string[], shape: string) {
  return schema.superRefine((row, ctx) => {
    for (const field of fields) {
      if (field in row) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must not appear in a ${shape} row`, path: [field] });
    }
  });
}

/**
 * One row of a curation input: an SFT row or a preference row, with every extra field kept
 * (`passthrough`), so that a curated file carries the metadata of its input.
 */
export const CurationRowSchema = z
  .union(
    [
      refuseFields(SftRowSchema.options[0].passthrough(), ['messages', 'chosen', 'rejected'], '{prompt, response}'),
      refuseFields(SftRowSchema.options[1].passthrough(), ['prompt', 'response', 'chosen', 'rejected'], '{messages}'),
      refuseFields(
        PreferenceRowSchema.innerType()
          .passthrough()
          .refine((row) => row.chosen !== row.rejected, { message: 'must differ from chosen', path: ['rejected'] }),
        ['response', 'messages'],
        'preference',
      ),
    ],
    { errorMap: unionErrorMap('{prompt, response}, {messages} or {prompt, chosen, rejected}') },
  )
  .describe('A row to curate: an SFT row ({prompt, response} or {messages}) or a preference row ({prompt, chosen, rejected, edited?}); other fields are kept.');
export type CurationRow = z.infer<typeof CurationRowSchema>;

/** A response of a row, named by where it sits (`response`, `messages.3.content`, `chosen`). */
export interface NamedText {
  field: string;
  text: string;
}

// The schema makes the shapes' keys exclusive, so a key tells the shape.
function isPreference(row: CurationRow): row is Extract<CurationRow, { chosen: string }> {
  return 'chosen' in row;
}

function isConversation(row: CurationRow): row is Extract<CurationRow, { messages: Message[] }> {
  return 'messages' in row;
}

/** Index of the last assistant turn of a conversation row (the schema guarantees one). */
function lastAssistantIndex(messages: readonly Message[]): number {
  for (let i = messages.length - 1; i >= 0; i--) if (messages[i]!.role === 'assistant') return i;
  return -1;
}

/**
 * The responses a trainer learns from: the response, every assistant turn, or chosen (and edited).
 * With `includeRejected`, a preference row's rejected response is added last.
 */
export function trainedResponses(row: CurationRow, opts: { includeRejected?: boolean } = {}): NamedText[] {
  if (isPreference(row)) {
    const texts: NamedText[] = [{ field: 'chosen', text: row.chosen }];
    if (row.edited !== undefined) texts.push({ field: 'edited', text: row.edited });
    if (opts.includeRejected ?? false) texts.push({ field: 'rejected', text: row.rejected });
    return texts;
  }
  if (isConversation(row)) {
    const texts: NamedText[] = [];
    row.messages.forEach((m, i) => {
      if (m.role === 'assistant') texts.push({ field: `messages.${i}.content`, text: m.content });
    });
    return texts;
  }
  return [{ field: 'response', text: row.response }];
}

/** The one response scored for quality and difficulty: response, last assistant turn, or chosen. */
export function mainResponse(row: CurationRow): string {
  if (isPreference(row)) return row.chosen;
  if (isConversation(row)) return row.messages[lastAssistantIndex(row.messages)]!.content;
  return row.response;
}

/** The conversation `mainResponse` answers, as messages (what a reward model or policy is given). */
export function promptMessages(row: CurationRow): Message[] {
  if (isPreference(row)) return toMessages(row.prompt);
  if (isConversation(row)) return toMessages(row.messages.slice(0, lastAssistantIndex(row.messages)));
  return toMessages(row.prompt);
}

/**
 * The prompt as a reward model or policy is given it: the string itself when the conversation is
 * one user turn (so that tokenizers without a chat template can score it), else the messages.
 */
export function scoringPrompt(row: CurationRow): string | Message[] {
  const messages = promptMessages(row);
  return messages.length === 1 && messages[0]!.role === 'user' ? messages[0]!.content : messages;
}

/** The prompt as one string: message contents joined by blank lines (what a judge's `score` reads). */
export function promptText(row: CurationRow): string {
  return promptMessages(row)
    .map((m) => m.content)
    .join('\n\n');
}

/** Every text of the row joined by newlines: prompt turns, then the responses (chosen, rejected, edited). */
export function rowText(row: CurationRow): string {
  if (isPreference(row)) {
    const parts = [promptText(row), row.chosen, row.rejected];
    if (row.edited !== undefined) parts.push(row.edited);
    return parts.join('\n');
  }
  if (isConversation(row)) return row.messages.map((m) => m.content).join('\n');
  return `${row.prompt}\n${row.response}`;
}

/**
 * The fields `data score` adds to a row, which later steps read: the reward model's score of the
 * main response, the second scorer's score, and the policy's mean token NLL.
 */
export const SCORE_FIELDS = { quality: 'quality', judge: 'judge_score', difficulty: 'difficulty' } as const;

/** A numeric field of a row (e.g. a `SCORE_FIELDS` value), or undefined when absent or not a finite number. */
export function numericField(row: CurationRow, field: string): number | undefined {
  const value = (row as Record<string, unknown>)[field];
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/** Which part of a row deduplication compares: the prompt only, the main response only, or the whole row. */
export const DEDUP_FIELDS = ['row', 'prompt', 'response'] as const;
export type DedupField = (typeof DEDUP_FIELDS)[number];

/** The text of `row` that deduplication compares (see `DEDUP_FIELDS`). */
export function dedupText(row: CurationRow, field: DedupField): string {
  if (field === 'prompt') return promptText(row);
  if (field === 'response') return mainResponse(row);
  return rowText(row);
}
