/**
 * The `lora` section of the SFT, DPO and reward-model trainer configs (and so of each stage of a
 * run config): present, the trainer fine-tunes LoRA adapters (src/model/lora.ts) on a frozen base
 * instead of every weight.
 */
import { z } from 'zod';

/** PEFT's `target_modules` names of the Llama projections. */
export const LORA_TARGET_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;

export const LoraOptionsSchema = z
  .object({
    r: z.number().int().positive().max(4096).default(16).describe('Rank r of each adapter (A is [r, in], B [out, r]); 16 is the common TRL/torchtune choice for 0.1–1 B models.'),
    alpha: z.number().positive().default(32).describe('lora_alpha: the update is scaled by alpha / r (default 32: scale 2 at the default r 16, the common 2·r rule).'),
    dropout: z.number().min(0).lt(1).default(0).describe("lora_dropout: dropout on the adapter's input while training (PEFT's default 0)."),
    targetModules: z
      .array(z.enum(LORA_TARGET_MODULES))
      .min(1)
      .default([...LORA_TARGET_MODULES])
      .describe('Projections that get an adapter (PEFT target_modules); default all seven ("all-linear").'),
  })
  .strict();

