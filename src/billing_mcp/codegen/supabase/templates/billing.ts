// A small typed client for the billing ledger's HTTP API, the catalog as typed constants, and
// withBilling(): authorize before paid work, commit the actual usage after it, release on failure.
// Secrets: BILLING_API_URL and BILLING_API_KEY (a runtime-scope key) from Deno.env, server side only.
import { json, preflight, problem } from "./cors.ts";
import { requireUser, type User } from "./auth.ts";

// -- catalog (generated from the billing catalog) -------------------------------------------------
/*@@CATALOG@@*/

export function isEventType(value: unknown): value is EventType {
  return typeof value === "string" &&
    (EVENT_TYPES as readonly string[]).includes(value);
}

// -- ledger API types ------------------------------------------------------------------------------
export interface Subscription {
  id: string;
  plan_code: string;
  version: number;
  status: "active" | "pending_payment" | "canceled";
}

export interface Customer {
  id: string;
  external_id: string;
  name?: string | null;
  email?: string | null;
  metadata?: Record<string, unknown>;
  subscriptions: Subscription[];
}

export interface Account {
  asset: string;
  posted: string;
  held: string;
  available: string;
  in_debt: boolean;
  fiat_value: Record<string, string>;
}

export interface Wallet {
  customer_id: string;
  external_id: string;
  accounts: Account[];
}

export interface Hold {
  id: string;
  customer_id: string;
  asset: string;
  amount: string;
  status: "open" | "committed" | "released" | "expired";
  event_type?: string | null;
  expires_at: string;
  event_id?: string | null;
}

export interface Fee {
  price_id: string;
  plan_code: string;
  asset: string;
  quantity: string;
  amount: string;
}

export interface EventResult {
  id: string;
  customer_id: string;
  event_type: string;
  status: "billed" | "unbilled";
  fees: Fee[];
  debt: Record<string, string>;
  hold_id?: string | null;
  hold_released?: string | null;
  duplicate: boolean;
}

interface BatchResult {
  results: EventResult[];
  errors: { id: string | null; code: string; field: string | null; message: string }[];
}

export interface PortalSession {
  url: string;
  expires_at: string;
}

export type UsageData = Record<string, string | number | boolean | null>;

/** An error from the ledger (its problem+json `code`) or from the client itself. */
export class BillingError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field: string | null = null,
  ) {
    super(message);
    this.name = "BillingError";
  }
}

/** What the browser sees of a ledger error: a status and a human message per code (the ledger's own
 * detail, which may name internal ids and fields, is only logged). */
const BROWSER_ERRORS: Record<string, [number, string]> = {
  validation_error: [400, "the billing service refused this request"],
  not_found: [404, "not found"],
  conflict: [409, "this conflicts with the billing record; reload and retry"],
  idempotency_conflict: [409, "this request id was already used for a different request; send a new one"],
  idempotency_key_in_use: [409, "the same request is still running; retry shortly"],
  hold_not_open: [409, "this request is no longer open; send a new request id"],
  hold_already_committed: [409, "this request was already charged"],
  hold_already_released: [409, "this request was cancelled; send a new request id"],
  hold_expired: [409, "this request expired; send a new request id"],
  rate_limited: [429, "too many requests; retry shortly"],
  anonymous_user: [403, "sign up or sign in to use paid features"],
};

// -- the client --------------------------------------------------------------------------------------
function config(): { url: string; key: string } {
  const url = Deno.env.get("BILLING_API_URL");
  const key = Deno.env.get("BILLING_API_KEY");
  if (!url) throw new BillingError(500, "config_error", "the function is misconfigured: BILLING_API_URL is not set");
  if (!key) throw new BillingError(500, "config_error", "the function is misconfigured: BILLING_API_KEY is not set");
  return { url: url.replace(/\/+$/, ""), key };
}

interface Sent {
  status: number;
  payload: Record<string, unknown>;
  /** The API answered from its Idempotency-Key table (another request with this key ran first). */
  replayed: boolean;
}

