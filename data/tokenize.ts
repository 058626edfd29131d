/**
 * Rows → token ids with exact prompt/response boundaries, for SFT, reward-model and DPO data.
 *
 * Prompt and response are encoded as separate parts (src/tokenizer/chat-template.ts), so no BPE
 * merge crosses the boundary and BOS/EOS are never doubled. Truncation is explicit:
 *   - a prompt longer than `maxPromptLength` keeps its first token (BOS) and its END (the
 *     question is usually last), like TRL's `truncation_mode="keep_end"`;
 *   - a row whose prompt + response exceeds `maxLength` is dropped and counted, never cut
 *     mid-response (a cut response teaches the model to stop mid-sentence, or hides the end of
 *     the worse answer from the reward model).
 * Long text is bounded before it is tokenized: a response (or conversation) whose UTF-8 length
 * alone shows it has more than `maxLength` tokens (`Tokenizer.minNumTokens`) is dropped without
 * tokenizing it, and a prompt far longer than `maxPromptLength` tokens is cut to its end at a word
 * boundary first (the tokens kept are the same: truncation keeps only its end), so one 50 MB row
 * costs milliseconds, not minutes. Special-token strings in the text are plain text unless
 * `parseSpecialTokens`.
 */
import { z } from 'zod';
import { limit } from '../src/config/limits.js';
import type { Tokenizer } from '../src/tokenizer/tokenizer.js';
import { tokenizeConversation, tokenizePromptResponse } from '../src/tokenizer/chat-template.js';
import type { SequenceRow } from './collate.js';
import { strengthOf, type PreferenceRow, type SftRow, type Strength } from './rows.js';

export const TokenizeOptionsSchema = z.object({
  maxPromptLength: limit.tokens().default(512).describe('Prompt tokens kept (its first token and its end); longer prompts are truncated.'),
  maxLength: limit.tokens().default(1024).describe('Most prompt + response tokens; longer rows are dropped and counted, never cut mid-response.'),
  chat: z.boolean().optional().describe('Render with the tokenizer\'s chat template; default: when it has one.'),
  parseSpecialTokens: z
    .boolean()
    .default(false)
    .describe('Match special-token strings in the data text (`<|eot_id|>`) as control tokens; default: encode them as plain text, so data cannot add turns or end a sequence.'),
});
/** Parsed options; `parseSpecialTokens` may be left out by callers that build them by hand (false). */
export type TokenizeOptions = Omit<z.infer<typeof TokenizeOptionsSchema>, 'parseSpecialTokens'> & { parseSpecialTokens?: boolean };

/** Why rows were dropped, and how many prompts were truncated. */
export class TokenizeReport {
  numRows = 0;
  numKept = 0;
  numPromptsTruncated = 0;
  readonly dropped: Record<string, number> = {};

  drop(reason: string): undefined {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
    return undefined;
  }

  /** One line: `1000 rows: 990 kept, 10 dropped (too_long: 10), 3 prompts truncated`. */
  summary(): string {
    const reasons = Object.entries(this.dropped).map(([k, v]) => `${k}: ${v}`);
    const numDropped = this.numRows - this.numKept;
    return `${this.numRows} rows: ${this.numKept} kept, ${numDropped} dropped${reasons.length ? ` (${reasons.join(', ')})` : ''}, ${this.numPromptsTruncated} prompts truncated`;
  }
}

function truncatePrompt(promptIds: number[], maxPromptLength: number, report: TokenizeReport): number[] {
  if (promptIds.length <= maxPromptLength) return promptIds;
  report.numPromptsTruncated++;
  return [promptIds[0], ...promptIds.slice(promptIds.length - (maxPromptLength - 1))];
}

/** Tokens of slack kept in front of a cut prompt, so that the cut is far from the tokens kept. */
const PROMPT_CUT_SLACK_TOKENS = 64;

/**
 * A prompt string cut to its end when it certainly tokenizes to far more than `maxPromptLength`
 * tokens (truncation keeps only its first token and its end): the text after a space that follows
 * a letter or digit, at least (maxPromptLength + 64) · maxBytesPerToken characters from the end, so
 * the tokens kept are those of the whole prompt. Unchanged when shorter or when no such space exists.
 */
