/**
 * `tfalign quantize`: a full-precision model folder → an 8-bit one (int8-absmax in the
 * compressed-tensors layout, fp8-rowwise in the FBGEMM FP8 layout), loadable by every command
 * that loads a model (`generate`, `sample`, `rm score`, the rounds' rejection sampling).
 */
import { Option, type Command } from 'commander';
import { backendOption, example, overwriteOption, useBackend } from './common.js';
import { validateConfig } from '../config/load.js';
import { PROJECTIONS, QUANT_SCHEMES, QuantizationOptionsSchema, type QuantizationOptionsInput } from '../model/quantization/options.js';

interface QuantizeCommandOptions {
  model: string;
  scheme: (typeof QUANT_SCHEMES)[number];
  out: string;
  weightGrouping?: 'per-row' | 'per-tensor';
  weightsOnly?: boolean;
  activationScaleUb?: string;
  projections?: string;
  allLayers?: boolean;
  overwrite?: boolean;
  backend: string;
}

/** The quantization options the flags stand for (unset flags take the schema's defaults). */
export function quantizeFlagsToOptions(o: QuantizeCommandOptions): QuantizationOptionsInput {
  const input: Record<string, unknown> = { scheme: o.scheme };
  if (o.weightGrouping !== undefined) input.weightGrouping = o.weightGrouping;
  if (o.weightsOnly) input.activations = 'none';
  if (o.activationScaleUb !== undefined) {
    if (o.activationScaleUb === 'none') input.activationScaleUpperBound = null;
    else {
      const ub = Number(o.activationScaleUb);
      if (!(Number.isFinite(ub) && ub > 0)) throw new Error(`--activation-scale-ub: expected a positive number or "none", got "${o.activationScaleUb}"`);
      input.activationScaleUpperBound = ub;
    }
  }
  if (o.projections !== undefined) input.projections = o.projections.split(',').map((p) => p.trim()).filter((p) => p !== '');
  if (o.allLayers) input.keepFirstAndLastLayers = false;
  return validateConfig(QuantizationOptionsSchema, input, 'quantize');
}

export function registerQuantizeCommands(program: Command): void {
  program
    .command('quantize')
    .description('8-bit weights: int8-absmax (compressed-tensors layout) or fp8-rowwise (FBGEMM FP8, as Llama 3 served); feed-forward projections of all but the first and last layers by default')
    .requiredOption('--model <dir>', 'full-precision model folder (causal LM or reward model)')
    .addOption(new Option('--scheme <scheme>', 'int8-absmax: scale = max|x|/127, integer codes; fp8-rowwise: E4M3 codes, row-wise weight scales, per-token activation scales').choices([...QUANT_SCHEMES]).makeOptionMandatory())
    .requiredOption('--out <dir>', 'folder for the quantized model (new, empty, or a previous quantize output)')
    .addOption(new Option('--weight-grouping <g>', 'int8-absmax: one weight scale per output row, or per tensor (default per-row)').choices(['per-row', 'per-tensor']))
    .option('--weights-only', 'leave activations in float32 (weights-only); default: quantize each token\'s input per token (W8A8)')
    .option('--activation-scale-ub <n>', 'fp8-rowwise: upper bound on max|x| of a token before its scale is taken, or "none" (default 1200, Meta\'s activation_scale_ub)')
    .option('--projections <list>', `comma-separated projections to quantize, of ${PROJECTIONS.join(', ')} (default gate_proj,up_proj,down_proj)`)
    .option('--all-layers', 'quantize the first and last decoder layers too (Llama 3 keeps them in full precision)')
    .addOption(overwriteOption())
    .addOption(backendOption())
    .addHelpText('after', example('tfalign quantize --model runs/quickstart/policy --scheme fp8-rowwise --out runs/quickstart/policy-fp8', 'tfalign generate --model runs/quickstart/policy-fp8 --prompt "Sort: 3 1 2"'))
    .action(async (o: QuantizeCommandOptions) => {
      const options = quantizeFlagsToOptions(o);
      await useBackend(o.backend);
      const start = performance.now();
      const { quantizeFolder } = await import('../model/quantization/quantize-folder.js');
      const { quantized, bytes } = await quantizeFolder({ model: o.model, out: o.out, options, overwrite: o.overwrite });
      const mib = (n: number) => `${(n / 1024 / 1024).toFixed(2)} MiB`;
      console.log(
        `quantize: ${quantized.length} projections to ${o.scheme} in ${((performance.now() - start) / 1000).toFixed(1)} s; ` +
          `their weights ${mib(bytes.quantizedAsFloatBytes)} → ${mib(bytes.quantizedBytes)} (${(bytes.quantizedBytes / bytes.quantizedAsFloatBytes).toFixed(3)}×), ` +
          `all weights ${mib(bytes.floatBytes + bytes.quantizedAsFloatBytes)} → ${mib(bytes.totalBytes)} -> ${o.out}`,
      );
    });
}
