/**
 * Chat templates and exact token boundaries for SFT / DPO / reward-model data.
 *
 * Rendering uses `@huggingface/jinja` (the engine transformers.js uses, with transformers'
 * `trim_blocks` and `lstrip_blocks`). Rendered text is encoded with `Tokenizer.encodeTemplate`:
 * the template's special-token strings (`<|begin_of_text|>`, `<|eot_id|>`) become single ids, no
 * BOS is added on top (a template that writes `{{ bos_token }}` gives exactly one BOS), and the
 * message contents are plain text — a response holding `<|eot_id|>` cannot end its turn early or
 * start a new one. `parseSpecialTokens: true` matches special-token strings in contents too.
 *
 * Two failures users of TRL report most are handled here by construction:
 * - tokens merged across the prompt/response boundary: prompt and response are encoded as
 *   separate strings and their ids concatenated, so the response tokens are the ones the model
 *   produces after the prompt at generation time;
 * - duplicate BOS from chat templates: BOS is added only when the encoded prompt lacks it, and
 *   a second BOS anywhere is an error.
 */
import { Template } from '@huggingface/jinja';
import type { Tokenizer } from './tokenizer.js';

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/**
 * Llama 3's chat format (the tokenizers trained here carry it):
 * `<|begin_of_text|>` then per message `<|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>`,
 * and with `add_generation_prompt` a trailing `<|start_header_id|>assistant<|end_header_id|>\n\n`.
 * Unlike Meta's file it does not `trim` contents: the text trained on is the text given.
 */
export const LLAMA3_CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/** Parsed templates by source: parsing is the costly step and a process uses one or two. */
const parsedTemplates = new Map<string, Template>();

function parseTemplate(source: string): Template {
  let template = parsedTemplates.get(source);
  if (template === undefined) {
    try {
      template = new Template(source);
    } catch (error) {
      throw new Error(`chat template: does not parse (${(error as Error).message})`);
    }
    parsedTemplates.set(source, template);
  }
  return template;
}

/** Renders a jinja chat template with the variables transformers passes. */
export function renderChatTemplate(
  source: string,
  messages: readonly ChatMessage[],
  opts: { bosToken?: string; eosToken?: string; addGenerationPrompt?: boolean } = {},
): string {
  return parseTemplate(source).render({
    messages: messages.map((message) => ({ role: message.role, content: message.content })),
    bos_token: opts.bosToken ?? '',
    eos_token: opts.eosToken ?? '',
    add_generation_prompt: opts.addGenerationPrompt ?? false,
  });
}

/** Renders `tok`'s own chat template; a tokenizer without one is an error. */
export function applyChatTemplate(
  tok: Tokenizer,
  messages: readonly ChatMessage[],
  opts: { addGenerationPrompt?: boolean } = {},
): string {
  if (tok.chatTemplate === undefined) throw new Error('chat template: the tokenizer has none (tokenizer_config.json chat_template)');
  return renderChatTemplate(tok.chatTemplate, messages, {
    bosToken: tok.bosToken,
    eosToken: tok.eosToken,
    addGenerationPrompt: opts.addGenerationPrompt ?? false,
  });
}

/**
 * Ids of rendered template text holding `contents`: contents as plain text (`encodeTemplate`), or
 * with `parse` every special-token string matched, contents included.
 */
function encodeRendered(tok: Tokenizer, text: string, contents: readonly string[], parse: boolean): number[] {
  return parse ? tok.encode(text, { parseSpecialTokens: true }) : tok.encodeTemplate(text, contents);
}

/** Throws unless `ids` holds at most one BOS, and that one first. */
function assertSingleBos(tok: Tokenizer, ids: readonly number[], where: string): void {
  if (tok.bosTokenId === undefined) return;
  const positions: number[] = [];
  ids.forEach((id, i) => {
    if (id === tok.bosTokenId) positions.push(i);
  });
  if (positions.length > 1 || (positions.length === 1 && positions[0] !== 0)) {
    throw new Error(`chat template: ${where}: BOS id ${tok.bosTokenId} at positions [${positions.join(', ')}], expected once at 0`);
  }
}

function requirePrefix(prefix: string, text: string, messageIndex: number): void {
  if (!text.startsWith(prefix)) {
    throw new Error(`chat template: rendering of messages[0..${messageIndex}] does not extend the rendering before it, so per-message spans are undefined`);
  }
}

export interface TokenizedConversation {
  /** Token ids of the rendered conversation (BOS from the template, if it writes one). */
  ids: number[];
  /** Per id: true on the tokens of assistant contents and on the token that ends each of them. */
  assistantMask: boolean[];
}

/**
 * Token ids of a whole conversation, with a mask of what an SFT loss trains on.
 *
 * Spans are found by rendering prefixes: message i's text is render(messages[0..i]) minus
 * render(messages[0..i-1]); for an assistant message the generation prompt
 * render(messages[0..i-1], add_generation_prompt) is split off first and the content located
 * in the rest. Each piece is encoded on its own, so assistant tokens are exactly those the model
 * emits after the generation prompt. In the text after an assistant content, tokens through the
 * first special token (`<|eot_id|>`; the whole rest when it holds no special token) are
 * trained on: the model must learn to stop.
 */
