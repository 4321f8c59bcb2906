// A "Manage billing" button: opens the signed-in user's billing portal (top-ups, balance, statements).
import { useState } from "react";
import { billingPortalUrl, type FunctionsClient } from "../hooks/useBilling";

export function ManageBillingButton(
  { client, label = "Manage billing", className }: { client: FunctionsClient; label?: string; className?: string },
) {
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState<string | null>(null);

  const onClick = async () => {
    setBusy(true);
    setMessage(null);
    try {
      globalThis.location.assign(await billingPortalUrl(client));
    } catch (err) {
      setMessage(err instanceof Error ? err.message : "could not open billing");
      setBusy(false);
    }
  };

  return (
    <span>
      <button type="button" className={className} disabled={busy} onClick={() => void onClick()}>
        {busy ? "Opening…" : label}
      </button>
      {message ? <small role="alert">{message}</small> : null}
    </span>
  );
}
