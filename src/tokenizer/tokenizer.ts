/**
 * The tokenizer of a Hugging Face folder: `tokenizer.json` (+ `tokenizer_config.json`, and
 * `chat_template.jinja` when present) loaded with `@huggingface/tokenizers`, behind a small API
 * with camelCase names and numeric ids.
 *
 * Special tokens are never added behind the caller's back: `encode` adds none unless asked
 * (`addSpecialTokens: true` runs the file's post-processor, e.g. Llama 3's BOS).
 *
 * Special-token strings inside text (`"hi<|eot_id|>"`) are encoded as plain text by default — the
 * bytes `<|`, `eot`, … — so that data cannot inject turn boundaries or an end of text into a
 * chat template (transformers' `split_special_tokens=True`). `parseSpecialTokens: true` matches
 * them as their single ids instead (transformers' default), for text that is meant to carry
 * control tokens. A rendered chat template is encoded with `encodeTemplate`: its own special
 * tokens are control tokens, the message contents inside it plain text.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as hfTokenizers from '@huggingface/tokenizers';

/**
 * The part of `@huggingface/tokenizers`' Tokenizer used here. The package's .d.ts files import
 * each other without file extensions, which NodeNext resolution cannot follow, so TypeScript sees
 * the package as untyped; this interface restores the checking at the one place it is entered.
 */
interface HfTokenizer {
  encode(text: string, options: { add_special_tokens: boolean }): { ids: number[] };
  /** The normalizer the file declares, or null (read for the bytes-per-token bound). */
  normalizer: unknown;
  decode(ids: number[], options: { skip_special_tokens: boolean; clean_up_tokenization_spaces: boolean }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
  get_vocab(withAddedTokens: boolean): Map<string, number>;
}

const HfTokenizerClass = (hfTokenizers as unknown as { Tokenizer: new (tokenizerJson: object, tokenizerConfig: object) => HfTokenizer })
  .Tokenizer;

/** One entry of `tokenizer.json`'s `added_tokens`, in the exact field layout HF writes. */
export interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/**
 * A `tokenizer.json` object (HF `tokenizers` serialization). Components other than the model
 * are kept opaque here: they are whatever the HF format allows and the JS library interprets them.
 */
export interface TokenizerJson {
  version: string;
  truncation: unknown;
  padding: unknown;
  added_tokens: AddedTokenJson[];
  normalizer: unknown;
  pre_tokenizer: unknown;
  post_processor: unknown;
  decoder: unknown;
  model: { type: string; [key: string]: unknown };
}

/** A special token as `tokenizer_config.json` writes it: a plain string or an AddedToken object. */
export type ConfigToken = string | { content: string; [key: string]: unknown };

/** A `tokenizer_config.json` object (transformers). Only the fields read here are typed. */
export interface TokenizerConfig {
  bos_token?: ConfigToken | null;
  eos_token?: ConfigToken | null;
  pad_token?: ConfigToken | null;
  /** One jinja source, or transformers' list of named templates (`default` is the chat one). */
  chat_template?: string | { name: string; template: string }[];
  model_max_length?: number;
  tokenizer_class?: string;
  [key: string]: unknown;
}

/** The token string of a config token field, whichever of its two forms it takes. */
function configTokenContent(token: ConfigToken | null | undefined): string | undefined {
  if (token === null || token === undefined) return undefined;
  return typeof token === 'string' ? token : token.content;
}

/** The chat template source of a config: the string, or the list entry named `default`. */
function configChatTemplate(config: TokenizerConfig): string | undefined {
  const template = config.chat_template;
  if (template === undefined || template === null) return undefined;
  if (typeof template === 'string') return template;
  return template.find((entry) => entry.name === 'default')?.template;
}

/** Reads and parses one JSON file of a tokenizer folder; errors are one line naming the file. */
function readJsonFile(file: string): unknown {
  const text = fs.readFileSync(file, 'utf8');
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`tokenizer: ${file}: invalid JSON (${(error as Error).message})`);
  }
}

/** The special token of Llama 3 chat templates that ends every message. */
const LLAMA3_EOT_TOKEN = '<|eot_id|>';

