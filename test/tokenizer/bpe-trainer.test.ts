import { xorshift32 } from './xorshift.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BYTE_TO_UNICODE,
  LLAMA3_SPLIT_PATTERN,
  SPECIAL_TOKENS,
  buildSpecialTokensMap,
  buildTokenizerConfig,
  trainByteLevelBpe,
  writeTokenizerFolder,
} from '../../src/tokenizer/bpe-trainer.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { OUTPUT_MARKER } from '../../src/util/atomic.js';

/** A folder's entries without the output marker saveFolder/writeTokenizerFolder add (`src/util/atomic.ts`). */
const outputFiles = (dir: string) => fs.readdirSync(dir).filter((name) => name !== OUTPUT_MARKER).sort();

const SYLLABLES = ['ka', 'to', 're', 'mi', 'san', 'lo', 've', 'qu', 'ent', 'ion', 'ing', 'th', 'er', 'an', 'st', 'pre', 'con', 'al', 'ly', 'ou', 'gh', 'ph', 'ch', 'sh', 'ble'];

/** A capitalised pseudo-word of 2–4 syllables: the corpus's source of many distinct words. */
function makeName(pick: (n: number) => number): string {
  let name = '';
  const numSyllables = 2 + pick(3);
  for (let i = 0; i < numSyllables; i++) name += SYLLABLES[pick(SYLLABLES.length)];
  return name[0]!.toUpperCase() + name.slice(1);
}

/** Deterministic English-like sentences (xorshift32), grouped in paragraphs of 1–4 lines. */
function makeCorpus(numSentences: number, seed = 7): string[] {
  const pick = xorshift32(seed);
  const subjects = ['the cat', 'a dog', 'my friend', 'the teacher', 'our model', 'the quick brown fox', 'she', 'they'];
  const verbs = ['jumps over', 'reads', 'writes', 'likes', 'sees', 'trains', 'finds', "doesn't answer"];
  const objects = ['the lazy dog', 'a long book', 'the answer', 'some tokens', 'the question', 'a small garden', 'the river'];
  const endings = ['.', '!', '?', ', then rests.', ' today.', ' again and again.'];
  const documents: string[] = [];
  let lines: string[] = [];
  for (let i = 0; i < numSentences; i++) {
    const subject = subjects[pick(subjects.length)]!;
    let sentence = `${subject[0]!.toUpperCase()}${subject.slice(1)} ${verbs[pick(verbs.length)]} ${objects[pick(objects.length)]}${endings[pick(endings.length)]}`;
    if (pick(3) === 0) sentence += ` ${makeName(pick)} met ${makeName(pick)} in ${makeName(pick)}.`;
    if (pick(5) === 0) sentence += ` It costs ${pick(2000)} coins.`;
    lines.push(sentence);
    if (pick(4) === 0) {
      documents.push(lines.join('\n'));
      lines = [];
    }
  }
  if (lines.length > 0) documents.push(lines.join('\n'));
  return documents;
}

