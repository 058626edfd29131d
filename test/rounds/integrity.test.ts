/**
 * Trust nothing on disk (issue 11: items 1, 4, 6, 7, 8, 9 and the stale `running` of 18), on a
 * real one-round run of the tiny fixture made from one directory with `project: runs` (a path
 * relative to it), then inspected, exported, tampered with and resumed from others:
 *   - the database stores paths relative to the project, so `export` works from anywhere;
 *   - resume checks the recorded artifacts (size, files, mtime) and export their sha256: a deleted
 *     or tampered artifact is an error naming it and the command that redoes its stage;
 *   - `export --out` never writes into a recorded artifact or a foreign non-empty folder;
 *   - `status`, `report` and `annotate export` work on a project nobody can write;
 *   - a killed run marked `running` is reported as interrupted;
 *   - the judge module is not imported while another process holds the run's lock;
 *   - an emptied database is refused, never re-initialised over the run's outputs.
 */
import { spawnSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const CLI = path.join(REPO, 'bin', 'tfalign.js');
const FIXTURE = path.join(REPO, 'test', 'rounds', 'fixtures', 'tiny-run.yaml');
const LOCK_HOLDER = path.join(REPO, 'test', 'store', 'fixtures', 'lock-holder.ts');
const RUN = 'tiny';

let root: string;
/** Where the run was started from; the project is `runs` relative to it. */
let workDir: string;
let project: string;
const children = new Set<ChildProcess>();

function tfalign(cwd: string, args: string[], opts: { uid?: number } = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 300_000,
    env: { ...process.env, TFALIGN_DEBUG: '' },
    ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.uid } : {}),
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, errors: r.stderr.split('\n').filter((l) => l.startsWith('error: ')) };
}

/** Files under `dir` with their sizes, for "nothing changed" checks. */
function snapshot(dir: string): Record<string, number> {
  const out: Record<string, number> = {};
  const walk = (rel: string) => {
    for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const child = path.join(rel, entry.name);
      if (entry.isDirectory()) walk(child);
      else out[child] = fs.statSync(path.join(dir, child)).size;
    }
  };
  walk('');
  return out;
}

beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-integrity-'));
  fs.chmodSync(root, 0o755); // readable by the unprivileged user of the read-only test
  workDir = path.join(root, 'work');
  fs.mkdirSync(workDir);
  project = path.join(workDir, 'runs');
  const run = tfalign(workDir, ['run', '--config', FIXTURE, '--set', 'rounds=1', '--set', 'project=runs']);
  expect(run.status, run.stderr).toBe(0);
}, 600_000);

afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
  spawnSync('chmod', ['-R', 'u+w', root]);
  fs.rmSync(root, { recursive: true, force: true });
});

