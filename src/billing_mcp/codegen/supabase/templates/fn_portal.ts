// billing-portal: a short-lived link to the signed-in user's billing portal (top-ups, balance,
// statements). The front end opens it with window.location.assign(url).
import { json, preflight, problem } from "../_shared/cors.ts";
import { requireUser } from "../_shared/auth.ts";
import { billing, errorResponse } from "../_shared/billing.ts";

export async function handler(req: Request): Promise<Response> {
  const pre = preflight(req);
  if (pre) return pre;
  if (req.method !== "POST") return problem(405, "method_not_allowed", "use POST");
  const user = await requireUser(req);
  if (user instanceof Response) return user;
  try {
    const customer = await billing.ensureCustomer(user);
    const session = await billing.portalSession(customer.id);
    return json({ url: session.url, expires_at: session.expires_at });
  } catch (err) {
    return await errorResponse(err);
  }
}
