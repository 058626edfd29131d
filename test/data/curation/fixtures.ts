/**
 * Tiny checkpoints for the curation tests: a byte-level BPE tokenizer with the Llama 3 chat
 * template, a random `configs/models/tiny.json` causal LM (the policy / embedder) and a reward
 * model made from it. Call after `initBackend`.
 */
import * as path from 'node:path';
import { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../../../src/tokenizer/bpe-trainer.js';
import { createModel } from '../../../src/model/create.js';
import { savePretrained } from '../../../src/model/pretrained.js';
import { toRewardModel } from '../../../src/model/weights.js';

export interface TinyCheckpoints {
  tokenizerDir: string;
  policyDir: string;
  rewardDir: string;
}

export async function buildTinyCheckpoints(root: string): Promise<TinyCheckpoints> {
  const tokenizerDir = path.join(root, 'tok');
  const words = ['river', 'water', 'stone', 'cloud', 'bread', 'music', 'paper', 'light', 'Tell', 'me', 'about', 'The', 'flows', 'bake'];
  const corpus = Array.from({ length: 400 }, (_, i) => `${words[i % 14]} ${words[(i * 5) % 14]} ${words[(i * 3 + 1) % 14]}.`);
  const tokenizerJson = trainByteLevelBpe([corpus.join('\n')], { vocabSize: 320 });
  writeTokenizerFolder(tokenizerDir, { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson) });
  const policyDir = path.join(root, 'policy');
  const policy = await createModel({ configFile: 'configs/models/tiny.json', tokenizerDir, out: policyDir, seed: 3 });
  const rewardDir = path.join(root, 'rm');
  const rewardModel = toRewardModel(policy, 5);
  await savePretrained(rewardModel, rewardDir, { tokenizerDir });
  policy.dispose();
  rewardModel.dispose();
  return { tokenizerDir, policyDir, rewardDir };
}
