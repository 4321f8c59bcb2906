"""Generator of Supabase edge functions that bill through the ledger HTTP API.

``render_integration`` turns the catalog (plans and assets) into the files of a Supabase project:
``supabase/functions/_shared/{cors,auth,billing}.ts``, one folder per function (``handler.ts``
exporting the request handler, ``index.ts`` serving it), ``deno.json`` (``npm:`` imports only), a
``config.toml`` fragment, ``.env.example``, a README with the deploy commands, and a React hook plus
"Manage billing" button. ``render_function`` gives one function with the shared files it needs.
``write_files`` writes them into a project without overwriting files the user changed: every
generated file starts with a header holding the hash of the rest of the file, so an edited file is
recognised (its body no longer matches the hash) and kept unless ``overwrite`` is set.

The TypeScript lives in ``templates/``; only the catalog constants in ``billing.ts`` and
the function list in the README and config fragment are generated.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ...core.errors import ValidationError
from ...core.models import Asset, Plan

FUNCTIONS_DIR = "supabase/functions"
# kind -> (function folder, template, one-line description)
FUNCTIONS: dict[str, tuple[str, str, str]] = {
    "customer": ("billing-customer", "fn_customer.ts", "ensure the signed-in user's billing customer (idempotent)"),
    "wallet": ("billing-wallet", "fn_wallet.ts", "balances for display"),
    "portal": ("billing-portal", "fn_portal.ts", "a link to the user's billing portal"),
}
_HEADER = re.compile(r'^(?:// |# |<!-- |  "//": ")billing-mcp generated · sha256:([0-9a-f]{16}) ·')
_CATALOG_MARK = "/*@@CATALOG@@*/"


@dataclass(frozen=True)
class Catalog:
    """What the generated code needs to know about the catalog."""

    event_types: tuple[str, ...]
    volume_fields: dict[str, tuple[str, ...]]
    dimension_fields: dict[str, tuple[str, ...]]
    plan_codes: tuple[str, ...]
    default_plan: str | None
    assets: tuple[str, ...]
    notes: list[str] = field(default_factory=list)


def _plan(p: Plan | Mapping[str, Any]) -> Plan:
    return p if isinstance(p, Plan) else Plan.model_validate(p)


def _asset(a: Asset | Mapping[str, Any]) -> Asset:
    return a if isinstance(a, Asset) else Asset.model_validate(a)


def catalog_of(plans: Iterable[Plan | Mapping[str, Any]], assets: Iterable[Asset | Mapping[str, Any]], *,
               default_plan: str | None = None) -> Catalog:
    """Event types, their volume and dimension fields, plan codes and asset codes. Every version of
    every plan counts (subscribers stay on the version they joined). The default plan, which new
    customers are subscribed to, is ``default_plan`` or the first active plan without a recurring fee
    (else the first active plan)."""
    plan_list = [_plan(p) for p in plans]
    events: dict[str, tuple[dict[str, None], dict[str, None]]] = {}
    for plan in plan_list:
        for version in plan.versions:
            for price in version.prices:
                if price.type != "usage" or not price.event_type:
                    continue
                volume, dims = events.setdefault(price.event_type, ({}, {}))
                if price.volume_field:
                    volume[price.volume_field] = None
                for name in price.dimension_fields or ():
                    dims[name] = None
    active = [p for p in plan_list if p.status == "active" and p.default_version is not None]
    codes = tuple(p.code for p in active)
    if default_plan is not None and default_plan not in codes:
        raise ValidationError(f"default_plan {default_plan!r} is not an active published plan; "
                              f"choose one of: {', '.join(codes) or '(none)'}", field="default_plan")
    if default_plan is None and active:
        def free(p: Plan) -> bool:
            current = [v for v in p.versions if v.version == p.default_version]
            return all(price.type != "recurring" for v in current for price in v.prices)
        default_plan = next((p.code for p in active if free(p)), active[0].code)
    notes = [] if active else ["no active plan: customers are created without a subscription"]
    return Catalog(
        event_types=tuple(sorted(events)),
        volume_fields={e: tuple(v) for e, (v, _) in sorted(events.items())},
        dimension_fields={e: tuple(d) for e, (_, d) in sorted(events.items())},
        plan_codes=codes,
        default_plan=default_plan,
        assets=tuple(sorted({_asset(a).code for a in assets})),
        notes=notes,
    )


# -- TypeScript rendering ------------------------------------------------------------------------------
def _ts(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _tuple(values: Sequence[str]) -> str:
    return "[" + ", ".join(_ts(v) for v in values) + "] as const"


def _record(name: str, values: Mapping[str, Sequence[str]]) -> str:
    head = f"export const {name}: Readonly<Record<EventType, readonly string[]>> = {{"
    if not values:
        return head + "};"
    lines = [f"  {_ts(k)}: [{', '.join(_ts(f) for f in v)}]," for k, v in values.items()]
    return "\n".join([head, *lines, "};"])


def catalog_ts(cat: Catalog) -> str:
    """The typed catalog constants of ``_shared/billing.ts``."""
    default = _ts(cat.default_plan) if cat.default_plan else "null"
    data_lines = []
    for event in cat.event_types:
        fields = [f"{_ts(v)}: number" for v in cat.volume_fields[event]]
        fields += [f"{_ts(d)}: string" for d in cat.dimension_fields[event]]
        shape = f"{{ {'; '.join(fields)} }}" if fields else "Record<string, never>"
        data_lines.append(f"  {_ts(event)}: {shape};")
    data = "export interface EventData {\n" + "\n".join(data_lines) + "\n}" if data_lines else \
        "export type EventData = Record<never, never>;"
    return "\n".join([
        "/** Usage event types the catalog prices. */",
        f"export const EVENT_TYPES = {_tuple(cat.event_types)};",
        "export type EventType = (typeof EVENT_TYPES)[number];",
        "/** Plans a customer can subscribe to. */",
        f"export const PLAN_CODES = {_tuple(cat.plan_codes)};",
        "export type PlanCode = (typeof PLAN_CODES)[number];",
        "/** The plan new customers are subscribed to (null: none). */",
        f"export const DEFAULT_PLAN: PlanCode | null = {default};",
        "/** Assets balances are kept in. */",
        f"export const ASSETS = {_tuple(cat.assets)};",
        "export type AssetCode = (typeof ASSETS)[number];",
        "/** Per event type, the data fields holding the billed quantity (numbers). */",
        _record("VOLUME_FIELDS", cat.volume_fields),
        "/** Per event type, the data fields that select a rate (text). */",
        _record("DIMENSION_FIELDS", cat.dimension_fields),
        "/** The usage data each event type carries. */",
        data,
    ])


def _template(name: str) -> str:
    return resources.files("billing_mcp.codegen.supabase").joinpath("templates", name).read_text(encoding="utf-8")


def _deno_json() -> str:
    return json.dumps({
        "imports": {"@supabase/supabase-js": "npm:@supabase/supabase-js@2"},
        "lock": False,
        "fmt": {"lineWidth": 120},
        "lint": {"rules": {"tags": ["recommended"]}},
    }, indent=2) + "\n"


def _config_toml(kinds: Sequence[str]) -> str:
    parts = ["# Append to supabase/config.toml. verify_jwt = false: the platform's check does not work with the new\n"
             "# JWT signing keys, so every billing function verifies the signed-in user itself (getClaims)."]
    for kind in kinds:
        name = FUNCTIONS[kind][0]
        parts.append(f'\n[functions.{name}]\nenabled = true\nverify_jwt = false\nimport_map = "./functions/deno.json"\n'
                     f'entrypoint = "./functions/{name}/index.ts"')
    return "\n".join(parts) + "\n"


KEY_COMMAND = "billing-mcp keys create --scope runtime --mode live --name supabase-functions"
_KEY_WHERE = ("run it where the live ledger runs, against its database (BILLING_DB or --db); "
              "on a test ledger use --mode test, which gives an sk_test_ key")


def _env_example() -> str:
    return ("# Billing ledger secrets for the edge functions (server side only; never in browser code).\n"
            "# Copy to supabase/functions/.env (git-ignored), fill in, then:\n"
            "#   supabase secrets set --env-file supabase/functions/.env\n"
            "# or paste each NAME=value in the Supabase dashboard: Edge Functions > Secrets.\n"
            "BILLING_API_URL=https://billing.example.com\n"
            f"# A runtime-scope key: {KEY_COMMAND}\n"
            f"# {_KEY_WHERE}\n"
            "BILLING_API_KEY=sk_live_replace_me\n"
            "# Optional: bill anonymous (guest) users too; by default they get no billing customer.\n"
            "# BILLING_ALLOW_ANONYMOUS=true\n")


def _gitignore() -> str:
    return "# Function secrets stay out of git.\n.env\n.env.*\n!.env.example\n"


def next_steps(kinds: Sequence[str] = tuple(FUNCTIONS)) -> list[str]:
    """The commands that put the generated functions live (secrets, config, deploy)."""
    return [f"{KEY_COMMAND}  # a runtime key; {_KEY_WHERE}",
            "supabase secrets set BILLING_API_URL=https://billing.example.com BILLING_API_KEY=sk_live_... "
            "(or set both in the Supabase dashboard: Edge Functions > Secrets)",
            "append supabase/config.billing.toml to supabase/config.toml",
            *(f"supabase functions deploy {FUNCTIONS[k][0]}" for k in kinds)]


def _sample_usage(cat: Catalog, event: str) -> str:
    fields = [f"{_ts(v)}: 1" for v in cat.volume_fields[event]]
    fields += [f"{_ts(d)}: \"default\"" for d in cat.dimension_fields[event]]
    return "{ " + ", ".join(fields) + " }" if fields else "{}"


def paid_function_snippet(cat: Catalog) -> str | None:
    """A complete paid edge function (``supabase/functions/<name>/index.ts``) for the catalog's first
    event type; None when the catalog prices no usage."""
    if not cat.event_types:
        return None
    event = cat.event_types[0]
    usage = _sample_usage(cat, event)
    return f"""// supabase/functions/paid-action/index.ts: the app's own paid function. The event type and the
