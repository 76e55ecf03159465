#!/usr/bin/env node
// Finds runtime import cycles among the TypeScript files of a source folder.
//
// Why: a cycle of modules that import values from each other makes the
// evaluation order depend on which module is loaded first (a value can be
// read before its module has run), and it ties the files into one block no
// one can move on its own (issue 14).
//
// What counts as an edge: `import … from './x.js'`, `import './x.js'` and
// `export … from './x.js'` with a relative path. `import type` and `export
// type` do not: they are erased. `import { type A } from './x.js'` does count:
// under verbatimModuleSyntax it compiles to `import {} from './x.js'`, which
// still loads the module. A dynamic `import()` does not count: it loads later,
// not while the importing module is evaluated. (Checked on services/relay:
// the same edge count as the `import`/`export` lines of the compiled dist/.)
//
// `--with-types` counts type-only imports too: such a cycle is harmless at run
// time but still binds its files together (issue 14's 5-file cycle through
// federation/inbound-worker.ts was one of those: closed by type imports).
//
// Usage: node scripts/import-cycles.mjs [--with-types] [DIR...]   (default services/relay/src)
// Prints every strongly connected set of files with one cycle through it, and
// exits 1 if there is any.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);
const withTypes = args.includes('--with-types');
const dirs = args.filter((a) => a !== '--with-types');
if (dirs.length === 0) dirs.push('services/relay/src');

function sourceFiles(dir, out = []) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) sourceFiles(path, out);
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

// Statements start a line; `[^;]*?` lets a specifier list span lines.
const STATEMENT = /^\s*(import|export)\s+(type\s+)?(?:[^;'"]*?\sfrom\s+)?['"](\.{1,2}\/[^'"]+)['"]/gm;

/** Edges of one file: the files it loads, resolved from `./x.js` to `./x.ts`. */
function edgesOf(file) {
  const text = readFileSync(file, 'utf8');
  const edges = new Set();
  for (const m of text.matchAll(STATEMENT)) {
    if (m[2] !== undefined && !withTypes) continue; // import type / export type: erased
    edges.add(resolve(dirname(file), m[3].replace(/\.js$/, '.ts')));
  }
  return [...edges];
}

const files = dirs.flatMap((d) => sourceFiles(resolve(root, d)));
const known = new Set(files);
const graph = new Map(files.map((f) => [f, edgesOf(f).filter((t) => known.has(t))]));

// Tarjan's strongly connected components.
let counter = 0;
const index = new Map();
const low = new Map();
const stack = [];
const onStack = new Set();
const components = [];
function visit(v) {
  index.set(v, counter);
  low.set(v, counter++);
  stack.push(v);
  onStack.add(v);
  for (const w of graph.get(v)) {
    if (!index.has(w)) {
      visit(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (onStack.has(w)) {
      low.set(v, Math.min(low.get(v), index.get(w)));
    }
  }
  if (low.get(v) === index.get(v)) {
    const component = [];
    let w;
    do {
      w = stack.pop();
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    if (component.length > 1 || graph.get(v).includes(v)) components.push(component);
  }
}
for (const f of files) if (!index.has(f)) visit(f);

/** One cycle through `start` inside its component (breadth-first, so a shortest one). */
function cycleThrough(start, members) {
  const inside = new Set(members);
  const from = new Map([[start, undefined]]);
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift();
    for (const w of graph.get(v)) {
      if (w === start) {
        const path = [v];
        for (let p = from.get(v); p !== undefined; p = from.get(p)) path.push(p);
        return path.reverse();
      }
      if (inside.has(w) && !from.has(w)) {
        from.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start];
}

const edgeCount = [...graph.values()].reduce((n, e) => n + e.length, 0);
const name = (f) => relative(root, f);
const kind = withTypes ? 'edges (type imports included)' : 'runtime edges';
console.log(`import-cycles: ${files.length} files, ${edgeCount} ${kind} in ${dirs.join(', ')}`);
for (const component of components) {
  const sorted = component.map(name).sort();
  const cycle = cycleThrough(component.sort()[0], component).map(name);
  console.log(`cycle among ${sorted.length} files: ${sorted.join(', ')}`);
  console.log(`  e.g. ${[...cycle, cycle[0]].join(' -> ')}`);
}
if (components.length === 0) console.log(`import-cycles: no ${withTypes ? '' : 'runtime '}import cycle`);
process.exit(components.length === 0 ? 0 : 1);
