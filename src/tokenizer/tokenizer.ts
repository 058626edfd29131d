/**
 * The tokenizer of a Hugging Face folder: `tokenizer.json` (+ `tokenizer_config.json`, and
 * `chat_template.jinja` when present) loaded with `@huggingface/tokenizers`, behind a small API
 * with camelCase names and numeric ids.
 *
 * Special tokens are never added behind the caller's back: `encode` adds none unless asked
 * (`addSpecialTokens: true` runs the file's post-processor, e.g. Llama 3's BOS). Special-token
 * strings that appear in the text (`<|eot_id|>`) are always matched as their single ids, which
 * is what lets a rendered chat template be encoded as one string.
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
  /** Token strings of `bosTokenId` and `eosTokenId`, as the chat template receives them. */
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;

  private readonly hf: HfTokenizer;

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
   * Token ids of `text`. Special-token strings inside the text become their single ids.
   * `addSpecialTokens` (default false) runs the post-processor (Llama 3: prepend BOS).
   */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? false }).ids;
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
