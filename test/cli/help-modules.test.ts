/**
 * `tfalign --help` loads only the command line's own modules, commander and zod: no tfjs, no wasm
 * backend, no better-sqlite3, no tokenizers (each command imports what it needs in its action).
 * A module hook lists every module the command resolves; a command module that imports tensor
 * code at its top makes this fail (and `--help` slow: bench:startup measures it).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

describe('tfalign --help', () => {
  it('loads no tensor, database or tokenizer module', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-help-'));
    const hook = path.join(dir, 'hook.mjs');
    fs.writeFileSync(hook, "export async function resolve(s, c, next) { const r = await next(s, c); process.stderr.write('module ' + r.url + '\\n'); return r; }\n");
    const register = path.join(dir, 'register.mjs');
    fs.writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hook).href)});\n`);
    const run = spawnSync(process.execPath, ['--import', register, 'bin/tfalign.js', '--help'], { encoding: 'utf8' });
    fs.rmSync(dir, { recursive: true, force: true });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toContain('Usage: tfalign');
    const modules = run.stderr.split('\n').filter((l) => l.startsWith('module ')).map((l) => l.slice('module '.length));
    expect(modules.some((m) => m.endsWith('/src/cli/main.ts'))).toBe(true); // the hook saw the command line load
    const heavy = modules.filter((m) => /@tensorflow|better-sqlite3|@huggingface|\/yaml\//.test(m));
    expect(heavy).toEqual([]);
  });
});
