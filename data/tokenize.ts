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
});
export type TokenizeOptions = z.infer<typeof TokenizeOptionsSchema>;

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

/** An SFT row as a training sequence: targets on response (assistant) tokens only. */
export function tokenizeSftRow(tok: Tokenizer, row: SftRow, opts: TokenizeOptions, report: TokenizeReport): SequenceRow | undefined {
  report.numRows++;
  let ids: number[];
  let targetMask: number[];
  if ('messages' in row) {
    const conv = tokenizeConversation(tok, row.messages);
    ids = conv.ids;
    targetMask = conv.assistantMask.map((m) => (m ? 1 : 0));
    if (ids.length > opts.maxLength) return report.drop('too_long');
  } else {
    const parts = tokenizePromptResponse(tok, row.prompt, row.response, { chat: opts.chat });
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
  let promptIds: number[] | undefined;
  const responses: number[][] = [];
  for (const text of texts) {
    const parts = tokenizePromptResponse(tok, row.prompt, text, { chat: opts.chat });
    promptIds ??= parts.promptIds;
    responses.push(parts.responseIds);
  }
  const truncated = truncatePrompt(promptIds!, opts.maxPromptLength, report);
  const longest = Math.max(...responses.map((r) => r.length));
  if (truncated.length + longest > opts.maxLength) return report.drop('too_long');
  report.numKept++;
  return { promptIds: truncated, responses, hasEdited: texts.length === 3, strength: strengthOf(row) };
}
