import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RunLockedError, acquireRunLock, readRunLock, runLockPath, type LockHolder } from '../../src/store/lock.js';
import { RunStore, defaultStorePath } from '../../src/store/store.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/lock-holder.ts', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

let projectDir: string;
const children: ChildProcess[] = [];

beforeEach(() => {
  projectDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-lock-'));
});
afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  fs.rmSync(projectDir, { recursive: true, force: true });
});

/** Starts the fixture holding the lock and resolves once it has it. */
function spawnHolder(runName: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, projectDir, runName, 'hold'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.startsWith('LOCKED')) resolve(child);
    });
    child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.on('exit', (code) => reject(new Error(`holder exited with ${code} before locking: ${out}${err}`)));
  });
}

function killAndWait(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.on('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** Runs the fixture in `try` mode to completion. */
function tryInChild(runName: string): { status: number | null; stdout: string } {
  const result = spawnSync(process.execPath, ['--import', 'tsx', FIXTURE, projectDir, runName, 'try'], { cwd: REPO_ROOT, encoding: 'utf8' });
  if (result.stderr !== '') throw new Error(result.stderr);
  return { status: result.status, stdout: result.stdout };
}

describe('run lock', () => {
  it('refuses a second acquisition in the same process, naming the holder', () => {
    const lock = acquireRunLock(projectDir, 'quickstart');
    expect(lock.takeoverNotice).toBeNull();
    expect(lock.file).toBe(runLockPath(projectDir, 'quickstart'));
    const written = JSON.parse(fs.readFileSync(lock.file, 'utf8')) as LockHolder;
    expect(written).toMatchObject({ runName: 'quickstart', pid: process.pid, hostname: os.hostname(), token: lock.holder.token });

    let error: unknown;
    try {
      acquireRunLock(projectDir, 'quickstart');
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(RunLockedError);
    const since = lock.holder.startedAt.replace(/\.\d+Z$/, 'Z');
    expect((error as Error).message).toBe(
      `run "quickstart" is being written by pid ${process.pid} on host ${os.hostname()} since ${since}; wait for it or stop it`,
    );
    // Another run of the same project is a different lock.
    const other = acquireRunLock(projectDir, 'other');
    other.release();

    lock.release();
    lock.release(); // twice is harmless
    expect(fs.existsSync(lock.file)).toBe(false);
    const again = acquireRunLock(projectDir, 'quickstart');
    expect(again.takeoverNotice).toBeNull();
    again.release();
  });

  it('refuses a child process while this process holds the lock', () => {
    const lock = acquireRunLock(projectDir, 'quickstart');
    try {
      const { status, stdout } = tryInChild('quickstart');
      expect(status).toBe(3);
      expect(stdout).toContain(`REFUSED run "quickstart" is being written by pid ${process.pid} on host ${os.hostname()} since `);
    } finally {
      lock.release();
    }
    expect(tryInChild('quickstart')).toEqual({ status: 0, stdout: 'LOCKED \n' });
  });

  it('refuses this process while a child holds the lock, then takes over after kill -9', async () => {
    const child = await spawnHolder('quickstart');
    const childPid = child.pid!;
    expect(() => acquireRunLock(projectDir, 'quickstart')).toThrow(
      new RegExp(`^run "quickstart" is being written by pid ${childPid} on host ${os.hostname().replace(/\W/g, '\\$&')} since \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ; wait for it or stop it$`),
    );
    expect(readRunLock(projectDir, 'quickstart')).toMatchObject({ alive: true, holder: { pid: childPid } });

    await killAndWait(child); // kill -9: the lock file stays behind
    expect(fs.existsSync(runLockPath(projectDir, 'quickstart'))).toBe(true);
    expect(readRunLock(projectDir, 'quickstart')).toMatchObject({ alive: false, holder: { pid: childPid } });

    const lock = acquireRunLock(projectDir, 'quickstart');
    expect(lock.takeoverNotice).toMatch(new RegExp(`^took over the lock of run "quickstart" .*: its holder, pid ${childPid} on host .* is no longer running$`));
    expect(readRunLock(projectDir, 'quickstart')).toMatchObject({ alive: true, holder: { pid: process.pid, token: lock.holder.token } });
    lock.release();
    expect(readRunLock(projectDir, 'quickstart')).toBeNull();
    // Nothing left behind by the take-over (renamed-aside or temporary files).
    expect(fs.readdirSync(path.dirname(lock.file))).toEqual([]);
  });

  it('treats a lock naming this pid but not held by this process as stale (a restarted container)', () => {
    const file = runLockPath(projectDir, 'quickstart');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const leftover: LockHolder = {
      runName: 'quickstart', pid: process.pid, hostname: os.hostname(), startedAt: '2026-01-02T03:04:05.000Z', command: 'old', bootId: null, token: 'f'.repeat(32),
    };
    fs.writeFileSync(file, JSON.stringify(leftover));
    const lock = acquireRunLock(projectDir, 'quickstart');
    expect(lock.takeoverNotice).toContain(`pid ${process.pid} on host ${os.hostname()} since 2026-01-02T03:04:05Z`);
    lock.release();
  });

  it('respects a holder on another host and says how to clear it', () => {
    const file = runLockPath(projectDir, 'quickstart');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const remote: LockHolder = {
      runName: 'quickstart', pid: 1, hostname: 'gpu-box-7', startedAt: '2026-11-28T02:40:00.000Z', command: 'tfalign run', bootId: null, token: 'a'.repeat(32),
    };
    fs.writeFileSync(file, JSON.stringify(remote));
    expect(() => acquireRunLock(projectDir, 'quickstart')).toThrow(
      `run "quickstart" is being written by pid 1 on host gpu-box-7 since 2026-11-28T02:40:00Z; wait for it or stop it; if host gpu-box-7 is gone, delete ${file}`,
    );
  });

  it('refuses an unreadable lock file and bad run names', () => {
    const file = runLockPath(projectDir, 'quickstart');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, 'garbage');
    expect(() => acquireRunLock(projectDir, 'quickstart')).toThrow(`${file}: the lock file is not a tfalign lock`);
    expect(() => acquireRunLock(projectDir, '../escape')).toThrow('run name "../escape": must be 1–128 letters');
  });

  it('lets a read-only store read while the lock is held', () => {
    const db = defaultStorePath(projectDir);
    const writer = RunStore.open(db);
    writer.createRun('quickstart', { rounds: 3 }, 'h1');
    writer.close();
    const lock = acquireRunLock(projectDir, 'quickstart');
    try {
      const reader = RunStore.open(db, { readonly: true });
      expect(reader.listRuns().map((r) => r.name)).toEqual(['quickstart']);
      expect(readRunLock(projectDir, 'quickstart')?.holder.pid).toBe(process.pid);
      reader.close();
    } finally {
      lock.release();
    }
  });
});
