/**
 * A round whose reward model reads the reward through the policy's LM head
 * (`rewardModel.head: logprob`, the quickstart's): the RM stage starts from the best policy and
 * saves a marked causal LM, and rejection sampling on two pool workers scores every sample with
 * exactly what `scoreResponses` gives in this thread, keeping the best of each prompt.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AlignmentRun, readRunConfig } from '../../src/rounds/runner.js';
import { RunStore } from '../../src/store/store.js';
import { loadPretrained } from '../../src/model/pretrained.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { scoreResponses } from '../../src/inference/reward-scoring.js';

const FIXTURE = path.join(import.meta.dirname, 'fixtures', 'tiny-run.yaml');
const LOGPROB = ['rewardModel.head=logprob', 'rewardModel.beta=2', 'rewardModel.nllCoefficient=1', 'rewardModel.from=policy'];

describe('rounds with a logprob reward head', () => {
  it('trains the RM from the best policy, then rejection sampling on 2 workers scores and selects with it', async () => {
    const project = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-rmhead-'));
    const config = readRunConfig(FIXTURE, [`project=${project}`, 'rounds=1', 'sampling.workers=2', ...LOGPROB]);
    expect(config.rewardModel).toMatchObject({ head: 'logprob', beta: 2, nllCoefficient: 1, from: 'policy' });
    const run = await AlignmentRun.open(config);
    try {
      for (const stage of ['collect_preferences', 'train_reward_model', 'rejection_sample'] as const) await run.run({ round: 1, stage });
    } finally {
      run.close();
    }
    const store = RunStore.open(path.join(project, 'tfalign.db'), { readonly: true });
    try {
      const rmDir = path.resolve(project, store.artifacts('tiny', { round: 1, stage: 'train_reward_model' }).find((a) => a.name === 'reward-model')!.path);
      const rmConfig = JSON.parse(fs.readFileSync(path.join(rmDir, 'config.json'), 'utf8'));
      expect(rmConfig.architectures).toEqual(['LlamaForCausalLM']);
      expect(rmConfig.tfalign_reward).toEqual({ head: 'logprob', beta: 2 });
      const metrics = Object.fromEntries(store.metrics('tiny', { round: 1, stage: 'train_reward_model' }).map((m) => [m.name, m.value]));
      expect(metrics['rm/accuracy']).toBeGreaterThanOrEqual(0);
      expect(metrics['rm/accuracy']).toBeLessThanOrEqual(1);

      const samples = store.samples('tiny', 1, { stage: 'rejection_sample' });
      expect(samples).toHaveLength(8 * 4);
      const rm = await loadPretrained(rmDir);
      const expected = scoreResponses(rm, await Tokenizer.fromFolder(rmDir), samples.map((s) => ({ prompt: s.prompt, response: s.text })), { batchSize: 5 });
      rm.dispose();
      samples.forEach((s, i) => {
        expect(s.reward).not.toBeNull();
        expect(Math.abs(s.reward! - expected[i]!)).toBeLessThan(1e-4);
        expect(s.reward!).toBeLessThanOrEqual(0); // β · mean log-prob: never above 0
      });
      // each prompt keeps its highest-reward sample
      for (const promptId of new Set(samples.map((s) => s.promptId))) {
        const mine = samples.filter((s) => s.promptId === promptId);
        const kept = mine.filter((s) => s.selected);
        expect(kept).toHaveLength(1);
        expect(kept[0]!.reward).toBe(Math.max(...mine.map((s) => s.reward!)));
      }
    } finally {
      store.close();
    }
  }, 300_000);

  it('refuses an NLL term on a score head before anything runs, naming the field', () => {
    expect(() => readRunConfig(FIXTURE, ['project=/nonexistent', 'rewardModel.nllCoefficient=1'])).toThrow('rewardModel.nllCoefficient: needs head: logprob');
  });
});
