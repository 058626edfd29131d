/**
 * Rule-based cleaning of post-training rows (Llama 3, arXiv 2407.21783 §4.2.3: "we implement a
 * series of rule-based data removal and modification strategies … overly-apologetic tonal issues
 * … excessive use of emojis or exclamation points").
 *
 * Each rule is a small named predicate over one response text; `cleanRows` runs the rules in
 * `RULE_NAMES` order over every response a trainer learns from (`trainedResponses`: the response,
 * each assistant turn, a preference row's chosen and edited) and removes a row at the first rule
 * that fires, so every removed row is counted under exactly one rule and the counts add up.
 *
 * Preference rows: only chosen (and edited) are checked by default, not rejected. A rejected
 * response that opens with "I'm sorry" or overuses emoji is the contrast a reward model and DPO
 * learn from; removing the pair would throw that signal away. `checkRejected: true` checks it too
 * (e.g. to drop pairs whose rejected response is empty or truncated, which teach only "finish").
 *
 * Every threshold lives in `CleaningOptionsSchema` with its default and reason; a config file or
 * `--set emoji.maxCount=3` changes them, `--set exclamation.enabled=false` turns a rule off.
 */
import { z } from 'zod';
import { normalizedWords } from './text.js';
import { trainedResponses, type CurationRow } from './row-text.js';

/** The rules in the order they run; a removed row is counted under the first that fires. */
export const RULE_NAMES = ['empty', 'truncated', 'tooLong', 'repeatedNgram', 'stockOpener', 'emoji', 'exclamation'] as const;
export type RuleName = (typeof RULE_NAMES)[number];

const enabled = (what: string) => z.boolean().default(true).describe(`Run the ${what} rule.`);

/** Stock openers Llama 3 calls "overly-apologetic", and the "As an AI" disclaimers of the same family. */
export const DEFAULT_STOCK_OPENERS: readonly string[] = [
  "I'm sorry",
  'I am sorry',
  'I apologize',
  'I apologise',
  'My apologies',
  'Sorry,',
  'As an AI',
  'As a language model',
  'As a large language model',
];

export const CleaningOptionsSchema = z
  .object({
    checkRejected: z
      .boolean()
      .default(false)
      .describe("Also check a preference row's rejected response (default false: a flawed rejected response is the contrast RM and DPO learn from)."),
    empty: z.object({ enabled: enabled('empty-response') }).strict().default({}).describe('Responses that are empty or only whitespace.'),
    truncated: z
      .object({
        enabled: enabled('truncated-response'),
        useFinishReason: z
          .boolean()
          .default(true)
          .describe('A row carrying finish_reason (as sampling writes it) is truncated exactly when finish_reason is "length"; the text is then not inspected.'),
        textOnly: z
          .enum(['punctuation', 'keep'])
          .default('punctuation')
          .describe(
            'Rows without finish_reason: "punctuation" calls a response truncated unless it ends (after closing quotes, brackets or emphasis marks) in one of `terminators`, a closing code fence or an emoji — a heuristic that also catches answers ending in a bare number or list item; "keep" never calls them truncated (use it for terse data such as the quickstart task).',
          ),
        terminators: z
          .string()
          .min(1)
          .default('.!?…。！？')
          .describe('Characters that end a complete response under textOnly "punctuation".'),
      })
      .strict()
      .default({})
      .describe('Responses cut off before their end: no termination token.'),
    tooLong: z
      .object({
        enabled: enabled('too-long'),
        maxChars: z
          .number()
          .int()
          .positive()
          .nullable()
          .default(20_000)
          .describe('Most characters (Unicode code points) in one response; null: no character bound. 20,000 is about 5,000 tokens, beyond any SFT sequence here.'),
        maxTokens: z
          .number()
          .int()
          .positive()
          .nullable()
          .default(null)
          .describe('Most tokens in one response, counted with the tokenizer given to cleanRows (`data clean --tokenizer`); null: no token bound.'),
      })
      .strict()
      .default({})
      .describe('Responses longer than a bound.'),
    repeatedNgram: z
      .object({
        enabled: enabled('repeated-n-gram'),
        ngramWords: z
          .number()
          .int()
          .min(2)
          .default(6)
          .describe('N: length in words of the n-grams compared (after normalizeText); an n-gram longer than N that repeats also repeats its first N words, so N words suffice.'),
        minRepeats: z
          .number()
          .int()
          .min(2)
          .default(3)
          .describe('R: a response is removed when one N-word n-gram occurs at least R times without overlapping itself (a generation loop).'),
      })
      .strict()
      .default({})
      .describe('Responses that repeat a long n-gram many times.'),
    stockOpener: z
      .object({
        enabled: enabled('stock-opener'),
        phrases: z
          .array(z.string().min(1))
          .default([...DEFAULT_STOCK_OPENERS])
          .describe("Openers matched case-insensitively at the start of a response (after leading spaces, quotes and markdown marks; ’ matches '), followed by a non-letter."),
      })
      .strict()
      .default({})
      .describe('Apologetic or hedging stock openers.'),
    emoji: z
      .object({
        enabled: enabled('emoji-overuse'),
        maxCount: z.number().int().min(0).default(5).describe('Most emoji in one response, whatever its length (a ZWJ sequence, a flag or a skin-toned emoji counts once).'),
        maxPerWord: z
          .number()
          .min(0)
          .default(0.05)
          .describe('Most emoji per whitespace-separated word (0.05: one per 20 words), applied once a response has at least minCountForRatio emoji.'),
        minCountForRatio: z
          .number()
          .int()
          .min(1)
          .default(2)
          .describe('The per-word bound applies from this many emoji on, so a one-word "Thanks 👍" is not overuse.'),
      })
      .strict()
      .default({})
      .describe('Emoji overuse.'),
    exclamation: z
      .object({
        enabled: enabled('exclamation-overuse'),
        maxCount: z.number().int().min(0).default(3).describe('Most exclamation marks in one response.'),
        maxRun: z.number().int().min(1).default(2).describe('Longest run of exclamation marks allowed ("!!" passes, "!!!" does not with 2).'),
      })
      .strict()
      .default({})
      .describe('Exclamation-mark overuse. Only sentence marks count: a "!" after a non-space and before a space, the end, a closing quote, bracket or emphasis mark, so code such as `!==` or `(!x)` does not.'),
  })
  .strict()
  .describe('Cleaning rules and their thresholds; every rule can be turned off with enabled: false.');