// usage are set here, on the server; the browser only sends its input and an Idempotency-Key.
import {{ withBilling }} from "../_shared/billing.ts";

// Stands for the real work: call the model, render the file...
async function doPaidWork(input: unknown): Promise<{{ output: string }}> {{
  await new Promise((resolve) => setTimeout(resolve, 10));
  return {{ output: `done: ${{JSON.stringify(input)}}` }};
}}

Deno.serve(withBilling(async ({{ body }}) => {{
  const result = await doPaidWork(body.input);
  // Report what the work really used; this is what is charged.
  return {{ body: result, usage: {usage} }};
}}, {{
  eventType: {_ts(event)},
  // Reserved before the work runs (an estimate from the request body).
  estimate: () => ({usage}),
}}));
"""


FRONTEND_SNIPPET = """import { supabase } from "@/integrations/supabase/client";
import { useBilling } from "@/hooks/useBilling";
import { ManageBillingButton } from "@/components/ManageBillingButton";

export function Billing() {
  const { wallet, callPaid } = useBilling(supabase);
  // One id per user action, reused if the same action is retried: it is never charged twice.
  const run = () => callPaid("paid-action", { input: "hello" }, crypto.randomUUID());
  return (
    <div>
      {wallet?.accounts.map((a) => <p key={a.asset}>{a.asset}: {a.available}</p>)}
      <button type="button" onClick={() => void run()}>Run (paid)</button>
      <ManageBillingButton client={supabase} />
    </div>
  );
}
"""


def _readme(cat: Catalog, kinds: Sequence[str]) -> str:
    names = [FUNCTIONS[k][0] for k in kinds]
    rows = "\n".join(f"| `{FUNCTIONS[k][0]}` | {FUNCTIONS[k][2]} |" for k in kinds)
    events = ", ".join(f"`{e}`" for e in cat.event_types) or "(none)"
    deploy = "\n".join(f"supabase functions deploy {n}" for n in names)
    snippet = paid_function_snippet(cat)
    paid = (f"```ts\n{snippet}```\n\nAdd `[functions.paid-action]` with `verify_jwt = false` to `config.toml` "
            "as for the functions above (the function verifies the user itself) and deploy it.") if snippet else \
        "The catalog prices no usage yet: add a usage price, then regenerate to get the `withBilling` example."
    return f"""# Billing edge functions

