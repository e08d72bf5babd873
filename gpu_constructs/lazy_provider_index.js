'use strict';
// Preloaded into the jsii kernel's Node processes (NODE_OPTIONS --require) by
// gpu_constructs/provider_imports.py; see that module for the whole picture.
//
// A prebuilt cdktf or cdktn provider package ships two entry points: lib/index.js, which requires
// every one of its submodules (2,135 for AWS: seconds of Node time before the first resource), and
// lib/lazy-index.js, the same exports as getters that require a submodule on first use. Its
// package.json names only the eager one, so the jsii kernel would load everything. For the packages
// named in GPU_CONSTRUCTS_LAZY_NODE_PACKAGES (comma-separated npm names), this resolves the package
// to its lazy index instead. Every other module, or a package without a lazy index, resolves as usual.
//
// GPU_CONSTRUCTS_NODE_MODULES_REPORT=<file> writes, when the process exits, the files of provider
// packages that were loaded (a JSON list), so which submodules a synth needed can be checked.

const fs = require('fs');
const Module = require('module');
const path = require('path');

const lazyPackages = new Set(
  (process.env.GPU_CONSTRUCTS_LAZY_NODE_PACKAGES || '').split(',').filter(Boolean),
);
const resolveFilename = Module._resolveFilename;

Module._resolveFilename = function resolveToLazyIndex(request, ...rest) {
  const resolved = resolveFilename.call(this, request, ...rest);
  if (lazyPackages.has(request) && path.basename(resolved) === 'index.js') {
    const lazyIndex = path.join(path.dirname(resolved), 'lazy-index.js');
    if (fs.existsSync(lazyIndex)) {
      return lazyIndex;
    }
  }
  return resolved;
};

const report = process.env.GPU_CONSTRUCTS_NODE_MODULES_REPORT;
if (report) {
  process.on('exit', () => {
    const loaded = Object.keys(require.cache)
      .filter((file) => /[\\/]@cdkt[fn][\\/]provider-/.test(file))
      .sort();
    // The jsii runtime is two processes; only the one that loaded providers reports.
    if (loaded.length > 0) {
      fs.writeFileSync(report, JSON.stringify(loaded, null, 1));
    }
  });
}
