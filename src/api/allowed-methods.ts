/**
 * Which methods a path has routes for, so a request with another method gets 405 and an
 * Allow header instead of a 404 that says the path does not exist. Read from the app's
 * routes (middleware, registered for every method, does not count) into a router of its
 * own the first time it is needed, when every route is registered.
 */
import type { Hono } from "hono";
import { RegExpRouter } from "hono/router/reg-exp-router";

// OPTIONS is answered for every path that has routes (see app.ts).
const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] as const;

export function allowedMethods(app: Hono): (path: string) => string[] {
  let router: RegExpRouter<string> | undefined;
  return (path) => {
    if (!router) {
      router = new RegExpRouter<string>();
      for (const route of app.routes) {
        if (route.method !== "ALL") router.add(route.method, route.path, route.method);
      }
    }
    const found = router;
    const allowed = METHODS.filter((method) => found.match(method, path)[0].length > 0);
    // Hono answers HEAD with a GET route.
    if (allowed.includes("GET") && !allowed.includes("HEAD")) allowed.splice(1, 0, "HEAD");
    return allowed;
  };
}
