/**
 * Runs one command group's command line in this process with its output silenced (console, the
 * progress bar on stderr), as `tfalign ARGS` would; returns what it wrote to stdout.
 */
import { Command } from 'commander';
import { vi } from 'vitest';

export async function runCli(register: (program: Command) => void, args: string[]): Promise<string> {
  const program = new Command('tfalign');
  program.exitOverride();
  register(program);
  const out: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
  const err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
  const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => (out.push(String(chunk)), true));
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    await program.parseAsync(['node', 'tfalign', ...args]);
    return out.join('');
  } finally {
    log.mockRestore();
    err.mockRestore();
    stdout.mockRestore();
    stderr.mockRestore();
  }
}
