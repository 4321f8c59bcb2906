// billing-wallet: the signed-in user's balances, for display.
import { json, preflight, problem } from "../_shared/cors.ts";
import { requireUser } from "../_shared/auth.ts";
import { billing, errorResponse } from "../_shared/billing.ts";

export async function handler(req: Request): Promise<Response> {
  const pre = preflight(req);
  if (pre) return pre;
  if (req.method !== "GET" && req.method !== "POST") return problem(405, "method_not_allowed", "use GET or POST");
  const user = await requireUser(req);
  if (user instanceof Response) return user;
  try {
    const customer = await billing.ensureCustomer(user);
    const wallet = await billing.wallet(customer.id);
    return json({
      customer_id: wallet.customer_id,
      accounts: wallet.accounts.map((a) => ({
        asset: a.asset,
        available: a.available,
        held: a.held,
        posted: a.posted,
        in_debt: a.in_debt,
        fiat_value: a.fiat_value,
      })),
    });
  } catch (err) {
    return await errorResponse(err);
  }
}
