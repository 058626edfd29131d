/**
 * Model-based difficulty: the policy's mean negative log-likelihood per response token,
 *
 *     difficulty = −(1/|y|) · Σₖ log π(yₖ | x, y<ₖ),
 *
 * over the main response y of each row (its tokens and the end-of-turn token that closes it, as
 * the SFT trainer trains on them) given its prompt x. A response the policy finds surprising
 * scores high: it teaches more than one the policy would already write. Llama 3 (arXiv 2407.21783
 * §4.2.3) scores difficulty with intention tags (InsTag) and a Llama judge; the mean NLL is a
 * model-based signal that needs neither, only the policy being trained.
 *
 * Rows are tokenized with `tokenizePromptResponse` (chat template when the tokenizer has one) and
 * batched by length through `responseLogprobs`; right padding never changes a row's value.
 */
import type { LlamaModel } from '../../src/model/llama.js';
import type { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { tokenizePromptResponse } from '../../src/tokenizer/chat-template.js';
import { responseLogprobs, type PromptResponseIds } from '../../src/inference/token-logprobs.js';
import { mainResponse, scoringPrompt, type CurationRow } from './row-text.js';
import type { ScoringOptions } from './quality.js';

/** Mean negative log-likelihood of each token sequence's response tokens (batched), in input order. */
export function meanResponseNll(model: LlamaModel, rows: readonly PromptResponseIds[], batchSize: number, padId: number): number[] {
  if (model.dims.isRewardModel) throw new Error('difficulty: the model is a reward model; difficulty needs a causal LM (the policy)');
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`difficulty: batchSize must be a positive integer, got ${batchSize}`);
  return responseLogprobs(model, [...rows], batchSize, padId).map((logps) => {
    let sum = 0;
    for (const logp of logps) sum += logp;
    return logps.length > 0 ? -sum / logps.length : 0;
  });
}

/**
 * The policy's mean token NLL of each row's main response given its prompt, in input order.
 * Errors name the row (`describeRow`): an untokenizable prompt, a token id outside the model's
 * vocabulary, or a row longer than the model's context.
 */
export function difficultyScores(model: LlamaModel, tokenizer: Tokenizer, rows: readonly CurationRow[], opts: ScoringOptions): number[] {
  const describeRow = opts.describeRow ?? ((i: number) => `rows[${i}]`);
  const sequences = rows.map((row, i): PromptResponseIds => {
    let ids: PromptResponseIds;
    try {
      ids = tokenizePromptResponse(tokenizer, scoringPrompt(row), mainResponse(row), { chat: opts.chat });
    } catch (err) {
      throw new Error(`${describeRow(i)}: prompt: ${(err as Error).message}`);
    }
    const numTokens = ids.promptIds.length + ids.responseIds.length;
    if (numTokens > model.dims.maxPositions) {
      throw new Error(`${describeRow(i)}: response: prompt + response are ${numTokens} tokens, more than the model's context of ${model.dims.maxPositions}`);
    }
    const bad = [...ids.promptIds, ...ids.responseIds].find((id) => id >= model.dims.vocabSize);
    if (bad !== undefined) throw new Error(`${describeRow(i)}: prompt: token id ${bad} is not below the model's vocabulary size ${model.dims.vocabSize} (tokenizer and model disagree)`);
    return ids;
  });
  const padId = tokenizer.batchPadId;
  return meanResponseNll(model, sequences, opts.batchSize, padId);
}
