/**
 * Subscriber connections after a reconnect: their channels come back by themselves, and a
 * close while that resubscription is pending (a shutdown right after Redis returned) must
 * not end the process. ioredis's own resubscription (autoResubscribe) leaves that failure
 * as an unhandled rejection, which Node turns into an exit. A TCP proxy in front of the
 * real Redis drops connections and holds back SUBSCRIBE when told to.
 */
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, expect, inject, it } from "vitest";
import { survivable } from "../../src/main/unhandled.ts";
import { createRedis, type Redis, subscribe } from "../../src/redis/connection.ts";
import { eventually } from "../helpers/service.ts";

const target = new URL(inject("redisUrl"));
let proxy: Server;
let proxyUrl: string;
const open = new Set<Socket>();
/** When set, a SUBSCRIBE never reaches Redis (it stays pending). */
let holdSubscribe = false;
let held = 0;

beforeAll(async () => {
  proxy = createServer((client) => {
    const server = createConnection(Number(target.port), target.hostname);
    open.add(client).add(server);
    const close = () => {
      client.destroy();
      server.destroy();
      open.delete(client);
      open.delete(server);
    };
    client.on("data", (chunk) => {
      if (holdSubscribe && /subscribe/i.test(chunk.toString("latin1"))) {
        held++;
        return;
      }
      server.write(chunk);
    });
    server.on("data", (chunk) => client.write(chunk));
    client.on("close", close).on("error", close);
    server.on("close", close).on("error", close);
  });
  await new Promise<void>((done) => proxy.listen(0, "127.0.0.1", done));
  const address = proxy.address() as { port: number };
  proxyUrl = `redis://127.0.0.1:${address.port}`;
});

afterAll(async () => {
  for (const socket of open) socket.destroy();
  await new Promise((done) => proxy.close(done));
});

function dropAll(): void {
  for (const socket of open) socket.destroy();
}

function tracked(): { unhandled: unknown[]; stop(): void } {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on("unhandledRejection", onUnhandled);
  return { unhandled, stop: () => process.off("unhandledRejection", onUnhandled) };
}

async function subscribed(subscriber: Redis, publisher: Redis, message: string) {
  const received: string[] = [];
  const listener = (channel: string, text: string) => {
    if (channel === CHANNEL) received.push(text);
  };
  subscriber.on("message", listener);
  try {
    await eventually(async () => {
      await publisher.publish(CHANNEL, message);
      return received.includes(message) ? true : undefined;
    }, 10_000);
  } finally {
    subscriber.off("message", listener);
  }
}

const CHANNEL = "resubscribe-test";

it("subscribes again by itself after the connection drops", async () => {
  const subscriber = createRedis(proxyUrl, { role: "subscriber" });
  const publisher = createRedis(target.toString());
  try {
    await subscribe(subscriber, CHANNEL);
    await subscribed(subscriber, publisher, "before");
    dropAll();
    await subscribed(subscriber, publisher, "after");
  } finally {
    subscriber.disconnect();
    publisher.disconnect();
  }
});

it("leaves no unhandled rejection when closed while resubscribing", async () => {
  const rejections = tracked();
  const subscriber = createRedis(proxyUrl, { role: "subscriber" });
  const publisher = createRedis(target.toString());
  try {
    await subscribe(subscriber, CHANNEL);
    await subscribed(subscriber, publisher, "before");
    holdSubscribe = true;
    dropAll();
    await eventually(async () => (held > 0 ? true : undefined), 10_000);
    subscriber.disconnect(); // as a shutdown would, with the SUBSCRIBE still unanswered
    await new Promise((r) => setTimeout(r, 200));
    expect(rejections.unhandled).toEqual([]);
  } finally {
    holdSubscribe = false;
    rejections.stop();
    subscriber.disconnect();
    publisher.disconnect();
  }
});

it("is why: ioredis's own resubscription leaves an error unhandled, which a stopping process survives", async () => {
  const rejections = tracked();
  const subscriber = createRedis(proxyUrl, { role: "blocking" }); // autoResubscribe on
  const publisher = createRedis(target.toString());
  try {
    await subscriber.subscribe(CHANNEL);
    await subscribed(subscriber, publisher, "before");
    holdSubscribe = true;
    held = 0;
    dropAll();
    await eventually(async () => (held > 0 ? true : undefined), 10_000);
    subscriber.disconnect();
    await eventually(async () => (rejections.unhandled.length > 0 ? true : undefined), 5_000);
    // Closed on purpose: harmless while the process stops, a bug at any other time.
    expect(rejections.unhandled.every((reason) => survivable(reason, true))).toBe(true);
    expect(rejections.unhandled.some((reason) => survivable(reason, false))).toBe(false);
  } finally {
    holdSubscribe = false;
    rejections.stop();
    subscriber.disconnect();
    publisher.disconnect();
  }
});