export type CleaningOptions = z.output<typeof CleaningOptionsSchema>;
export type CleaningOptionsInput = z.input<typeof CleaningOptionsSchema>;

/** What a rule may need besides the text. */
export interface RuleContext {
  /** Token count of a text, for `tooLong.maxTokens`. */
  countTokens?: (text: string) => number;
}

/** A rule's verdict on one text: undefined when it passes, else what is wrong. */
type TextCheck = (text: string, options: CleaningOptions, context: RuleContext) => string | undefined;

// ---- 1) empty --------------------------------------------------------------------------------

function checkEmpty(text: string): string | undefined {
  return text.trim() === '' ? (text === '' ? 'empty' : 'only whitespace') : undefined;
}

// ---- 2) truncated ----------------------------------------------------------------------------

/** Closing marks stripped before looking for the terminator: quotes, brackets, markdown emphasis. */
const TRAILING_CLOSERS = /["'”’»)\]}*_`]+$/u;
const ENDS_WITH_EMOJI = /\p{Extended_Pictographic}\uFE0F?$/u;

/** The text-only truncation heuristic (see `truncated.textOnly`): the detail, or undefined when it ends properly. */
function checkTerminated(text: string, terminators: string): string | undefined {
  const trimmed = text.trimEnd();
  if (trimmed.endsWith('```')) return undefined; // a closed code block
  if (ENDS_WITH_EMOJI.test(trimmed)) return undefined;
  const core = trimmed.replace(TRAILING_CLOSERS, '');
  const last = Array.from(core.slice(-2)).at(-1);
  if (last !== undefined && terminators.includes(last)) return undefined;
  const tail = Array.from(trimmed).slice(-20).join('');
  return `ends without sentence punctuation ("${tail.length < trimmed.length ? '…' : ''}${tail}")`;
}

// ---- 3) tooLong ------------------------------------------------------------------------------

/** Number of Unicode code points (a surrogate pair counts once). */
function countCodePoints(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0xdc00 || code > 0xdfff) n++; // count every unit except low surrogates
  }
  return n;
}

const checkTooLong: TextCheck = (text, options, context) => {
  const { maxChars, maxTokens } = options.tooLong;
  if (maxChars !== null) {
    const numChars = countCodePoints(text);
    if (numChars > maxChars) return `${numChars} characters (more than ${maxChars})`;
  }
  if (maxTokens !== null) {
    if (context.countTokens === undefined) throw new Error('clean: tooLong.maxTokens is set but no tokenizer was given to count tokens');
    const numTokens = context.countTokens(text);
    if (numTokens > maxTokens) return `${numTokens} tokens (more than ${maxTokens})`;
  }
  return undefined;
};

// ---- 4) repeatedNgram ------------------------------------------------------------------------

/**
 * The first N-word n-gram (after `normalizedWords`) that occurs at least R times without
 * overlapping itself, with its count; undefined when none does. Occurrences are counted greedily
 * left to right, an occurrence counting only if it starts at least N words after the last counted
 * one, so "a a a a a a a" (7 words) holds the 5-gram "a a a a a" once, not three times.
 */
