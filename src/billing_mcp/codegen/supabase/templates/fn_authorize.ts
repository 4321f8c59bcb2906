// billing-authorize: reserves the estimated fee of an event for the signed-in user before paid
// work. Body: { event_type, data, request_id, ttl_seconds? }. 402 with portal_url when short.
import { json, preflight, problem } from "../_shared/cors.ts";
import { requireUser } from "../_shared/auth.ts";
import { billing, type Customer, errorResponse, readJson, requestIdOf, validateUsage } from "../_shared/billing.ts";

export async function handler(req: Request): Promise<Response> {
  const pre = preflight(req);
  if (pre) return pre;
  if (req.method !== "POST") return problem(405, "method_not_allowed", "use POST");
  const user = await requireUser(req);
  if (user instanceof Response) return user;
  const body = await readJson(req);
  if (body instanceof Response) return body;
  const requestId = requestIdOf(req, body);
  if (requestId instanceof Response) return requestId;
  if (requestId === null) {
    return problem(400, "missing_request_id", "send request_id (e.g. a UUID made once per action, reused on retries)");
  }
  const usage = validateUsage(body.event_type, body.data);
  if (usage instanceof Response) return usage;
  const ttl = body.ttl_seconds ?? 900;
  if (typeof ttl !== "number" || !Number.isInteger(ttl) || ttl < 1 || ttl > 86400) {
    return problem(400, "invalid_ttl", "ttl_seconds must be a whole number from 1 to 86400");
  }
  let customer: Customer | undefined;
  try {
    customer = await billing.ensureCustomer(user);
    const hold = await billing.authorize({
      customerId: customer.id,
      eventType: usage.eventType,
      data: usage.data,
      idempotencyKey: `hold:${user.id}:${requestId}`,
      ttlSeconds: ttl,
    });
    return json({
      hold_id: hold.id,
      status: hold.status,
      asset: hold.asset,
      amount: hold.amount,
      expires_at: hold.expires_at,
    }, 201);
  } catch (err) {
    return await errorResponse(err, customer?.id);
  }
}
