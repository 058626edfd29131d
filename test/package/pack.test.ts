/**
 * The package as a user gets it: `npm pack` (which runs `prepare`, a fresh `npm run build`), the
 * tarball installed into an empty project with no TypeScript tooling, then plain Node — no tsx, no
 * loader, no NODE_OPTIONS — importing the public API and running the installed `tfalign` binary.
 * Dependencies resolve from the npm cache that `npm ci` filled (`--prefer-offline`). Install
 * scripts are skipped and better-sqlite3's native module is taken from this checkout's build when
 * the versions match (else `npm rebuild better-sqlite3` compiles it: minutes on a busy machine);
 * tfalign's own install script (the native matmul addon, native/build.js) is then run as a user's
 * install runs it, by `npm rebuild tfalign`. The file takes a few minutes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../../src/backend.js';
import { buildTokenizerConfig, trainByteLevelBpe } from '../../src/tokenizer/bpe-trainer.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { parseLlamaConfig } from '../../src/model/config.js';
import { initModel, toRewardModel } from '../../src/model/weights.js';
import { scoreResponses } from '../../src/inference/reward-scoring.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const PACKAGE = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { name: string; version: string };

/** The environment of a user's shell: no npm script variables, no loader options from this test run. */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.toLowerCase().startsWith('npm_') && k !== 'NODE_OPTIONS' && !k.startsWith('VITEST')) env[k] = v;
  return env;
}

function run(cmd: string, args: string[], cwd: string, timeout = 300_000, extra: SpawnSyncOptions = {}) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: userEnv(), timeout, ...extra });
  return { status: r.status, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), error: r.error };
}

// The same tiny computation in the package (plain Node) and here (the TypeScript sources).
const CORPUS = ['the cat sat on the mat', 'the dog ran under the log', 'a big red bird sat on a tree', 'the small blue cat ran'];
const TINY = { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: true };
const ROWS = [
  { prompt: 'the cat', response: 'sat on the mat' },
  { prompt: 'a big bird', response: 'ran under the tree' },
];
const SCRIPT = `
import * as t from 'tfalign';
const info = await t.initBackend('wasm', { quiet: true });
const tokJson = t.trainByteLevelBpe(${JSON.stringify(CORPUS)}, { vocabSize: 300 });
const tok = t.Tokenizer.fromJson(tokJson, t.buildTokenizerConfig(tokJson));
const config = t.parseLlamaConfig({ ...${JSON.stringify(TINY)}, vocab_size: tok.vocabSize });
const rm = t.toRewardModel(t.initModel(config, 3), 4);
const scores = t.scoreResponses(rm, tok, ${JSON.stringify(ROWS)}, { batchSize: 2 });
console.log(JSON.stringify({ backend: info.name, matMul: info.matMul, scores, exports: Object.keys(t).length }));
`;

