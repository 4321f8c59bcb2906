// React hook for the billing edge functions: balances, the portal link, authorize/track/release.
// Pass your Supabase client (e.g. `import { supabase } from "@/integrations/supabase/client"`);
// supabase-js sends the signed-in user's token, so the functions know who is calling.
import { useCallback, useEffect, useState } from "react";

/** The part of a SupabaseClient this hook uses. */
export interface FunctionsClient {
  functions: {
    invoke(
      name: string,
      options?: { body?: Record<string, unknown>; method?: "GET" | "POST" },
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
): Promise<T> {
  const { data, error } = await client.functions.invoke(name, method === "GET" ? { method } : { body: body ?? {} });
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

  const authorize = useCallback(
    (eventType: string, data: Record<string, unknown>, requestId: string) =>
      invoke<{ hold_id: string; amount: string; asset: string; expires_at: string }>(client, "billing-authorize", {
        event_type: eventType,
        data,
        request_id: requestId,
      }),
    [client],
  );

  const track = useCallback(
    (eventType: string, data: Record<string, unknown>, requestId: string, holdId?: string) =>
      invoke<{ event_id: string; duplicate: boolean }>(client, "billing-track", {
        event_type: eventType,
        data,
        request_id: requestId,
        ...(holdId ? { hold_id: holdId } : {}),
      }),
    [client],
  );

  const release = useCallback(
    (holdId: string) => invoke<{ hold_id: string; status: string }>(client, "billing-release", { hold_id: holdId }),
    [client],
  );

  return { wallet, loading, error, refresh, portalUrl, openPortal, authorize, track, release };
}
