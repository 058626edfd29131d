/**
 * The shapes of input rows, one zod schema per kind of JSONL file:
 *
 * | schema                | file                                   | shape                                                    |
 * |-----------------------|----------------------------------------|----------------------------------------------------------|
 * | `SftRowSchema`        | SFT data                               | `{prompt, response}` or `{messages}`                     |
 * | `PreferenceRowSchema` | RM / DPO preference pairs              | `{prompt, chosen, rejected, edited?, strength?}`         |
 * | `PromptRowSchema`     | prompts for (rejection) sampling       | `{prompt}`                                               |
 * | `TokenRowSchema`      | `logprobs` input                       | `{prompt, response}` or `{prompt_ids, response_ids}`     |
 * | `ScoreRowSchema`      | `rm score` input                       | `{prompt, response}`                                     |
 *
 * A prompt is either a string (one user turn) or the conversation so far as messages, ending with
 * a user turn; `toMessages` turns both into messages. Every row may carry an `id`. Fields not listed
 * are dropped when parsing, so rows may carry extra metadata.
 */
import { z } from 'zod';
import { unionErrorMap } from '../src/util/errors.js';
import { PREFERENCE_STRENGTHS, type PreferenceStrength } from '../losses/preference-strengths.js';

export const ROLES = ['system', 'user', 'assistant'] as const;
export type Role = (typeof ROLES)[number];

/** One chat turn. */
export const MessageSchema = z
  .object({
    role: z.enum(ROLES).describe('Who speaks: system | user | assistant.'),
    content: z.string().describe('The text of the turn, without chat-template markup.'),
  })
  .describe('One chat turn.');
export type Message = z.infer<typeof MessageSchema>;

const IdSchema = z.string().describe('Optional identifier of the row, kept through sampling and scoring.');

/** A prompt given as plain text: one user turn. Empty prompts are refused (usually a broken export). */
const PromptTextSchema = z.string().min(1).describe('The prompt as plain text, taken as a single user turn; non-empty.');