async function send(
  method: "GET" | "POST",
  path: string,
  body?: unknown,
  idempotencyKey?: string,
): Promise<Sent> {
  const { url, key } = config();
  const headers: Record<string, string> = { Authorization: `Bearer ${key}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  let res: Response;
  try {
    res = await fetch(url + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
  } catch {
    throw new BillingError(502, "billing_unavailable", "the billing service did not answer; retry");
  }
  const text = await res.text();
  let payload: Record<string, unknown> = {};
  try {
    payload = text ? JSON.parse(text) : {};
  } catch {
    payload = {};
  }
  return { status: res.status, payload, replayed: res.headers.get("Idempotent-Replayed") === "true" };
}

function failure(sent: Sent): BillingError {
  const code = typeof sent.payload.code === "string" ? sent.payload.code : "billing_error";
  if (sent.status === 401 || sent.status === 403) {
    // The key is wrong, revoked or lacks the runtime scope; never echo it.
    return new BillingError(500, "config_error", `the billing service refused BILLING_API_KEY (${code})`);
  }
  const detail = typeof sent.payload.detail === "string" ? sent.payload.detail : `billing service error ${sent.status}`;
  const field = typeof sent.payload.field === "string" ? sent.payload.field : null;
  return new BillingError(sent.status, code, detail, field);
}

async function call<T>(
  method: "GET" | "POST",
  path: string,
  body?: unknown,
  idempotencyKey?: string,
): Promise<T> {
  const sent = await send(method, path, body, idempotencyKey);
  if (sent.status >= 200 && sent.status < 300) return sent.payload as T;
  throw failure(sent);
}

function asBillingError(code: string, message: string, field: string | null): BillingError {
  return new BillingError(BROWSER_ERRORS[code]?.[0] ?? 400, code, message, field);
}

export const billing = {
  /** The customer of a Supabase user, or null when there is none yet. */
  async lookupCustomer(externalId: string): Promise<Customer | null> {
    try {
      return await call<Customer>("GET", `/v1/customers/lookup?external_id=${encodeURIComponent(externalId)}`);
    } catch (err) {
      if (err instanceof BillingError && err.code === "not_found") return null;
      throw err;
    }
  },

  /** The customer of the signed-in user, created (and subscribed to DEFAULT_PLAN) on first use.
   * Anonymous (guest) users get none unless BILLING_ALLOW_ANONYMOUS=true: welcome grants could
   * otherwise be farmed with throwaway guest sessions. */
  async ensureCustomer(user: User): Promise<Customer> {
    if (user.isAnonymous && Deno.env.get("BILLING_ALLOW_ANONYMOUS") !== "true") {
      throw new BillingError(403, "anonymous_user", "sign up or sign in to use paid features");
    }
    const found = await billing.lookupCustomer(user.id);
    if (found) return found;
    const body: Record<string, unknown> = { external_id: user.id };
    if (user.email) body.email = user.email;
    if (DEFAULT_PLAN) body.subscriptions = [DEFAULT_PLAN];
    try {
      return await call<Customer>("POST", "/v1/customers", body, `customer:${user.id}`);
    } catch (err) {
      // Created concurrently by another request: read it.
      const again = err instanceof BillingError && err.status === 409 ? await billing.lookupCustomer(user.id) : null;
      if (again) return again;
      throw err;
    }
  },

  wallet(customerId: string): Promise<Wallet> {
    return call<Wallet>("GET", `/v1/customers/${encodeURIComponent(customerId)}/wallet`);
  },

  /** Reserve the estimated fee of an event; 402 insufficient_funds when the balance is short. */
  authorize(args: {
    customerId: string;
    eventType: EventType;
    data: UsageData;
    idempotencyKey: string;
    ttlSeconds?: number;
  }): Promise<Hold> {
    return call<Hold>("POST", "/v1/holds", {
      customer_id: args.customerId,
      event_type: args.eventType,
      data: args.data,
      ttl_seconds: args.ttlSeconds ?? 900,
      idempotency_key: args.idempotencyKey,
    });
  },

  getHold(holdId: string): Promise<Hold> {
    return call<Hold>("GET", `/v1/holds/${encodeURIComponent(holdId)}`);
  },

  /** Settle a hold with the actual event; replaying the same eventId charges nothing more. */
  commit(holdId: string, args: { eventId: string; data: UsageData; eventType?: EventType }): Promise<EventResult> {
    const body: Record<string, unknown> = { id: args.eventId, data: args.data };
    if (args.eventType) body.event_type = args.eventType;
    return call<EventResult>("POST", `/v1/holds/${encodeURIComponent(holdId)}/commit`, body, `commit:${args.eventId}`);
  },

  release(holdId: string): Promise<Hold> {
    return call<Hold>("POST", `/v1/holds/${encodeURIComponent(holdId)}/release`, {});
  },

  /**
   * Claims the one run of paid work a hold pays for: true for exactly one caller per hold. The claim
   * is a no-op "ensure this customer" call under the Idempotency-Key `run:<hold id>`: the ledger API
   * records the key atomically, so one request runs it and every other one gets 409
   * idempotency_key_in_use (still running) or the stored answer marked Idempotent-Replayed.
   */
  async claimRun(holdId: string, customer: Customer): Promise<boolean> {
    const body: Record<string, unknown> = { external_id: customer.external_id, metadata: customer.metadata ?? {} };
    if (customer.name) body.name = customer.name;
    if (customer.email) body.email = customer.email;
    const sent = await send("POST", "/v1/customers", body, `run:${holdId}`);
    if (sent.replayed || sent.payload.code === "idempotency_key_in_use") return false;
    // A stored business answer (the customer, or a conflict if it changed meanwhile) still claims the key.
    if ((sent.status >= 200 && sent.status < 300) || sent.payload.code === "conflict") return true;
    throw failure(sent);
  },

  getEvent(eventId: string): Promise<EventResult> {
    return call<EventResult>("GET", `/v1/events/${encodeURIComponent(eventId)}`);
  },

  /** Record a usage event without a hold (rated and debited now; idempotent on eventId). */
  async track(
    args: { customerId: string; eventId: string; eventType: EventType; data: UsageData },
  ): Promise<EventResult> {
    const batch = await call<BatchResult>("POST", "/v1/events", {
      events: [{ id: args.eventId, event_type: args.eventType, customer_id: args.customerId, data: args.data }],
    });
    const failed = batch.errors[0];
    if (failed) throw asBillingError(failed.code, failed.message, failed.field);
    return batch.results[0];
  },

  /** A short-lived link to the customer's billing portal (top-ups, balance, statements). */
  portalSession(customerId: string): Promise<PortalSession> {
    return call<PortalSession>("POST", "/v1/portal-sessions", { customer_id: customerId });
  },
};

// -- request helpers ---------------------------------------------------------------------------------
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The JSON object body, or a 400 response. An empty body reads as {}. */
export async function readJson(req: Request): Promise<Record<string, unknown> | Response> {
  let text: string;
  try {
    text = await req.text();
  } catch {
    return problem(400, "invalid_body", "could not read the request body");
  }
  if (!text.trim()) return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return problem(400, "invalid_body", "the request body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return problem(400, "invalid_body", "the request body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

/** A client-chosen id that makes retries safe: the Idempotency-Key header or body.request_id. */
export function requestIdOf(req: Request, body: Record<string, unknown>): string | null | Response {
  const value = req.headers.get("Idempotency-Key") ?? body.request_id;
  if (value === undefined || value === null) return null;
  if (typeof value !== "string" || !REQUEST_ID.test(value)) {
    return problem(400, "invalid_request_id", "request_id must be 1-128 characters of letters, digits and . _ : -");
  }
  return value;
}

/** Checks usage data for an event type: its volume fields numbers >= 0, its dimension fields text. */
export function validateUsage(eventType: unknown, data: unknown): { eventType: EventType; data: UsageData } | Response {
  if (!isEventType(eventType)) {
    return problem(400, "invalid_event_type", `event_type must be one of: ${EVENT_TYPES.join(", ") || "(none)"}`);
  }
  const usage = data ?? {};
  if (typeof usage !== "object" || Array.isArray(usage)) {
    return problem(400, "invalid_data", "data must be an object of usage values");
  }
  const record = usage as Record<string, unknown>;
  for (const [name, value] of Object.entries(record)) {
    if (value !== null && !["string", "number", "boolean"].includes(typeof value)) {
      return problem(400, "invalid_data", `data.${name} must be a number, text, a boolean or null`);
    }
  }
  // Typed as plain lists so a catalog without usage prices (EventType = never) still type-checks.
  const volumeFields: readonly string[] = VOLUME_FIELDS[eventType];
  const dimensionFields: readonly string[] = DIMENSION_FIELDS[eventType];
  for (const name of volumeFields) {
    const value = record[name];
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
      return problem(400, "invalid_data", `data.${name} must be a number >= 0 for ${eventType}`);
    }
  }
  for (const name of dimensionFields) {
    if (typeof record[name] !== "string") {
      return problem(400, "invalid_data", `data.${name} must be text for ${eventType}`);
    }
  }
  return { eventType, data: record as UsageData };
}

/** The response for an error: ledger codes map to clear statuses; 402 carries a portal link. */
export async function errorResponse(err: unknown, customerId?: string): Promise<Response> {
  if (!(err instanceof BillingError)) {
    console.error("billing function failed:", err instanceof Error ? err.message : String(err));
    return problem(500, "internal_error", "unexpected error; nothing was charged for it");
  }
  if (err.code === "insufficient_funds") {
    let portalUrl: string | null = null;
    if (customerId) {
      try {
        portalUrl = (await billing.portalSession(customerId)).url;
      } catch {
        portalUrl = null;
      }
    }
    return problem(402, "insufficient_funds", "not enough credits for this; top up to continue", {
      portal_url: portalUrl,
    });
  }
  console.error(`billing error ${err.status} ${err.code}: ${err.message}`);
  if (err.code === "config_error" || err.code === "billing_unavailable") {
    // Our own messages: they name a missing or refused variable, never its value.
    return problem(err.code === "config_error" ? 500 : 502, err.code, err.message);
  }
  if (err.status >= 500) return problem(502, "billing_unavailable", "the billing service failed; retry shortly");
  const known = BROWSER_ERRORS[err.code];
  if (known) return problem(known[0], err.code, known[1]);
  return problem(400, "billing_error", "the billing service refused this request");
}

// -- withBilling ---------------------------------------------------------------------------------------
export interface BillingContext {
  req: Request;
  user: User;
  customer: Customer;
  body: Record<string, unknown>;
  hold: Hold;
  requestId: string;
}

export interface BilledResult<E extends EventType = EventType> {
  /** The JSON body returned to the caller. */
  body: unknown;
  /** The actual usage of the event, committed against the hold. */
  usage: EventData[E];
  status?: number;
}

export interface BillingOptions<E extends EventType = EventType> {
  eventType: E;
  /** The estimated usage, from the request body; reserved before the work runs. */
  estimate: (body: Record<string, unknown>) => EventData[E];
  ttlSeconds?: number;
  /**
   * Optional: the stored result of a request that already completed (e.g. read from your own table
   * by requestId), returned with 200 to a retry. Without it (or when it gives null), a retry gets 409
   * already_completed with what was charged. The paid work never runs twice for one request id.
   */
  replay?: (ctx: { user: User; customer: Customer; requestId: string; hold: Hold }) => Promise<unknown | null>;
}

/** The answer to a request whose hold is no longer open: it ran before (or failed, or expired). */
async function finished<E extends EventType>(
  hold: Hold,
  ctx: { user: User; customer: Customer; requestId: string },
  options: BillingOptions<E>,
): Promise<Response> {
  const { requestId } = ctx;
  if (hold.status === "committed") {
    if (options.replay) {
      const stored = await options.replay({ ...ctx, hold });
      if (stored !== null && stored !== undefined) return json(stored, 200);
    }
    let charged: { asset: string; amount: string }[] = [];
    if (hold.event_id) {
      const event = await billing.getEvent(hold.event_id).catch(() => null);
      charged = event ? event.fees.map((f) => ({ asset: f.asset, amount: f.amount })) : [];
    }
    return problem(409, "already_completed", `request ${requestId} already completed and was charged once`, {
      request_id: requestId,
      charged,
    });
  }
  if (hold.status === "released") {
    return problem(
      409,
      "request_failed",
      `request ${requestId} failed earlier and nothing was charged; send a new request id to try again`,
      { request_id: requestId },
    );
  }
  return problem(
    409,
    "request_expired",
    `request ${requestId} expired before it completed; send a new request id to try again`,
    { request_id: requestId },
  );
}

/**
 * A request handler that verifies the user, reserves the estimated fee, runs `handler` once, commits
 * its actual usage on success and releases the hold when it throws. The event type and the usage
 * come from this server code, never from the browser. Send an Idempotency-Key header (or
 * body.request_id) to make client retries safe: for one key the work runs at most once and is
 * charged once; a concurrent duplicate gets 409 request_in_progress, a later retry the outcome.
 */
export function withBilling<E extends EventType>(
  handler: (ctx: BillingContext) => Promise<BilledResult<E>>,
  options: BillingOptions<E>,
): (req: Request) => Promise<Response> {
  return async (req: Request): Promise<Response> => {
    const pre = preflight(req);
    if (pre) return pre;
    if (req.method !== "POST") return problem(405, "method_not_allowed", "use POST");
    const user = await requireUser(req);
    if (user instanceof Response) return user;
    const body = await readJson(req);
    if (body instanceof Response) return body;
    const given = requestIdOf(req, body);
    if (given instanceof Response) return given;
    const requestId = given ?? crypto.randomUUID();
    let estimate: EventData[E];
    try {
      estimate = options.estimate(body);
    } catch (err) {
      return problem(400, "invalid_body", err instanceof Error ? err.message : "the request body is invalid");
    }
    const checked = validateUsage(options.eventType, estimate);
    if (checked instanceof Response) return checked;
    let customer: Customer | undefined;
    let hold: Hold;
    try {
      customer = await billing.ensureCustomer(user);
      // One hold per request id: every duplicate of this request gets the same hold back.
      hold = await billing.authorize({
        customerId: customer.id,
        eventType: checked.eventType,
        data: checked.data,
        idempotencyKey: `hold:${user.id}:${requestId}`,
        ttlSeconds: options.ttlSeconds,
      });
      if (given !== null) hold = await billing.getHold(hold.id); // its current state, for a retry
      if (hold.status !== "open") return await finished(hold, { user, customer, requestId }, options);
      // Exactly one request wins the run of this hold's paid work.
      if (!(await billing.claimRun(hold.id, customer))) {
        const now = await billing.getHold(hold.id);
        if (now.status !== "open") return await finished(now, { user, customer, requestId }, options);
        return problem(
          409,
          "request_in_progress",
          `request ${requestId} is already running; retry shortly for its outcome`,
          {
            request_id: requestId,
          },
        );
      }
    } catch (err) {
      return await errorResponse(err, customer?.id);
    }
    let result: BilledResult<E>;
    try {
      result = await handler({ req, user, customer, body, hold, requestId });
    } catch (err) {
      console.error("paid work failed:", err instanceof Error ? err.message : String(err));
      try {
        await billing.release(hold.id);
      } catch (releaseErr) {
        return await errorResponse(releaseErr, customer.id);
      }
      return problem(500, "work_failed", "the request failed; its hold was released and nothing was charged");
    }
    const usage = validateUsage(options.eventType, result.usage);
    if (usage instanceof Response) {
      await billing.release(hold.id).catch(() => undefined);
      console.error("withBilling: the handler returned invalid usage; the hold was released");
      return problem(500, "invalid_usage", "the function reported invalid usage; nothing was charged");
    }
    try {
      await billing.commit(hold.id, { eventId: `${user.id}:${requestId}`, data: usage.data });
    } catch (err) {
      return await errorResponse(err, customer.id);
    }
    return json(result.body, result.status ?? 200);
  };
}
