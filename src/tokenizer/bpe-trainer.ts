/**
 * Byte-level BPE training (GPT-2 / Llama 3 style) for models trained from scratch, and the
 * Hugging Face tokenizer folder it produces.
 *
 * Pipeline, the same one `tokenizer.json` describes for encoding:
 *   1. special-token strings are cut out of the text (at encode time they become single ids);
 *   2. Llama 3's pre-tokenizer regex splits the text into words (`' world'`, `'123'`, `'\n\n'`);
 *   3. each word's UTF-8 bytes are mapped to printable characters with GPT-2's `bytes_to_unicode`
 *      table, so the 256 byte tokens cover every input and no `<unk>` exists;
 *   4. BPE (Sennrich et al. 2016, arXiv 1508.07909): repeatedly merge the most frequent adjacent
 *      pair of symbols, counted over distinct words weighted by their frequency.
 *
 * Speed: pair counts are updated incrementally. Each pair keeps the list of words it occurs in,
 * so a merge rewrites only those words, subtracting their old pairs and adding their new ones; a
 * max-heap with lazy invalidation (an entry whose count is stale is re-pushed with the current
 * count when popped) picks the next merge. A pair's count only falls, except for pairs with the
 * token just made, which are pushed after each merge; so every pair has a heap entry at its
 * current count or a stale one above it, and a popped entry whose count is current is the true
 * maximum. This is the algorithm of HF `tokenizers`' `BpeTrainer`; ties are broken the same way,
 * by the smaller (left id, right id) pair.
 *
 * The regex is compiled by `@huggingface/tokenizers`' own Oniguruma→JS translation, so the words
 * seen in training are exactly those seen when the saved file encodes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as hfTokenizers from '@huggingface/tokenizers';
import { LLAMA3_CHAT_TEMPLATE } from './chat-template.js';
import { writeOutputFolder } from '../util/atomic.js';
import type { AddedTokenJson, TokenizerConfig, TokenizerJson } from './tokenizer.js';

/** Llama 3's pre-tokenizer pattern, in the Oniguruma syntax `tokenizer.json` stores. */
export const LLAMA3_SPLIT_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** Special tokens appended after the merges, in id order (Llama 3 names; `<|pad|>` is ours). */
export const SPECIAL_TOKENS = [
  '<|begin_of_text|>',
  '<|end_of_text|>',
  '<|start_header_id|>',
  '<|end_header_id|>',
  '<|eot_id|>',
  '<|pad|>',
] as const;

export const BOS_TOKEN = '<|begin_of_text|>';
export const EOT_TOKEN = '<|eot_id|>';
export const PAD_TOKEN = '<|pad|>';

/** Number of byte tokens: the base vocabulary every byte-level BPE starts from. */
const NUM_BYTE_TOKENS = 256;

/**
 * GPT-2's `bytes_to_unicode`: printable bytes (`!`–`~`, `¡`–`¬`, `®`–`ÿ`) map to themselves,
 * the other 68 bytes to U+0100 onwards in byte order (space → `Ġ`, newline → `Ċ`).
 */
export const BYTE_TO_UNICODE: readonly string[] = (() => {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const table = new Array<string>(NUM_BYTE_TOKENS);
  let numShifted = 0;
  for (let b = 0; b < NUM_BYTE_TOKENS; b++) {
    table[b] = printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(NUM_BYTE_TOKENS + numShifted++);
  }
  return table;
})();

/** The BPE model section of a trained `tokenizer.json`. */
export interface ByteLevelBpeModelJson {
  type: 'BPE';
  dropout: null;
  unk_token: null;
  continuing_subword_prefix: null;
  end_of_word_suffix: null;
  fuse_unk: false;
  byte_fallback: false;
  ignore_merges: false;
  vocab: Record<string, number>;
  /** `"left right"` strings, rank order (the format every `tokenizers` version reads). */
  merges: string[];
  [key: string]: unknown;
}