/** The conversation so far: at least one message, the last one from the user (the model answers it). */
const ConversationMessagesSchema = z
  .array(MessageSchema)
  .superRefine((messages, ctx) => {
    const last = messages.at(-1);
    if (last === undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must not be empty (the conversation needs a user message)' });
    } else if (last.role !== 'user') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must end with a user message, got ${last.role}` });
    }
  })
  .describe('The conversation so far as messages; the last message is from the user.');

/** A prompt: plain text (one user turn) or the conversation so far. */
export const ConversationSchema = z
  .union([PromptTextSchema, ConversationMessagesSchema], { errorMap: unionErrorMap('a string or a list of messages') })
  .describe('The prompt: a non-empty string (one user turn) or the conversation so far as messages, ending with a user message.');
export type Conversation = z.infer<typeof ConversationSchema>;

/** SFT row in prompt/response form. */
const SftPairSchema = z.object({
  prompt: PromptTextSchema,
  response: z.string().describe('The target response; the loss is taken on its tokens only.'),
  id: IdSchema.optional(),
});

/** SFT row in conversation form; every assistant turn is a target. */
const SftConversationSchema = z.object({
  messages: z
    .array(MessageSchema)
    .refine((messages) => messages.some((m) => m.role === 'assistant'), {
      message: 'must contain at least one assistant message',
    })
    .describe('The whole conversation; the loss is taken on the assistant turns, all other turns are masked.'),
  id: IdSchema.optional(),
});

/** One SFT example: `{prompt, response}` or `{messages}` with at least one assistant message. */
export const SftRowSchema = z
  .union([SftPairSchema, SftConversationSchema], { errorMap: unionErrorMap('either {prompt, response} or {messages}') })
  .describe('One SFT example: {prompt, response} or {messages} with at least one assistant message.');
export type SftRow = z.infer<typeof SftRowSchema>;

/**
 * How much better `chosen` is than `rejected`, strongest first (the four levels of Llama 3's
 * annotation, arXiv 2407.21783 §4.2.1). Llama 3 trains its RM and DPO on the first two only.
 */
export const STRENGTHS = PREFERENCE_STRENGTHS; // defined once, at the bottom (losses/ keys its margins by them)
export type Strength = PreferenceStrength;

/** The strengths Llama 3 trains its reward model and DPO on (§4.2.1): the two strongest. */
export const LLAMA3_STRENGTHS: readonly Strength[] = ['significantly_better', 'better'];

/**
 * The strength assumed for a pair that carries none: `better`, so that unannotated preference data
 * (most public sets) passes the Llama 3 filter {significantly_better, better}.
 */
export const DEFAULT_STRENGTH: Strength = 'better';

export const StrengthSchema = z
  .enum(STRENGTHS)
  .describe(`How much better chosen is than rejected: ${STRENGTHS.join(' | ')}; absent means ${DEFAULT_STRENGTH}.`);

/** A trainer's `strengths` field: the pairs it trains on, by strength (default: Llama 3's two). */
export const TrainedStrengthsSchema = z
  .array(StrengthSchema)
  .min(1)
  .default([...LLAMA3_STRENGTHS])
  .describe(`Strengths of the pairs trained on, any of ${STRENGTHS.join(' | ')}; default significantly_better and better, as in Llama 3. A row without a strength counts as ${DEFAULT_STRENGTH}.`);

/** A preference pair (optionally with an edited response, ranked edited > chosen > rejected). */
export const PreferenceRowSchema = z
  .object({
    prompt: ConversationSchema,
    chosen: z.string().describe('The preferred response.'),
    rejected: z.string().describe('The dispreferred response; must differ from chosen.'),
    edited: z.string().optional().describe('An annotator-improved version of chosen, ranked above it (Llama 3 §4.2.1).'),
    strength: StrengthSchema.optional(),
    id: IdSchema.optional(),
  })
  .refine((row) => row.chosen !== row.rejected, { message: 'must differ from chosen', path: ['rejected'] })
  .describe('A preference pair: prompt, chosen and rejected responses, optional edited response and strength.');
export type PreferenceRow = z.infer<typeof PreferenceRowSchema>;

/** A prompt to sample responses for. */
export const PromptRowSchema = z
  .object({ prompt: ConversationSchema, id: IdSchema.optional() })
  .describe('A prompt to sample responses for.');
export type PromptRow = z.infer<typeof PromptRowSchema>;

const TokenIdSchema = z.number().int().nonnegative().describe('A token id (non-negative integer, below the vocabulary size).');

/** `logprobs` input as text; tokenized with the model's tokenizer and chat template. */
const TokenTextRowSchema = z.object({
  prompt: z.string().describe('The prompt text, tokenized with the model\'s tokenizer.'),
  response: z.string().describe('The response whose log-probability is computed.'),
  id: IdSchema.optional(),
});

/** `logprobs` input already tokenized: ids are used as given, no BOS or template added. */
const TokenIdRowSchema = z.object({
  prompt_ids: z
    .array(TokenIdSchema)
    .min(1)
    .describe('Prompt token ids, used as given (include BOS yourself); at least one, since the first response token is predicted from it.'),
  response_ids: z.array(TokenIdSchema).describe('Response token ids whose log-probabilities are computed.'),
  id: IdSchema.optional(),
});

/** Input of `logprobs`: `{prompt, response}` as text or `{prompt_ids, response_ids}` as token ids. */
export const TokenRowSchema = z
  .union([TokenTextRowSchema, TokenIdRowSchema], {
    errorMap: unionErrorMap('either {prompt, response} or {prompt_ids, response_ids}'),
  })
  .describe('Input of logprobs: {prompt, response} as text or {prompt_ids, response_ids} as token ids.');
export type TokenRow = z.infer<typeof TokenRowSchema>;

/** Input of `rm score`: one response to one prompt. */
export const ScoreRowSchema = z
  .object({
    prompt: ConversationSchema,
    response: z.string().describe('The response to score.'),
    id: IdSchema.optional(),
  })
  .describe('Input of rm score: a prompt and one response to score.');
export type ScoreRow = z.infer<typeof ScoreRowSchema>;

/** A prompt as messages: a string becomes one user turn; messages are copied. */
export function toMessages(prompt: string | Message[]): Message[] {
  if (typeof prompt === 'string') return [{ role: 'user', content: prompt }];
  return prompt.map((m) => ({ role: m.role, content: m.content }));
}

/** An SFT row as messages: `{prompt, response}` becomes a user turn then an assistant turn. */
export function sftRowToMessages(row: SftRow): Message[] {
  if ('messages' in row) return toMessages(row.messages);
  return [
    { role: 'user', content: row.prompt },
    { role: 'assistant', content: row.response },
  ];
}

/** The strength of a pair, `DEFAULT_STRENGTH` (`better`) when it carries none. */
export function strengthOf(row: { strength?: Strength }): Strength {
  return row.strength ?? DEFAULT_STRENGTH;
}

/** The strengths at least as strong as `weakest`, strongest first: `strengthsAtLeast('better')` → [significantly_better, better]. */
export function strengthsAtLeast(weakest: Strength): Strength[] {
  return STRENGTHS.slice(0, STRENGTHS.indexOf(weakest) + 1);
}

/**
 * The rows whose strength is in `allowed`, in their order. A row without a strength counts as
 * `better` (`DEFAULT_STRENGTH`): it is kept by Llama 3's {significantly_better, better} and dropped
 * by a filter that asks for `significantly_better` only.
 */
export function filterByStrength<T extends { strength?: Strength }>(rows: readonly T[], allowed: readonly Strength[]): T[] {
  const allowedSet = new Set<Strength>(allowed);
  return rows.filter((row) => allowedSet.has(strengthOf(row)));
}
