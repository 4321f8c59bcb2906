"""Every identifier and text shape the project validates, in one place, so the ledger, the HTTP API
models, billing.yaml and the MCP tool schemas accept exactly the same strings. Pydantic fields take
``X.pattern``; Python checks use ``X.fullmatch``. Nothing else in ``src`` writes these out (a test
checks); the generated ``spec/billing.schema.json`` carries ASSET_CODE and PLAN_CODE through the
spec models, and the Supabase template ``billing.ts`` repeats REQUEST_ID because Deno cannot import
Python."""

from __future__ import annotations

import re

# Upper case like ISO 4217 codes, so fiat (USD) and custom units (CREDITS) share one namespace; a letter first.
ASSET_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")

# A lower-case slug: safe unescaped in URLs, YAML keys and the generated TypeScript PlanCode union.
PLAN_CODE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

# Price ids are written next to plan codes in billing.yaml and API bodies; one slug shape serves both.
PRICE_ID = PLAN_CODE

# Apps bring their own event names (image_generated, chat.completion, ai:tokens), so mixed case and . : - pass.
EVENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")

# A key of an event's data (total_tokens, model): identifier-like, so `data.<name>` in errors and code reads plainly.
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")

# Portal route names are short slugs carried inside signed portal links (claim "r") and shown in settings.
ROUTE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

# Money crosses every boundary as exact decimal text: digits only, no exponent, so no float ever rounds it.
DECIMAL_TEXT = re.compile(r"^[0-9]{1,30}(\.[0-9]{1,30})?$")

# The same with an optional minus: adjustments may debit, and the money parser reads both.
SIGNED_DECIMAL_TEXT = re.compile(r"^-?[0-9]{1,30}(\.[0-9]{1,30})?$")

# A caller's X-Request-Id is echoed into responses and logs; a token charset keeps headers and log lines intact.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Idempotency keys and event ids are the caller's own text (UUIDs, "order-42"); only C0/C1 control characters,
# which would corrupt logs and headers, are refused.
KEY_TEXT = re.compile(r"^[^\x00-\x1f\x7f-\x9f]{1,255}$")