/** The `tokenizer.json` object `trainByteLevelBpe` returns. */
export interface ByteLevelBpeTokenizerJson extends TokenizerJson {
  model: ByteLevelBpeModelJson;
}

export interface TrainByteLevelBpeOptions {
  /** Total ids: 256 bytes + merges + the 6 special tokens. At least 262. */
  vocabSize: number;
  /**
   * A pair is merged only when it occurs at least this often (default 2: a pair seen once is
   * noise). Training stops early, with a smaller vocabulary, when no pair is that frequent.
   */
  minFrequency?: number;
}

/** Pair key `left * 2^21 + right`: exact in a double for ids below 2^21 (2M). */
const PAIR_KEY_BASE = 2 ** 21;

function pairKey(left: number, right: number): number {
  return left * PAIR_KEY_BASE + right;
}

/**
 * Max-heap of (count, pair key): larger count first, then smaller key, which is HF's tie rule.
 * Parallel number arrays rather than objects: hundreds of thousands of entries are pushed.
 */
class PairHeap {
  private readonly counts: number[] = [];
  private readonly keys: number[] = [];

  get size(): number {
    return this.counts.length;
  }

  private before(i: number, j: number): boolean {
    const ci = this.counts[i]!;
    const cj = this.counts[j]!;
    return ci > cj || (ci === cj && this.keys[i]! < this.keys[j]!);
  }

  private swap(i: number, j: number): void {
    const c = this.counts[i]!;
    this.counts[i] = this.counts[j]!;
    this.counts[j] = c;
    const k = this.keys[i]!;
    this.keys[i] = this.keys[j]!;
    this.keys[j] = k;
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.counts.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  /** Removes the top entry and returns it as [count, key]. The heap must not be empty. */
  pop(): [number, number] {
    const top: [number, number] = [this.counts[0]!, this.keys[0]!];
    const lastCount = this.counts.pop()!;
    const lastKey = this.keys.pop()!;
    if (this.counts.length > 0) {
      this.counts[0] = lastCount;
      this.keys[0] = lastKey;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let best = i;
        if (left < this.counts.length && this.before(left, best)) best = left;
        if (right < this.counts.length && this.before(right, best)) best = right;
        if (best === i) break;
        this.swap(i, best);
        i = best;
      }
    }
    return top;
  }
}

/**
 * `@huggingface/tokenizers`' Split pre-tokenizer, typed by hand: the package's .d.ts files use
 * extensionless imports that NodeNext resolution cannot follow. `pattern` is its compiled regex.
 */
const SplitPreTokenizer = (
  hfTokenizers as unknown as { SplitPreTokenizer: new (config: object) => { pattern: RegExp | null } }
).SplitPreTokenizer;

