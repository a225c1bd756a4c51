// Bundle the dashboard into dist/ with esbuild: one hashed JS and one CSS file, every asset inside (no CDN).
// `node build.mjs` builds once; `--watch` rebuilds on change (the API serves dist/ as it is on disk).
import * as esbuild from "esbuild";
import { readFileSync, rmSync, mkdirSync, writeFileSync } from "node:fs";
import { basename } from "node:path";

const watch = process.argv.includes("--watch");
const TAG = '<script type="module" src="/src/main.tsx"></script>';

function writeHtml(metafile) {
  const outs = Object.keys(metafile.outputs);
  const js = outs.find((o) => o.endsWith(".js"));
  const css = outs.find((o) => o.endsWith(".css"));
  const html = readFileSync("index.html", "utf8");
  if (!html.includes(TAG)) throw new Error(`index.html must contain ${TAG}`);
  const tags = (css ? `<link rel="stylesheet" href="assets/${basename(css)}" />\n    ` : "") +
    `<script type="module" src="assets/${basename(js)}"></script>`;
  writeFileSync("dist/index.html", html.replace(TAG, tags));
  console.log(`dist/index.html, ${outs.map((o) => `${o} (${(metafile.outputs[o].bytes / 1024).toFixed(1)} KiB)`).join(", ")}`);
}

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist/assets", { recursive: true });
const options = {
  entryPoints: ["src/main.tsx"], bundle: true, outdir: "dist/assets", entryNames: "app-[hash]", format: "esm",
  target: "es2020", minify: !watch, sourcemap: watch, jsx: "automatic", jsxImportSource: "preact", metafile: true,
  legalComments: "none", logLevel: "warning",
  plugins: [{ name: "html", setup(build) { build.onEnd((r) => { if (r.metafile) writeHtml(r.metafile); }); } }],
};
if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
  console.log("watching src/ (serve with `sparsetune up`; reload the page after a rebuild)");
} else {
  await esbuild.build(options);
}
