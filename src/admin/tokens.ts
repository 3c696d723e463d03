/**
 * Admin bearer tokens. Configured as `id:secret` (or `id:sha256:<hex>` so the secret need
 * not sit in the environment), kept only as SHA-256 digests, and compared in constant
 * time: the id names who acted in the audit log, the secret is never stored or logged.
 */
import { createHash, timingSafeEqual } from "node:crypto";

export interface AdminToken {
  id: string;
  digest: Buffer;
}

export class TokenConfigError extends Error {
  override readonly name = "TokenConfigError";
}

const ID = /^[A-Za-z0-9_.-]{1,64}$/;

function digestOf(secret: string): Buffer {
  return createHash("sha256").update(secret, "utf8").digest();
}

/**
 * Parses `id:secret,id:sha256:<hex>,…`; refuses short secrets, duplicate ids and one
 * secret under two ids (plain, hashed or both). `what`
 * names them in errors (the read API's keys take the same form).
 */
export function parseAdminTokens(text: string | undefined, what = "admin token"): AdminToken[] {
  const tokens: AdminToken[] = [];
  for (const item of (text ?? "")
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean)) {
    const at = item.indexOf(":");
    const id = item.slice(0, at);
    const secret = item.slice(at + 1);
    if (at < 1 || !ID.test(id))
      throw new TokenConfigError(`each ${what} is id:secret (id: letters, digits, _ . -)`);
    if (tokens.some((t) => t.id === id)) throw new TokenConfigError(`${what} id ${id} twice`);
    const hashed = /^sha256:([0-9a-f]{64})$/i.exec(secret);
    if (hashed) {
      tokens.push({ id, digest: Buffer.from(hashed[1] as string, "hex") });
    } else if (/^sha256:/i.test(secret)) {
      // A mistyped digest must not quietly become a plain secret: the text as written.
      throw new TokenConfigError(
        `${what} ${id}: sha256: takes the secret's SHA-256 as 64 hex digits (got ${secret.length - 7} characters)`,
      );
    } else if (/\s/.test(secret)) {
      // Sent as "Bearer <secret>", a secret with a space in it could never be matched.
      throw new TokenConfigError(`${what} ${id}: a secret has no spaces or other whitespace`);
    } else if (secret.length < 16) {
      throw new TokenConfigError(`${what} ${id}: use a secret of at least 16 characters`);
    } else {
      tokens.push({ id, digest: digestOf(secret) });
    }
    // One secret under two ids: every action would be the first id's in the audit log.
    const added = tokens.at(-1) as AdminToken;
    const twin = tokens.find((t) => t !== added && t.digest.equals(added.digest));
    if (twin) throw new TokenConfigError(`${what}s ${twin.id} and ${id} have the same secret`);
  }
  return tokens;
}

/**
 * The id of the token `secret` matches, or undefined. Every configured digest is
 * compared (no early exit), so timing says nothing about which one matched.
 */
export function matchToken(tokens: readonly AdminToken[], secret: string): string | undefined {
  const digest = digestOf(secret);
  let found: string | undefined;
  for (const token of tokens) {
    if (timingSafeEqual(token.digest, digest) && found === undefined) found = token.id;
  }
  return found;
}
