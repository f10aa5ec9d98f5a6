import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vitest/config';

// The tests run the package's TypeScript on Node against the real core: the N-API flavour
// of the generated bindings (made by bindings/tests/react_native.rs into .napi/, beside
// the host-built libprivcomm_ffi.so) replaces the JSI flavour that React Native loads.
const napiBindings = fileURLToPath(new URL('./.napi/index.ts', import.meta.url));

export default defineConfig({
  resolve: {
    alias: [{ find: /^\.\/generated\/privcomm$/, replacement: napiBindings }],
  },
  test: {
    include: ['test/**/*.test.ts'],
    // One process per file: the N-API runtime keeps process-wide state (callback tables,
    // the JS thread's identity); worker threads in one process misroute callbacks.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
