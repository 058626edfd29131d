/**
 * Huge valid rows (issue 11, item 12): a row whose text alone shows it cannot fit `maxLength` is
 * dropped without being tokenized, and a prompt far beyond `maxPromptLength` is cut to its end
 * before tokenizing — with the same ids as tokenizing it whole and truncating.
 */
import { describe, expect, it } from 'vitest';
import { buildTokenizerConfig, trainByteLevelBpe } from '../../src/tokenizer/bpe-trainer.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { tokenizePromptResponse } from '../../src/tokenizer/chat-template.js';
import { TokenizeReport, tokenizePreferenceRow, tokenizeSftRow } from '../../data/tokenize.js';

const words = 'the cat dog bird sat ran on under mat log tree red blue green big small'.split(' ');
const corpus = Array.from({ length: 400 }, (_, d) => Array.from({ length: 8 }, (_, i) => words[(d * 7 + i * 3) % words.length]).join(' ') + '.');
const tokenizerJson = trainByteLevelBpe([corpus.join('\n')], { vocabSize: 320 });
const tok = Tokenizer.fromJson(tokenizerJson, buildTokenizerConfig(tokenizerJson));
const opts = { maxPromptLength: 16, maxLength: 64 };
const text = (numWords: number) => Array.from({ length: numWords }, (_, i) => words[(i * 5) % words.length]).join(' ');

describe('rows bounded before tokenizing', () => {
  it('knows a lower bound on tokens from the UTF-8 length alone', () => {
    const t = text(500);
    expect(tok.maxBytesPerToken).toBeGreaterThan(1);
    expect(tok.minNumTokens(t)).toBeLessThanOrEqual(tok.encode(t).length);
    expect(tok.minNumTokens(t)).toBe(Math.ceil(Buffer.byteLength(t) / tok.maxBytesPerToken));
  });

  it('drops a 50 MB response as too long in milliseconds, not minutes', () => {
    const huge = 'x'.repeat(50 * 1024 * 1024);
    const report = new TokenizeReport();
    const start = performance.now();
    expect(tokenizeSftRow(tok, { prompt: 'the cat', response: huge }, opts, report)).toBeUndefined();
    expect(tokenizePreferenceRow(tok, { prompt: 'the cat', chosen: huge, rejected: 'no' }, opts, report)).toBeUndefined();
    expect(tokenizeSftRow(tok, { messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: huge }] }, opts, report)).toBeUndefined();
    expect(performance.now() - start).toBeLessThan(3000);
    expect(report.dropped).toEqual({ too_long: 3 });
  });

  it('cuts a huge prompt to its end: kept, truncated, and quick', () => {
    const report = new TokenizeReport();
    const prompt = text(5_000_000); // ~20 MB of words
    const start = performance.now();
    const row = tokenizeSftRow(tok, { prompt, response: ' sat.' }, opts, report)!;
    expect(performance.now() - start).toBeLessThan(3000);
    expect(row.ids).toHaveLength(16 + tok.encode(' sat.').length + 1);
    expect(report.numPromptsTruncated).toBe(1);
    // The tokens kept are those of the prompt's end (the chat template's header closes it).
    const tail = tokenizePromptResponse(tok, prompt.slice(-4000), ' sat.');
    expect(row.ids.slice(1)).toEqual([...tail.promptIds.slice(-15), ...tail.responseIds]);
  });

  it('gives the ids of whole-prompt tokenization and truncation when it cuts', () => {
    for (const numWords of [3000, 3001, 3333]) {
      const prompt = text(numWords);
      const row = tokenizeSftRow(tok, { prompt, response: ' ran.' }, opts, new TokenizeReport())!;
      const whole = tokenizePromptResponse(tok, prompt, ' ran.');
      const truncated = [whole.promptIds[0]!, ...whole.promptIds.slice(whole.promptIds.length - 15)];
      expect(row.ids).toEqual([...truncated, ...whole.responseIds]);
    }
  });
});
