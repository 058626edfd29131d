/**
 * Bench cases in fresh child processes, so that each has its own heap, backend and thread pool: a
 * bench file re-runs itself as `node bin/run-ts.js FILE --case JSON`, the child prints one JSON
 * record (its last stdout line), and the parent passes the records through. Used by bench.ts,
 * bench-trainers, bench-workers, bench-vs-torch and bench-lora.
 */
import { spawnSync } from 'node:child_process';

/** What a child gave back: its stdout and last line parsed, or why it failed. */
export type ChildResult =
  | { ok: true; stdout: string; record: Record<string, number> }
  | { ok: false; error: string };

/**
 * Runs `command args`; its last stdout line is a JSON record. On failure, `error` says
 * `exit N` (or the signal) and, with `stderrReason`, the last stderr line that names an error.
 */
export function runChild(command: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; stderrReason?: boolean } = {}): ChildResult {
  const child = spawnSync(command, args, { encoding: 'utf8', env: opts.env, stdio: ['ignore', 'pipe', opts.stderrReason ? 'pipe' : 'inherit'] });
  if (child.status !== 0) {
    const exit = `exit ${child.status ?? child.signal}`;
    const reason = opts.stderrReason ? (child.stderr ?? '').trim().split('\n').filter((l) => /error|memory|abort/i.test(l)).pop() : undefined;
    return { ok: false, error: reason ? `${exit}: ${reason.slice(0, 300)}` : exit };
  }
  const last = child.stdout.trim().split('\n').pop() ?? '';
  try {
    return { ok: true, stdout: child.stdout, record: JSON.parse(last) as Record<string, number> };
  } catch {
    return { ok: false, error: `exit 0 without a JSON record (last line: ${last.slice(0, 200)})` };
  }
}

/** Runs case `c` of the bench file `self` in a child: `node bin/run-ts.js self --case JSON`. */
export function runCaseInChild(self: string, c: object, opts: { env?: NodeJS.ProcessEnv; stderrReason?: boolean } = {}): ChildResult {
  return runChild(process.execPath, ['bin/run-ts.js', self, '--case', JSON.stringify(c)], opts);
}

/**
 * In a child (given `--case JSON`): runs `run` on the parsed case, prints its record and returns
 * true; in the parent: returns false, running nothing.
 */
export async function answerCase<T>(run: (c: T) => Promise<unknown>): Promise<boolean> {
  const argv = process.argv.slice(2);
  const i = argv.indexOf('--case');
  if (i < 0) return false;
  console.log(JSON.stringify(await run(JSON.parse(argv[i + 1]!) as T)));
  return true;
}

/**
 * Passes a child's output through to stdout: all of it, or one `{...label, error}` line when it
 * failed. Returns the child's record (undefined on failure).
 */
export function passThrough(result: ChildResult, label: Record<string, unknown>): Record<string, number> | undefined {
  if (!result.ok) {
    process.stdout.write(JSON.stringify({ ...label, error: result.error }) + '\n');
    return undefined;
  }
  process.stdout.write(result.stdout);
  return result.record;
}
