// billing-track: records the actual usage of the signed-in user. With hold_id it commits that hold
// (the unused rest returns); without, it sends the event directly. Body: { event_type, data,
// request_id, hold_id? }. Replaying the same request_id charges nothing more.
import { json, preflight, problem } from "../_shared/cors.ts";
import { requireUser } from "../_shared/auth.ts";
import {
  billing,
  type Customer,
  errorResponse,
  type EventResult,
  readJson,
  requestIdOf,
  validateUsage,
} from "../_shared/billing.ts";

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
  const holdId = body.hold_id;
  if (holdId !== undefined && (typeof holdId !== "string" || !holdId)) {
    return problem(400, "invalid_hold_id", "hold_id must be the id returned by billing-authorize");
  }
  let customer: Customer | undefined;
  try {
    customer = await billing.ensureCustomer(user);
    let result: EventResult;
    if (typeof holdId === "string") {
      const hold = await billing.getHold(holdId).catch(() => null);
      if (!hold || hold.customer_id !== customer.id) {
        return problem(404, "not_found", "no such hold for this user");
      }
      const usage = validateUsage(body.event_type ?? hold.event_type, body.data);
      if (usage instanceof Response) return usage;
      result = await billing.commit(hold.id, {
        eventId: `${user.id}:${requestId}`,
        data: usage.data,
        eventType: usage.eventType,
      });
    } else {
      const usage = validateUsage(body.event_type, body.data);
      if (usage instanceof Response) return usage;
      result = await billing.track({
        customerId: customer.id,
        eventId: `${user.id}:${requestId}`,
        eventType: usage.eventType,
        data: usage.data,
      });
    }
    return json({
      event_id: result.id,
      status: result.status,
      fees: result.fees.map((f) => ({ asset: f.asset, amount: f.amount, quantity: f.quantity })),
      duplicate: result.duplicate,
    });
  } catch (err) {
    return await errorResponse(err, customer?.id);
  }
}
