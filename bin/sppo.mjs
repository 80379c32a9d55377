#!/usr/bin/env node
// The `sppo` command. The project runs its TypeScript through tsx, so no build step sits between
// `npm ci` and a working command.
import { register } from "tsx/esm/api";

register();
await import("../cli/main.ts");
