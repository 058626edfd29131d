/**
 * One writing process per run: a lock file `PROJECT/.tfalign/locks/RUN.lock` holding JSON about
 * its holder (pid, host, start time, command).
 *
 * SQLite serializes single transactions, but a stage runs for minutes between them; two processes
 * advancing the same run would train on each other's half-written outputs. Readers (`tfalign
 * status`, reports) take no lock: they read the WAL database, which never blocks them.
 *
 * How it stays correct:
 * - Taking: the holder JSON is written to a private temporary file and hard-linked to the lock
 *   path. `link` fails with EEXIST when the lock exists and is atomic, so a lock file is never
 *   seen half-written (an `open(…, 'wx')` followed by a write would be).
 * - Stale locks: a `kill -9` leaves the file behind. On the same host, a holder whose pid no longer
 *   exists, whose boot id differs (the machine rebooted), or whose pid is this process's own without
 *   this process holding the lock (a container restarted with the same pid), is stale and is taken
 *   over, which the returned lock says in `takeoverNotice`. A holder on another host cannot be
 *   checked and is always respected.
 * - Taking over: the stale file is renamed aside (atomic), then read again; if what was moved is not
 *   the holder judged stale (another process took the lock in between), it is linked back.
 * - Releasing removes the file only if it still names this holder; an exit handler releases it
 *   when the process ends without doing so.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseRunName } from './records.js';
import { ensureDir } from '../util/atomic.js';

/** Who holds a run lock, as written in the lock file. */
export interface LockHolder {
  runName: string;
  pid: number;
  hostname: string;
  /** ISO time the lock was taken. */
  startedAt: string;
  /** The holder's command line, for the person deciding whether to stop it. */
  command: string;
  /** Linux boot id of the holder's machine, when known: a lock from before a reboot is stale. */
  bootId: string | null;
  /** Random identity of this acquisition, so that a release never removes someone else's lock. */
  token: string;
}

export interface RunLock {
  /** The lock file. */
  readonly file: string;
  readonly holder: LockHolder;
  /** Set when a stale lock left by a dead process was taken over: a line to show the user. */
  readonly takeoverNotice: string | null;
  /** Removes the lock file (if it is still this holder's); safe to call twice. */
  release(): void;
}

/** Thrown when another live process holds the lock; the message names it. */
export class RunLockedError extends Error {
  override readonly name = 'RunLockedError';
  constructor(
    readonly file: string,
    readonly holder: LockHolder,
  ) {
    super(describeHeldLock(file, holder));
  }
}

/** Folder of the lock files, inside the project folder. */
export const LOCK_DIR = path.join('.tfalign', 'locks');

/** Attempts at create-or-take-over before giving up (each failure means another process raced us). */
const MAX_ACQUIRE_ATTEMPTS = 5;

/** Tokens of the locks this process holds now: a lock naming our pid but not one of these is stale. */
const heldTokens = new Set<string>();

export function runLockPath(projectDir: string, runName: string): string {
  return path.join(projectDir, LOCK_DIR, `${parseRunName(runName)}.lock`);
}

/**
 * Takes the write lock of `runName` in `projectDir`, or throws `RunLockedError` naming the live
 * holder. A stale lock is taken over and the returned lock's `takeoverNotice` says so.
 */
export function acquireRunLock(projectDir: string, runName: string): RunLock {
  const file = runLockPath(projectDir, runName);
  ensureDir(path.dirname(file));
  const holder: LockHolder = {
    runName,
    pid: process.pid,
    hostname: os.hostname(),
    startedAt: new Date().toISOString(),
    command: process.argv.join(' '),
    bootId: readBootId(),
    token: randomBytes(16).toString('hex'),
  };
  let staleHolder: LockHolder | null = null;
  for (let attempt = 0; attempt < MAX_ACQUIRE_ATTEMPTS; attempt++) {
    if (tryCreateLockFile(file, holder)) return makeLock(file, holder, staleHolder === null ? null : describeTakeover(file, staleHolder));
    const found = readLockFile(file);
    if (found === null) continue; // released between our link and our read: try again
    if (isHolderAlive(found.holder)) throw new RunLockedError(file, found.holder);
    if (removeIfUnchanged(file, found.text)) staleHolder = found.holder;
  }
  throw new Error(`${file}: could not take the lock of run "${runName}" after ${MAX_ACQUIRE_ATTEMPTS} attempts: other processes keep taking it`);
}

/**
 * The current holder of a run's lock and whether it is alive (for `tfalign status`), or null when
 * the run is not locked. Takes nothing.
 */
