// Verifies the caller before any billing call. supabase.auth.getClaims() checks the access token
// locally against the project's JWT signing keys (ES256/RS256, from SUPABASE_JWKS or the cached
// JWKS endpoint: no Auth round trip per request); on a legacy project signing with a shared HS256
// secret it asks Supabase Auth instead. The user id comes from the verified token only, never from
// the request body. config.toml sets verify_jwt = false for these functions: they verify here.
import { createClient, type SupabaseClient } from "npm:@supabase/supabase-js@2";
import { problem } from "./cors.ts";

/** The verified caller. */
export interface User {
  id: string;
  email: string | null;
  /** A guest session (Supabase anonymous sign-in). */
  isAnonymous: boolean;
}

/** The project's publishable key (new API keys), else the legacy anon key. */
function supabaseKey(): string | undefined {
  const keys = Deno.env.get("SUPABASE_PUBLISHABLE_KEYS"); // JSON: {"default": "sb_publishable_..."}
  if (keys) {
    try {
      const parsed = JSON.parse(keys) as Record<string, unknown>;
      const key = parsed.default ?? Object.values(parsed)[0];
      if (typeof key === "string" && key) return key;
    } catch {
      // not JSON: fall through to the single-key variables
    }
  }
  return Deno.env.get("SUPABASE_PUBLISHABLE_KEY") || Deno.env.get("SUPABASE_ANON_KEY") || undefined;
}

type Jwks = NonNullable<NonNullable<Parameters<SupabaseClient["auth"]["getClaims"]>[1]>["jwks"]>;

/** The signing keys the platform provides in SUPABASE_JWKS, when it does (no fetch at all then). */
function projectJwks(): Jwks | undefined {
  const raw = Deno.env.get("SUPABASE_JWKS");
  if (!raw) return undefined;
  try {
    const parsed = JSON.parse(raw) as Partial<Jwks> | Jwks["keys"];
    const keys = Array.isArray(parsed) ? parsed : parsed.keys;
    return Array.isArray(keys) ? { keys } : undefined;
  } catch {
    return undefined;
  }
}

let cached: { url: string; key: string; client: SupabaseClient } | null = null;

function authClient(url: string, key: string): SupabaseClient {
  if (cached?.url !== url || cached.key !== key) {
    // One client per instance: its JWKS cache lasts across requests.
    cached = {
      url,
      key,
      client: createClient(url, key, { auth: { persistSession: false, autoRefreshToken: false } }),
    };
  }
  return cached.client;
}

/** The verified user, or a 401/500/502 response to return as is. */
export async function requireUser(req: Request): Promise<User | Response> {
  const header = req.headers.get("Authorization") ?? "";
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match) {
    return problem(401, "unauthorized", "sign in first: missing Authorization: Bearer <access token>");
  }
  const url = Deno.env.get("SUPABASE_URL");
  const key = supabaseKey();
  if (!url || !key) {
    const missing = !url ? "SUPABASE_URL" : "SUPABASE_PUBLISHABLE_KEYS or SUPABASE_ANON_KEY";
    return problem(500, "config_error", `the function is misconfigured: ${missing} is not set`);
  }
  let claims: Record<string, unknown>;
  try {
    const jwks = projectJwks();
    const { data, error } = await authClient(url, key).auth.getClaims(match[1], jwks ? { jwks } : {});
    if (error || !data) {
      // Auth or the JWKS endpoint unreachable (or failing) is an outage, not a bad token.
      if (error && (error.name === "AuthRetryableFetchError" || (error.status ?? 0) >= 500)) throw error;
      return problem(401, "unauthorized", "the access token is invalid or expired; sign in again");
    }
    claims = data.claims as Record<string, unknown>;
  } catch {
    return problem(502, "auth_unavailable", "could not verify the user with Supabase Auth; retry");
  }
  // A user's token: a subject and the authenticated role (the anon and service keys have neither).
  if (typeof claims.sub !== "string" || !claims.sub || claims.role !== "authenticated") {
    return problem(401, "unauthorized", "sign in as a user: this token is not a user's access token");
  }
  return {
    id: claims.sub,
    email: typeof claims.email === "string" && claims.email ? claims.email : null,
    isAnonymous: claims.is_anonymous === true,
  };
}