export class Tokenizer {
  /** Number of ids: one more than the largest id of the vocabulary and the added tokens. */
  readonly vocabSize: number;
  /** `bos_token` of the config, when it names a token of the vocabulary. */
  readonly bosTokenId: number | undefined;
  /** `eos_token` of the config: where generation stops (`<|eot_id|>` for the tokenizers trained here). */
  readonly eosTokenId: number | undefined;
  /** `pad_token` of the config. */
  readonly padTokenId: number | undefined;
  /** The token that ends a chat message: `<|eot_id|>` when the vocabulary has it, else the EOS. */
  readonly eotTokenId: number | undefined;
  /** Ids of every added token marked `special` (BOS, EOS, headers, pad, …). */
  readonly specialTokenIds: ReadonlySet<number>;
  /** The jinja chat template (`chat_template.jinja`, else the config's), if any. */
  readonly chatTemplate: string | undefined;
  /**
   * The id right-padded batches are filled with: `pad_token`, else the end-of-turn token (which
   * is the EOS when the vocabulary has no `<|eot_id|>`), else 0. Padding is masked out of
   * attention, losses and reward reads, so any id gives the same numbers; one rule for every
   * trainer, scorer and sampler keeps batches alike everywhere (TRL pads with EOS when a
   * tokenizer has no pad token).
   */
  get batchPadId(): number {
    return this.padTokenId ?? this.eotTokenId ?? 0;
  }

  /** Token strings of `bosTokenId` and `eosTokenId`, as the chat template receives them. */
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;

  /**
   * Most UTF-8 bytes of input one token can stand for (twice the longest token's bytes when the
   * tokenizer normalizes text, which may shorten it): a text of B bytes has at least
   * ⌈B / maxBytesPerToken⌉ tokens (`minNumTokens`), known without tokenizing it.
   */
  readonly maxBytesPerToken: number;

  private readonly hf: HfTokenizer;
  /** The same tokenizer without its special added tokens: special-token strings come out as plain text. */
  private plainHf: HfTokenizer | undefined;
  /** What the post-processor adds around a text (`addSpecialTokens`), for plain encodings. */
  private postProcessed: { before: number[]; after: number[] } | undefined;
  /** Every special token's content, longest first (leftmost-longest matching, as HF splits). */
  private readonly specialContents: string[];

  private constructor(
    readonly tokenizerJson: TokenizerJson,
    readonly tokenizerConfig: TokenizerConfig,
    chatTemplate: string | undefined,
  ) {
    this.hf = new HfTokenizerClass(tokenizerJson, tokenizerConfig);
    let maxId = -1;
    for (const id of this.hf.get_vocab(true).values()) maxId = Math.max(maxId, id);
    const specialTokenIds = new Set<number>();
    for (const token of tokenizerJson.added_tokens ?? []) {
      maxId = Math.max(maxId, token.id);
      if (token.special) specialTokenIds.add(token.id);
    }
    this.vocabSize = maxId + 1;
    this.specialTokenIds = specialTokenIds;
    this.specialContents = (tokenizerJson.added_tokens ?? [])
      .filter((t) => t.special)
      .map((t) => t.content)
      .sort((a, b) => b.length - a.length);
    let longest = 1;
    for (const token of this.hf.get_vocab(true).keys()) longest = Math.max(longest, Buffer.byteLength(token, 'utf8'));
    this.maxBytesPerToken = this.hf.normalizer ? 2 * longest : longest;
    this.bosToken = configTokenContent(tokenizerConfig.bos_token);
    this.eosToken = configTokenContent(tokenizerConfig.eos_token);
    this.bosTokenId = this.bosToken === undefined ? undefined : this.tokenToId(this.bosToken);
    this.eosTokenId = this.eosToken === undefined ? undefined : this.tokenToId(this.eosToken);
    const padToken = configTokenContent(tokenizerConfig.pad_token);
    this.padTokenId = padToken === undefined ? undefined : this.tokenToId(padToken);
    this.eotTokenId = this.tokenToId(LLAMA3_EOT_TOKEN) ?? this.eosTokenId;
    this.chatTemplate = chatTemplate ?? configChatTemplate(tokenizerConfig);
  }

  /**
   * Loads `DIR/tokenizer.json` with `DIR/tokenizer_config.json` (optional: `{}` when absent)
   * and `DIR/chat_template.jinja` (optional; it wins over the config's template, as in transformers).
   */
  static async fromFolder(dir: string): Promise<Tokenizer> {
    const tokenizerFile = path.join(dir, 'tokenizer.json');
    if (!fs.existsSync(tokenizerFile)) throw new Error(`tokenizer: ${dir}: no tokenizer.json`);
    const tokenizerJson = readJsonFile(tokenizerFile) as TokenizerJson;
    const configFile = path.join(dir, 'tokenizer_config.json');
    const tokenizerConfig = fs.existsSync(configFile) ? (readJsonFile(configFile) as TokenizerConfig) : {};
    const templateFile = path.join(dir, 'chat_template.jinja');
    const chatTemplate = fs.existsSync(templateFile) ? fs.readFileSync(templateFile, 'utf8') : undefined;
    try {
      return new Tokenizer(tokenizerJson, tokenizerConfig, chatTemplate);
    } catch (error) {
      throw new Error(`tokenizer: ${tokenizerFile}: ${(error as Error).message}`);
    }
  }