describe('the npm package, installed into an empty project', () => {
  let root: string;
  let project: string;
  let installed: string;

  beforeAll(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-pack-'));
    const pack = run('npm', ['pack', '--pack-destination', root, '--silent'], REPO);
    expect(pack.status, pack.stderr).toBe(0);
    const tarball = path.join(root, `${PACKAGE.name}-${PACKAGE.version}.tgz`);
    expect(fs.existsSync(tarball)).toBe(true);
    project = path.join(root, 'project');
    fs.mkdirSync(project);
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'user-project', version: '1.0.0', private: true, type: 'module' }));
    const install = run('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts'], project, 600_000);
    expect(install.status, install.stderr).toBe(0);
    installed = path.join(project, 'node_modules', 'tfalign');
    const sqlite = (root: string) => path.join(root, 'node_modules', 'better-sqlite3');
    const versionOf = (dir: string) => (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version;
    const built = path.join(sqlite(REPO), 'build', 'Release', 'better_sqlite3.node');
    if (fs.existsSync(built) && versionOf(sqlite(REPO)) === versionOf(sqlite(project))) {
      fs.mkdirSync(path.join(sqlite(project), 'build', 'Release'), { recursive: true });
      fs.copyFileSync(built, path.join(sqlite(project), 'build', 'Release', 'better_sqlite3.node'));
    } else {
      const rebuild = run('npm', ['rebuild', 'better-sqlite3'], project, 900_000);
      expect(rebuild.status, rebuild.stderr).toBe(0);
    }
  }, 1_600_000);

  afterAll(() => {
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('ships compiled JavaScript, types and source maps, and no TypeScript sources or loader', () => {
    const files = (dir: string): string[] => fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : [path.join(dir, e.name)]));
    const shipped = files(installed).map((f) => path.relative(installed, f));
    expect(shipped).toContain('dist/src/index.js');
    expect(shipped).toContain('dist/src/index.d.ts');
    expect(shipped).toContain('dist/src/index.js.map');
    expect(shipped).toContain('dist/src/parallel/worker.js'); // worker threads run compiled modules
    expect(shipped).toContain('configs/quickstart.yaml');
    expect(shipped).toContain('configs/models/tiny.json');
    expect(shipped.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
    expect(fs.existsSync(path.join(project, 'node_modules', 'tsx'))).toBe(false); // a dev dependency only
    expect(fs.existsSync(path.join(project, 'node_modules', 'typescript'))).toBe(false);
  });

  it('imports the public API from plain Node ESM and scores rows as the sources do', async () => {
    const r = run(process.execPath, ['--input-type=module', '-e', SCRIPT], project, 120_000);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { backend: string; scores: number[]; exports: number };
    expect(out.backend).toBe('wasm');
    expect(out.exports).toBeGreaterThan(50);

    // the same computation from the TypeScript sources, in this process
    await initBackend('wasm', { quiet: true });
    const tokJson = trainByteLevelBpe(CORPUS, { vocabSize: 300 });
    const tok = Tokenizer.fromJson(tokJson, buildTokenizerConfig(tokJson));
    const rm = toRewardModel(initModel(parseLlamaConfig({ ...TINY, vocab_size: tok.vocabSize }), 3), 4);
    const expected = scoreResponses(rm, tok, ROWS, { batchSize: 2 });
    rm.dispose();
    expect(out.scores).toHaveLength(2);
    out.scores.forEach((s, i) => expect(Math.abs(s - expected[i]!)).toBeLessThan(1e-6));
    expect(out.scores[0]).not.toBe(out.scores[1]); // real, row-dependent numbers
  });

  it("its install script builds the native matmul addon from the shipped sources, and the installed package uses it (or says why not)", () => {
    for (const file of ['binding.gyp', 'native/build.js', 'native/sgemm.cc', 'native/addon.cc']) expect(fs.existsSync(path.join(installed, file)), file).toBe(true);
    const rebuild = run('npm', ['rebuild', 'tfalign', '--foreground-scripts'], project, 900_000);
    expect(rebuild.status, rebuild.stderr).toBe(0);
    const r = run(process.execPath, ['--input-type=module', '-e', SCRIPT], project, 120_000);
    expect(r.status, r.stderr).toBe(0);
    const { matMul } = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { matMul: string };
    // where this checkout built the addon (npm ci did), the installed copy must build it too
    const builtHere = fs.existsSync(path.join(REPO, 'build', 'Release', 'tfalign_native.node'));
    if (builtHere) {
      expect(fs.existsSync(path.join(installed, 'build', 'Release', 'tfalign_native.node'))).toBe(true);
      expect(matMul).toMatch(/^matmul: native (AVX2|AVX-512)/);
    } else {
      expect(matMul).toMatch(/XNNPACK/);
    }
  }, 1_000_000);

  it('npx tfalign --help lists the commands; a training command runs data-parallel workers from dist/', () => {
    const help = run('npx', ['--no-install', 'tfalign', '--help'], project, 60_000);
    expect(help.status, help.stderr).toBe(0);
    for (const command of ['pretrain', 'sft', 'dpo', 'rm', 'sample', 'run', 'quickstart']) expect(help.stdout).toContain(command);

    const work = path.join(root, 'work');
    fs.mkdirSync(work);
    fs.writeFileSync(path.join(work, 'corpus.txt'), Array.from({ length: 60 }, (_, i) => CORPUS[i % CORPUS.length]).join('\n\n'));
    const steps: [string, string[]][] = [
      ['tokenizer', ['train', '--corpus', 'corpus.txt', '--vocab-size', '300', '--out', 'tok']],
      ['model', ['init', '--config', path.join(installed, 'configs', 'models', 'tiny.json'), '--tokenizer', 'tok', '--out', 'base', '--backend', 'wasm']],
      ['pretrain', ['--model', 'base', '--corpus', 'corpus.txt', '--out', 'pre', '--max-steps', '2', '--seq-len', '16', '--workers', '2', '--force-workers', '--backend', 'wasm']],
    ];
    for (const [command, args] of steps) {
      const r = run(path.join(project, 'node_modules', '.bin', 'tfalign'), [command, ...args], work, 180_000);
      expect(r.status, `${command}: ${r.stderr}`).toBe(0);
    }
    // --out is the model (TRL's output_dir), loadable as it is
    expect(fs.existsSync(path.join(work, 'pre', 'config.json')) && fs.existsSync(path.join(work, 'pre', 'model.safetensors'))).toBe(true);
  });

  it("resolves the shipped configs' judge (a TypeScript path) to its compiled module", () => {
    const script = `
      import { pathToFileURL } from 'node:url';
      import * as path from 'node:path';
      const root = ${JSON.stringify(installed)};
      const { importablePath, packageFile, runsCompiled } = await import(pathToFileURL(path.join(root, 'dist/src/util/package-root.js')).href);
      const judgeFile = importablePath(path.resolve(path.join(root, 'configs'), '../data/synthetic/judge.ts'));
      const judge = await import(pathToFileURL(judgeFile).href);
      console.log(JSON.stringify({ compiled: runsCompiled(), judgeFile: path.relative(root, judgeFile), quickstart: path.relative(root, packageFile('configs', 'quickstart.yaml')), factory: typeof judge.createSyntheticJudge }));
    `;
    const r = run(process.execPath, ['--input-type=module', '-e', script], project, 60_000);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim())).toEqual({ compiled: true, judgeFile: path.join('dist', 'data', 'synthetic', 'judge.js'), quickstart: path.join('configs', 'quickstart.yaml'), factory: 'function' });
    expect(fs.readFileSync(path.join(installed, 'configs', 'quickstart.yaml'), 'utf8')).toContain('judge: ../data/synthetic/judge.ts');
  });
});
