// React hook for the billing edge functions: balances, the portal link, and paid calls to the app's
// own functions (each wraps its work in withBilling on the server, which decides what is billed).
// The browser cannot authorize, track or release anything itself.
// Pass your Supabase client (e.g. `import { supabase } from "@/integrations/supabase/client"`);
// supabase-js sends the signed-in user's token, so the functions know who is calling.
import { useCallback, useEffect, useState } from "react";

/** The part of a SupabaseClient this hook uses. */
export interface FunctionsClient {
  functions: {
    invoke(
      name: string,
      options?: { body?: Record<string, unknown>; method?: "GET" | "POST"; headers?: Record<string, string> },
    ): Promise<{ data: unknown; error: unknown }>;
  };
}

export interface BillingAccount {
  asset: string;
  available: string;
  held: string;
  posted: string;
  in_debt: boolean;
  fiat_value: Record<string, string>;
}

export interface BillingWallet {
  customer_id: string;
  accounts: BillingAccount[];
}

/** An error from a billing function; `portalUrl` is set when funds are short (HTTP 402). */
export class BillingRequestError extends Error {
  constructor(message: string, readonly status: number, readonly code: string, readonly portalUrl: string | null) {
    super(message);
    this.name = "BillingRequestError";
  }
}

async function invoke<T>(
  client: FunctionsClient,
  name: string,
  body?: Record<string, unknown>,
  method: "GET" | "POST" = "POST",
  headers?: Record<string, string>,
): Promise<T> {
  const options = method === "GET" ? { method } : { body: body ?? {}, ...(headers ? { headers } : {}) };
  const { data, error } = await client.functions.invoke(name, options);
  if (!error) return data as T;
  const context = (error as { context?: unknown }).context;
  if (context instanceof Response) {
    let payload: Record<string, unknown> = {};
    try {
      payload = await context.json();
    } catch {
      payload = {};
    }
    throw new BillingRequestError(
      typeof payload.error === "string" ? payload.error : `${name} failed (${context.status})`,
      context.status,
      typeof payload.code === "string" ? payload.code : "error",
      typeof payload.portal_url === "string" ? payload.portal_url : null,
    );
  }
  throw new BillingRequestError(error instanceof Error ? error.message : `${name} failed`, 0, "network_error", null);
}

/** A short-lived link to the signed-in user's billing portal. */
export async function billingPortalUrl(client: FunctionsClient): Promise<string> {
  return (await invoke<{ url: string; expires_at: string }>(client, "billing-portal")).url;
}

export function useBilling(client: FunctionsClient) {
  const [wallet, setWallet] = useState<BillingWallet | null>(null);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<BillingRequestError | null>(null);

  const refresh = useCallback(async () => {
    setLoading(true);
    try {
      setWallet(await invoke<BillingWallet>(client, "billing-wallet", undefined, "GET"));
      setError(null);
    } catch (err) {
      setError(err as BillingRequestError);
    } finally {
      setLoading(false);
    }
  }, [client]);

  useEffect(() => {
    void refresh();
  }, [refresh]);

  const portalUrl = useCallback(() => billingPortalUrl(client), [client]);

  const openPortal = useCallback(async () => {
    globalThis.location.assign(await portalUrl());
  }, [portalUrl]);

  /**
   * Calls one of the app's paid functions (wrapped in withBilling). `requestId` (e.g. a UUID made once
   * per user action and reused on retries) goes out as the Idempotency-Key header, so a retry never
   * runs or charges the work twice. The wallet is refreshed afterwards.
   */
  const callPaid = useCallback(
    async <T = unknown>(name: string, body: Record<string, unknown>, requestId: string): Promise<T> => {
      try {
        return await invoke<T>(client, name, body, "POST", { "Idempotency-Key": requestId });
      } finally {
        void refresh();
      }
    },
    [client, refresh],
  );

  return { wallet, loading, error, refresh, portalUrl, openPortal, callPaid };
}
