/**
 * Workers end when the run ends: a script that never calls close() must still exit by itself,
 * after a normal run and after a worker failure (checked with a timeout on the child process).
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';

function runFixture(mode: 'ok' | 'fault') {
  const child = spawnSync(process.execPath, ['bin/run-ts.js', 'test/parallel/fixtures/unclosed-run.ts', mode], { encoding: 'utf8', timeout: 60_000 });
  return { status: child.status, signal: child.signal, stderr: child.stderr, output: child.stdout.trim() ? JSON.parse(child.stdout.trim().split('\n').pop()!) : undefined };
}

describe('worker lifetime', () => {
  it('a run that ends without close() exits by itself', () => {
    const r = runFixture('ok');
    expect(r.signal, r.stderr).toBe(null);
    expect(r.status, r.stderr).toBe(0);
    expect(r.output.losses).toHaveLength(2);
  });

  it('a run whose worker throws exits by itself with the worker\'s error', () => {
    const r = runFixture('fault');
    expect(r.signal, r.stderr).toBe(null);
    expect(r.status, r.stderr).toBe(0);
    expect(r.output).toEqual({ mode: 'fault', losses: [expect.any(Number)], error: 'worker 1: fixture fault' });
  });
});