function cutLongPrompt<P>(tok: Tokenizer, prompt: P, maxPromptLength: number): P {
  if (typeof prompt !== 'string') return prompt;
  const keepChars = (maxPromptLength + PROMPT_CUT_SLACK_TOKENS) * tok.maxBytesPerToken;
  if (prompt.length <= 2 * keepChars) return prompt;
  for (let at = prompt.length - keepChars; at > prompt.length - 2 * keepChars; at--) {
    if (prompt[at] === ' ' && /[\p{L}\p{N}]/u.test(prompt[at - 1]!)) return `${prompt.slice(0, 1)}${prompt.slice(at)}` as P;
  }
  return prompt;
}

/** True when `texts` alone certainly hold more than `maxLength` tokens (see `Tokenizer.minNumTokens`). */
function certainlyTooLong(tok: Tokenizer, texts: readonly string[], maxLength: number): boolean {
  let lowerBound = 0;
  for (const text of texts) lowerBound += tok.minNumTokens(text);
  return lowerBound > maxLength;
}

/** An SFT row as a training sequence: targets on response (assistant) tokens only. */
export function tokenizeSftRow(tok: Tokenizer, row: SftRow, opts: TokenizeOptions, report: TokenizeReport): SequenceRow | undefined {
  report.numRows++;
  const parse = { parseSpecialTokens: opts.parseSpecialTokens };
  let ids: number[];
  let targetMask: number[];
  if ('messages' in row) {
    if (certainlyTooLong(tok, row.messages.map((m) => m.content), opts.maxLength)) return report.drop('too_long');
    const conv = tokenizeConversation(tok, row.messages, parse);
    ids = conv.ids;
    targetMask = conv.assistantMask.map((m) => (m ? 1 : 0));
    if (ids.length > opts.maxLength) return report.drop('too_long');
  } else {
    // the response is never cut: +1 for its end token, +1 for the prompt's first
    if (certainlyTooLong(tok, [row.response], opts.maxLength - 2)) return report.drop('too_long');
    const parts = tokenizePromptResponse(tok, cutLongPrompt(tok, row.prompt, opts.maxPromptLength), row.response, { chat: opts.chat, ...parse });
    const promptIds = truncatePrompt(parts.promptIds, opts.maxPromptLength, report);
    if (promptIds.length + parts.responseIds.length > opts.maxLength) return report.drop('too_long');
    ids = [...promptIds, ...parts.responseIds];
    targetMask = [...promptIds.map(() => 0), ...parts.responseIds.map(() => 1)];
  }
  if (!targetMask.some(Boolean)) return report.drop('no_response_tokens');
  report.numKept++;
  return { ids, targetMask };
}

/** A preference row: one prompt and its responses ranked best → worst. */
export interface TokenizedPreference {
  promptIds: number[];
  /** Response ids ranked best first: [edited?, chosen, rejected]. */
  responses: number[][];
  /** Whether responses[0] is an annotator's edit. */
  hasEdited: boolean;
  strength: Strength;
}

export function tokenizePreferenceRow(tok: Tokenizer, row: PreferenceRow, opts: TokenizeOptions, report: TokenizeReport): TokenizedPreference | undefined {
  report.numRows++;
  const texts = [...(row.edited !== undefined && row.edited !== row.chosen ? [row.edited] : []), row.chosen, row.rejected];
  if (texts.some((text) => certainlyTooLong(tok, [text], opts.maxLength - 2))) return report.drop('too_long');
  const prompt = cutLongPrompt(tok, row.prompt, opts.maxPromptLength);
  let promptIds: number[] | undefined;
  const responses: number[][] = [];
  for (const text of texts) {
    const parts = tokenizePromptResponse(tok, prompt, text, { chat: opts.chat, parseSpecialTokens: opts.parseSpecialTokens });
    promptIds ??= parts.promptIds;
    responses.push(parts.responseIds);
  }
  const truncated = truncatePrompt(promptIds!, opts.maxPromptLength, report);
  const longest = Math.max(...responses.map((r) => r.length));
  if (truncated.length + longest > opts.maxLength) return report.drop('too_long');
  report.numKept++;
  return { promptIds: truncated, responses, hasEdited: texts.length === 3, strength: strengthOf(row) };
}