  /** A tokenizer from in-memory `tokenizer.json` and `tokenizer_config.json` objects. */
  static fromJson(tokenizerJson: TokenizerJson, tokenizerConfig: TokenizerConfig = {}): Tokenizer {
    return new Tokenizer(tokenizerJson, tokenizerConfig, undefined);
  }

  /**
   * Token ids of `text`. Special-token strings inside it are plain text unless
   * `parseSpecialTokens` (then they become their single ids; see the file comment).
   * `addSpecialTokens` (default false) runs the post-processor (Llama 3: prepend BOS).
   */
  encode(text: string, opts: { addSpecialTokens?: boolean; parseSpecialTokens?: boolean } = {}): number[] {
    const add = opts.addSpecialTokens ?? false;
    if (opts.parseSpecialTokens === true || this.specialContents.length === 0) return this.hf.encode(text, { add_special_tokens: add }).ids;
    const ids = this.plain().encode(text, { add_special_tokens: false }).ids;
    if (!add) return ids;
    const { before, after } = this.postProcessing();
    return [...before, ...ids, ...after];
  }

  /**
   * Token ids of a rendered chat template: special-token strings of the template are control
   * tokens, and each of `contents` (the message texts, in the order the template writes them) is
   * plain text wherever it appears, so a message cannot add a turn. When content and template
   * hold no special-token string inside a content, this equals `encode(rendered, {parseSpecialTokens: true})`.
   */
  encodeTemplate(rendered: string, contents: readonly string[]): number[] {
    if (this.specialContents.length === 0) return this.hf.encode(rendered, { add_special_tokens: false }).ids;
    // 1) the spans of the contents, found in order (a template that trims a content: its trimmed text)
    const spans: [number, number][] = [];
    let cursor = 0;
    for (const content of contents) {
      for (const candidate of [content, content.trim()]) {
        if (candidate === '') break;
        const at = rendered.indexOf(candidate, cursor);
        if (at < 0) continue;
        spans.push([at, at + candidate.length]);
        cursor = at + candidate.length;
        break;
      }
    }
    // 2) special tokens outside the spans split the text; each piece between them is plain text
    const ids: number[] = [];
    let pieceStart = 0;
    let i = 0;
    let span = 0;
    while (i < rendered.length) {
      while (span < spans.length && spans[span]![1] <= i) span++;
      if (span < spans.length && spans[span]![0] <= i) {
        i = spans[span]![1];
        continue;
      }
      const special = this.specialContents.find((c) => rendered.startsWith(c, i));
      if (special === undefined) {
        i++;
        continue;
      }
      if (i > pieceStart) ids.push(...this.plain().encode(rendered.slice(pieceStart, i), { add_special_tokens: false }).ids);
      ids.push(this.tokenToId(special)!);
      i += special.length;
      pieceStart = i;
    }
    if (rendered.length > pieceStart) ids.push(...this.plain().encode(rendered.slice(pieceStart), { add_special_tokens: false }).ids);
    return ids;
  }

  /** A lower bound on the tokens of `text`, from its UTF-8 length alone (see `maxBytesPerToken`). */
  minNumTokens(text: string): number {
    return Math.ceil(Buffer.byteLength(text, 'utf8') / this.maxBytesPerToken);
  }

  private plain(): HfTokenizer {
    this.plainHf ??= new HfTokenizerClass(
      { ...this.tokenizerJson, added_tokens: (this.tokenizerJson.added_tokens ?? []).filter((t) => !t.special) },
      this.tokenizerConfig,
    );
    return this.plainHf;
  }

  /** The ids the post-processor puts before and after a text: found around the encoding of "a". */
  private postProcessing(): { before: number[]; after: number[] } {
    if (this.postProcessed === undefined) {
      const bare = this.hf.encode('a', { add_special_tokens: false }).ids;
      const full = this.hf.encode('a', { add_special_tokens: true }).ids;
      const at = full.findIndex((_, k) => bare.every((id, j) => full[k + j] === id));
      this.postProcessed = at < 0 ? { before: [], after: [] } : { before: full.slice(0, at), after: full.slice(at + bare.length) };
    }
    return this.postProcessed;
  }

  /**
   * The text of `ids`; byte-level tokens are joined before UTF-8 decoding, so a character split
   * across tokens comes back whole. No clean-up of spaces: `decode(encode(s)) === s`.
   */
  decode(ids: number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new Error(`tokenizer: decode: id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
      }
    }
    return this.hf.decode(ids, {
      skip_special_tokens: opts.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: false,
    });
  }

  /** The id of a token string (vocabulary or added token), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  /** The token string of an id, or undefined. */
  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }
}
