/**
 * A database the store did not write, or a damaged one (issue 11, items 4, 6, 8, 18): a foreign
 * SQLite file is never migrated into, SQLite errors name the file, version-1 paths (relative to
 * the writing process's directory) are rebased on the project folder, and recorded artifacts are
 * checked quickly (size, files, mtime) or fully (sha256).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MIGRATIONS } from '../../src/store/schema.js';
import { RunStore, defaultStorePath } from '../../src/store/store.js';
import { artifactProblem, digestArtifact } from '../../src/util/hash.js';

let dir: string;
let file: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-hostile-db-'));
  file = defaultStorePath(dir);
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const tables = (f: string) => (new Database(f, { readonly: true }).prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((t) => t.name);

describe('databases the store did not write', () => {
  it('refuses an SQLite file with other tables and adds none of its own', () => {
    const raw = new Database(file);
    raw.exec('CREATE TABLE invoices (id INTEGER, amount REAL)');
    raw.close();
    expect(() => RunStore.open(file)).toThrow(`${file}: not a tfalign database (it holds the tables invoices); use another project folder`);
    expect(tables(file)).toEqual(['invoices']);
  });

  it('names the file when SQLite finds the database malformed', () => {
    const store = RunStore.open(file);
    store.createRun('q', { big: 'x'.repeat(20_000) }, 'h');
    store.close();
    const raw = new Database(file);
    raw.pragma('wal_checkpoint(TRUNCATE)');
    raw.close();
    // Garbage over every page after the first (the schema page stays readable).
    const bytes = fs.readFileSync(file);
    for (let i = 4096; i < bytes.length; i++) bytes[i] = (i * 7919) & 0xff;
    fs.writeFileSync(file, bytes);
    let message = '';
    try {
      const damaged = RunStore.open(file, { readonly: true });
      try {
        damaged.listRuns();
      } finally {
        damaged.close();
      }
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: (database disk image is malformed|file is not a database)`));
  });
});

describe('paths', () => {
  it('stores paths relative to the project and returns them absolute', () => {
    const store = RunStore.open(file);
    store.createRun('q', {}, 'h');
    store.startStage('q', 1, 'sft');
    const model = path.join(dir, 'q', 'round-1', 'sft', 'model');
    fs.mkdirSync(model, { recursive: true });
    fs.writeFileSync(path.join(model, 'w.bin'), 'weights');
    const digest = digestArtifact(model);
    store.completeStage('q', 1, 'sft', [{ kind: 'checkpoint', name: 'sft-model', path: model, ...digest }]);
    store.completeRound('q', 1, model);
    expect(store.artifacts('q')[0]!.path).toBe(model);
    expect(store.rounds('q').find((r) => r.roundIndex === 1)!.bestPolicyPath).toBe(model);
    store.close();
    const raw = new Database(file, { readonly: true });
    expect(raw.prepare('SELECT path, num_files, mtime_ms FROM artifacts').get()).toEqual({ path: path.join('q', 'round-1', 'sft', 'model'), num_files: 1, mtime_ms: digest.mtimeMs });
    raw.close();
  });

  it('rebases a version-1 database\'s working-directory paths on the project folder when migrating', () => {
    const raw = new Database(file);
    raw.exec(MIGRATIONS[0] as string);
    raw.pragma('user_version = 1');
    raw.prepare("INSERT INTO runs (id, name, created_at, updated_at, config_json, config_hash) VALUES (1, 'q', 't', 't', ?, 'h')").run(JSON.stringify({ project: './runs' }));
    raw.prepare("INSERT INTO rounds (run_id, round_index, status, best_policy_path) VALUES (1, 1, 'done', 'runs/q/round-1/dpo/run/model')").run();
    raw.prepare("INSERT INTO artifacts (run_id, round_index, stage, kind, name, path, sha256, bytes, created_at) VALUES (1, 1, 'dpo', 'checkpoint', 'policy', 'runs/q/round-1/dpo/run/model', ?, 1, 't')").run('0'.repeat(64));
    raw.prepare("INSERT INTO artifacts (run_id, round_index, stage, kind, name, path, sha256, bytes, created_at) VALUES (1, 1, 'dpo', 'dataset', 'base', '/models/base', ?, 1, 't')").run('0'.repeat(64));
    raw.close();
    const store = RunStore.open(file);
    expect(store.artifacts('q').map((a) => a.path)).toEqual([path.join(dir, 'q/round-1/dpo/run/model'), '/models/base']);
    expect(store.rounds('q')[0]!.bestPolicyPath).toBe(path.join(dir, 'q/round-1/dpo/run/model'));
    expect(store.artifacts('q')[0]).toMatchObject({ numFiles: null, mtimeMs: null });
    store.close();
  });
});

describe('artifactProblem', () => {
  it('quick: size, file count and mtime; full: the sha256 as well', () => {
    const folder = path.join(dir, 'model');
    fs.mkdirSync(folder);
    fs.writeFileSync(path.join(folder, 'a'), 'aaaa');
    fs.writeFileSync(path.join(folder, 'b'), 'bbbb');
    const record = { path: folder, ...digestArtifact(folder) };
    expect(artifactProblem(record, 'full')).toBeNull();
    // Same size, same mtime, other bytes: only the full check sees it.
    const { atimeMs, mtimeMs } = fs.statSync(path.join(folder, 'a'));
    fs.writeFileSync(path.join(folder, 'a'), 'AAAA');
    fs.utimesSync(path.join(folder, 'a'), atimeMs / 1000, mtimeMs / 1000);
    expect(artifactProblem(record, 'quick')).toBeNull();
    expect(artifactProblem(record, 'full')).toMatch(/^does not match its recorded sha256 \(recorded [0-9a-f]{12}…, now [0-9a-f]{12}…\)$/);
    fs.utimesSync(path.join(folder, 'a'), atimeMs / 1000, mtimeMs / 1000 + 5);
    expect(artifactProblem(record, 'quick')).toMatch(/^was modified after it was recorded/);
    fs.writeFileSync(path.join(folder, 'b'), 'bbbbbb');
    expect(artifactProblem(record, 'quick')).toBe('changed size (recorded 8 bytes, now 10)');
    fs.rmSync(path.join(folder, 'b'));
    expect(artifactProblem(record, 'quick')).toBe('changed its files (recorded 2, now 1)');
    fs.rmSync(folder, { recursive: true });
    expect(artifactProblem(record, 'quick')).toBe('is missing');
    // A version-1 record (no file count or mtime): the quick check compares the size.
    fs.mkdirSync(folder);
    fs.writeFileSync(path.join(folder, 'a'), '12345678');
    expect(artifactProblem({ ...record, numFiles: null, mtimeMs: null }, 'quick')).toBeNull();
  });
});
