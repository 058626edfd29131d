/**
 * Text for the quickstart's from-scratch tokenizer and base model, in the layout the rounds use.
 *
 * A pretraining document is one prompt and a (noisy) demonstration rendered with the Llama 3 chat
 * template that trained tokenizers carry (`buildTokenizerConfig`), BOS included:
 *
 *     <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nsort: 7 2 9<|eot_id|>
 *     <|start_header_id|>assistant<|end_header_id|>\n\n2 7 9<|eot_id|>
 *
 * (one line in the document; broken here for reading). Its tokens are exactly those of the prompt
 * with the generation prompt followed by the response and `<|eot_id|>`, i.e. what sampling feeds
 * the model and what SFT trains on, so the pretrained model already speaks the format and stops.
 * Pretraining prompts come from the training split only: held-out prompts stay unseen.
 */
import { BOS_TOKEN } from '../../src/tokenizer/bpe-trainer.js';
import { LLAMA3_CHAT_TEMPLATE, renderChatTemplate } from '../../src/tokenizer/chat-template.js';
import { Rng } from '../../src/util/rng.js';
import { DEFAULT_NOISE_LEVEL, DIGITS, LETTERS, TASK_KINDS, WORDS, drawPrompt, noisyDemonstration } from './task.js';

/** One document: `prompt` and `answer` as a user turn and an assistant turn of the Llama 3 template. */
export function renderDemonstration(prompt: string, answer: string): string {
  return renderChatTemplate(
    LLAMA3_CHAT_TEMPLATE,
    [
      { role: 'user', content: prompt },
      { role: 'assistant', content: answer },
    ],
    { bosToken: BOS_TOKEN },
  );
}

export interface PretrainingCorpusOptions {
  /** Number of documents (one demonstration each). */
  numDocuments: number;
  /** Seed of the prompt and noise streams. */
  seed: number;
  /** Demonstration noise in [0, 1] (`noisyDemonstration`); default `DEFAULT_NOISE_LEVEL`. */
  noiseLevel?: number;
}

/**
 * `numDocuments` rendered demonstrations on training-split prompts. Prompts may repeat (with
 * different noise), as the `repeat` kind has few distinct prompts. Document i depends only on
 * `seed` and i: the prompt and the noise of document i come from their own `fork(i)` streams.
 */
export function buildPretrainingCorpus(opts: PretrainingCorpusOptions): string[] {
  const { numDocuments, seed } = opts;
  const noiseLevel = opts.noiseLevel ?? DEFAULT_NOISE_LEVEL;
  if (!Number.isInteger(numDocuments) || numDocuments < 0) {
    throw new Error(`synthetic corpus: numDocuments must be a non-negative integer, got ${numDocuments}`);
  }
  // Streams 2 and 3: apart from generatePrompts' train (0) and held-out (1) streams of the same seed.
  const promptStreams = new Rng(seed).fork(2);
  const noiseStreams = new Rng(seed).fork(3);
  const documents: string[] = [];
  for (let i = 0; i < numDocuments; i++) {
    const prompt = drawPrompt(promptStreams.fork(i), 'train');
    documents.push(renderDemonstration(prompt, noisyDemonstration(prompt, noiseStreams.fork(i), noiseLevel)));
  }
  return documents;
}

/**
 * Text to train the tokenizer on: `numDocuments` rendered *correct* demonstrations (the layout
 * the model reads and writes) and one sheet listing every word, letter, digit and kind name as
 * the task writes them, repeated so that each appears often enough to be merged.
 */
export function buildTokenizerCorpus(opts: { numDocuments: number; seed: number }): string[] {
  const documents = buildPretrainingCorpus({ ...opts, noiseLevel: 0 });
  const items = [...WORDS, ...LETTERS, ...DIGITS, ...TASK_KINDS];
  const sheet = Array.from({ length: 4 }, () => `${items.join(' ')}\n`).join('');
  return [...documents, sheet];
}
