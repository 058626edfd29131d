/**
 * What to quantize and how: the one schema of quantization settings (defaults live here), and the
 * rule that picks the projections. The default is the Llama 3 rule (report §4.2): the
 * feed-forward projections of every decoder layer except the first and the last; self-attention,
 * embeddings, the LM head and the reward head stay in full precision.
 */
import { z } from 'zod';
import type { LlamaConfig } from '../config.js';

export const QUANT_SCHEMES = ['int8-absmax', 'fp8-rowwise'] as const;

/** Projection names of a decoder layer, as in HF weight names (`model.layers.N.mlp.up_proj.weight`). */
export const PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type Projection = (typeof PROJECTIONS)[number];
const MLP_PROJECTIONS: ReadonlySet<Projection> = new Set(['gate_proj', 'up_proj', 'down_proj']);

export const QuantizationOptionsSchema = z
  .object({
    scheme: z
      .enum(QUANT_SCHEMES)
      .describe('int8-absmax: integer codes, scale = max|x| / 127 (the textbook scheme); fp8-rowwise: FP8 E4M3 codes with one scale per weight row and per token, as Llama 3 served its 405B model.'),
    weightGrouping: z
      .enum(['per-row', 'per-tensor'])
      .default('per-row')
      .describe('int8-absmax only: one weight scale per output row (an outlier spoils only its own row) or one for the whole matrix (the simplest form). fp8-rowwise is always per row.'),
    activations: z
      .enum(['per-token', 'none'])
      .default('per-token')
      .describe('per-token: each token\'s input to a quantized projection is quantized with its own scale (W8A8, what Llama 3\'s FP8 inference does); none: weights only (activations stay float32), exactly equal to a float model holding the dequantized weights.'),
    activationScaleUpperBound: z
      .number()
      .positive()
      .nullable()
      .default(1200)
      .describe('fp8-rowwise only: max|x| of a token is clamped to this before its scale is taken (units of activation value). 1200 is the `activation_scale_ub` of Meta\'s released FP8 checkpoints; null = unbounded, which lets one outlier token wipe out the precision of its other values.'),
    projections: z
      .array(z.enum(PROJECTIONS))
      .nonempty()
      .default(['gate_proj', 'up_proj', 'down_proj'])
      .describe('Which projections of a decoder layer to quantize. Default: the feed-forward ones, as Llama 3 did (attention stays in full precision).'),
    keepFirstAndLastLayers: z
      .boolean()
      .default(true)
      .describe('Leave decoder layers 0 and L−1 in full precision (Llama 3\'s rule: they are the most sensitive). false quantizes the chosen projections of every layer.'),
  })
  .strict();

export type QuantizationOptions = z.infer<typeof QuantizationOptionsSchema>;
export type QuantizationOptionsInput = z.input<typeof QuantizationOptionsSchema>;

/** HF names of the weights the options quantize, in layer order. */
export function selectQuantizedWeights(config: LlamaConfig, options: QuantizationOptions): string[] {
  const numLayers = config.num_hidden_layers;
  const names: string[] = [];
  for (let l = 0; l < numLayers; l++) {
    if (options.keepFirstAndLastLayers && (l === 0 || l === numLayers - 1)) continue;
    for (const p of PROJECTIONS) {
      if (!options.projections.includes(p)) continue;
      names.push(`model.layers.${l}.${MLP_PROJECTIONS.has(p) ? 'mlp' : 'self_attn'}.${p}.weight`);
    }
  }
  return names;
}