export function readRunLock(projectDir: string, runName: string): { file: string; holder: LockHolder; alive: boolean } | null {
  const file = runLockPath(projectDir, runName);
  const found = readLockFile(file);
  return found === null ? null : { file, holder: found.holder, alive: isHolderAlive(found.holder) };
}

/** `run "q" is being written by pid 1234 on host X since 2026-11-28T02:40:13Z; …`. */
export function describeHeldLock(file: string, holder: LockHolder): string {
  const sameHost = holder.hostname === os.hostname();
  const advice = sameHost
    ? 'wait for it or stop it'
    : `wait for it or stop it; if host ${holder.hostname} is gone, delete ${file}`;
  return `run "${holder.runName}" is being written by pid ${holder.pid} on host ${holder.hostname} since ${shortTime(holder.startedAt)}; ${advice}`;
}

function describeTakeover(file: string, stale: LockHolder): string {
  return (
    `took over the lock of run "${stale.runName}" (${file}): its holder, pid ${stale.pid} on host ${stale.hostname} ` +
    `since ${shortTime(stale.startedAt)}, is no longer running`
  );
}

function shortTime(iso: string): string {
  return iso.replace(/\.\d+Z$/, 'Z');
}

/** Writes the holder to a private file and links it into place; false when the lock file exists. */
function tryCreateLockFile(file: string, holder: LockHolder): boolean {
  const tmp = `${file}.${holder.pid}.${holder.token}.tmp`;
  const fd = fs.openSync(tmp, 'wx');
  try {
    fs.writeSync(fd, JSON.stringify(holder, null, 2) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.linkSync(tmp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** The lock file's text and holder, or null when there is no lock file. */
function readLockFile(file: string): { text: string; holder: LockHolder } | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  return { text, holder: parseHolder(file, text) };
}

function parseHolder(file: string, text: string): LockHolder {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  const h = value as Partial<LockHolder> | undefined;
  if (h === undefined || h === null || typeof h.pid !== 'number' || typeof h.hostname !== 'string' || typeof h.startedAt !== 'string' || typeof h.token !== 'string') {
    throw new Error(`${file}: the lock file is not a tfalign lock (expected JSON with pid, hostname, startedAt, token); delete it if no tfalign process is writing this run`);
  }
  return {
    runName: typeof h.runName === 'string' ? h.runName : path.basename(file, '.lock'),
    pid: h.pid,
    hostname: h.hostname,
    startedAt: h.startedAt,
    command: typeof h.command === 'string' ? h.command : '',
    bootId: typeof h.bootId === 'string' ? h.bootId : null,
    token: h.token,
  };
}

/** Whether the holder may still be running; on another host we cannot tell, so yes. */
function isHolderAlive(holder: LockHolder): boolean {
  if (holder.hostname !== os.hostname()) return true;
  const bootId = readBootId();
  if (holder.bootId !== null && bootId !== null && holder.bootId !== bootId) return false;
  if (holder.pid === process.pid) return heldTokens.has(holder.token);
  try {
    process.kill(holder.pid, 0); // signal 0: existence check only
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by another user
  }
}

/**
 * Removes a stale lock file if it still has the text judged stale: rename it aside (atomic), check
 * what was moved, and link it back if it was a fresh lock taken in between. True when removed.
 */
function removeIfUnchanged(file: string, staleText: string): boolean {
  const aside = `${file}.stale-${process.pid}-${randomBytes(8).toString('hex')}`;
  try {
    fs.renameSync(file, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  try {
    if (fs.readFileSync(aside, 'utf8') === staleText) return true;
    try {
      fs.linkSync(aside, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    return false;
  } finally {
    fs.rmSync(aside, { force: true });
  }
}

function makeLock(file: string, holder: LockHolder, takeoverNotice: string | null): RunLock {
  heldTokens.add(holder.token);
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    heldTokens.delete(holder.token);
    process.removeListener('exit', release);
    try {
      if (parseHolder(file, fs.readFileSync(file, 'utf8')).token === holder.token) fs.rmSync(file, { force: true });
    } catch {
      // Already gone or replaced: nothing of ours to remove.
    }
  };
  process.on('exit', release);
  return { file, holder, takeoverNotice, release };
}

let cachedBootId: string | null | undefined;

/** Linux's per-boot random id; null elsewhere. */
function readBootId(): string | null {
  if (cachedBootId === undefined) {
    try {
      cachedBootId = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      cachedBootId = null;
    }
  }
  return cachedBootId;
}
