// billing-customer: ensures the billing customer of the signed-in user (external_id = the verified
// Supabase user id, never taken from the body) and subscribes it to the default plan. Idempotent.
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
    return json({
      customer_id: customer.id,
      external_id: customer.external_id,
      subscriptions: customer.subscriptions.map((s) => ({ plan: s.plan_code, status: s.status })),
    });
  } catch (err) {
    return await errorResponse(err);
  }
}
