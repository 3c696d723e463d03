import { describe, expect, it } from "vitest";
import { PredcacheError, redisUnavailable } from "../../src/errors.ts";

function replyError(message: string): Error {
  const error = new Error(message);
  error.name = "ReplyError";
  return error;
}

describe("redisUnavailable", () => {
  it("says why Redis is unavailable in the API's words, keeping the client's error as the cause", () => {
    const cases: [Error, string, string][] = [
      [new Error("Command timed out"), "timeout", "it did not answer in time"],
      [replyError("LOADING Redis is loading the dataset in memory"), "failover", "loading"],
      [
        new Error("Stream isn't writeable and enableOfflineQueue options is false"),
        "unreachable",
        "not connected",
      ],
    ];
    for (const [cause, reason, words] of cases) {
      const error = redisUnavailable(cause) as PredcacheError;
      expect(error).toBeInstanceOf(PredcacheError);
      expect(error.code).toBe("redis_unavailable");
      expect(error.details).toEqual({ reason });
      expect(error.message).toContain(words);
      expect(error.message).not.toContain(cause.message);
      expect(error.cause).toBe(cause);
      expect(error.retryAfter).toBe(1);
    }
  });

  it("lets anything but an outage through, to be answered 500 and logged", () => {
    const wrongType = replyError("WRONGTYPE Operation against a key holding the wrong kind");
    expect(redisUnavailable(wrongType)).toBe(wrongType);
    const bug = new TypeError("cannot read properties of undefined");
    expect(redisUnavailable(bug)).toBe(bug);
    const refusal = new PredcacheError("overloaded", "busy");
    expect(redisUnavailable(refusal)).toBe(refusal);
  });
});
