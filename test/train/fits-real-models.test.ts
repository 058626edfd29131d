/**
 * The real architectures of configs/models (SmolLM2-135M/360M, Llama-3.2-1B): published parameter
 * counts, PEFT's LoRA parameter count, and the memory pre-check with LoRA, gradient checkpointing
 * and the chunked head — which configurations fit one 4 GiB wasm heap, and what the refusal names.
 */
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { countParameters, modelDims, parseLlamaConfig } from '../../src/model/config.js';
import { numLoraParameters } from '../../src/model/lora.js';
import { LoraOptionsSchema } from '../../src/config/lora.js';
import { checkTrainingFits, estimateTrainingMemory } from '../../src/train/fits.js';

const dimsOf = (name: string) => modelDims(parseLlamaConfig(JSON.parse(fs.readFileSync(`configs/models/${name}.json`, 'utf8')), name));
const lora16 = LoraOptionsSchema.parse({ r: 16 });
const sft = { backend: 'wasm', length: 512, lengthField: 'maxLength', sequencesPerRow: 1 };
const dpo = { ...sft, sequencesPerRow: 2 };

describe('real model configs', () => {
  it('have the published parameter counts, and PEFT\'s trainable count for r 16 on all seven projections', () => {
    // the counts transformers reports (model.num_parameters()) for the tied checkpoints
    expect(countParameters(parseLlamaConfig(JSON.parse(fs.readFileSync('configs/models/smollm2-135m.json', 'utf8'))))).toBe(134_515_008);
    expect(countParameters(parseLlamaConfig(JSON.parse(fs.readFileSync('configs/models/smollm2-360m.json', 'utf8'))))).toBe(361_821_120);
    expect(countParameters(parseLlamaConfig(JSON.parse(fs.readFileSync('configs/models/llama-3.2-1b.json', 'utf8'))))).toBe(1_235_814_400);
    // 135M: per layer 16·(1152 + 768 + 768 + 1152 + 2112 + 2112 + 2112) = 162,816; × 30 layers
    expect(numLoraParameters(dimsOf('smollm2-135m'), lora16)).toBe(4_884_480);
    expect(numLoraParameters(dimsOf('smollm2-360m'), lora16)).toBe(8_683_520);
    expect(numLoraParameters(dimsOf('llama-3.2-1b'), lora16)).toBe(11_272_192);
    const d = dimsOf('llama-3.2-1b');
    expect([d.headDim, d.numKvHeads, d.tied, d.vocabSize]).toEqual([64, 8, true, 128_256]);
  });

  it('smollm2-360m: full fine-tuning is refused as the model (naming lora); LoRA + checkpointing + chunked head fits, for SFT and DPO', () => {
    const d = dimsOf('smollm2-360m');
    expect(() => checkTrainingFits({ batchSize: 8, microBatchSize: 1, workers: 1 }, d, sft, 'sft config')).toThrow(
      /^sft config: model: 361,821,120 parameters needs about [\d.]+ GiB per replica .* the wasm backend holds 4\.0 GiB per replica .*; set lora \(weights \+ adapter state: [\d.]+ GiB at r 16\)/,
    );
    const memory = { batchSize: 8, microBatchSize: 1, workers: 1, lora: lora16, gradientCheckpointing: true, headChunkTokens: 1024 };
    expect(() => checkTrainingFits(memory, d, sft, 'sft config')).not.toThrow();
    expect(() => checkTrainingFits(memory, d, dpo, 'dpo config')).not.toThrow();
    // without checkpointing a DPO pass (2 × 512 tokens) keeps every layer's activations: refused, naming what to change
    expect(() => checkTrainingFits({ ...memory, gradientCheckpointing: false }, d, dpo, 'dpo config')).toThrow(
      /^dpo config: microBatchSize: one pass of 1 rows × maxLength 512 tokens needs about .*; lower microBatchSize, or set gradientCheckpointing: true, or lower maxLength$/,
    );
  });

  it('estimates by hand: LoRA state is 12 bytes per adapter value on top of the weights; checkpointing keeps C per layer per token', () => {
    const d = dimsOf('smollm2-135m');
    const shape = { batchSize: 1, lora: lora16, gradientCheckpointing: true, headChunkTokens: 256 };
    const m = estimateTrainingMemory(shape, d, { length: 512, sequencesPerRow: 1 }, 1);
    expect(m.weights).toBe(4 * (134_515_008 + 4_884_480));
    expect(m.trainableState).toBe(12 * 4_884_480);
    // 512 tokens × (30·576 + 10·576 + 4·1536 + 9·512) + head 3·49152·256 + 576·512, × 4 bytes
    expect(m.activations).toBe(4 * (512 * (30 * 576 + 10 * 576 + 4 * 1536 + 9 * 512) + 3 * 49152 * 256 + 576 * 512));
    // auto: ⌊2^22 / 49,152⌋ = 85 rows a chunk
    const auto = estimateTrainingMemory({ ...shape, headChunkTokens: 'auto' }, d, { length: 512, sequencesPerRow: 1 }, 1);
    expect(auto.activations).toBe(4 * (512 * (30 * 576 + 10 * 576 + 4 * 1536 + 9 * 512) + 3 * 49152 * 85 + 576 * 512));
    const plain = estimateTrainingMemory({ batchSize: 1 }, d, { length: 512, sequencesPerRow: 1 }, 1);
    expect(plain.trainableState).toBe(12 * 134_515_008);
  });

  it('llama-3.2-1b: its float32 weights alone exceed the wasm heap, so even LoRA is refused as the model (no lora hint)', () => {
    const d = dimsOf('llama-3.2-1b');
    let message = '';
    try {
      checkTrainingFits({ batchSize: 1, workers: 1, lora: lora16, gradientCheckpointing: true, headChunkTokens: 1024 }, d, sft, 'sft config');
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/^sft config: model: 1,235,814,400 parameters needs about [\d.]+ GiB per replica \([\d.]+ GiB of weights, adapter gradients and AdamW state/);
    expect(message).toMatch(/a smaller model, or the tensorflow backend$/);
    expect(message).not.toMatch(/set lora/);
  });
});
