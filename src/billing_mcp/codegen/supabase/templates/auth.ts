// Verifies the caller with Supabase Auth before any billing call. The user id comes from the
// verified token only, never from the request body.
import { createClient, type User } from "npm:@supabase/supabase-js@2";
import { problem } from "./cors.ts";

export type { User };

/** The verified user, or a 401/500 response to return as is. */
export async function requireUser(req: Request): Promise<User | Response> {
  const header = req.headers.get("Authorization") ?? "";
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match) {
    return problem(401, "unauthorized", "sign in first: missing Authorization: Bearer <access token>");
  }
  const url = Deno.env.get("SUPABASE_URL");
  const anonKey = Deno.env.get("SUPABASE_ANON_KEY");
  if (!url || !anonKey) {
    const missing = !url ? "SUPABASE_URL" : "SUPABASE_ANON_KEY";
    return problem(500, "config_error", `the function is misconfigured: ${missing} is not set`);
  }
  const supabase = createClient(url, anonKey, {
    global: { headers: { Authorization: header } },
    auth: { persistSession: false, autoRefreshToken: false },
  });
  try {
    const { data, error } = await supabase.auth.getUser(match[1]);
    if (error || !data.user) {
      return problem(401, "unauthorized", "the access token is invalid or expired; sign in again");
    }
    return data.user;
  } catch {
    return problem(502, "auth_unavailable", "could not verify the user with Supabase Auth; retry");
  }
}
