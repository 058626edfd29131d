import { describe, expect, it } from 'vitest';
import {
  cleanRows,
  countEmoji,
  countExclamations,
  findRepeatedNgram,
  findStockOpener,
  DEFAULT_STOCK_OPENERS,
  RULE_NAMES,
  type CleaningOptionsInput,
} from '../../../data/curation/rules.js';
import type { CurationRow } from '../../../data/curation/row-text.js';

const sft = (response: string, extra: Record<string, unknown> = {}): CurationRow => ({ prompt: 'Tell me about rivers.', response, ...extra });

/** Clean rows every rule must leave alone with the defaults. */
const CLEAN: CurationRow[] = [
  sft('Rivers carry water from high ground to the sea.'),
  sft('Sure! Rivers shape valleys over millions of years.'),
  sft('Great question! Rivers are fed by rain and snow. They matter a lot!'),
  sft('Here is a loop:\n```js\nif (!done && a !== b) run();\n```'),
  sft('The Nile is long 🌊.'),
  sft('He said "rivers flow."'),
  sft('(Most rivers end in a sea.)'),
  sft('I will explain. Sorry to keep it short: rivers flow downhill.'),
  sft('As an airline pilot once said, rivers look small from above.'),
  sft('a a a a a a a b a a a a a a a.'),
  { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello.' }, { role: 'user', content: 'Rivers?' }, { role: 'assistant', content: 'They flow.' }] },
  { prompt: 'Rivers?', chosen: 'They flow downhill.', rejected: "I'm sorry, I cannot talk about rivers!!! 😀😀😀😀😀😀" },
];

function ruleOf(row: CurationRow, options: CleaningOptionsInput = {}): string | undefined {
  const result = cleanRows([row], options);
  expect(result.kept.length + result.rejected.length).toBe(1);
  return result.rejected[0]?.rule;
}

describe('cleaning rules', () => {
  it('keeps clean rows of every shape with the defaults', () => {
    const result = cleanRows(CLEAN);
    expect(result.rejected.map((r) => `${r.index} ${r.rule}: ${r.detail}`)).toEqual([]);
    expect(result.kept).toEqual(CLEAN);
    expect(result.keptIndices).toEqual(CLEAN.map((_, i) => i));
    expect(Object.keys(result.countsByRule)).toEqual([...RULE_NAMES]);
    expect(Object.values(result.countsByRule).every((n) => n === 0)).toBe(true);
  });

  it('empty: catches empty and whitespace-only responses', () => {
    const result = cleanRows([sft(''), sft(' \n\t'), sft('x.')]);
    expect(result.rejected.map((r) => [r.index, r.rule, r.detail])).toEqual([
      [0, 'empty', 'response: empty'],
      [1, 'empty', 'response: only whitespace'],
    ]);
  });

  it('truncated: finish_reason decides when present, sentence punctuation otherwise', () => {
    expect(ruleOf(sft('Rivers flow to the sea.', { finish_reason: 'length' }))).toBe('truncated');
    expect(ruleOf(sft('Rivers flow to the', { finish_reason: 'stop' }))).toBeUndefined();
    const cut = cleanRows([sft('Rivers flow to the sea and then they')]);
    expect(cut.rejected[0]).toMatchObject({ rule: 'truncated', detail: 'response: ends without sentence punctuation ("…he sea and then they")' });
    // terminators, closers after them, code fences and emoji end a response
    for (const end of ['Done.', 'Really?', 'Wait…', '"Done."', 'It is (done.)', '**Done.**', '```\ncode\n```', 'Bye 👋', '完了。']) {
      expect(ruleOf(sft(end))).toBeUndefined();
    }
    for (const end of ['The answer is 42', 'Steps:', '- item', 'Done,']) expect(ruleOf(sft(end))).toBe('truncated');
    // configurable: terse data keeps text-only rows, a custom terminator set, finish_reason ignored
    expect(ruleOf(sft('The answer is 42'), { truncated: { textOnly: 'keep' } })).toBeUndefined();
    expect(ruleOf(sft('The answer is 42'), { truncated: { terminators: '.2' } })).toBeUndefined();
    expect(ruleOf(sft('Rivers flow.', { finish_reason: 'length' }), { truncated: { useFinishReason: false } })).toBeUndefined();
  });

  it('tooLong: characters (code points) and tokens', () => {
    const options = { tooLong: { maxChars: 10 } };
    expect(ruleOf(sft('𝔸𝔸𝔸𝔸𝔸 ok.'), options)).toBeUndefined(); // 9 code points, 14 UTF-16 units
    expect(cleanRows([sft('Rivers are long.')], options).rejected[0]?.detail).toBe('response: 16 characters (more than 10)');
    const countTokens = (text: string) => text.split(' ').length;
    const byTokens = cleanRows([sft('one two three.'), sft('one two three four.')], { tooLong: { maxChars: null, maxTokens: 3 } }, { countTokens });
    expect(byTokens.rejected.map((r) => [r.index, r.detail])).toEqual([[1, 'response: 4 tokens (more than 3)']]);
    expect(() => cleanRows([sft('x.')], { tooLong: { maxTokens: 3 } })).toThrow('clean: tooLong.maxTokens is set but no tokenizer was given to count tokens');
  });

  it('repeatedNgram: an n-gram of N words occurring R times, counted without overlap', () => {
    const loop = 'I think that rivers are nice. '.repeat(3);
    expect(findRepeatedNgram(loop, 6, 3)).toEqual({ ngram: 'i think that rivers are nice', count: 3 });
    expect(findRepeatedNgram('I think that rivers are nice. '.repeat(2), 6, 3)).toBeUndefined();
    // 7 × "a": the 5-gram occurs at 0..2 but only one copy fits without overlap; 10 × "a" holds two
    expect(findRepeatedNgram('a a a a a a a', 5, 2)).toBeUndefined();
    expect(findRepeatedNgram('a a a a a a a a a a', 5, 2)).toEqual({ ngram: 'a a a a a', count: 2 });
    // punctuation and case do not hide a repeat
    expect(findRepeatedNgram('Go now, ok? go NOW ok. Go now ok!', 3, 3)).toEqual({ ngram: 'go now ok', count: 3 });
    expect(ruleOf(sft(`${loop}`))).toBe('repeatedNgram');
    expect(ruleOf(sft(`${loop}`), { repeatedNgram: { minRepeats: 4 } })).toBeUndefined();
    expect(ruleOf(sft(`${loop}`), { repeatedNgram: { ngramWords: 7 } })).toBeUndefined();
  });

  it('stockOpener: apologetic and "As an AI" openers at the start only, case-insensitive', () => {
    expect(findStockOpener('I’m sorry, but rivers…', DEFAULT_STOCK_OPENERS)).toBe("I'm sorry");
    expect(findStockOpener('  **As an AI**, I think rivers flow.', DEFAULT_STOCK_OPENERS)).toBe('As an AI');
    expect(findStockOpener('i apologize for the confusion.', DEFAULT_STOCK_OPENERS)).toBe('I apologize');
    expect(findStockOpener('> As a language model I cannot swim.', DEFAULT_STOCK_OPENERS)).toBe('As a language model');
    expect(findStockOpener('As an AIrline pilot I fly.', DEFAULT_STOCK_OPENERS)).toBeUndefined();
    expect(findStockOpener('Rivers flow. I am sorry to say so.', DEFAULT_STOCK_OPENERS)).toBeUndefined();
    expect(cleanRows([sft("I'm sorry, rivers are wet.")]).rejected[0]?.detail).toBe('response: opens with "I\'m sorry"');
    expect(ruleOf(sft('Certainly, rivers are wet.'), { stockOpener: { phrases: ['Certainly'] } })).toBe('stockOpener');
    expect(ruleOf(sft("I'm sorry, rivers are wet."), { stockOpener: { phrases: ['Certainly'] } })).toBeUndefined();
  });

  it('emoji: counts emoji as a reader sees them, by count and per word', () => {
    expect(countEmoji('a 😀 b 👍🏽 c 👨‍👩‍👧 d 🇫🇷 e ❤️ f 1️⃣')).toBe(6);
    expect(countEmoji('© ® ™ ❤ # 1')).toBe(0);
    const words = (n: number) => Array.from({ length: n }, (_, i) => `word${i}`).join(' ');
    // count bound: 5 kept, 6 removed (in a 200-word text, far under the per-word bound)
    expect(ruleOf(sft(`${words(200)} ${'🌊 '.repeat(5)}end.`))).toBeUndefined();
    expect(cleanRows([sft(`${words(200)} ${'🌊 '.repeat(6)}end.`)]).rejected[0]?.detail).toBe('response: 6 emoji (more than 5)');
    // per-word bound 0.05: 2 emoji in 40 words is exactly 0.05 (kept), in 39 words it is over
    expect(ruleOf(sft(`${words(37)} 🌊 🌊 end.`))).toBeUndefined(); // 37 + 2 emoji + "end." = 40 words
    expect(cleanRows([sft(`${words(36)} 🌊 🌊 end.`)]).rejected[0]?.detail).toBe('response: 2 emoji in 39 words (more than 0.05 per word)');
    // one emoji never trips the per-word bound (minCountForRatio 2)
    expect(ruleOf(sft('Thanks 👍'), { truncated: { textOnly: 'keep' } })).toBeUndefined();
  });

  it('exclamation: total sentence marks and runs; code is not counted', () => {
    expect(countExclamations('Wow! Great!! Yes!!! if (!x && a !== b) #!/bin/sh')).toEqual({ numMarks: 6, longestRun: 3 });
    expect(countExclamations('"Stop!" (Now!) **Go!**')).toEqual({ numMarks: 3, longestRun: 1 });
    expect(ruleOf(sft('One! Two! Three!'))).toBeUndefined();
    expect(cleanRows([sft('One! Two! Three! Four!')]).rejected[0]?.detail).toBe('response: 4 exclamation marks (more than 3)');
    expect(ruleOf(sft('Wow!!'))).toBeUndefined();
    expect(cleanRows([sft('Wow!!!')]).rejected[0]?.detail).toBe('response: a run of 3 exclamation marks (more than 2)');
    expect(ruleOf(sft('Wow!!!'), { exclamation: { enabled: false } })).toBeUndefined();
  });

  it('checks every assistant turn of a conversation and chosen/edited of a pair, rejected only on request', () => {
    const conversation: CurationRow = {
      messages: [
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello.' },
        { role: 'user', content: 'Rivers?' },
        { role: 'assistant', content: 'As an AI, I like rivers.' },
      ],
    };
    expect(cleanRows([conversation]).rejected[0]?.detail).toBe('messages.3.content: opens with "As an AI"');
    const pair: CurationRow = { prompt: 'Rivers?', chosen: 'They flow.', rejected: '' };
    expect(ruleOf(pair)).toBeUndefined();
    expect(cleanRows([pair], { checkRejected: true }).rejected[0]?.detail).toBe('rejected: empty');
    expect(cleanRows([{ prompt: 'Rivers?', chosen: 'They flow.', rejected: 'No.', edited: 'They flow!!!' }]).rejected[0]?.detail).toBe(
      'edited: a run of 3 exclamation marks (more than 2)',
    );
  });

  it('counts each removed row once, under the first rule in order, and keeps extra fields', () => {
    const rows = [
      sft("I'm sorry!!! 😀😀😀😀😀😀", { id: 'a' }), // stockOpener runs before emoji and exclamation
      sft('fine.', { id: 'b', reward: 1.5 }),
      sft('   ', { id: 'c', finish_reason: 'length' }), // empty runs before truncated
      sft('Bad!!! 😀😀😀😀😀😀', { id: 'd' }), // emoji runs before exclamation
    ];
    const result = cleanRows(rows);
    expect(result.rejected.map((r) => [r.index, r.rule])).toEqual([
      [0, 'stockOpener'],
      [2, 'empty'],
      [3, 'emoji'],
    ]);
    expect(result.countsByRule).toEqual({ empty: 1, truncated: 0, tooLong: 0, repeatedNgram: 0, stockOpener: 1, emoji: 1, exclamation: 0 });
    expect(result.kept).toEqual([rows[1]]);
  });

  it('rejects unknown or invalid options with the field named', () => {
    expect(() => cleanRows([], { emoji: { maxCont: 3 } } as CleaningOptionsInput)).toThrow(/^clean: options\.emoji: Unrecognized key/);
    expect(() => cleanRows([], { exclamation: { maxRun: 0 } })).toThrow(/^clean: options\.exclamation\.maxRun: /);
  });
});