export function findRepeatedNgram(text: string, ngramWords: number, minRepeats: number): { ngram: string; count: number } | undefined {
  const words = normalizedWords(text);
  const seen = new Map<string, { count: number; lastStart: number }>();
  for (let start = 0; start + ngramWords <= words.length; start++) {
    const ngram = words.slice(start, start + ngramWords).join(' ');
    const entry = seen.get(ngram);
    if (entry === undefined) {
      seen.set(ngram, { count: 1, lastStart: start });
      continue;
    }
    if (start < entry.lastStart + ngramWords) continue; // overlaps the last counted occurrence
    entry.count += 1;
    entry.lastStart = start;
    if (entry.count >= minRepeats) return { ngram, count: entry.count };
  }
  return undefined;
}

const checkRepeatedNgram: TextCheck = (text, options) => {
  const { ngramWords, minRepeats } = options.repeatedNgram;
  const found = findRepeatedNgram(text, ngramWords, minRepeats);
  return found === undefined ? undefined : `the ${ngramWords}-gram "${found.ngram}" occurs ${found.count} times`;
};

// ---- 5) stockOpener --------------------------------------------------------------------------

/** Leading characters skipped before matching an opener: spaces, quotes, markdown emphasis/heading/quote marks. */
const LEADING_MARKS = /^[\s"'“‘*_>#-]+/u;
const LETTER_OR_DIGIT = /[\p{L}\p{N}]/u;

/** The phrase `text` opens with (case-insensitive, ’ read as '), or undefined. */
export function findStockOpener(text: string, phrases: readonly string[]): string | undefined {
  const start = text.replace(LEADING_MARKS, '').replaceAll('’', "'").toLowerCase();
  for (const phrase of phrases) {
    const wanted = phrase.replaceAll('’', "'").toLowerCase();
    if (!start.startsWith(wanted)) continue;
    const next = start.charAt(wanted.length);
    // "As an AI" must not match "As an AIrline"; a phrase ending in punctuation ("Sorry,") is already bounded.
    if (next !== '' && LETTER_OR_DIGIT.test(next) && LETTER_OR_DIGIT.test(wanted.at(-1) ?? '')) continue;
    return phrase;
  }
  return undefined;
}

const checkStockOpener: TextCheck = (text, options) => {
  const phrase = findStockOpener(text, options.stockOpener.phrases);
  return phrase === undefined ? undefined : `opens with "${phrase}"`;
};

// ---- 6) emoji --------------------------------------------------------------------------------

/**
 * One emoji as a reader sees it: a flag (two regional indicators), a keycap (`1️⃣`), or an
 * emoji-presentation character (or a pictograph made one by U+FE0F) with an optional skin tone,
 * joined by ZWJ into a sequence (`👨‍👩‍👧` counts once). Text-style symbols such as © ® ™ do not count.
 */
const EMOJI =
  /\p{Regional_Indicator}{2}|[#*0-9]\uFE0F?\u20E3|(?:\p{Emoji_Presentation}|\p{Extended_Pictographic}\uFE0F)\p{Emoji_Modifier}?(?:\u200D(?:\p{Emoji_Presentation}|\p{Extended_Pictographic}\uFE0F?)\p{Emoji_Modifier}?)*/gu;

/** Number of emoji in `text` (see `EMOJI`). */
export function countEmoji(text: string): number {
  return text.match(EMOJI)?.length ?? 0;
}

const checkEmoji: TextCheck = (text, options) => {
  const { maxCount, maxPerWord, minCountForRatio } = options.emoji;
  const numEmoji = countEmoji(text);
  if (numEmoji > maxCount) return `${numEmoji} emoji (more than ${maxCount})`;
  if (numEmoji >= minCountForRatio) {
    const numWords = text.split(/\s+/u).filter((w) => w !== '').length;
    if (numEmoji / numWords > maxPerWord) return `${numEmoji} emoji in ${numWords} words (more than ${maxPerWord} per word)`;
  }
  return undefined;
};

// ---- 7) exclamation --------------------------------------------------------------------------

/** A run of sentence exclamation marks (see `exclamation` in the schema). */
const EXCLAMATION_RUN = /(?<=\S)[!！]+(?=[\s"'”’)\]}*_]|$)/gu;

/** Total sentence exclamation marks and the longest run of them. */
export function countExclamations(text: string): { numMarks: number; longestRun: number } {
  let numMarks = 0;
  let longestRun = 0;
  for (const match of text.matchAll(EXCLAMATION_RUN)) {
    numMarks += match[0].length;
    longestRun = Math.max(longestRun, match[0].length);
  }
  return { numMarks, longestRun };
}

const checkExclamation: TextCheck = (text, options) => {
  const { maxCount, maxRun } = options.exclamation;
  const { numMarks, longestRun } = countExclamations(text);
  if (longestRun > maxRun) return `a run of ${longestRun} exclamation marks (more than ${maxRun})`;
  if (numMarks > maxCount) return `${numMarks} exclamation marks (more than ${maxCount})`;
  return undefined;
};

// ---- the rules and cleanRows -----------------------------------------------------------------

/** One rejected row and why: the rule that fired and its detail (`chosen: 7 emoji (more than 5)`). */
export interface RejectedRow<T> {
  /** Index of the row in the input. */
  index: number;
  row: T;
  rule: RuleName;
  detail: string;
}

export interface CleanResult<T> {
  /** The rows every rule passes, in input order. */
  kept: T[];
  /** Their indices in the input. */
  keptIndices: number[];
  /** The removed rows in input order, each under the first rule that fired. */
  rejected: RejectedRow<T>[];
  /** Removed rows per rule, every rule present (0 when it removed nothing); the counts sum to `rejected.length`. */
  countsByRule: Record<RuleName, number>;
}

/**
 * Why `row` is removed, or undefined when it is kept: the first rule (in `RULE_NAMES` order) that
 * fires on any checked response.
 */
export function checkRow(row: CurationRow, options: CleaningOptions, context: RuleContext = {}): { rule: RuleName; detail: string } | undefined {
  const texts = trainedResponses(row, { includeRejected: options.checkRejected });
  const firstFailure = (check: TextCheck): string | undefined => {
    for (const { field, text } of texts) {
      const detail = check(text, options, context);
      if (detail !== undefined) return `${field}: ${detail}`;
    }
    return undefined;
  };
  for (const rule of RULE_NAMES) {
    if (!options[rule].enabled) continue;
    let detail: string | undefined;
    switch (rule) {
      case 'empty':
        detail = firstFailure(checkEmpty);
        break;
      case 'truncated':
        detail = checkTruncated(row, options);
        break;
      case 'tooLong':
        detail = firstFailure(checkTooLong);
        break;
      case 'repeatedNgram':
        detail = firstFailure(checkRepeatedNgram);
        break;
      case 'stockOpener':
        detail = firstFailure(checkStockOpener);
        break;
      case 'emoji':
        detail = firstFailure(checkEmoji);
        break;
      case 'exclamation':
        detail = firstFailure(checkExclamation);
        break;
    }
    if (detail !== undefined) return { rule, detail };
  }
  return undefined;
}

/**
 * The truncation rule on a whole row: a row carrying a string `finish_reason` is judged by it
 * alone (it describes the row's main response, as sampling writes it); otherwise every checked
 * response goes through the text heuristic unless `textOnly` is "keep".
 */
function checkTruncated(row: CurationRow, options: CleaningOptions): string | undefined {
  const { useFinishReason, textOnly, terminators } = options.truncated;
  const finishReason = (row as { finish_reason?: unknown }).finish_reason;
  if (useFinishReason && typeof finishReason === 'string') {
    return finishReason === 'length' ? 'finish_reason: "length" (stopped at the token limit)' : undefined;
  }
  if (textOnly === 'keep') return undefined;
  for (const { field, text } of trainedResponses(row, { includeRejected: options.checkRejected })) {
    if (text.trim() === '') continue; // the empty rule's business
    const detail = checkTerminated(text, terminators);
    if (detail !== undefined) return `${field}: ${detail}`;
  }
  return undefined;
}

/** Zero counts for every rule. */
export function emptyRuleCounts(): Record<RuleName, number> {
  return Object.fromEntries(RULE_NAMES.map((rule) => [rule, 0])) as Record<RuleName, number>;
}

/**
 * Runs the cleaning rules over `rows` (options are validated and defaulted with
 * `CleaningOptionsSchema`). A row is kept when no enabled rule fires on any checked response.
 *
 * @throws Error naming the field when the options are invalid, or when `tooLong.maxTokens` is
 *   set without `context.countTokens`.
 */
export function cleanRows<T extends CurationRow>(rows: readonly T[], options: CleaningOptionsInput = {}, context: RuleContext = {}): CleanResult<T> {
  const parsed = CleaningOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`clean: options.${issue.path.join('.')}: ${issue.message}`);
  }
  const result: CleanResult<T> = { kept: [], keptIndices: [], rejected: [], countsByRule: emptyRuleCounts() };
  rows.forEach((row, index) => {
    const failure = checkRow(row, parsed.data, context);
    if (failure === undefined) {
      result.kept.push(row);
      result.keptIndices.push(index);
    } else {
      result.rejected.push({ index, row, ...failure });
      result.countsByRule[failure.rule] += 1;
    }
  });
  return result;
}