/** Llama 3's split regex, transcribed to JS by hand (no inline-flag groups in Node 20). */
const HAND_SPLIT = /(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

/**
 * Reference BPE: recount every pair over every word before each merge; best = largest count,
 * ties to the smaller (left id, right id). Slow and obviously right.
 */
function referenceMerges(corpus: string[], numMerges: number, minFrequency: number): string[] {
  const alphabet = [...BYTE_TO_UNICODE].sort((a, b) => a.charCodeAt(0) - b.charCodeAt(0));
  const ids = new Map(alphabet.map((char, id) => [char, id]));
  const strings = [...alphabet];
  const wordCounts = new Map<string, number>();
  for (const document of corpus) for (const word of document.match(HAND_SPLIT) ?? []) wordCounts.set(word, (wordCounts.get(word) ?? 0) + 1);
  const words = [...wordCounts].map(([word, count]) => ({
    symbols: [...new TextEncoder().encode(word)].map((byte) => ids.get(BYTE_TO_UNICODE[byte]!)!),
    count,
  }));
  const merges: string[] = [];
  while (merges.length < numMerges) {
    const counts = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]},${symbols[i + 1]}`;
        counts.set(key, (counts.get(key) ?? 0) + count);
      }
    }
    let best: [number, number] | undefined;
    let bestCount = 0;
    for (const [key, count] of counts) {
      const [a, b] = key.split(',').map(Number) as [number, number];
      if (count > bestCount || (count === bestCount && best !== undefined && (a < best[0] || (a === best[0] && b < best[1])))) {
        best = [a, b];
        bestCount = count;
      }
    }
    if (best === undefined || bestCount < minFrequency) break;
    const [a, b] = best;
    const merged = strings[a]! + strings[b]!;
    let mergedId = ids.get(merged);
    if (mergedId === undefined) {
      mergedId = strings.length;
      strings.push(merged);
      ids.set(merged, mergedId);
    }
    merges.push(`${strings[a]} ${strings[b]}`);
    for (const word of words) {
      const out: number[] = [];
      for (let i = 0; i < word.symbols.length; i++) {
        if (i + 1 < word.symbols.length && word.symbols[i] === a && word.symbols[i + 1] === b) {
          out.push(mergedId);
          i++;
        } else out.push(word.symbols[i]!);
      }
      word.symbols = out;
    }
  }
  return merges;
}

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-bpe-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

describe('BYTE_TO_UNICODE', () => {
  it('is GPT-2 bytes_to_unicode', () => {
    expect(BYTE_TO_UNICODE[0x20]).toBe('Ġ'); // U+0120
    expect(BYTE_TO_UNICODE[0x0a]).toBe('Ċ'); // U+010A
    expect(BYTE_TO_UNICODE[0x00]).toBe('\u0100');
    expect(BYTE_TO_UNICODE[0x41]).toBe('A');
    expect(BYTE_TO_UNICODE[0xad]).toBe('\u0143'); // 33 low + 34 (0x7f–0xa0) shifted bytes before it
    expect(BYTE_TO_UNICODE[0xff]).toBe('ÿ');
    expect(new Set(BYTE_TO_UNICODE).size).toBe(256);
  });
});

describe('trainByteLevelBpe', () => {
  it('learns the hand-worked merges of a tiny corpus', () => {
    // Words: "hug" ×1, "Ġhug" ×2, "Ġpug", "Ġpun", "Ġbun" (ids: u=84, n=77, p=79, b=65, Ġ=220).
    // 1) (u,g)=4 → ug;  2) (h,ug)=3 → hug;  3) ties at 2: (u,n) [84,77] < (Ġ,p) [220,79] < (Ġ,hug) [220,257];
    // 4) (Ġ,p);  5) (Ġ,hug). Every pair left occurs once: minFrequency 2 stops there.
    const json = trainByteLevelBpe(['hug hug hug pug pun bun'], { vocabSize: 1000 });
    expect(json.model.merges).toEqual(['u g', 'h ug', 'u n', 'Ġ p', 'Ġ hug']);
    expect(json.model.vocab['ug']).toBe(256);
    expect(json.model.vocab['Ġhug']).toBe(260);
    expect(json.model.vocab['Ġ']).toBe(220);
    expect(json.model.vocab['!']).toBe(0);
    expect(json.added_tokens.map((t) => [t.id, t.content])).toEqual(SPECIAL_TOKENS.map((content, i) => [261 + i, content]));
    // With minFrequency 1 the count-1 ties go to the smallest pair: (b, un) = [65, 258].
    const more = trainByteLevelBpe(['hug hug hug pug pun bun'], { vocabSize: 268, minFrequency: 1 });
    expect(more.model.merges).toEqual(['u g', 'h ug', 'u n', 'Ġ p', 'Ġ hug', 'b un']);
  });

  it('gives exactly the merges of a recount-everything reference', () => {
    const corpus = makeCorpus(150, 3);
    const json = trainByteLevelBpe(corpus, { vocabSize: 262 + 120, minFrequency: 2 });
    expect(json.model.merges).toEqual(referenceMerges(corpus, 120, 2));
    expect(json.model.merges.length).toBe(120);
  });

  it('reaches the requested vocabulary size and is deterministic', () => {
    const corpus = makeCorpus(400);
    const json = trainByteLevelBpe(corpus, { vocabSize: 500 });
    expect(Object.keys(json.model.vocab).length + json.added_tokens.length).toBe(500);
    expect(Math.max(...json.added_tokens.map((t) => t.id))).toBe(499);
    expect(new Set(Object.values(json.model.vocab)).size).toBe(494); // dense ids 0..493
    expect(Math.max(...Object.values(json.model.vocab))).toBe(493);
    expect(JSON.stringify(trainByteLevelBpe(corpus, { vocabSize: 500 }))).toBe(JSON.stringify(json));
    expect(JSON.stringify(trainByteLevelBpe(corpus.values(), { vocabSize: 500 }))).toBe(JSON.stringify(json));
  });

  it('never merges across special-token strings in the corpus', () => {
    const json = trainByteLevelBpe(['ab<|eot_id|>ab<|eot_id|>ab'], { vocabSize: 300 });
    expect(json.model.merges).toEqual(['a b']);
  });

  it('writes the HF tokenizer.json layout', () => {
    const json = trainByteLevelBpe(makeCorpus(50), { vocabSize: 300 });
    expect(Object.keys(json)).toEqual(['version', 'truncation', 'padding', 'added_tokens', 'normalizer', 'pre_tokenizer', 'post_processor', 'decoder', 'model']);
    expect(json.pre_tokenizer).toEqual({
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: LLAMA3_SPLIT_PATTERN }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    });
    expect(LLAMA3_SPLIT_PATTERN).toBe(String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`);
    expect(json.added_tokens[0]).toEqual({ id: 294, content: '<|begin_of_text|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    for (const merge of json.model.merges) expect(merge.split(' ')).toHaveLength(2);
    expect(json.post_processor).toMatchObject({ type: 'TemplateProcessing', special_tokens: { '<|begin_of_text|>': { ids: [294] } } });
  });

  it('rejects bad options and empty corpora with one-line errors', () => {
    expect(() => trainByteLevelBpe(['abc'], { vocabSize: 261 })).toThrow('bpe-trainer: vocabSize 261 must be an integer of at least 262 (256 bytes + 6 special tokens)');
    expect(() => trainByteLevelBpe(['abc'], { vocabSize: 300, minFrequency: 0 })).toThrow('minFrequency 0');
    expect(() => trainByteLevelBpe(['', ''], { vocabSize: 300 })).toThrow('bpe-trainer: the corpus has no text');
    expect(() => trainByteLevelBpe('abc abc' as unknown as string[], { vocabSize: 300 })).toThrow('corpus must be a list of documents');
  });

  it('trains a 2k vocabulary on 1 MB of text within seconds', () => {
    const corpus = makeCorpus(30_000, 11).map((document, i) => `${document} Item${i % 5000} v${i % 997}.`);
    expect(corpus.join('\n').length).toBeGreaterThan(1_000_000);
    const startMs = performance.now();
    const json = trainByteLevelBpe(corpus, { vocabSize: 2048 });
    const seconds = (performance.now() - startMs) / 1000;
    expect(Object.keys(json.model.vocab).length + 6).toBe(2048);
    expect(seconds).toBeLessThan(10);
  });
});

