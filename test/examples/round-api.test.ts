/**
 * The examples run as a user runs them: `examples/round-api.ts` as a script in its fast mode, and
 * the notebook's code cells in order as one module (what a tslab kernel executes), each as a child
 * process. What they print is checked against the database they wrote.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunStore } from '../../src/store/store.js';
import { sha256File } from '../../src/util/hash.js';
import { ROUND_STAGES } from '../../src/store/stages.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const RUN_TS = path.join(REPO, 'bin', 'run-ts.js');

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-examples-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function runNode(args: string[], opts: { cwd: string; env: Record<string, string> }): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('examples/round-api.ts', () => {
  it('runs round 1 through the API in fast mode, prints the recorded metrics and exports the policy', async () => {
    const project = path.join(tmp, 'script');
    const result = await runNode([RUN_TS, 'examples/round-api.ts', project], { cwd: REPO, env: { TFALIGN_EXAMPLE_FAST: '1' } });
    expect(result.code, result.stderr.slice(-3000)).toBe(0);

    // Stage table: the six stages of round 1, each done once.
    for (const stage of ROUND_STAGES) expect(result.stdout).toMatch(new RegExp(`^${stage}\\s+done\\s+1\\s+\\d+\\.\\d$`, 'm'));

    // Metric table rows `stage  name  value` are exactly the summary metrics in the database.
    const printed = [...result.stdout.matchAll(/^([a-z_]+)\s+([a-z_]+(?:\/[a-z_0-9]+)+)\s+(-?\d+\.\d{4}|NaN)$/gm)].map((m) => ({ stage: m[1], name: m[2], value: m[3] }));
    const store = RunStore.open(path.join(project, 'tfalign.db'), { readonly: true });
    let policyPath: string | null;
    try {
      const recorded = store.metrics('api-example', { round: 1 }).filter((m) => m.step === null);
      expect(printed).toEqual(recorded.map((m) => ({ stage: m.stage, name: m.name, value: m.value.toFixed(4) })));
      policyPath = store.rounds('api-example').find((r) => r.roundIndex === 1)!.bestPolicyPath;
      expect(store.stages('api-example', { round: 2 })).toEqual([]); // round 1 only
    } finally {
      store.close();
    }
    for (const name of ['rm/accuracy', 'sample/best_of_k_gain', 'sft/loss', 'dpo/rewards_accuracies', 'eval/judge_score', 'eval/win_rate_vs_base']) {
      expect(printed.map((p) => p.name)).toContain(name);
    }

    // The export is the chosen policy, file for file: the model files of its run folder (which also
    // holds metrics.jsonl and the reference log-probs beside them, as TRL's output_dir does).
    const exported = path.join(project, 'exported', 'api-example-round-1');
    expect(result.stdout).toContain(`to ${exported}`);
    expect(policyPath).not.toBeNull();
    const exportedFiles = fs.readdirSync(exported).filter((name) => name !== '.tfalign-output.json').sort();
    expect(exportedFiles).toEqual(expect.arrayContaining(['config.json', 'model.safetensors', 'tokenizer.json']));
    const policyMarker = JSON.parse(fs.readFileSync(path.join(policyPath!, '.tfalign-output.json'), 'utf8')) as { files: string[] };
    expect(exportedFiles).toEqual([...policyMarker.files].sort()); // exactly the policy's model files
    for (const name of exportedFiles) expect(sha256File(path.join(exported, name)), name).toBe(sha256File(path.join(policyPath!, name)));
  }, 240_000);
});

describe('examples/notebook.ipynb', () => {
  it("runs its code cells in order (as a kernel would) and prints the run's tables", async () => {
    const notebook = JSON.parse(fs.readFileSync(path.join(REPO, 'examples', 'notebook.ipynb'), 'utf8')) as {
      nbformat: number;
      metadata: { kernelspec: { name: string } };
      cells: { cell_type: string; source: string[] }[];
    };
    expect(notebook.nbformat).toBe(4);
    expect(notebook.metadata.kernelspec.name).toBe('tslab');
    const source = notebook.cells.filter((c) => c.cell_type === 'code').map((c) => c.source.join('')).join('\n\n');
    expect(source).toContain("from 'tfalign'");
    // Outside the package the name `tfalign` does not resolve: point it at the sources.
    const script = path.join(tmp, 'notebook.mts');
    fs.writeFileSync(script, source.replaceAll("from 'tfalign'", `from '${pathToFileURL(path.join(REPO, 'src', 'index.ts')).href}'`));

    const project = path.join(tmp, 'notebook');
    const result = await runNode([RUN_TS, script], { cwd: path.join(REPO, 'examples'), env: { TFALIGN_EXAMPLE_PROJECT: project } });
    expect(result.code, result.stderr.slice(-3000)).toBe(0);

    const store = RunStore.open(path.join(project, 'tfalign.db'), { readonly: true });
    try {
      expect(store.stages('notebook', { round: 1 }).map((s) => [s.name, s.status])).toEqual(ROUND_STAGES.map((s) => [s, 'done']));
      expect(store.stages('notebook', { round: 2 }).map((s) => [s.name, s.status])).toEqual([['collect_preferences', 'done']]);
      // console.table rows carry the recorded numbers: the judge score and SFT's last logged loss.
      const judge = store.metrics('notebook', { round: 1, name: 'eval/judge_score' })[0]!.value;
      expect(result.stdout).toContain(String(judge));
      const losses = store.metrics('notebook', { round: 1, stage: 'sft', name: 'sft/train/loss' });
      expect(losses.map((m) => m.step)).toEqual([2, 4, 6]);
      expect(result.stdout).toMatch(new RegExp(`│\\s+6\\s+│\\s+${String(losses[2]!.value).replace('.', '\\.')}\\s+│`));
      expect(result.stdout).toContain('round 1 · evaluate done in');
    } finally {
      store.close();
    }
  }, 240_000);
});
