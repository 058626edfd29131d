/**
 * Config files: YAML or JSON, `--set key.path=value` overrides, zod validation that lists every
 * problem as `path.to.field: problem` before anything runs or is written.
 */
import * as fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';

/** Parses a YAML (.yaml/.yml) or JSON file; errors name the file and line. */
export function readConfigFile(file: string): Record<string, unknown> {
  if (!fs.existsSync(file)) throw new Error(`${file}: no such file`);
  const text = fs.readFileSync(file, 'utf8');
  let value: unknown;
  try {
    value = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new Error(`${file}: expected a mapping of fields at the top level`);
  return value as Record<string, unknown>;
}

/** A `--set` value: JSON when it parses (numbers, booleans, arrays, null), else the raw string. */
function parseSetValue(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

/** Applies `a.b.c=value` overrides in order (creating objects along the path). */
export function applyOverrides(config: Record<string, unknown>, sets: readonly string[]): Record<string, unknown> {
  const out = structuredClone(config);
  for (const set of sets) {
    const eq = set.indexOf('=');
    if (eq <= 0) throw new Error(`--set ${set}: expected key.path=value`);
    const keys = set.slice(0, eq).split('.');
    let node: Record<string, unknown> = out;
    for (const key of keys.slice(0, -1)) {
      const next = node[key];
      if (next === undefined || next === null) node[key] = {};
      else if (typeof next !== 'object' || Array.isArray(next)) throw new Error(`--set ${set}: ${key} is not a mapping`);
      node = node[key] as Record<string, unknown>;
    }
    node[keys[keys.length - 1]] = parseSetValue(set.slice(eq + 1));
  }
  return out;
}

/** Every zod problem as `path.to.field: message`, joined with "; ". */
export function formatZodError(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
}

/** Validates `raw` with `schema`; throws one line naming the source and every problem. */
export function validateConfig<S extends z.ZodTypeAny>(schema: S, raw: unknown, source: string): z.infer<S> {
  const result = schema.safeParse(raw);
  if (!result.success) throw new Error(`${source}: ${formatZodError(result.error)}`);
  return result.data;
}

/**
 * The config a command runs: file (optional) → CLI flags given explicitly → `--set` overrides →
 * schema. Flags left undefined do not override the file.
 */
export function loadConfig<S extends z.ZodTypeAny>(
  schema: S,
  opts: { file?: string; flags?: Record<string, unknown>; sets?: readonly string[] },
): z.infer<S> {
  const base = opts.file ? readConfigFile(opts.file) : {};
  const flags = Object.fromEntries(Object.entries(opts.flags ?? {}).filter(([, v]) => v !== undefined));
  const merged = applyOverrides({ ...base, ...flags }, opts.sets ?? []);
  return validateConfig(schema, merged, opts.file ?? 'config');
}
