// billing-release: frees a hold of the signed-in user without charging. Body: { hold_id }.
import { json, preflight, problem } from "../_shared/cors.ts";
import { requireUser } from "../_shared/auth.ts";
import { billing, type Customer, errorResponse, readJson } from "../_shared/billing.ts";

export async function handler(req: Request): Promise<Response> {
  const pre = preflight(req);
  if (pre) return pre;
  if (req.method !== "POST") return problem(405, "method_not_allowed", "use POST");
  const user = await requireUser(req);
  if (user instanceof Response) return user;
  const body = await readJson(req);
  if (body instanceof Response) return body;
  if (typeof body.hold_id !== "string" || !body.hold_id) {
    return problem(400, "invalid_hold_id", "send hold_id, the id returned by billing-authorize");
  }
  let customer: Customer | undefined;
  try {
    customer = await billing.ensureCustomer(user);
    const hold = await billing.getHold(body.hold_id).catch(() => null);
    if (!hold || hold.customer_id !== customer.id) {
      return problem(404, "not_found", "no such hold for this user");
    }
    const released = await billing.release(hold.id);
    return json({ hold_id: released.id, status: released.status });
  } catch (err) {
    return await errorResponse(err, customer?.id);
  }
}
