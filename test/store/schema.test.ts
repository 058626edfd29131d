import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MIGRATIONS, SCHEMA_VERSION, migrate } from '../../src/store/schema.js';
import { RunStore, defaultStorePath } from '../../src/store/store.js';

let dir: string;
let file: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-schema-'));
  file = defaultStorePath(dir);
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const tableNames = (db: Database.Database): string[] =>
  (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[]).map((r) => r.name);

describe('schema migrations', () => {
  it('migrates an empty database to the current version with every table', () => {
    expect(SCHEMA_VERSION).toBe(MIGRATIONS.length);
    const store = RunStore.open(file);
    expect(store.schemaVersion).toBe(SCHEMA_VERSION);
    expect(store.journalMode).toBe('wal');
    store.close();

    const raw = new Database(file, { readonly: true });
    expect(raw.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(tableNames(raw)).toEqual(['artifacts', 'metrics', 'preferences', 'rounds', 'runs', 'samples', 'stages']);
    expect(raw.pragma('journal_mode', { simple: true })).toBe('wal'); // WAL is persistent in the file
    raw.close();
  });

  it('migrate reports the version found and is a no-op on a current database', () => {
    const raw = new Database(file);
    expect(migrate(raw, file)).toBe(0);
    expect(migrate(raw, file)).toBe(SCHEMA_VERSION);
    expect(raw.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    raw.close();
  });

  it('turns foreign keys on: a stage of an unknown round is refused by SQLite', () => {
    const store = RunStore.open(file);
    store.close();
    const raw = new Database(file);
    raw.pragma('foreign_keys = ON');
    expect(() => raw.prepare("INSERT INTO stages (run_id, round_index, name) VALUES (1, 1, 'sft')").run()).toThrow(/FOREIGN KEY constraint failed/);
    raw.close();
  });

  it('keeps data across reopening', () => {
    const first = RunStore.open(file);
    first.createRun('quickstart', { numRounds: 3, seed: 7 }, 'abc');
    first.startStage('quickstart', 1, 'collect_preferences');
    first.close();

    const second = RunStore.open(file);
    expect(second.getRun('quickstart')).toMatchObject({ name: 'quickstart', config: { numRounds: 3, seed: 7 }, configHash: 'abc', status: 'created' });
    expect(second.stageStatus('quickstart', 1, 'collect_preferences')).toBe('running');
    second.close();

    const reader = RunStore.open(file, { readonly: true });
    expect(reader.listRuns().map((r) => r.configHash)).toEqual(['abc']);
    expect(() => reader.createRun('other', {}, 'x')).toThrow(/readonly/);
    reader.close();
  });

  it('refuses a database from a newer tfalign, for writing and for reading', () => {
    RunStore.open(file).close();
    const raw = new Database(file);
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    const expected = `${file}: database schema version ${SCHEMA_VERSION + 1} is newer than this tfalign's (${SCHEMA_VERSION}); upgrade tfalign to open it`;
    expect(() => RunStore.open(file)).toThrow(expected);
    expect(() => RunStore.open(file, { readonly: true })).toThrow(expected);
  });

  it('refuses read-only opens of a missing, unmigrated or non-SQLite file', () => {
    expect(() => RunStore.open(file, { readonly: true })).toThrow(`${file}: no tfalign database here`);
    new Database(file).close(); // an empty SQLite file: version 0
    expect(() => RunStore.open(file, { readonly: true })).toThrow(`${file}: not a tfalign database (schema version 0)`);
    const junk = path.join(dir, 'junk.db');
    fs.writeFileSync(junk, 'this is not sqlite, just some text that is long enough to have a header'.repeat(10));
    expect(() => RunStore.open(junk)).toThrow(`${junk}: not a tfalign database (not an SQLite file)`);
  });

  it('rolls a failing migration back, leaving the previous version', () => {
    const raw = new Database(file);
    raw.exec('CREATE TABLE metrics (x)'); // a clash with the last table migration 1 creates
    expect(() => migrate(raw, file)).toThrow(/table metrics already exists/);
    expect(raw.pragma('user_version', { simple: true })).toBe(0);
    expect(tableNames(raw)).toEqual(['metrics']); // runs, rounds, … created before the clash are gone
    raw.close();
  });
});