export function tokenizeConversation(
  tok: Tokenizer,
  messages: readonly ChatMessage[],
  opts: { addGenerationPrompt?: boolean; parseSpecialTokens?: boolean } = {},
): TokenizedConversation {
  const parse = opts.parseSpecialTokens ?? false;
  const template = (text: string, contents: readonly string[]) => encodeRendered(tok, text, contents, parse);
  const ids: number[] = [];
  const assistantMask: boolean[] = [];
  const push = (pieceIds: readonly number[], trained: boolean | ((index: number) => boolean)): void => {
    pieceIds.forEach((id, index) => {
      ids.push(id);
      assistantMask.push(typeof trained === 'boolean' ? trained : trained(index));
    });
  };
  const render = (count: number, addGenerationPrompt: boolean): string =>
    applyChatTemplate(tok, messages.slice(0, count), { addGenerationPrompt });

  let renderedBefore = '';
  for (let i = 0; i < messages.length; i++) {
    const message = messages[i]!;
    const rendered = render(i + 1, false);
    if (message.role !== 'assistant') {
      requirePrefix(renderedBefore, rendered, i);
      push(template(rendered.slice(renderedBefore.length), [message.content]), false);
      renderedBefore = rendered;
      continue;
    }
    // 1) The generation prompt (header): context, not trained on.
    const withPrompt = render(i, true);
    requirePrefix(renderedBefore, withPrompt, i);
    push(template(withPrompt.slice(renderedBefore.length), []), false);
    requirePrefix(withPrompt, rendered, i);
    // 2) The content, located in what the message adds after the generation prompt.
    const added = rendered.slice(withPrompt.length);
    let content = message.content;
    let at = added.indexOf(content);
    if (at < 0) {
      content = content.trim(); // templates that `| trim` contents
      at = added.indexOf(content);
    }
    if (at < 0) throw new Error(`chat template: messages[${i}] (assistant): its content is not in the rendered text`);
    push(template(added.slice(0, at), []), false);
    push(tok.encode(content, { parseSpecialTokens: parse }), true);
    // 3) The termination: trained through the first special token.
    const tailIds = template(added.slice(at + content.length), []);
    const firstSpecial = tailIds.findIndex((id) => tok.specialTokenIds.has(id));
    const lastTrained = firstSpecial < 0 ? tailIds.length - 1 : firstSpecial;
    push(tailIds, (index) => index <= lastTrained);
    renderedBefore = rendered;
  }
  if (opts.addGenerationPrompt ?? false) {
    const withPrompt = render(messages.length, true);
    requirePrefix(renderedBefore, withPrompt, messages.length);
    push(template(withPrompt.slice(renderedBefore.length), []), false);
  }
  assertSingleBos(tok, ids, 'conversation');
  return { ids, assistantMask };
}

export interface TokenizedPromptResponse {
  promptIds: number[];
  responseIds: number[];
}

/**
 * Prompt and response ids for SFT / DPO / RM rows, encoded as separate strings (no BPE merge
 * across the boundary). `promptIds.concat(responseIds)` is the training sequence.
 *
 * chat (default: when the tokenizer has a chat template): prompt = template over the prompt
 * messages (a string becomes one user message) with the generation prompt; response =
 * encode(response) + [EOT]. Otherwise: prompt = [BOS] + encode(prompt) (BOS not repeated when the
 * text already begins with it), response = encode(response) + [EOS]. Special-token strings in the
 * prompt and response texts are plain text unless `parseSpecialTokens`.
 */
export function tokenizePromptResponse(
  tok: Tokenizer,
  prompt: string | readonly ChatMessage[],
  response: string,
  opts: { chat?: boolean; parseSpecialTokens?: boolean } = {},
): TokenizedPromptResponse {
  const chat = opts.chat ?? tok.chatTemplate !== undefined;
  const parse = opts.parseSpecialTokens ?? false;
  let promptIds: number[];
  let endId: number | undefined;
  if (chat) {
    const messages: readonly ChatMessage[] = typeof prompt === 'string' ? [{ role: 'user', content: prompt }] : prompt;
    promptIds = encodeRendered(tok, applyChatTemplate(tok, messages, { addGenerationPrompt: true }), messages.map((m) => m.content), parse);
    endId = tok.eotTokenId;
    if (endId === undefined) throw new Error('chat template: the tokenizer has no <|eot_id|> or eos_token to end the response');
  } else {
    if (typeof prompt !== 'string') throw new Error('tokenizePromptResponse: a message-list prompt needs chat: true');
    promptIds = tok.encode(prompt, { parseSpecialTokens: parse });
    if (tok.bosTokenId !== undefined && promptIds[0] !== tok.bosTokenId) promptIds.unshift(tok.bosTokenId);
    endId = tok.eosTokenId;
    if (endId === undefined) throw new Error('tokenizePromptResponse: the tokenizer has no eos_token to end the response');
  }
  assertSingleBos(tok, promptIds, 'prompt');
  const responseIds = [...tok.encode(response, { parseSpecialTokens: parse }), endId];
  assertSingleBos(tok, promptIds.concat(responseIds), 'prompt + response');
  return { promptIds, responseIds };
}

/**
 * Prompt ids: the chat template with the generation prompt, or [BOS] + text. Special-token strings
 * in the prompt are plain text unless `parseSpecialTokens`.
 */
export function encodePrompt(tok: Tokenizer, prompt: string, chat: boolean, parseSpecialTokens = false): number[] {
  if (chat) {
    const rendered = applyChatTemplate(tok, [{ role: 'user', content: prompt }], { addGenerationPrompt: true });
    return parseSpecialTokens ? tok.encode(rendered, { parseSpecialTokens: true }) : tok.encodeTemplate(rendered, [prompt]);
  }
  return [...(tok.bosTokenId !== undefined ? [tok.bosTokenId] : []), ...tok.encode(prompt, { parseSpecialTokens })];
}
