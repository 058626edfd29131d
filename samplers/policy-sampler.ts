/**
 * K text samples per prompt from a causal LM and its tokenizer: prompts rendered as the policy
 * sees them (chat template with the generation prompt, or [BOS] + text), decoded through the
 * sampling engine (paged KV cache by default), and turned back into text without the stop token.
 * Used by `tfalign sample`, and by the rounds for preferences, rejection sampling and evaluation.
 */
import type { LlamaModel } from '../src/model/llama.js';
import type { Tokenizer } from '../src/tokenizer/tokenizer.js';
import { tokenizePromptResponse } from '../src/tokenizer/chat-template.js';
import type { Conversation } from '../data/rows.js';
import { SamplingEngine, type SampleOutput, type SamplingEngineOptions, type SamplingStats } from './engine.js';
import type { DecodingOptions } from './decoding.js';
import type { GeneratedSample } from './rejection.js';

/** Token ids that end a sample: the tokenizer's end-of-turn and EOS, and the config's eos_token_id. */
export function stopTokenIds(model: LlamaModel, tok: Tokenizer): number[] {
  const eos = model.config.eos_token_id;
  const fromConfig = eos === null || eos === undefined ? [] : Array.isArray(eos) ? eos : [eos];
  const ids = [tok.eotTokenId, tok.eosTokenId, ...fromConfig].filter((id): id is number => id !== undefined && id < model.dims.vocabSize);
  return [...new Set(ids)];
}

/** The text of a sample: its tokens without the stop token that ended it, special tokens dropped. */
export function sampleText(tok: Tokenizer, output: SampleOutput): string {
  const ids = output.finishReason === 'stop' ? output.tokenIds.slice(0, -1) : output.tokenIds;
  return tok.decode(ids, { skipSpecialTokens: true });
}

export interface PolicySamplingOptions {
  numSamples: number;
  decoding: Omit<DecodingOptions, 'stopTokenIds'>;
  /** Sample i of prompt j uses seed + j·K + i, so prompts never share a stream. */
  seed: number;
  chat?: boolean;
  engine?: Omit<SamplingEngineOptions, 'model'>;
  /** Names prompt j in errors (e.g. `prompts.jsonl:12`). */
  describePrompt?: (j: number) => string;
  onPromptDone?: (numDone: number, numTokensSoFar: number) => void;
}

export interface PolicySamples {
  /** Per prompt, its K samples in order. */
  samples: GeneratedSample[][];
  stats: SamplingStats;
}

export function samplePolicy(policy: LlamaModel, tok: Tokenizer, prompts: readonly Conversation[], opts: PolicySamplingOptions): PolicySamples {
  if (policy.dims.isRewardModel) throw new Error('sample: the policy is a reward model; give a causal LM');
  const describe = opts.describePrompt ?? ((j: number) => `prompt ${j}`);
  const requests = prompts.map((prompt, j) => {
    let promptIds: number[];
    try {
      promptIds = tokenizePromptResponse(tok, prompt, '', { chat: opts.chat }).promptIds;
    } catch (err) {
      throw new Error(`${describe(j)}: prompt: ${(err as Error).message}`);
    }
    const bad = promptIds.find((id) => id >= policy.dims.vocabSize);
    if (bad !== undefined) throw new Error(`${describe(j)}: prompt: token id ${bad} is not below the policy's vocabulary size ${policy.dims.vocabSize}`);
    if (promptIds.length + opts.decoding.maxNewTokens > policy.dims.maxPositions) {
      throw new Error(`${describe(j)}: prompt: ${promptIds.length} tokens + ${opts.decoding.maxNewTokens} new tokens exceed the policy's context of ${policy.dims.maxPositions}`);
    }
    return { promptIds, numSamples: opts.numSamples, seed: opts.seed + j * opts.numSamples };
  });
  const engine = new SamplingEngine({ ...(opts.engine ?? {}), model: policy });
  let numDone = 0;
  let numTokens = 0;
  const { outputs, stats } = engine.generate(
    requests,
    { ...opts.decoding, stopTokenIds: stopTokenIds(policy, tok) },
    {
      onRequestDone: (_r, samples) => {
        numDone++;
        numTokens += samples.reduce((a, s) => a + s.tokenIds.length, 0);
        opts.onPromptDone?.(numDone, numTokens);
      },
    },
  );
  const samples = outputs.map((perPrompt) =>
    perPrompt.map((s) => ({ text: sampleText(tok, s), numTokens: s.tokenIds.length, finishReason: s.finishReason })),
  );
  return { samples, stats };
}
