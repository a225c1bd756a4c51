import { defineConfig } from "vite";

// Everything is bundled into dist/ (no CDN); the API serves dist/ at / and the app calls /v1 on the same origin.
export default defineConfig({
  base: "./",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: { outDir: "dist", emptyOutDir: true, assetsInlineLimit: 0, sourcemap: false },
  server: { proxy: { "/v1": "http://127.0.0.1:8000" } },
});