/** The `pre_tokenizer` section: Llama 3's regex split, then bytes → printable characters. */
function llama3PreTokenizerJson(): TokenizerJson['pre_tokenizer'] {
  return {
    type: 'Sequence',
    pretokenizers: [
      { type: 'Split', pattern: { Regex: LLAMA3_SPLIT_PATTERN }, behavior: 'Isolated', invert: false },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  };
}

/**
 * Counts the distinct pre-tokenizer words of the corpus (strings of the original text).
 * Special-token strings are cut out first, as `encode` does before pre-tokenizing.
 */
function countWords(corpus: Iterable<string>): Map<string, number> {
  const splitter = new SplitPreTokenizer({
    type: 'Split',
    pattern: { Regex: LLAMA3_SPLIT_PATTERN },
    behavior: 'Isolated',
    invert: false,
  });
  const pattern = splitter.pattern;
  if (pattern === null) throw new Error('bpe-trainer: the pre-tokenizer pattern did not compile');
  const wordCounts = new Map<string, number>();
  const addWord = (word: string): void => {
    wordCounts.set(word, (wordCounts.get(word) ?? 0) + 1);
  };
  for (const document of corpus) {
    if (typeof document !== 'string') throw new Error(`bpe-trainer: corpus item is ${typeof document}, expected a string`);
    let sections = [document];
    for (const special of SPECIAL_TOKENS) {
      if (document.includes(special)) sections = sections.flatMap((section) => section.split(special));
    }
    for (const section of sections) {
      // regex_split of @huggingface/tokenizers (behavior Isolated): matches and the gaps between them.
      let end = 0;
      for (const match of section.matchAll(pattern)) {
        if (match.index > end) addWord(section.slice(end, match.index));
        if (match[0].length > 0) addWord(match[0]);
        end = match.index + match[0].length;
      }
      if (end < section.length) addWord(section.slice(end));
    }
  }
  return wordCounts;
}

/**
 * Trains a byte-level BPE tokenizer and returns its `tokenizer.json` object.
 *
 * Ids: 0–255 are the byte tokens (in code-point order of their printable characters, which is
 * GPT-2's order), then one id per merge result, then `SPECIAL_TOKENS` as `added_tokens`.
 * Deterministic: same corpus and options, same file.
 */
export function trainByteLevelBpe(
  corpus: string[] | Iterable<string>,
  opts: TrainByteLevelBpeOptions,
): ByteLevelBpeTokenizerJson {
  const minVocabSize = NUM_BYTE_TOKENS + SPECIAL_TOKENS.length;
  if (!Number.isInteger(opts.vocabSize) || opts.vocabSize < minVocabSize) {
    throw new Error(`bpe-trainer: vocabSize ${opts.vocabSize} must be an integer of at least ${minVocabSize} (256 bytes + ${SPECIAL_TOKENS.length} special tokens)`);
  }
  if (opts.vocabSize - SPECIAL_TOKENS.length > PAIR_KEY_BASE) {
    throw new Error(`bpe-trainer: vocabSize ${opts.vocabSize} exceeds the supported ${PAIR_KEY_BASE + SPECIAL_TOKENS.length}`);
  }
  if (typeof corpus === 'string') throw new Error('bpe-trainer: corpus must be a list of documents, not one string');
  const minFrequency = opts.minFrequency ?? 2;
  if (!Number.isInteger(minFrequency) || minFrequency < 1) {
    throw new Error(`bpe-trainer: minFrequency ${minFrequency} must be a positive integer`);
  }
  const numModelTokensWanted = opts.vocabSize - SPECIAL_TOKENS.length;

  // 1) Base vocabulary: the 256 byte characters in code-point order.
  const tokenStrings = [...BYTE_TO_UNICODE].sort((a, b) => a.charCodeAt(0) - b.charCodeAt(0));
  const tokenIds = new Map<string, number>(tokenStrings.map((token, id) => [token, id]));
  const byteToId = BYTE_TO_UNICODE.map((char) => tokenIds.get(char)!);

  // 2) Distinct words as symbol-id sequences, with their corpus frequencies.
  const wordCounts = countWords(corpus);
  if (wordCounts.size === 0) throw new Error('bpe-trainer: the corpus has no text');
  const encoder = new TextEncoder();
  const wordSymbols: Int32Array[] = [];
  const wordFrequencies: number[] = [];
  for (const [word, frequency] of wordCounts) {
    const bytes = encoder.encode(word);
    const symbols = new Int32Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) symbols[i] = byteToId[bytes[i]!]!;
    wordSymbols.push(symbols);
    wordFrequencies.push(frequency);
  }

  // 3) Initial pair counts, the words each pair occurs in, and the heap.
  const pairCounts = new Map<number, number>();
  const pairWords = new Map<number, number[]>();
  const addPairs = (wordIndex: number, sign: 1 | -1, onNewPair?: (key: number) => void): void => {
    const symbols = wordSymbols[wordIndex]!;
    const frequency = sign * wordFrequencies[wordIndex]!;
    for (let i = 0; i + 1 < symbols.length; i++) {
      const key = pairKey(symbols[i]!, symbols[i + 1]!);
      const count = (pairCounts.get(key) ?? 0) + frequency;
      if (count === 0) pairCounts.delete(key);
      else pairCounts.set(key, count);
      if (onNewPair !== undefined) onNewPair(key);
    }
  };
  for (let w = 0; w < wordSymbols.length; w++) {
    addPairs(w, 1, (key) => {
      const words = pairWords.get(key);
      if (words === undefined) pairWords.set(key, [w]);
      else if (words[words.length - 1] !== w) words.push(w);
    });
  }
  const heap = new PairHeap();
  for (const [key, count] of pairCounts) heap.push(count, key);

  // 4) Merge loop.
  const merges: string[] = [];
  const lastMergeSeen = new Int32Array(wordSymbols.length).fill(-1);
  while (tokenStrings.length < numModelTokensWanted && heap.size > 0) {
    const [heapCount, key] = heap.pop();
    const count = pairCounts.get(key) ?? 0;
    if (count !== heapCount) {
      if (count > 0) heap.push(count, key); // stale entry: counts only fall, so re-queue the current one
      continue;
    }
    if (count < minFrequency) break;
    const left = Math.floor(key / PAIR_KEY_BASE);
    const right = key % PAIR_KEY_BASE;
    const merged = tokenStrings[left]! + tokenStrings[right]!;
    // Two different merges can spell the same string ('a'+'bc', 'ab'+'c'): reuse its id, as HF does.
    let mergedId = tokenIds.get(merged);
    if (mergedId === undefined) {
      mergedId = tokenStrings.length;
      tokenStrings.push(merged);
      tokenIds.set(merged, mergedId);
    }
    const mergeIndex = merges.length;
    merges.push(`${tokenStrings[left]} ${tokenStrings[right]}`);

    const pairsWithMerged = new Set<number>();
    for (const w of pairWords.get(key) ?? []) {
      if (lastMergeSeen[w] === mergeIndex) continue;
      lastMergeSeen[w] = mergeIndex;
      const symbols = wordSymbols[w]!;
      let occurs = false;
      for (let i = 0; i + 1 < symbols.length && !occurs; i++) occurs = symbols[i] === left && symbols[i + 1] === right;
      if (!occurs) continue; // the pair left this word in an earlier merge
      addPairs(w, -1);
      // Left to right, non-overlapping: 'a a a' with (a, a) becomes 'aa a', as BPE encoding does.
      const rewritten: number[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i + 1 < symbols.length && symbols[i] === left && symbols[i + 1] === right) {
          rewritten.push(mergedId);
          i++;
        } else {
          rewritten.push(symbols[i]!);
        }
      }
      wordSymbols[w] = Int32Array.from(rewritten);
      addPairs(w, 1, (newKey) => {
        const newLeft = Math.floor(newKey / PAIR_KEY_BASE);
        const newRight = newKey % PAIR_KEY_BASE;
        if (newLeft !== mergedId && newRight !== mergedId) return;
        pairsWithMerged.add(newKey);
        const words = pairWords.get(newKey);
        if (words === undefined) pairWords.set(newKey, [w]);
        else if (words[words.length - 1] !== w) words.push(w);
      });
    }
    pairWords.delete(key);
    pairCounts.delete(key);
    for (const newKey of pairsWithMerged) {
      const newCount = pairCounts.get(newKey);
      if (newCount !== undefined) heap.push(newCount, newKey);
    }
  }

  // 5) The tokenizer.json object.
  const vocab: Record<string, number> = {};
  tokenStrings.forEach((token, id) => {
    vocab[token] = id;
  });
  const addedTokens: AddedTokenJson[] = SPECIAL_TOKENS.map((content, i) => ({
    id: tokenStrings.length + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const bosId = tokenStrings.length + SPECIAL_TOKENS.indexOf(BOS_TOKEN);
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: llama3PreTokenizerJson(),
    // Llama 3's template: BOS before a single sequence (and before each of a pair). Both the JS
    // library and Python `tokenizers` run TemplateProcessing; it applies only with add_special_tokens.
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: BOS_TOKEN, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: BOS_TOKEN, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: BOS_TOKEN, type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { [BOS_TOKEN]: { id: BOS_TOKEN, ids: [bosId], tokens: [BOS_TOKEN] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      // false: encoding replays the merges, which reproduces the training segmentation exactly.
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

/** An AddedToken object as `special_tokens_map.json` and `added_tokens_decoder` write it. */
function addedTokenObject(content: string): Record<string, unknown> {
  return { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
}

/**
 * The `tokenizer_config.json` of a trained tokenizer (transformers' `PreTrainedTokenizerFast`):
 * BOS `<|begin_of_text|>`, EOS `<|eot_id|>` (where chat generation stops, as in Llama 3 Instruct),
 * pad `<|pad|>`, and the Llama 3 chat template. Spaces are never "cleaned up" on decode, so
 * decoding gives back the exact text.
 */
export function buildTokenizerConfig(
  tokenizerJson: TokenizerJson,
  opts: { modelMaxLength?: number } = {},
): TokenizerConfig {
  const addedTokensDecoder: Record<string, Record<string, unknown>> = {};
  for (const token of tokenizerJson.added_tokens) {
    addedTokensDecoder[String(token.id)] = { ...addedTokenObject(token.content), special: token.special };
  }
  return {
    added_tokens_decoder: addedTokensDecoder,
    bos_token: BOS_TOKEN,
    eos_token: EOT_TOKEN,
    pad_token: PAD_TOKEN,
    chat_template: LLAMA3_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    model_input_names: ['input_ids', 'attention_mask'],
    model_max_length: opts.modelMaxLength ?? 2048,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
}

/** `special_tokens_map.json`: the bos/eos/pad (and unk) tokens of a config, as AddedToken objects. */
export function buildSpecialTokensMap(tokenizerConfig: TokenizerConfig): Record<string, Record<string, unknown>> {
  const map: Record<string, Record<string, unknown>> = {};
  for (const field of ['bos_token', 'eos_token', 'unk_token', 'pad_token'] as const) {
    const token = tokenizerConfig[field];
    if (typeof token === 'string') map[field] = addedTokenObject(token);
    else if (token !== null && typeof token === 'object' && typeof (token as { content?: unknown }).content === 'string') {
      map[field] = addedTokenObject((token as { content: string }).content);
    }
  }
  return map;
}

/**
 * Writes `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` into `dir`.
 *
 * Output-folder policy (`src/util/atomic.ts`): a new `dir` is filled as a sibling
 * `DIR.tmp-<pid>-<random>` and renamed into place, so it appears complete or not at all. An
 * existing `dir` must be empty or a previous `tokenizer train` output, or `overwrite` must be set
 * (e.g. a model checkpoint whose tokenizer is replaced); each file is then renamed over its old
 * version, so every file is whole, old or new, and the folder's other files stay.
 */
export function writeTokenizerFolder(
  dir: string,
  files: { tokenizerJson: TokenizerJson; tokenizerConfig: TokenizerConfig },
  options: { overwrite?: boolean; flag?: string } = {},
): void {
  const contents: [string, string][] = [
    ['tokenizer.json', JSON.stringify(files.tokenizerJson, null, 2)],
    ['tokenizer_config.json', JSON.stringify(files.tokenizerConfig, null, 2)],
    ['special_tokens_map.json', JSON.stringify(buildSpecialTokensMap(files.tokenizerConfig), null, 2)],
  ];
  if (fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory() === false) throw new Error(`tokenizer: ${dir}: exists and is not a folder`);
  writeOutputFolder(dir, (staging) => {
    for (const [name, text] of contents) fs.writeFileSync(path.join(staging, name), text + '\n');
  }, { command: 'tokenizer train', overwrite: options.overwrite, flag: options.flag });
}
