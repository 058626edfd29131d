import { xorshift32 } from './xorshift.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BYTE_TO_UNICODE, SPECIAL_TOKENS, buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../../src/tokenizer/bpe-trainer.js';
import { LLAMA3_CHAT_TEMPLATE } from '../../src/tokenizer/chat-template.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';

/** Deterministic English-like sentences (xorshift32) with pseudo-word names, one per line. */
function makeCorpus(numSentences: number, seed = 5): string[] {
  const pick = xorshift32(seed);
  const syllables = ['ka', 'to', 're', 'mi', 'san', 'lo', 've', 'ent', 'ion', 'ing', 'er', 'an', 'st', 'con', 'al'];
  const name = (): string => {
    let text = '';
    for (let i = 0, n = 2 + pick(3); i < n; i++) text += syllables[pick(syllables.length)];
    return text[0]!.toUpperCase() + text.slice(1);
  };
  const subjects = ['the cat', 'a dog', 'my friend', 'the teacher', 'our model', 'she', 'they'];
  const verbs = ['jumps over', 'reads', 'writes', 'likes', 'sees', 'trains', "doesn't answer"];
  const objects = ['the lazy dog', 'a long book', 'the answer', 'some tokens', 'the question', 'the river'];
  const lines: string[] = [];
  for (let i = 0; i < numSentences; i++) {
    const subject = subjects[pick(subjects.length)]!;
    lines.push(`${subject[0]!.toUpperCase()}${subject.slice(1)} ${verbs[pick(verbs.length)]} ${objects[pick(objects.length)]} with ${name()}, ${pick(500)} times.`);
  }
  return [lines.join('\n')];
}

const tokenizerJson = trainByteLevelBpe(makeCorpus(400), { vocabSize: 600 });
const tokenizerConfig = buildTokenizerConfig(tokenizerJson);
const tok = Tokenizer.fromJson(tokenizerJson, tokenizerConfig);
const numModelTokens = 600 - SPECIAL_TOKENS.length;

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-tok-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

const UNSEEN_TEXTS = [
  'The zebra quietly wrote 1234567 letters.',
  'Café résumé naïve — é and É.',
  '中文分词测试，还有日本語のテキスト。',
  'Emoji: 🙂👩‍👩‍👧 🇫🇷!!',
  'line one\nline two\r\n\n\ttabbed   spaced  \n',
  "  leading and trailing spaces  ",
  "It's they'LL WE'VE",
  '',
];

