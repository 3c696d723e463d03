/** A GET over node:http with headers sent as given: a Host fetch() would replace, or a header repeated. */
import { request } from "node:http";

export function rawGet(
  base: string,
  path: string,
  headers: Record<string, string | string[]>,
): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(base);
  return new Promise((done, fail) => {
    const req = request({ hostname, port, path, headers, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => {
        body += chunk;
      });
      res.on("end", () => done({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", fail);
    req.end();
  });
}
