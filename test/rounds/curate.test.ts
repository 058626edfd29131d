import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AlignmentRun, readRunConfig } from '../../src/rounds/runner.js';
import { RunStore } from '../../src/store/store.js';
import { readJsonl } from '../../data/jsonl.js';
import { SftRowSchema } from '../../data/rows.js';

const FIXTURE = path.join(import.meta.dirname, 'fixtures', 'tiny-run.yaml');

describe('the optional curate stage', () => {
  it('runs between rejection sampling and SFT, records its counts, and SFT trains on what it kept', async () => {
    const project = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-curate-'));
    // Exact duplicates are certain at this size (8 prompts × best sample); the punctuation guess
    // for truncation is off because the synthetic answers ("1 2 3") never end in punctuation.
    const config = readRunConfig(FIXTURE, [`project=${project}`, 'rounds=1', 'curate.enabled=true', 'curate.clean.truncated.textOnly=keep']);
    const run = await AlignmentRun.open(config);
    const stages: string[] = [];
    try {
      await run.run({}, { onStage: (e) => e.status === 'done' && stages.push(`${e.round}/${e.stage}`) });
    } finally {
      run.close();
    }
    expect(stages).toEqual(['0/build_base', '1/collect_preferences', '1/train_reward_model', '1/rejection_sample', '1/curate', '1/sft', '1/dpo', '1/evaluate']);
    const roundDir = path.join(project, 'tiny', 'round-1');
    const selected = (await readJsonl(path.join(roundDir, 'rejection_sample', 'sft.jsonl'), SftRowSchema)).rows.length;
    const curated = (await readJsonl(path.join(roundDir, 'curate', 'sft.jsonl'), SftRowSchema)).rows.length;
    const trained = (await readJsonl(path.join(roundDir, 'sft', 'train.jsonl'), SftRowSchema)).rows.length;
    expect(trained).toBe(curated);
    const store = RunStore.open(path.join(project, 'tfalign.db'), { readonly: true });
    try {
      const m = Object.fromEntries(store.metrics('tiny', { round: 1, stage: 'curate' }).map((x) => [x.name, x.value]));
      expect(m['curate/num_in']).toBe(selected);
      expect(m['curate/num_out']).toBe(curated);
      const removed = Object.entries(m).filter(([k]) => k.startsWith('curate/removed/')).reduce((a, [, v]) => a + (v ?? 0), 0);
      expect(removed).toBe(selected - curated);
      expect(store.artifacts('tiny', { round: 1, stage: 'curate' }).map((a) => a.name)).toEqual(['curated-sft']);
    } finally {
      store.close();
    }
  }, 240_000);
});