describe('Tokenizer', () => {
  it('knows its ids', () => {
    expect(tok.vocabSize).toBe(600);
    expect(tok.bosTokenId).toBe(numModelTokens + 0);
    expect(tok.eosTokenId).toBe(numModelTokens + 4); // eos_token is <|eot_id|>
    expect(tok.eotTokenId).toBe(numModelTokens + 4);
    expect(tok.padTokenId).toBe(numModelTokens + 5);
    expect(tok.tokenToId('<|end_of_text|>')).toBe(numModelTokens + 1);
    expect([...tok.specialTokenIds].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5].map((i) => numModelTokens + i));
    expect(tok.tokenToId('Ġ')).toBe(220);
    expect(tok.idToToken(220)).toBe('Ġ');
    expect(tok.tokenToId('no such token')).toBeUndefined();
    expect(tok.chatTemplate).toBe(LLAMA3_CHAT_TEMPLATE);
  });

  it('round-trips unseen text, unicode and whitespace exactly', () => {
    for (const text of UNSEEN_TEXTS) {
      const ids = tok.encode(text);
      for (const id of ids) expect(tok.specialTokenIds.has(id)).toBe(false);
      expect(tok.decode(ids)).toBe(text);
    }
    // Each emoji is 4 UTF-8 bytes never seen in training: 4 byte tokens.
    expect(tok.encode('🙂')).toEqual([...new TextEncoder().encode('🙂')].map((byte) => tok.tokenToId(BYTE_TO_UNICODE[byte]!)!));
  });

  it('uses the learned merges on training-like text', () => {
    const text = 'The teacher reads the lazy dog';
    const ids = tok.encode(text);
    expect(ids.length).toBeLessThan(text.length / 2);
    expect(tok.tokenToId('Ġthe')).toBeDefined();
    expect(tok.encode(' the')).toEqual([tok.tokenToId('Ġthe')]);
  });

  it('encodes special-token strings in text as plain text unless asked to parse them (issue 11)', () => {
    const text = 'hi<|eot_id|>';
    // Default: the bytes of "<|eot_id|>" as ordinary tokens; no end-of-turn id, and the text comes back.
    const plain = tok.encode(text);
    expect(plain).not.toContain(tok.eotTokenId);
    expect(plain.some((id) => tok.specialTokenIds.has(id))).toBe(false);
    expect(plain.length).toBeGreaterThan(2);
    expect(tok.decode(plain)).toBe(text);
    expect(tok.decode(plain, { skipSpecialTokens: true })).toBe(text);
    // parseSpecialTokens: the string is the control token.
    const parsed = tok.encode(text, { parseSpecialTokens: true });
    expect(parsed).toEqual([...tok.encode('hi'), tok.eotTokenId]);
    expect(tok.decode(parsed, { skipSpecialTokens: true })).toBe('hi');
    // BOS from the post-processor is still added around plain text.
    expect(tok.encode(text, { addSpecialTokens: true })).toEqual([tok.bosTokenId, ...plain]);
  });

  it('matches special-token strings in text as single ids with parseSpecialTokens', () => {
    SPECIAL_TOKENS.forEach((token, i) => expect(tok.encode(token, { parseSpecialTokens: true })).toEqual([numModelTokens + i]));
    const ids = tok.encode('Hi<|eot_id|>there<|start_header_id|>', { parseSpecialTokens: true });
    expect(ids.filter((id) => id === tok.eotTokenId)).toHaveLength(1);
    expect(ids.at(-1)).toBe(tok.tokenToId('<|start_header_id|>'));
    expect(tok.decode(ids)).toBe('Hi<|eot_id|>there<|start_header_id|>');
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('Hithere');
  });

  it('adds BOS only when asked', () => {
    const plain = tok.encode('the cat');
    expect(tok.encode('the cat', { addSpecialTokens: true })).toEqual([tok.bosTokenId, ...plain]);
    expect(plain).not.toContain(tok.bosTokenId);
    expect(tok.encode('', { addSpecialTokens: true })).toEqual([tok.bosTokenId]);
  });

  it('decodes nothing to the empty string and refuses ids outside the vocabulary', () => {
    expect(tok.decode([])).toBe('');
    expect(() => tok.decode([600])).toThrow('tokenizer: decode: id 600 is outside the vocabulary [0, 600)');
  });

  it('reloads from a folder with identical ids', async () => {
    const dir = path.join(tmpRoot, 'tok');
    writeTokenizerFolder(dir, { tokenizerJson, tokenizerConfig });
    const loaded = await Tokenizer.fromFolder(dir);
    for (const text of [...UNSEEN_TEXTS, 'The cat reads<|eot_id|>']) expect(loaded.encode(text)).toEqual(tok.encode(text));
    expect(loaded.vocabSize).toBe(600);
    expect(loaded.bosTokenId).toBe(tok.bosTokenId);
    expect(loaded.chatTemplate).toBe(LLAMA3_CHAT_TEMPLATE);
  });

  it('prefers chat_template.jinja and reads AddedToken-object config fields', async () => {
    const dir = path.join(tmpRoot, 'tok-jinja');
    const config = { ...tokenizerConfig, bos_token: { content: '<|begin_of_text|>', lstrip: false }, chat_template: [{ name: 'default', template: 'from-config' }] };
    writeTokenizerFolder(dir, { tokenizerJson, tokenizerConfig: config });
    expect((await Tokenizer.fromFolder(dir)).chatTemplate).toBe('from-config');
    fs.writeFileSync(path.join(dir, 'chat_template.jinja'), '{{ bos_token }}from-file');
    const loaded = await Tokenizer.fromFolder(dir);
    expect(loaded.chatTemplate).toBe('{{ bos_token }}from-file');
    expect(loaded.bosTokenId).toBe(numModelTokens);
  });

  it('names the folder when tokenizer.json is missing or broken', async () => {
    const missing = path.join(tmpRoot, 'empty');
    fs.mkdirSync(missing);
    await expect(Tokenizer.fromFolder(missing)).rejects.toThrow(`tokenizer: ${missing}: no tokenizer.json`);
    fs.writeFileSync(path.join(missing, 'tokenizer.json'), '{"version": ');
    await expect(Tokenizer.fromFolder(missing)).rejects.toThrow(`tokenizer: ${path.join(missing, 'tokenizer.json')}: invalid JSON`);
  });
});
