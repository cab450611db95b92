// Bundle src/index.js into src/perfpulse/web/static/rum.js and enforce the size
// budget: the build fails when the gzipped agent exceeds LIMIT bytes. Then
// bundle the dashboard's client, src/dashboard/index.js with uPlot, into
// static/dashboard.js (budget DASHBOARD_LIMIT), and uPlot's CSS with
// src/dashboard.css into static/dashboard.css.
import {build} from 'esbuild';
import {mkdirSync, readFileSync, writeFileSync} from 'node:fs';
import {dirname, relative, resolve} from 'node:path';
import {fileURLToPath} from 'node:url';
import {gzipSync} from 'node:zlib';
import {minify} from 'terser';
import {patch} from './patches.mjs';

const LIMIT = 5120;
const DASHBOARD_LIMIT = 80 * 1024;
const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, '../src/perfpulse/web/static/rum.js');
const webVitals = resolve(here, 'node_modules/web-vitals/dist/modules');

// `let` and `const` mean the same in code that never reassigns a `const`, and
// `let` is two bytes shorter: the bundle declares everything with `let`. Any
// `const` that does not look like a declaration (say, inside a string) fails
// the build instead of being rewritten.
const constToLet = (file, src) => {
  for (const m of src.matchAll(/\bconst\b/g)) {
    if (!/(^|[\s;{}(])const\s+[\w${[]/.test(src.slice(Math.max(0, m.index - 1), m.index + 8))) {
      throw new Error(`${file}: "const" that is not a declaration at ${m.index}`);
    }
  }
  return src.replace(/\bconst\b/g, 'let');
};

const agent = {
  name: 'perfpulse-agent',
  setup(b) {
    // `#wv/x.js` is web-vitals' own internal helper `lib/x.js` (observe,
    // getSelector, the INP/CLS managers…), which its package exports do not
    // list. Sharing them instead of re-writing them keeps the agent inside its
    // budget; the web-vitals version is pinned exactly for that reason.
    b.onResolve({filter: /^#wv\//}, (args) => ({path: resolve(webVitals, 'lib', args.path.slice(4))}));
    b.onResolve({filter: /^web-vitals\//}, (args) => ({path: resolve(webVitals, args.path.slice(11))}));
    // web-vitals modules get the edits of patches.mjs; every module gets `let`.
    b.onLoad({filter: /\.js$/}, (args) => {
      const src = readFileSync(args.path, 'utf8');
      const wv = relative(webVitals, args.path).replace(/\\/g, '/');
      const file = wv.startsWith('..') ? args.path : wv;
      return {contents: constToLet(file, file == wv ? patch(wv, src) : src), loader: 'js'};
    });
  },
};

const bundled = await build({
  entryPoints: [resolve(here, 'src/index.js')],
  bundle: true,
  format: 'iife',
  target: 'es2022',
  write: false,
  legalComments: 'none',
  plugins: [agent],
});
const min = await minify(bundled.outputFiles[0].text, {
  ecma: 2020,
  compress: {passes: 3, unsafe: true},
  // Private members start with `_` (web-vitals' convention, which its own
  // builds mangle too), plus three internal names of web-vitals' that no
  // browser API has. (terser also leaves alone any name it knows from the DOM.)
  mangle: {properties: {regex: /^(_|firstHiddenTime$|onHidden$|reportAllChanges$)/}},
  format: {comments: false},
});
const code = min.code;
const gz = gzipSync(code, {level: 9}).length;
mkdirSync(dirname(out), {recursive: true});
writeFileSync(out, code);
console.log(
  `rum.js: ${code.length} bytes raw, ${gz} bytes gzip -9 (${gzipSync(code).length} at the default level; limit ${LIMIT})`,
);
if (gz > LIMIT) {
  console.error(`rum.js is ${gz - LIMIT} bytes over the ${LIMIT}-byte gzip budget`);
  process.exit(1);
}

// The dashboard: its own bundle, none of the agent's size tricks. uPlot's
// licence asks for its notice in every copy: the banner carries it.
const staticDir = dirname(out);
const uplot = JSON.parse(readFileSync(resolve(here, 'node_modules/uplot/package.json'), 'utf8'));
const notice = `/*! perfpulse dashboard. Includes uPlot ${uplot.version}: Copyright (c) 2025, Leon Sorokin, MIT License, https://github.com/leeoniya/uPlot */`;
await build({
  entryPoints: [resolve(here, 'src/dashboard/index.js')],
  outfile: resolve(staticDir, 'dashboard.js'),
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2020',
  legalComments: 'none',
  banner: {js: notice},
});
await build({
  stdin: {
    contents: ['uplot/dist/uPlot.min.css', './src/dashboard.css'].map((f) => `@import "${f}";`).join('\n'),
    resolveDir: here,
    loader: 'css',
  },
  outfile: resolve(staticDir, 'dashboard.css'),
  bundle: true,
  minify: true,
  legalComments: 'none',
  banner: {css: notice},
});
const gzipped = (file, note = '') => {
  const body = readFileSync(resolve(staticDir, file));
  const size = gzipSync(body, {level: 9}).length;
  console.log(`${file}: ${body.length} bytes raw, ${size} bytes gzip -9${note}`);
  return size;
};
const dashboard = gzipped('dashboard.js', ` (limit ${DASHBOARD_LIMIT})`);
gzipped('dashboard.css');
if (dashboard > DASHBOARD_LIMIT) {
  console.error(`dashboard.js is ${dashboard - DASHBOARD_LIMIT} bytes over the ${DASHBOARD_LIMIT}-byte gzip budget`);
  process.exit(1);
}
