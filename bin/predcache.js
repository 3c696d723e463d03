#!/usr/bin/env node
// `npx predcache`: the admin script (precompute/cli.ts), run through tsx like the service.
import { register } from "tsx/esm/api";

register();
await import("../precompute/cli.ts");
