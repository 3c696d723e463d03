/**
 * CONNECT (a proxy's method) refused with a JSON 405. node:http hands CONNECT to a
 * "connect" listener with the raw socket, and without one closes the connection without
 * a word; the API and the worker's probe server both answer it like any other refusal.
 */
import type { Duplex } from "node:stream";

const BODY = JSON.stringify({
  error: { code: "method_not_allowed", message: "CONNECT is not served here" },
});

/** `requestId`: the X-Request-Id to answer with (the API's answers all carry one). */
export function refuseConnect(socket: Duplex, requestId?: string): void {
  const id = requestId === undefined ? "" : `X-Request-Id: ${requestId}\r\n`;
  socket.end(
    `HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(BODY)}\r\nCache-Control: no-store\r\n${id}Connection: close\r\n\r\n${BODY}`,
  );
}