describe('tokenizer folder', () => {
  const json = trainByteLevelBpe(makeCorpus(100), { vocabSize: 320 });
  const config = buildTokenizerConfig(json, { modelMaxLength: 512 });

  it('builds the transformers config and special-token map', () => {
    expect(config).toMatchObject({
      bos_token: '<|begin_of_text|>',
      eos_token: '<|eot_id|>',
      pad_token: '<|pad|>',
      model_max_length: 512,
      tokenizer_class: 'PreTrainedTokenizerFast',
      clean_up_tokenization_spaces: false,
    });
    expect((config.added_tokens_decoder as Record<string, { content: string }>)['314']!.content).toBe('<|begin_of_text|>');
    expect(buildSpecialTokensMap(config)).toEqual({
      bos_token: { content: '<|begin_of_text|>', lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
      eos_token: { content: '<|eot_id|>', lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
      pad_token: { content: '<|pad|>', lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    });
  });

  it('writes a new folder whole, leaving no temp folder', async () => {
    const dir = path.join(tmpRoot, 'nested', 'tok');
    writeTokenizerFolder(dir, { tokenizerJson: json, tokenizerConfig: config });
    expect(outputFiles(dir)).toEqual(['special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
    expect(fs.readdirSync(path.dirname(dir))).toEqual(['tok']);
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'))).toEqual(json);
    const tok = await Tokenizer.fromFolder(dir);
    expect(tok.vocabSize).toBe(320);
  });

  it('replaces the tokenizer files of an existing folder and keeps its other files', () => {
    const dir = path.join(tmpRoot, 'model');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'config.json'), '{"vocab_size": 320}');
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), 'old');
    // A folder tokenizer train did not write is refused unless the caller asks to overwrite it.
    expect(() => writeTokenizerFolder(dir, { tokenizerJson: json, tokenizerConfig: config })).toThrow(/holds files tfalign tokenizer train did not write.*--overwrite/);
    expect(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')).toBe('old');
    writeTokenizerFolder(dir, { tokenizerJson: json, tokenizerConfig: config }, { overwrite: true });
    expect(outputFiles(dir)).toEqual(['config.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
    expect(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).toBe('{"vocab_size": 320}');
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'))).toEqual(config);
  });
});
