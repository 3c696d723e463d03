/**
 * BullMQ producer queues for request paths, each on a connection of its own.
 *
 * BullMQ defines its ~64 Lua scripts as commands on the connection it is given, and
 * ioredis copies every defined command onto each pipeline it makes: with auto-pipelining
 * that is one pipeline per event-loop turn with commands, measured 74 µs each instead of
 * 4.7 µs. On a shared connection every cache read and write would pay it; so the queue
 * gets a duplicate (same server, same settings, no auto-pipelining: its few commands per
 * job gain nothing from it), closed with the queue.
 *
 * A Queue re-emits its connection's errors and prints them when nobody listens; ours
 * surface on the commands that need Redis (as 503s or failed enqueues), so the stream of
 * reconnect errors during an outage is dropped here.
 */
import { Queue } from "bullmq";
import { isCluster, type Redis } from "./connection.ts";

function ownConnection(connection: Redis): Redis {
  const own = isCluster(connection)
    ? connection.duplicate(undefined, { enableAutoPipelining: false })
    : connection.duplicate({ enableAutoPipelining: false });
  own.on("error", () => {});
  return own;
}

export function producerQueue<Data, Result = unknown>(
  name: string,
  connection: Redis,
  prefix: string,
): Queue<Data, Result> {
  const own = ownConnection(connection);
  const queue = new Queue<Data, Result>(name, { connection: own, prefix });
  queue.on("error", () => {});
  // BullMQ leaves a connection it was given open; this one is the queue's alone.
  const close = queue.close.bind(queue);
  queue.close = async () => {
    try {
      await close();
    } finally {
      own.disconnect();
    }
  };
  return queue;
}
