/**
 * The `tfalign` command line: builds the commander program from one file per command group.
 * Commands hold no logic of their own; they parse flags and call the library.
 * Every error ends as one line `error: …` on stderr and exit status 1.
 */
import { Command } from 'commander';
import { ZodError } from 'zod';
import { formatZodError } from '../config/load.js';
import { registerTokenizerCommands } from './tokenizer.js';
import { registerModelCommands } from './model.js';
import { registerSftCommands } from './sft.js';
import { registerRmCommands } from './rm.js';
import { registerDpoCommands } from './dpo.js';
import { registerRunCommands } from './run.js';
import { registerReportCommands } from './report.js';
import { registerAnnotateCommands } from './annotate.js';
import { registerDataCommands } from './data.js';
import { registerSampleCommands } from './sample.js';
import { registerQuantizeCommands } from './quantize.js';
import { registerEvalCommands } from './eval.js';

export function buildProgram(): Command {
  const program = new Command('tfalign')
    .description('Post-training for Llama-architecture models on TensorFlow.js: reward models, rejection sampling, SFT, DPO, iterative rounds')
    .version('0.1.0')
    .showHelpAfterError('(add --help for usage)');
  registerTokenizerCommands(program);
  registerModelCommands(program);
  registerSftCommands(program);
  registerRmCommands(program);
  registerDpoCommands(program);
  registerSampleCommands(program);
  registerQuantizeCommands(program);
  registerEvalCommands(program);
  registerRunCommands(program);
  registerReportCommands(program);
  registerAnnotateCommands(program);
  registerDataCommands(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const e = err as Error & { code?: string; exitCode?: number };
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') process.exit(0);
    if (e.code?.startsWith('commander.')) process.exit(e.exitCode ?? 1); // commander already printed the message
    // A ZodError's message is its issues as JSON: say them as `field: problem` instead of `[`.
    const message = e instanceof ZodError ? `invalid input: ${formatZodError(e)}` : e instanceof Error ? e.message.split('\n')[0] : String(e);
    process.stderr.write(`error: ${message}\n`);
    if (process.env.TFALIGN_DEBUG) process.stderr.write(`${e.stack}\n`);
    process.exit(1);
  }
}
