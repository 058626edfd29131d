/**
 * examples/notebook.ipynb in a real Jupyter kernel: `jupyter nbconvert --to notebook --execute`
 * with the tslab kernel, in a project where `tfalign` is installed (here linked, as `npm link`
 * does, to a fresh build of the sources: package.json, configs/ and dist/ in a folder of their
 * own, so that test/package/pack.test.ts may rebuild this repository's dist/ meanwhile), with
 * no NODE_OPTIONS and no TypeScript loader.
 * Needs Debian's `jupyter-nbconvert python3-ipykernel python3-nbclient` and tslab
 * (`npm i -g tslab && tslab install --python=/usr/bin/python3`); skipped, saying so, without them.
 * (test/examples/round-api.test.ts runs the same cells from the sources on every machine.)
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { RunStore } from '../../src/store/store.js';
import { ROUND_STAGES } from '../../src/store/stages.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Why the kernel test cannot run here, or undefined when it can. */
function missingKernel(): string | undefined {
  const jupyter = spawnSync('jupyter', ['nbconvert', '--version'], { encoding: 'utf8' });
  if (jupyter.status !== 0) return 'jupyter nbconvert is not installed (Debian: apt-get install jupyter-nbconvert python3-ipykernel python3-nbclient)';
  const specs = spawnSync('jupyter', ['--paths', '--json'], { encoding: 'utf8' });
  const dataDirs = specs.status === 0 ? ((JSON.parse(specs.stdout) as { data: string[] }).data ?? []) : [];
  if (!dataDirs.some((dir) => fs.existsSync(path.join(dir, 'kernels', 'tslab', 'kernel.json')))) {
    return 'the tslab kernel is not installed (npm i -g tslab && tslab install --python=/usr/bin/python3)';
  }
  return undefined;
}

const missing = missingKernel();
if (missing) console.warn(`examples/notebook.ipynb in a real kernel: SKIPPED: ${missing}`);

/** The environment of a user's shell: no npm script variables, no NODE_OPTIONS (no loader trick). */
function userEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.toLowerCase().startsWith('npm_') && k !== 'NODE_OPTIONS' && !k.startsWith('VITEST')) env[k] = v;
  return { ...env, ...extra };
}

describe('examples/notebook.ipynb in a tslab kernel', () => {
  let root: string | undefined;
  afterAll(() => {
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it.skipIf(missing !== undefined)(`executes every cell with jupyter nbconvert --execute${missing ? ` (skipped: ${missing})` : ''}`, () => {
    // the package, freshly built: the kernel imports its dist/, which must be what the sources say now
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-notebook-'));
    const pkg = path.join(root, 'tfalign');
    fs.mkdirSync(pkg);
    const build = spawnSync(process.execPath, [path.join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(REPO, 'tsconfig.build.json'), '--outDir', path.join(pkg, 'dist')], {
      cwd: REPO,
      encoding: 'utf8',
    });
    expect(build.status, build.stdout + build.stderr).toBe(0);
    fs.copyFileSync(path.join(REPO, 'package.json'), path.join(pkg, 'package.json'));
    fs.cpSync(path.join(REPO, 'configs'), path.join(pkg, 'configs'), { recursive: true });
    fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(pkg, 'node_modules'), 'dir'); // its dependencies
    // a user's project: the notebook next to node_modules/tfalign
    const user = path.join(root, 'project');
    fs.mkdirSync(path.join(user, 'node_modules'), { recursive: true });
    fs.symlinkSync(pkg, path.join(user, 'node_modules', 'tfalign'), 'dir');
    fs.copyFileSync(path.join(REPO, 'examples', 'notebook.ipynb'), path.join(user, 'notebook.ipynb'));
    const project = path.join(user, 'runs');
    const out = path.join(user, 'executed.ipynb');
    const r = spawnSync('jupyter', ['nbconvert', '--to', 'notebook', '--execute', 'notebook.ipynb', '--output', out, '--ExecutePreprocessor.timeout=900'], {
      cwd: user,
      encoding: 'utf8',
      env: userEnv({ TFALIGN_EXAMPLE_PROJECT: project }),
      timeout: 1_000_000,
    });
    expect(r.status, r.stderr.slice(-3000)).toBe(0);

    const executed = JSON.parse(fs.readFileSync(out, 'utf8')) as { cells: { cell_type: string; outputs?: { output_type: string; name?: string; text?: string[] }[] }[] };
    const outputs = executed.cells.filter((c) => c.cell_type === 'code').flatMap((c) => c.outputs ?? []);
    expect(outputs.filter((o) => o.output_type === 'error')).toEqual([]);
    const stdout = outputs.filter((o) => o.name === 'stdout').map((o) => (o.text ?? []).join('')).join('');
    expect(stdout).toContain('round 1 · evaluate done in');

    // what the cells printed is what the run recorded
    const store = RunStore.open(path.join(project, 'tfalign.db'), { readonly: true });
    try {
      expect(store.stages('notebook', { round: 1 }).map((s) => [s.name, s.status])).toEqual(ROUND_STAGES.map((s) => [s, 'done']));
      expect(store.stages('notebook', { round: 2 }).map((s) => [s.name, s.status])).toEqual([['collect_preferences', 'done']]);
      const judge = store.metrics('notebook', { round: 1, name: 'eval/judge_score' })[0]!.value;
      expect(stdout).toContain(String(judge));
    } finally {
      store.close();
    }
  }, 1_100_000);
});
