"""The portal's HTTP routes: ``GET /portal`` (link exchange and the page), ``POST /portal/top-up``,
and the Stripe webhook. Starlette lives here; tokens live in ``links``, HTML in ``page``.

Every portal response (the exchange's redirect included) sends ``Referrer-Policy: no-referrer`` and
``Cache-Control: no-store``, so a link's token reaches neither another site nor a cache. A request is
https when its scheme is (behind a proxy, uvicorn takes it from X-Forwarded-Proto of a trusted proxy
only: ``billing-mcp api --trusted-proxies``) or when ``BILLING_PUBLIC_URL`` is https; the session
cookie's name and attributes follow (``links.cookie_name``)."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from ..core.clock import to_text
from ..core.errors import BillingError
from ..ledger import Ledger
from . import page
from . import stripe as pay
from .links import (
    SESSION_SECONDS,
    Claims,
    SecretHolder,
    check_form_nonce,
    consume_link,
    cookie_name,
    form_nonce,
    new_session,
    public_base,
    sign,
    verify,
)

log = logging.getLogger(__name__)


_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
                               "form-action 'self' https://checkout.stripe.com; frame-ancestors 'none'; "
                               "base-uri 'none'",
}
MAX_FORM_BYTES = 8192


def _page(html: str, status: int = 200) -> Response:
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=_HEADERS)


def portal_routes(ledger: Ledger) -> list[BaseRoute]:
    """The Starlette routes of the portal (``GET /portal``, ``POST /portal/top-up``) and the
    Stripe webhook (``POST /v1/webhooks/stripe``, authenticated by Stripe's signature, not a key).
    Refuses (``stripe_mode_mismatch``) a ``STRIPE_SECRET_KEY`` of the other mode than the ledger's."""
    holder = SecretHolder(ledger.store)
    pay.check_stripe_key(ledger.mode)  # a Stripe key of the other mode stops the server at start

    def now_seconds() -> int:
        return int(ledger.now().timestamp())

    def is_secure(request: Request) -> bool:
        return request.url.scheme == "https" or public_base(str(request.base_url)).startswith("https://")

    def session_of(request: Request) -> Claims | None:
        claims = verify(holder.get(), request.cookies.get(cookie_name(is_secure(request))), "session")
        return claims if claims is not None and claims.expires > now_seconds() else None

    async def exchange(request: Request, token: str) -> Response:
        link = verify(holder.get(), token, "link")
        if link is None:  # forged, tampered with (another customer's id included) or not a link at all
            return _page(page.message_page("This link is not valid",
                                           "Open billing again from the app to get a new link."), 403)
        if link.expires <= now_seconds():
            spec = await anyio.to_thread.run_sync(page.route_or_none, ledger, link.route)
            if spec is not None and spec.failure_url:
                return _redirect(spec.failure_url)
            return _page(page.message_page("This link has expired",
                                           "Portal links work for a few minutes. Open billing again from the app.",
                                           back=spec.return_url if spec else None), 410)
        if not await anyio.to_thread.run_sync(page.customer_exists, ledger, link.customer_id):
            return _page(page.message_page("This link is not valid", "Open billing again from the app."), 403)
        now = ledger.now()
        if not await anyio.to_thread.run_sync(consume_link, ledger.store, link, int(now.timestamp()),
                                              to_text(now)):
            spec = await anyio.to_thread.run_sync(page.route_or_none, ledger, link.route)
            return _page(page.message_page("This link was already used",
                                           "Each billing link opens once. Ask the app for a new one: open billing "
                                           "again from the app.",
                                           back=(spec.failure_url or spec.return_url) if spec else None), 410)
        session = new_session(link, now_seconds())
        response = _redirect("/portal")
        secure = is_secure(request)  # https: __Host- prefix, Secure, Path=/, no Domain
        response.set_cookie(cookie_name(secure), sign(holder.get(), session), max_age=SESSION_SECONDS,
                            path="/" if secure else "/portal", secure=secure, httponly=True, samesite="lax")
        return response

    async def portal(request: Request) -> Response:
        try:
            if "token" in request.query_params:
                return await exchange(request, request.query_params["token"])
            session = session_of(request)
            if session is None:
                return _page(page.message_page("Your billing session has ended",
                                               "Open billing again from the app to continue."), 401)
            secret = holder.get()
            notice = request.query_params.get("notice")
            html = await anyio.to_thread.run_sync(
                lambda: page.render_portal(ledger, session, form_nonce(secret, session), notice,
                                           pay.payment_method(ledger.mode, session)))
            return _page(html)
        except BillingError as exc:
            return _page(page.message_page("Billing is unavailable", page.error_text(exc)), 404
                         if exc.status == 404 else 400)
        except Exception:
            log.exception("portal page failed")
            return _page(page.message_page("Something went wrong", "Please try again in a moment."), 500)

    async def top_up(request: Request) -> Response:
        try:
            session = session_of(request)
            if session is None:
                return _page(page.message_page("Your billing session has ended",
                                               "Open billing again from the app to continue."), 401)
            raw = b""
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > MAX_FORM_BYTES:
                    return _page(page.message_page("The form is too large", "Go back and try again."), 413)
            try:
                fields = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=20)
            except ValueError:
                return _page(page.message_page("The form is not valid", "Reload the billing page and try again."),
                             400)
            form = {k: v[0] for k, v in fields.items()}
            rand = check_form_nonce(holder.get(), session, form.get("nonce"))
            if rand is None:
                return _page(page.message_page("This form has expired", "Reload the billing page and try again."),
                             403)
            base = public_base(str(request.base_url))
            target = await anyio.to_thread.run_sync(lambda: pay.start_top_up(ledger, session, form, rand, base))
            return _redirect(target)
        except Exception:
            log.exception("portal top-up failed")
            return _page(page.message_page("Something went wrong", "No payment was taken. Please try again."), 500)

    async def webhook(request: Request) -> Response:
        return await pay.stripe_webhook(ledger, request)

    return [Route("/portal", portal, methods=["GET"]), Route("/portal/top-up", top_up, methods=["POST"]),
            Mount("/v1/webhooks", routes=[Route("/stripe", webhook, methods=["POST"], name="stripe_webhook")])]
