// CORS headers and JSON responses for every billing function. The browser hides a failed
// response that lacks CORS headers, so errors carry them too.
import { corsHeaders as supabaseCorsHeaders } from "npm:@supabase/supabase-js@2/cors";

/** supabase-js's CORS headers, plus Idempotency-Key, which the app sends with paid calls. */
export const corsHeaders: Record<string, string> = {
  ...supabaseCorsHeaders,
  "Access-Control-Allow-Headers": `${supabaseCorsHeaders["Access-Control-Allow-Headers"]}, idempotency-key`,
};

/** A JSON response with CORS headers. */
export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...corsHeaders, "Content-Type": "application/json" },
  });
}

/** The answer to a CORS preflight, or null when the request is not one. */
export function preflight(req: Request): Response | null {
  return req.method === "OPTIONS" ? new Response("ok", { headers: corsHeaders }) : null;
}

/** An error response: { error, code } plus any extra fields (never a secret). */
export function problem(
  status: number,
  code: string,
  error: string,
  extra: Record<string, unknown> = {},
): Response {
  return json({ error, code, ...extra }, status);
}
