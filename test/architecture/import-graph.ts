/**
 * The project's import graph, read with the TypeScript parser, and the layer rule it must obey.
 *
 * Edges: every relative module reference of a source file — `import … from`, `export … from`,
 * type-only imports, `import('…')` (dynamic, and `import('…').Type`), `vi.mock`-free source only —
 * and every `new URL('…', import.meta.url)` (how a worker thread's entry file is named). A
 * worker's `.js` bootstrap counts as a source file, so a thread's entry is part of the graph.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';

/** Source roots scanned (relative to the repository root). */
export const SOURCE_ROOTS = ['src', 'losses', 'samplers', 'data'];

/**
 * The layers, bottom first. A file belongs to the layer of the longest `prefix` it starts with.
 * A file may import files of its own group and of any group in a lower layer; two groups of one
 * layer are peers and must not import each other.
 */
export const LAYERS: { name: string; groups: string[] }[] = [
  { name: 'losses (tfjs only)', groups: ['losses/'] },
  { name: 'shared helpers (Rng, output files, errors, UTF-8, digests)', groups: ['src/util/'] },
  { name: 'kernels (wasm kernels tfjs lacks)', groups: ['src/kernels/'] },
  { name: 'backend selection', groups: ['src/backend.ts'] },
  { name: 'config (shared training fields, limits, loading)', groups: ['src/config/'] },
  { name: 'tokenizer', groups: ['src/tokenizer/'] },
  { name: 'data (rows, tokenization, collation, synthetic task)', groups: ['data/'] },
  { name: 'model, eval statistics', groups: ['src/model/', 'src/eval/'] },
  { name: 'train (optimizer, step engine, loop, task interface), threads', groups: ['src/train/', 'src/threads/'] },
  { name: 'inference helpers, samplers', groups: ['src/inference/', 'samplers/'] },
  { name: 'training tasks, curation', groups: ['src/tasks/', 'data/curation/'] },
  { name: 'data-parallel engine, inference worker pool', groups: ['src/parallel/', 'src/inference-pool/'] },
  { name: 'trainers (recipes), pipelines (rejection sampling)', groups: ['src/trainers/', 'src/pipelines/'] },
  { name: 'store', groups: ['src/store/'] },
  { name: 'rounds, report', groups: ['src/rounds/', 'src/report/'] },
  { name: 'cli, public API', groups: ['src/cli/', 'src/index.ts'] },
];

/** Bare packages `losses/` may import. */
export const LOSSES_PACKAGES = ['@tensorflow/tfjs'];

export interface ImportEdge {
  from: string;
  to: string;
  /** The specifier as written. */
  spec: string;
}

/** Every module specifier of one file's source text (relative and bare). */
export function moduleSpecifiers(fileName: string, text: string): string[] {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true, fileName.endsWith('.js') ? ts.ScriptKind.JS : ts.ScriptKind.TS);
  const specs: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      specs.push(node.moduleSpecifier.text);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments.length > 0 && ts.isStringLiteralLike(node.arguments[0])) {
      specs.push(node.arguments[0].text);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      specs.push(node.argument.literal.text);
    } else if (
      ts.isNewExpression(node) &&
      ts.isIdentifier(node.expression) &&
      node.expression.text === 'URL' &&
      node.arguments?.length === 2 &&
      ts.isStringLiteralLike(node.arguments[0]) &&
      node.arguments[1].getText(source) === 'import.meta.url'
    ) {
      specs.push(node.arguments[0].text);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return specs;
}

function listSources(root: string, dir: string, out: string[]): void {
  for (const entry of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const rel = path.posix.join(dir, entry.name);
    if (entry.isDirectory()) listSources(root, rel, out);
    else if (/\.(ts|js)$/.test(entry.name) && !entry.name.endsWith('.d.ts')) out.push(rel);
  }
}

/** The file a relative specifier names (`./x.js` → `x.ts` when that is the source), or undefined. */
function resolveRelative(root: string, from: string, spec: string): string | undefined {
  const joined = path.posix.normalize(path.posix.join(path.posix.dirname(from), spec));
  const candidates = [joined, joined.replace(/\.js$/, '.ts'), `${joined}.ts`, path.posix.join(joined, 'index.ts')];
  return candidates.find((c) => fs.existsSync(path.join(root, c)) && fs.statSync(path.join(root, c)).isFile());
}

export interface ImportGraph {
  files: string[];
  edges: ImportEdge[];
  /** Bare package specifiers per file. */
  packages: Map<string, string[]>;
  /** Relative specifiers that name no file. */
  unresolved: ImportEdge[];
}

/** The import graph of every source file under `SOURCE_ROOTS` of the repository at `root`. */
export function readImportGraph(root: string): ImportGraph {
  const files: string[] = [];
  for (const dir of SOURCE_ROOTS) listSources(root, dir, files);
  const edges: ImportEdge[] = [];
  const unresolved: ImportEdge[] = [];
  const packages = new Map<string, string[]>();
  for (const file of files.sort()) {
    for (const spec of moduleSpecifiers(file, fs.readFileSync(path.join(root, file), 'utf8'))) {
      if (spec.startsWith('.')) {
        const to = resolveRelative(root, file, spec);
        if (to === undefined) unresolved.push({ from: file, to: '', spec });
        else if (to !== file) edges.push({ from: file, to, spec });
      } else {
        packages.set(file, [...(packages.get(file) ?? []), spec]);
      }
    }
  }
  return { files, edges, packages, unresolved };
}

/** The group (and its layer index) a file belongs to: the longest matching prefix. */
export function groupOf(file: string, layers = LAYERS): { group: string; layer: number } | undefined {
  let best: { group: string; layer: number } | undefined;
  layers.forEach((layer, index) => {
    for (const group of layer.groups) {
      const matches = group.endsWith('/') ? file.startsWith(group) : file === group;
      if (matches && (!best || group.length > best.group.length)) best = { group, layer: index };
    }
  });
  return best;
}

/** Import cycles: the strongly connected components with more than one file (Tarjan), each sorted. */
export function findCycles(files: readonly string[], edges: readonly ImportEdge[]): string[][] {
  const next = new Map<string, string[]>(files.map((f) => [f, []]));
  for (const e of edges) next.get(e.from)?.push(e.to);
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const connect = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1) cycles.push(component.sort());
    }
  };
  for (const f of files) if (!index.has(f)) connect(f);
  return cycles;
}

/** Each import that breaks the layer rule, as one line: `a.ts → b.ts: <why>`. */
export function layerViolations(graph: Pick<ImportGraph, 'files' | 'edges' | 'packages'>, layers = LAYERS): string[] {
  const problems: string[] = [];
  for (const file of graph.files) if (!groupOf(file, layers)) problems.push(`${file}: in no layer (add its folder to LAYERS)`);
  for (const e of graph.edges) {
    const from = groupOf(e.from, layers);
    const to = groupOf(e.to, layers);
    if (!from || !to || from.group === to.group) continue;
    if (to.layer > from.layer) problems.push(`${e.from} → ${e.to}: imports upward (${layers[from.layer].name} → ${layers[to.layer].name})`);
    else if (to.layer === from.layer) problems.push(`${e.from} → ${e.to}: peers of one layer (${from.group}, ${to.group}) must not import each other`);
  }
  for (const [file, specs] of graph.packages) {
    if (groupOf(file, layers)?.group !== 'losses/') continue;
    for (const spec of specs) if (!LOSSES_PACKAGES.includes(spec)) problems.push(`${file} → ${spec}: losses/ depends on ${LOSSES_PACKAGES.join(', ')} only`);
  }
  return problems;
}
