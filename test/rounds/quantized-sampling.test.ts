import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AlignmentRun, readRunConfig } from '../../src/rounds/runner.js';
import { RunStore } from '../../src/store/store.js';
import { loadPretrained } from '../../src/model/pretrained.js';
import { quantizationOf, weightBytes } from '../../src/model/quantization/quantize-model.js';

const FIXTURE = path.join(import.meta.dirname, 'fixtures', 'tiny-run.yaml');

describe('rejection sampling from a quantized policy (sampling.quantization)', () => {
  it('quantizes the round\'s best policy into the stage folder and samples from it', async () => {
    const project = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-qrs-'));
    // tiny.json has 2 layers: the Llama 3 rule would keep both, so quantize every layer here.
    const config = readRunConfig(FIXTURE, [`project=${project}`, 'rounds=1', 'sampling.quantization.scheme=fp8-rowwise', 'sampling.quantization.keepFirstAndLastLayers=false']);
    expect(config.sampling.quantization).toMatchObject({ scheme: 'fp8-rowwise', activationScaleUpperBound: 1200, projections: ['gate_proj', 'up_proj', 'down_proj'] });
    const run = await AlignmentRun.open(config);
    try {
      for (const stage of ['collect_preferences', 'train_reward_model', 'rejection_sample'] as const) await run.run({ round: 1, stage });
    } finally {
      run.close();
    }
    const dir = path.join(project, 'tiny', 'round-1', 'rejection_sample', 'policy-quantized');
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).quantization_config.quant_method).toBe('fbgemm_fp8');
    const model = await loadPretrained(dir);
    expect(quantizationOf(model)?.weights.size).toBe(6);
    const store = RunStore.open(path.join(project, 'tfalign.db'), { readonly: true });
    try {
      const m = Object.fromEntries(store.metrics('tiny', { round: 1, stage: 'rejection_sample' }).map((x) => [x.name, x.value]));
      expect(m['sample/quantized_projections']).toBe(6);
      expect(m['sample/policy_weight_bytes']).toBe(weightBytes(model).totalBytes);
      expect(m['sample/policy_weight_bytes']).toBeLessThan(m['sample/policy_float_weight_bytes']!);
      expect(store.samples('tiny', 1, { stage: 'rejection_sample' })).toHaveLength(8 * 4);
    } finally {
      store.close();
      model.dispose();
    }
  }, 300_000);
});
