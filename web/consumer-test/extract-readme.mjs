// Copies every ```ts block of the given markdown files into DIR as its own
// module (`<file>-<n>.ts`), so `tsc` checks the READMEs' examples against the
// packed typings: the markdown stays the single source. The examples may use
// the app helpers declared in readme-helpers.d.ts.
// Usage: node extract-readme.mjs DIR ROOT FILE.md... (files named relative to ROOT)
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

const [dir, root, ...files] = process.argv.slice(2);
mkdirSync(dir, { recursive: true });
let total = 0;
for (const file of files) {
  const text = readFileSync(file, "utf8");
  const name = path.relative(root, file).replace(/\.md$/, "").replace(/[^A-Za-z0-9]+/g, "-");
  const fence = /^```(?:ts|typescript)[ \t]*\n([\s\S]*?)^```[ \t]*$/gm;
  let n = 0;
  for (const match of text.matchAll(fence)) {
    const code = match[1];
    const line = text.slice(0, match.index).split("\n").length + 1;
    // `export {}` makes a block without imports a module too (top-level await).
    writeFileSync(path.join(dir, `${name}-${++n}.ts`), `// ${path.relative(root, file)}:${line}\n${code}\nexport {};\n`);
  }
  if (n === 0) throw new Error(`${file} has no \`\`\`ts block: nothing to check`);
  total += n;
}
console.log(`extracted ${total} TypeScript examples from ${files.join(", ")}`);
