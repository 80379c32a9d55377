// Fails when gen/ differs from what `buf generate` makes of proto/ now (stale or hand-edited generated code).
// Usage: node scripts/check-generated.mjs
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const fresh = mkdtempSync(join(tmpdir(), "sppo-gen-"));
try {
  const template = readFileSync(join(root, "buf.gen.yaml"), "utf8").replace(/out: gen/, `out: ${fresh}`);
  execFileSync(join(root, "node_modules/.bin/buf"), ["generate", "--template", template], {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, PATH: `${join(root, "node_modules/.bin")}:${process.env.PATH}` },
  });
  const list = (dir) =>
    readdirSync(dir).flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? list(path) : [path];
    });
  const want = new Map(list(fresh).map((p) => [relative(fresh, p), readFileSync(p, "utf8")]));
  const have = new Map(list(join(root, "gen")).map((p) => [relative(join(root, "gen"), p), readFileSync(p, "utf8")]));
  const problems = [];
  for (const [name, text] of want) {
    if (!have.has(name)) problems.push(`missing gen/${name}`);
    else if (have.get(name) !== text) problems.push(`stale gen/${name}`);
  }
  for (const name of have.keys()) if (!want.has(name)) problems.push(`extra gen/${name} (no .proto makes it)`);
  if (problems.length > 0) {
    console.error(`Generated code is out of date with proto/ — run \`npm run proto:gen\`:\n  ${problems.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`gen/ is up to date with proto/ (${want.size} files)`);
} finally {
  rmSync(fresh, { recursive: true, force: true });
}