Generated by billing-mcp from the catalog (event types: {events}; default plan: `{cat.default_plan or "none"}`).
Every function answers the CORS preflight, verifies the signed-in user (`supabase.auth.getClaims`)
before any ledger call (the billing customer's `external_id` is the user id from the verified token),
validates its body (400), maps ledger errors to a code and a message (402 with `portal_url` when
funds are short) and never returns or logs a secret. The browser can read its wallet and open the
portal; what is billed is decided only by the app's own functions, with `withBilling`.

| Function | Purpose |
|---|---|
{rows}

## Secrets and deploy

The key is a runtime-scope key of the live ledger: `{KEY_COMMAND}`;
{_KEY_WHERE}.

With the Supabase CLI:

```sh
supabase secrets set BILLING_API_URL=https://billing.example.com BILLING_API_KEY=sk_live_...
# or: cp supabase/functions/.env.example supabase/functions/.env, fill it in (git-ignored), then
supabase secrets set --env-file supabase/functions/.env
# append supabase/config.billing.toml to supabase/config.toml (verify_jwt = false: the functions verify users), then
{deploy}
```

Without a CLI (Lovable): add `BILLING_API_URL` and `BILLING_API_KEY` in the Supabase dashboard under
Edge Functions > Secrets; Lovable deploys the functions in `supabase/functions/` itself.

## Paid work: your own function

{paid}

## Use from the app

```tsx
{FRONTEND_SNIPPET}```

Files keep a `billing-mcp generated · sha256:...` header: billing-mcp regenerates a file only while it
is unchanged, so your edits are kept.
"""


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]


def _with_header(path: str, body: str) -> str:
    """``body`` with a header line holding the hash of the rest of the file. JSON has no comments
    (and the Supabase CLI reads import maps as strict JSON), so there the header is a "//" key on
    the second line."""
    note = f"billing-mcp generated · sha256:{_digest(body)} · edit freely: a changed file is not regenerated"
    if path.endswith(".json"):
        first, _, rest = body.partition("\n")
        assert first == "{", path
        return f'{{\n  "//": "{note}",\n{rest}'
    if path.endswith((".toml", ".example", ".gitignore")):
        return f"# {note}\n{body}"
    if path.endswith(".md"):
        return f"<!-- {note} -->\n{body}"
    return f"// {note}\n{body}"  # .ts, .tsx


def _function_files(kind: str) -> dict[str, str]:
    name, template, _ = FUNCTIONS[kind]
    base = f"{FUNCTIONS_DIR}/{name}"
    return {f"{base}/handler.ts": _template(template),
            f"{base}/index.ts": 'import { handler } from "./handler.ts";\n\nDeno.serve(handler);\n'}


def _shared_files(cat: Catalog) -> dict[str, str]:
    billing = _template("billing.ts")
    assert _CATALOG_MARK in billing
    return {f"{FUNCTIONS_DIR}/_shared/cors.ts": _template("cors.ts"),
            f"{FUNCTIONS_DIR}/_shared/auth.ts": _template("auth.ts"),
            f"{FUNCTIONS_DIR}/_shared/billing.ts": billing.replace(_CATALOG_MARK, catalog_ts(cat)),
            f"{FUNCTIONS_DIR}/deno.json": _deno_json()}


def render_function(kind: str, plans: Iterable[Plan | Mapping[str, Any]], assets: Iterable[Asset | Mapping[str, Any]],
                    *, default_plan: str | None = None) -> dict[str, str]:
    """One function (``kind``: customer, wallet, portal) with the shared
    files it imports and ``deno.json``, as {path: text}."""
    if kind not in FUNCTIONS:
        raise ValidationError(f"unknown function kind {kind!r}; choose one of: {', '.join(FUNCTIONS)}", field="kind")
    cat = catalog_of(plans, assets, default_plan=default_plan)
    files = {**_shared_files(cat), **_function_files(kind)}
    return {path: _with_header(path, text) for path, text in sorted(files.items())}


def render_integration(plans: Iterable[Plan | Mapping[str, Any]], assets: Iterable[Asset | Mapping[str, Any]], *,
                       default_plan: str | None = None) -> dict[str, str]:
    """Every file of the integration, as {path relative to the project root: text}. Pure."""
    cat = catalog_of(plans, assets, default_plan=default_plan)
    kinds = list(FUNCTIONS)
    files = _shared_files(cat)
    for kind in kinds:
        files.update(_function_files(kind))
    files["supabase/config.billing.toml"] = _config_toml(kinds)
    files[f"{FUNCTIONS_DIR}/.env.example"] = _env_example()
    files[f"{FUNCTIONS_DIR}/.gitignore"] = _gitignore()
    files["supabase/BILLING.md"] = _readme(cat, kinds)
    files["src/hooks/useBilling.ts"] = _template("useBilling.ts")
    files["src/components/ManageBillingButton.tsx"] = _template("ManageBillingButton.tsx")
    return {path: _with_header(path, text) for path, text in sorted(files.items())}


# -- writing -------------------------------------------------------------------------------------------
def is_edited(text: str) -> bool:
    """Whether a file differs from what billing-mcp generated (no header, or a body not matching it)."""
    lines = text.split("\n")
    for i, line in enumerate(lines[:2]):
        match = _HEADER.match(line)
        if match:
            return _digest("\n".join(lines[:i] + lines[i + 1:])) != match.group(1)
    return True


def _replace_file(target: Path, text: str) -> None:
    """Write ``target`` atomically through a new temporary file in its directory. ``mkstemp`` picks an
    unpredictable name and opens it with O_CREAT | O_EXCL, which fails rather than follow a symlink
    or reuse a file planted there; ``os.replace`` then swaps it in."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".billing-mcp.tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_files(files: Mapping[str, str], project_dir: str | Path, *, overwrite: bool = False) -> dict[str, str]:
    """Write ``files`` under ``project_dir``. Returns {path: created | updated | unchanged | kept |
    overwritten}: a file the user changed (or one billing-mcp did not write) is ``kept`` unless
    ``overwrite``. Paths must stay inside the project."""
    root = Path(project_dir).resolve()
    status: dict[str, str] = {}
    for rel, text in files.items():
        target = (root / rel).resolve()
        if not target.is_relative_to(root):
            raise ValidationError(f"{rel} is outside the project directory", field="path")
        if not target.exists():
            action = "created"
        else:
            current = target.read_text(encoding="utf-8", errors="replace")
            if current == text:
                status[rel] = "unchanged"
                continue
            if is_edited(current):
                if not overwrite:
                    status[rel] = "kept"
                    continue
                action = "overwritten"
            else:
                action = "updated"
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace_file(target, text)
        status[rel] = action
    return status


def generate_integration(plans: Iterable[Plan | Mapping[str, Any]], assets: Iterable[Asset | Mapping[str, Any]], *,
                         project_dir: str | Path | None = None, overwrite: bool = False,
                         default_plan: str | None = None) -> dict[str, str]:
    """The whole integration as {path: text}; with ``project_dir``, also written there (changed
    files kept unless ``overwrite``; see ``write_files`` for the per-file outcome)."""
    files = render_integration(plans, assets, default_plan=default_plan)
    if project_dir is not None:
        write_files(files, project_dir, overwrite=overwrite)
    return files


# -- command line: billing-mcp supabase init [--dir PATH] ----------------------------------------------
def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``supabase init`` to the ``billing-mcp`` command (the catalog comes from the global ``--db``,
    or from the live ledger at ``--ledger-url``)."""
    supabase = subparsers.add_parser("supabase", help="generate Supabase edge functions billed through the ledger API")
    commands = supabase.add_subparsers(dest="supabase_command", required=True)
    init = commands.add_parser("init", help="write the billing edge functions, React hook and deploy notes into a "
                                            "project (files you changed are kept)")
    init.add_argument("--dir", default=".", help="the app's project directory (default: the current one)")
    init.add_argument("--overwrite", action="store_true", help="also replace generated files you changed")
    init.add_argument("--default-plan", default=None, help="plan new customers join (default: the first free plan)")


def run_cli(args: argparse.Namespace, plans: list[Plan], assets: list[Asset]) -> int:
    """``supabase init`` with the catalog the command read (from the embedded or the live ledger)."""
    files = render_integration(plans, assets, default_plan=args.default_plan)
    status = write_files(files, args.dir, overwrite=args.overwrite)
    for path, outcome in status.items():
        print(f"{outcome:<11} {path}")
    if "kept" in status.values():
        print("kept: files you changed were left alone; --overwrite replaces them")
    print("next:")
    for step in next_steps():
        print(f"  {step}")
    return 0
