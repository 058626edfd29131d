/**
 * Start-up time of the command line and of the public API, one JSON line per case:
 *
 *   compiled-help    node dist/src/cli/bin.js --help   (what an installed `tfalign --help` runs)
 *   sources-help     node bin/tfalign.js --help        (the TypeScript sources through tsx, as before dist/)
 *   compiled-import  import('dist/src/index.js')        (the public API: loads tfjs and every module)
 *   node-baseline    node -e 0                         (Node itself)
 *
 * Each case runs `--repeats` times (default 9) after one warm-up run (file cache); the line gives
 * the median and the minimum wall time, and the median CPU time of the child process (user +
 * system, read by the child itself at exit), which other jobs on the machine disturb less than wall
 * time. Runs `npm run build` first, so the compiled cases measure the current sources.
 *
 *   npm run bench:startup [-- --repeats 15]
 */
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function parseArgs(argv: string[]): { repeats: number } {
  const at = argv.indexOf('--repeats');
  const repeats = at === -1 ? 9 : Number(argv[at + 1]);
  if (!Number.isInteger(repeats) || repeats < 1) throw new Error(`--repeats: expected a positive integer, got ${argv[at + 1]}`);
  return { repeats };
}

/** Makes the child print its own CPU time (µs, all threads) on stderr as it exits. */
const CPU_PROBE = `data:text/javascript,process.on('exit',()=>{const u=process.cpuUsage();process.stderr.write('\\ncpu_us '+(u.user+u.system)+'\\n')})`;

function measure(args: string[]): { wallMs: number; cpuMs: number } {
  const start = performance.now();
  const r = spawnSync(process.execPath, ['--import', CPU_PROBE, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  const wallMs = performance.now() - start;
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited with ${r.status}: ${r.stderr.split('\n')[0]}`);
  const cpu = /cpu_us (\d+)/.exec(r.stderr);
  if (!cpu) throw new Error(`node ${args.join(' ')}: no CPU time reported`);
  return { wallMs, cpuMs: Number(cpu[1]) / 1000 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const { repeats } = parseArgs(process.argv.slice(2));
const build = spawnSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
if (build.status !== 0) throw new Error('npm run build failed');

const cases: [string, string[]][] = [
  ['compiled-help', ['dist/src/cli/bin.js', '--help']],
  ['sources-help', ['bin/tfalign.js', '--help']],
  ['compiled-import', ['--input-type=module', '-e', `await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist/src/index.js')).href)})`]],
  ['node-baseline', ['-e', '0']],
];
for (const [name, args] of cases) {
  measure(args); // warm-up: file cache
  const runs = Array.from({ length: repeats }, () => measure(args));
  const wall = runs.map((r) => r.wallMs);
  console.log(
    JSON.stringify({
      bench: 'startup',
      case: name,
      repeats,
      wall_ms_median: +median(wall).toFixed(1),
      wall_ms_min: +Math.min(...wall).toFixed(1),
      cpu_ms_median: +median(runs.map((r) => r.cpuMs)).toFixed(1),
      node: process.version,
      cpus: os.cpus().length,
      loadavg_1m: +os.loadavg()[0]!.toFixed(2),
    }),
  );
}