describe('a finished run, checked from the outside', () => {
  it('stores artifact and policy paths relative to the project, and exports from another directory (item 8)', () => {
    const db = new Database(path.join(project, 'tfalign.db'), { readonly: true });
    const paths = (db.prepare('SELECT path FROM artifacts').all() as { path: string }[]).map((r) => r.path);
    const best = (db.prepare('SELECT best_policy_path FROM rounds WHERE round_index = 1').get() as { best_policy_path: string }).best_policy_path;
    db.close();
    expect(paths.length).toBeGreaterThan(10);
    for (const p of [...paths, best]) {
      expect(path.isAbsolute(p), p).toBe(false);
      expect(p.startsWith(`${RUN}/`), p).toBe(true); // not `runs/tiny/…` (the working directory's view)
    }
    // From the repository, naming the project by a path relative to there.
    const out = path.join(root, 'exported');
    const exp = tfalign(REPO, ['export', '--project', path.relative(REPO, project), '--run', RUN, '--round', '1', '--out', out]);
    expect(exp.status, exp.stderr).toBe(0);
    expect(exp.stdout).toContain(`export: ${path.join(project, RUN, 'round-1')}`);
    expect(fs.existsSync(path.join(out, 'config.json'))).toBe(true);
    expect(fs.existsSync(path.join(out, 'model.safetensors'))).toBe(true);
    // A second export into the folder a previous export wrote is fine.
    expect(tfalign(REPO, ['export', '--project', project, '--run', RUN, '--round', '1', '--out', out]).status).toBe(0);
  });

  it('refuses an --out that is a recorded artifact or inside one, or a foreign non-empty folder (items 1, 6)', () => {
    const rmModel = path.join(project, RUN, 'round-1', 'train_reward_model', 'run');
    const before = snapshot(rmModel);
    for (const out of [rmModel, path.join(rmModel, 'sub'), path.join(project, RUN)]) {
      const r = tfalign(REPO, ['export', '--project', project, '--run', RUN, '--round', '1', '--out', out]);
      expect(r.status).toBe(1);
      expect(r.errors).toHaveLength(1);
      expect(r.errors[0]).toMatch(new RegExp(`^error: --out ${out}: overlaps the recorded artifact "[a-z-]+" of run "tiny"`));
    }
    expect(snapshot(rmModel)).toEqual(before);

    const mine = path.join(root, 'my-models');
    fs.mkdirSync(mine);
    fs.writeFileSync(path.join(mine, 'notes.txt'), 'keep me');
    const refused = tfalign(REPO, ['export', '--project', project, '--run', RUN, '--round', '1', '--out', mine]);
    expect(refused.status).toBe(1);
    expect(refused.errors[0]).toBe(
      `error: --out ${mine}: holds files tfalign export did not write (notes.txt); give a new or empty folder, or pass --overwrite to write into it (files it does not write are kept)`,
    );
    expect(fs.readdirSync(mine)).toEqual(['notes.txt']);
    const forced = tfalign(REPO, ['export', '--project', project, '--run', RUN, '--round', '1', '--out', mine, '--overwrite']);
    expect(forced.status, forced.stderr).toBe(0);
    expect(fs.readFileSync(path.join(mine, 'notes.txt'), 'utf8')).toBe('keep me');
    expect(fs.existsSync(path.join(mine, 'model.safetensors'))).toBe(true);
  });

  it('export checks the full sha256: same size and mtime, one byte changed, is refused (item 6)', () => {
    const weights = path.join(project, RUN, 'round-1', 'dpo', 'run', 'model.safetensors');
    const original = fs.readFileSync(weights);
    const { atimeMs, mtimeMs } = fs.statSync(weights);
    const restoreTimes = () => fs.utimesSync(weights, atimeMs / 1000, mtimeMs / 1000);
    const tampered = Buffer.from(original);
    tampered[tampered.length - 1] ^= 0x01;
    fs.writeFileSync(weights, tampered);
    restoreTimes(); // the quick check cannot see it
    expect(Math.abs(fs.statSync(weights).mtimeMs - mtimeMs)).toBeLessThan(1);
    try {
      const r = tfalign(REPO, ['export', '--project', project, '--run', RUN, '--round', '1', '--out', path.join(root, 'never')]);
      expect(r.status).toBe(1);
      expect(r.errors).toHaveLength(1);
      expect(r.errors[0]).toMatch(
        /^error: export: artifact "policy" of run "tiny" round 1 stage dpo \(.*round-1\/dpo\/run\) does not match its recorded sha256 \(recorded [0-9a-f]{12}…, now [0-9a-f]{12}…\); restore it, or redo the stage with `tfalign round 1 --config FILE --stage dpo`$/,
      );
      expect(fs.existsSync(path.join(root, 'never'))).toBe(false);
    } finally {
      fs.writeFileSync(weights, original);
      restoreTimes();
    }
  });

  it('status, report and annotate export work on a project nobody can write (item 9), and a killed run is reported (item 18)', () => {
    // A run left `running` by a killed process: nobody holds its lock.
    const db = new Database(path.join(project, 'tfalign.db'));
    db.prepare("UPDATE runs SET status = 'running' WHERE name = ?").run(RUN);
    db.close();
    const outDir = path.join(root, 'readers');
    fs.mkdirSync(outDir, { mode: 0o777 });
    fs.chmodSync(outDir, 0o777);
    spawnSync('chmod', ['-R', 'a-w', project]);
    // As root the permission bits do not bind: read as an unprivileged user instead.
    const as = process.getuid?.() === 0 ? { uid: 65534 } : {};
    try {
      const status = tfalign(REPO, ['status', '--project', project, '--run', RUN], as);
      expect(status.status, status.stderr).toBe(0);
      expect(status.stdout).toMatch(/^1 +done/m);
      expect(status.stderr).toContain(`note: run "${RUN}" is marked running, but no process holds its lock: it was interrupted; \`tfalign run --config FILE\` resumes it`);
      const report = tfalign(REPO, ['report', '--project', project, '--run', RUN, '--out', path.join(outDir, 'r.html')], as);
      expect(report.status, report.stderr).toBe(0);
      expect(fs.readFileSync(path.join(outDir, 'r.html'), 'utf8')).toContain('<html');
      const ann = tfalign(REPO, ['annotate', 'export', '--project', project, '--run', RUN, '--round', '1', '--out', path.join(outDir, 'a.csv')], as);
      expect(ann.status, ann.stderr).toBe(0);
      expect(fs.readFileSync(path.join(outDir, 'a.csv'), 'utf8')).toContain('id,prompt,response_a,response_b,preferred,strength,edited');
    } finally {
      spawnSync('chmod', ['-R', 'u+w', project]);
    }
    const fixed = new Database(path.join(project, 'tfalign.db'));
    fixed.prepare("UPDATE runs SET status = 'done' WHERE name = ?").run(RUN);
    fixed.close();
  });

  it('does not import the judge module while another process holds the run lock (item 7)', async () => {
    const marker = path.join(root, 'judge-was-imported');
    const judge = path.join(root, 'judge.mjs');
    fs.writeFileSync(judge, `import * as fs from 'node:fs';\nfs.writeFileSync(${JSON.stringify(marker)}, 'imported');\nexport default { compare: () => ({ preferred: 'a', strength: 'better' }), score: () => 0 };\n`);
    const holder = spawn(process.execPath, ['--import', 'tsx', LOCK_HOLDER, project, RUN, 'hold'], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
    children.add(holder);
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout!.on('data', (chunk: Buffer) => (chunk.toString().startsWith('LOCKED') ? resolve() : undefined));
        holder.on('exit', () => reject(new Error('lock holder exited')));
      });
      const r = tfalign(workDir, ['run', '--config', FIXTURE, '--set', 'rounds=1', '--set', 'project=runs', '--set', `preferences.judge=${judge}`]);
      expect(r.status).toBe(1);
      expect(r.errors[0]).toMatch(new RegExp(`^error: run "tiny" is being written by pid ${holder.pid} on host `));
      expect(fs.existsSync(marker)).toBe(false);
    } finally {
      const exited = new Promise((resolve) => holder.once('exit', resolve));
      holder.kill('SIGKILL');
      await exited; // its lock file stays behind, stale: the next run takes it over
      children.delete(holder);
    }
  });

  it('resume refuses a deleted artifact, naming it and the command that redoes its stage, and that command repairs the run (item 6)', () => {
    const rmWeights = path.join(project, RUN, 'round-1', 'train_reward_model', 'run', 'model.safetensors');
    const later = path.join(project, RUN, 'round-1', 'sft', 'run', 'model.safetensors');
    const laterBefore = fs.statSync(later).mtimeMs;
    fs.rmSync(rmWeights);
    const r = tfalign(workDir, ['run', '--config', FIXTURE, '--set', 'rounds=1', '--set', 'project=runs']);
    expect(r.status).toBe(1);
    expect(r.errors).toEqual([
      `error: artifact "reward-model" of round 1 stage train_reward_model (${path.dirname(rmWeights)}) changed its files (recorded 8, now 7); ` +
        `restore it, or redo the stage with \`tfalign round 1 --config ${FIXTURE} --stage train_reward_model\` (its later stages in round 1 are redone too)`,
    ]);
    expect(r.stderr).not.toMatch(/already done|…$/m); // nothing was skipped over or started
    expect(fs.statSync(later).mtimeMs).toBe(laterBefore);
    const redo = tfalign(workDir, ['round', '1', '--config', FIXTURE, '--set', 'rounds=1', '--set', 'project=runs', '--stage', 'train_reward_model']);
    expect(redo.status, redo.stderr).toBe(0);
    expect(fs.existsSync(rmWeights)).toBe(true);
    expect(tfalign(workDir, ['run', '--config', FIXTURE, '--set', 'rounds=1', '--set', 'project=runs']).status).toBe(0);
  }, 300_000);

  it('refuses to re-initialise an emptied database over the run folder (item 4)', () => {
    const database = path.join(project, 'tfalign.db');
    const saved = path.join(root, 'saved.db');
    // Checkpoint the WAL into the file, keep a copy, then empty it as a failed copy would.
    const db = new Database(database);
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.close();
    fs.copyFileSync(database, saved);
    for (const suffix of ['-wal', '-shm']) fs.rmSync(`${database}${suffix}`, { force: true });
    fs.truncateSync(database, 0);
    const before = snapshot(path.join(project, RUN));
    try {
      const r = tfalign(workDir, ['run', '--config', FIXTURE, '--set', 'rounds=1', '--set', 'project=runs']);
      expect(r.status).toBe(1);
      expect(r.errors).toEqual([
        `error: ${path.join(project, RUN)} holds the outputs of run "tiny", but ${database} is empty (0 bytes): the database was deleted, emptied or replaced. ` +
          `Restore it from a backup, or move ${path.join(project, RUN)} aside to start the run over; nothing was changed`,
      ]);
      expect(fs.statSync(database).size).toBe(0);
      expect(snapshot(path.join(project, RUN))).toEqual(before);
      // Deleted altogether: the same refusal, and no new database.
      fs.rmSync(database);
      const gone = tfalign(workDir, ['run', '--config', FIXTURE, '--set', 'rounds=1', '--set', 'project=runs']);
      expect(gone.status).toBe(1);
      expect(gone.errors[0]).toContain(`but there is no ${database}`);
      expect(fs.existsSync(database)).toBe(false);
    } finally {
      fs.copyFileSync(saved, database);
    }
    expect(tfalign(workDir, ['status', '--project', project]).status).toBe(0);
  });
});
