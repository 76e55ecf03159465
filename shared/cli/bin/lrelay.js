#!/usr/bin/env node
// The `lrelay` command. Loads the compiled CLI (built by `tsc -b`, which the
// package's prepare script runs); src/lrelay.ts is the source.
const entry = new URL('../dist/lrelay.js', import.meta.url);
try {
  await import(entry.href);
} catch (error) {
  // Only a missing build gets a hint; anything else is reported by the CLI itself.
  if (error?.code === 'ERR_MODULE_NOT_FOUND' && String(error.message).includes(entry.pathname)) {
    process.stderr.write('error: INTERNAL: lrelay is not built; run `npm run build` (tsc -b) first\n');
    process.exit(1);
  }
  throw error;
}
