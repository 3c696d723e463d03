/**
 * BullMQ producer queues for request paths. A Queue re-emits its connection's errors and
 * prints them when nobody listens; ours surface on the commands that need Redis (as 503s
 * or failed enqueues), so the stream of reconnect errors during an outage is dropped here.
 */
import { Queue } from "bullmq";
import type { Redis } from "./connection.ts";

export function producerQueue<Data, Result = unknown>(
  name: string,
  connection: Redis,
  prefix: string,
): Queue<Data, Result> {
  const queue = new Queue<Data, Result>(name, { connection, prefix });
  queue.on("error", () => {});
  return queue;
}
