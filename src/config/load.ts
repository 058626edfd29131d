/**
 * Config files: YAML or JSON, `--set key.path=value` overrides, zod validation that lists every
 * problem as `path.to.field: problem` before anything runs or is written.
 *
 * One rule for unknown keys everywhere: every object of a config schema is validated strictly
 * (`strictSchema`), whatever the schema was built with, so a misspelt field (`learningRate` for
 * `lr`) is an error in a trainer config, in a `--set` and in a run config's stage section alike,
 * and a field added to a schema later is known automatically. Objects a schema marks
 * `.passthrough()` (free-form records) keep their extra keys.
 */
import { createRequire } from 'node:module';

// `yaml` loads when a config file is read, not with the command line: it is a third of `tfalign --help`'s start-up.
const require = createRequire(import.meta.url);
const parseYaml = (text: string): unknown => (require('yaml') as typeof import('yaml')).parse(text);
import { z } from 'zod';
import { jsonErrorReason } from '../util/errors.js';
import { readUtf8File } from '../util/utf8.js';

/** Parses a YAML (.yaml/.yml) or JSON file; errors name the file and line. A UTF-8 BOM is accepted. */
export function readConfigFile(file: string): Record<string, unknown> {
  const text = readUtf8File(file);
  let value: unknown;
  try {
    value = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new Error(`${file}: ${file.endsWith('.json') ? jsonErrorReason(err) : (err as Error).message.split('\n')[0]}`);
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

/** Keys that would reach an object's prototype instead of a field of it. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'prototype', 'constructor']);

/** Applies `a.b.c=value` overrides in order (creating objects along the path). */
export function applyOverrides(config: Record<string, unknown>, sets: readonly string[]): Record<string, unknown> {
  const out = structuredClone(config);
  for (const set of sets) {
    const eq = set.indexOf('=');
    if (eq <= 0) throw new Error(`--set ${set}: expected key.path=value`);
    const keys = set.slice(0, eq).split('.');
    const bad = keys.find((key) => key === '' || FORBIDDEN_KEYS.has(key));
    if (bad !== undefined) throw new Error(`--set ${set.slice(0, eq)}: ${bad === '' ? 'empty key' : `"${bad}" is not a config field`}`);
    let node: Record<string, unknown> = out;
    for (const key of keys.slice(0, -1)) {
      const next = Object.hasOwn(node, key) ? node[key] : undefined;
      if (next === undefined || next === null) node[key] = {};
      else if (typeof next !== 'object' || Array.isArray(next)) throw new Error(`--set ${set}: ${key} is not a mapping`);
      node = node[key] as Record<string, unknown>;
    }
    node[keys[keys.length - 1]!] = parseSetValue(set.slice(eq + 1));
  }
  return out;
}

/** Every zod problem as `path.to.field: message`, joined with "; ". */
export function formatZodError(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
}

/** The strict copies of schemas already made (schemas are immutable, so one copy serves all). */
const strictCopies = new WeakMap<z.ZodTypeAny, z.ZodTypeAny>();

/**
 * `schema` with every object in it — nested, optional, defaulted, refined, in unions, arrays and
 * records — refusing unknown keys. Objects declared `.passthrough()` or with a catchall are left
 * as they are; so are intersections (each side would refuse the other's keys).
 */
export function strictSchema<S extends z.ZodTypeAny>(schema: S): S {
  const known = strictCopies.get(schema);
  if (known !== undefined) return known as S;
  const strict = makeStrict(schema);
  strictCopies.set(schema, strict);
  return strict as S;
}

function makeStrict(schema: z.ZodTypeAny): z.ZodTypeAny {
  if (schema instanceof z.ZodObject) {
    const shape = Object.fromEntries(Object.entries(schema.shape as z.ZodRawShape).map(([key, field]) => [key, strictSchema(field)]));
    const isStrip = schema._def.unknownKeys === 'strip' && schema._def.catchall instanceof z.ZodNever;
    return new z.ZodObject({ ...schema._def, shape: () => shape, unknownKeys: isStrip ? 'strict' : schema._def.unknownKeys });
  }
  if (schema instanceof z.ZodOptional) return new z.ZodOptional({ ...schema._def, innerType: strictSchema(schema._def.innerType) });
  if (schema instanceof z.ZodNullable) return new z.ZodNullable({ ...schema._def, innerType: strictSchema(schema._def.innerType) });
  if (schema instanceof z.ZodDefault) return new z.ZodDefault({ ...schema._def, innerType: strictSchema(schema._def.innerType) });
  if (schema instanceof z.ZodEffects) return new z.ZodEffects({ ...schema._def, schema: strictSchema(schema._def.schema) });
  if (schema instanceof z.ZodArray) return new z.ZodArray({ ...schema._def, type: strictSchema(schema._def.type) });
  if (schema instanceof z.ZodRecord) return new z.ZodRecord({ ...schema._def, valueType: strictSchema(schema._def.valueType) });
  if (schema instanceof z.ZodUnion) return new z.ZodUnion({ ...schema._def, options: schema._def.options.map((o: z.ZodTypeAny) => strictSchema(o)) });
  return schema;
}

/**
 * Validates `raw` with `schema` (strictly: unknown keys are errors at every level); throws one
 * line naming the source and every problem.
 */
export function validateConfig<S extends z.ZodTypeAny>(schema: S, raw: unknown, source: string): z.infer<S> {
  const result = strictSchema(schema).safeParse(raw);
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
