/**
 * Headers added to a request's coming reply (request id, CORS, Vary…): kept in order,
 * one entry per name, appended to a list where asked, and given once to whichever reply
 * answers: a reply written ahead of the app, node's response, or a plain record.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import { describe, expect, it } from "vitest";
import { addHeader, flushHeaders, takeHeaders, writeReply } from "../../src/api/headers.ts";

const request = () => ({}) as IncomingMessage;

/** A response that records what is written to it. */
function response() {
  const written: { status?: number; head?: unknown; body?: string; set: [string, string][] } = {
    set: [],
  };
  const outgoing = {
    headersSent: false,
    writeHead(status: number, head: OutgoingHttpHeaders | string[]) {
      written.status = status;
      written.head = [...(head as string[])];
      return this;
    },
    end(body: string) {
      written.body = body;
    },
    setHeader(name: string, value: string) {
      written.set.push([name, value]);
    },
  };
  return { outgoing: outgoing as unknown as ServerResponse, written };
}

describe("pending reply headers", () => {
  it("a name is set once (last value wins) unless appended to, as a list", () => {
    const incoming = request();
    addHeader(incoming, "X-Request-Id", "a");
    addHeader(incoming, "Vary", "Origin", true);
    addHeader(incoming, "X-Request-Id", "b");
    addHeader(incoming, "Vary", "X-Predcache-Client", true);
    expect(takeHeaders(incoming)).toEqual({
      "X-Request-Id": "b",
      Vary: "Origin, X-Predcache-Client",
    });
    // Taken once: a second reply gets none of them.
    expect(takeHeaders(incoming)).toBeUndefined();
  });

  it("a reply written ahead of the app sends them first, then its own, in order", () => {
    const incoming = request();
    addHeader(incoming, "X-Request-Id", "r1");
    addHeader(incoming, "Access-Control-Allow-Origin", "*");
    const own = ["ETag", '"v-k"', "Content-Type", "application/json"];
    const { outgoing, written } = response();
    writeReply(incoming, outgoing, 200, own, "{}");
    expect(written).toMatchObject({
      status: 200,
      body: "{}",
      head: ["X-Request-Id", "r1", "Access-Control-Allow-Origin", "*", ...own],
    });
    // The reply's own list is shared by every answer of its URL: left as it was.
    expect(own).toEqual(["ETag", '"v-k"', "Content-Type", "application/json"]);
    expect(takeHeaders(incoming)).toBeUndefined();

    const bare = response();
    writeReply(request(), bare.outgoing, 200, own, "{}");
    expect(bare.written.head).toEqual(own);
  });

  it("any other reply gets them through node's setHeader, unless its headers are sent", () => {
    const incoming = request();
    addHeader(incoming, "X-Request-Id", "r2");
    addHeader(incoming, "Vary", "Origin", true);
    const { outgoing, written } = response();
    flushHeaders(incoming, outgoing);
    expect(written.set).toEqual([
      ["X-Request-Id", "r2"],
      ["Vary", "Origin"],
    ]);

    const late = request();
    addHeader(late, "X-Request-Id", "r3");
    const sent = response();
    (sent.outgoing as { headersSent: boolean }).headersSent = true;
    flushHeaders(late, sent.outgoing);
    expect(sent.written.set).toEqual([]);
  });
});
