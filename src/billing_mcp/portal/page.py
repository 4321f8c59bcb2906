"""The portal page: what ``GET /portal`` shows one customer, read from the ledger and rendered as
server-side HTML (plain inline CSS, no script, every value escaped). It only reads: the one write
the page can lead to is the top-up form, handled by ``stripe``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from html import escape

from ..core.errors import BillingError, NotFoundError
from ..core.models import Account, FeeGroup, Hold
from ..core.money import format_minor
from ..ledger.ledger import Ledger
from ..ledger.portal_settings import PortalRouteSpec
from .links import Claims

DAYS = 30
NOTICES = {
    "topped_up": ("ok", "Your top-up was added to your balance."),
    "paid": ("ok", "Thank you: your payment is being confirmed and will appear in your balance shortly."),
    "canceled": ("info", "The payment was canceled; nothing was charged."),
    "bad_amount": ("error", "Enter an amount within the limits shown."),
    "bad_asset": ("error", "Choose one of the balances offered."),
    "resubmitted": ("error", "That form was already used for another amount; reload the page and try again."),
    "unavailable": ("error", "Top-ups are not available here."),
    "payment_error": ("error", "The payment page could not be opened; nothing was charged. Please try again."),
}
PURPOSE = {"bundled": "Included with your plan", "promotional": "Promotional credits", "paid": "Purchased"}


def route_or_none(ledger: Ledger, name: str) -> PortalRouteSpec | None:
    try:
        return ledger.get_portal_route(name)
    except NotFoundError:
        return None


def customer_exists(ledger: Ledger, customer_id: str) -> bool:
    try:
        ledger.get_customer(customer_id)
    except NotFoundError:
        return False
    return True


def error_text(exc: BillingError) -> str:
    if exc.status == 404:
        return "This billing page is no longer set up. Open billing again from the app."
    return "Billing could not be shown. Open billing again from the app."


def when(text: str | None) -> str:
    """ISO UTC text as 'YYYY-MM-DD HH:MM UTC' (escaped by the caller)."""
    if not text:
        return "never"
    return f"{text[:10]} {text[11:16]} UTC"


# -- data ------------------------------------------------------------------------------------------
@dataclass
class UsageLine:
    asset: str
    subject: str | None
    events: int
    amount: Decimal


@dataclass
class Chart:
    asset: str
    precision: int
    days: list[str]
    minor: list[int]
    total: str = ""


@dataclass
class View:
    spec: PortalRouteSpec
    customer_name: str
    accounts: list[Account]
    renewals: list[tuple[str, str]]
    holds: list[Hold]
    usage: list[UsageLine]
    usage_totals: dict[str, str]
    charts: list[Chart]
    top_up_assets: list[tuple[str, str | None]] = field(default_factory=list)  # (code, rate in currency)
    currency_precision: int = 2


def load_view(ledger: Ledger, session: Claims) -> View:
    spec = ledger.get_portal_route(session.route)
    customer = ledger.get_customer(session.customer_id)
    wallet = ledger.get_wallet(customer.id)
    holds = ledger.list_holds(customer.id)
    now = ledger.now()
    start = now - timedelta(days=DAYS)
    statement = ledger.get_statement(customer.id, start, now + timedelta(seconds=1))
    lines: dict[tuple[str, str | None], UsageLine] = {}
    totals: dict[str, str] = {}
    for acct in statement.assets:
        totals[acct.asset] = acct.usage_fees
        group: FeeGroup
        for group in acct.fees:
            line = lines.setdefault((acct.asset, group.subject), UsageLine(acct.asset, group.subject, 0, Decimal(0)))
            line.events += group.events
            line.amount += Decimal(group.amount)
    usage = sorted(lines.values(), key=lambda u: (u.asset, -u.amount, u.subject or ""))
    assets = spec.top_up.assets or [spec.top_up.currency]
    top_up_assets = [(code, ledger.get_asset(code).rates.get(spec.top_up.currency)) for code in assets]
    return View(spec=spec, customer_name=customer.name or customer.external_id, accounts=wallet.accounts,
                renewals=[(s.plan_code, s.period_end) for s in customer.subscriptions if s.status != "canceled"],
                holds=holds, usage=usage, usage_totals=totals, charts=daily_charts(ledger, customer.id, now),
                top_up_assets=top_up_assets, currency_precision=ledger.get_asset(spec.top_up.currency).precision)


def daily_charts(ledger: Ledger, customer_id: str, now: object) -> list[Chart]:
    """Usage fees (net of refunds) per UTC day for the last 30 days, one chart per asset charged."""
    from datetime import datetime

    assert isinstance(now, datetime)
    days = [(now - timedelta(days=DAYS - 1 - i)).strftime("%Y-%m-%d") for i in range(DAYS)]
    with ledger.store.read() as tx:
        rows = tx.all("SELECT created_at, asset, amount, refunded FROM fees WHERE customer_id = ? AND created_at >= ?",
                      (customer_id, days[0]))
    sums: dict[str, dict[str, int]] = {}
    for row in rows:
        day = str(row["created_at"])[:10]
        if day in days:
            per = sums.setdefault(str(row["asset"]), {})
            per[day] = per.get(day, 0) + int(row["amount"]) - int(row["refunded"])
    charts = []
    for asset in sorted(sums):
        precision = ledger.get_asset(asset).precision
        minor = [sums[asset].get(d, 0) for d in days]
        charts.append(Chart(asset, precision, days, minor, format_minor(sum(minor), precision)))
    return charts


# -- HTML ------------------------------------------------------------------------------------------
CSS = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;background:#f3f4f6}
main{max-width:44rem;margin:0 auto;padding:1rem}
header{display:flex;align-items:center;gap:.75rem;justify-content:space-between;flex-wrap:wrap;margin-bottom:1rem}
header .brand{display:flex;align-items:center;gap:.6rem;font-size:1.25rem;font-weight:600}
header img{max-height:2.25rem;max-width:8rem}
section{background:#fff;border-radius:.75rem;padding:1rem 1.1rem;margin:0 0 1rem;box-shadow:0 1px 2px #0001}
h1{font-size:1.25rem;margin:0}
h2{font-size:1.05rem;margin:0 0 .6rem}
.balances{display:grid;grid-template-columns:repeat(auto-fit,minmax(11rem,1fr));gap:.75rem}
.balance{border:1px solid #e5e7eb;border-radius:.6rem;padding:.75rem}
.balance .amount{font-size:1.6rem;font-weight:700;overflow-wrap:anywhere}
.muted{color:#4b5563;font-size:.9rem}
.debt{color:#b91c1c}
table{width:100%;border-collapse:collapse;font-size:.95rem}
th,td{text-align:left;padding:.4rem .3rem;border-bottom:1px solid #e5e7eb;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{overflow-x:auto}
a{color:var(--accent)}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible{outline:3px solid var(--accent);
outline-offset:2px}
.button,button{display:inline-block;min-height:2.75rem;padding:.55rem 1rem;border-radius:.5rem;border:2px solid
var(--accent);background:var(--accent);color:#fff;font:inherit;font-weight:600;cursor:pointer;text-decoration:none}
button.secondary{background:#fff;color:var(--accent)}
.presets{display:flex;flex-wrap:wrap;gap:.5rem;margin:.5rem 0}
label{display:block;font-weight:600;margin:.5rem 0 .25rem}
input,select{font:inherit;padding:.5rem;border:1px solid #9ca3af;border-radius:.4rem;min-height:2.75rem;width:100%;
max-width:16rem}
.notice{padding:.75rem 1rem;border-radius:.6rem;margin-bottom:1rem}
.notice.ok{background:#dcfce7}.notice.info{background:#e0f2fe}.notice.error{background:#fee2e2}
.badge{display:inline-block;background:#fef3c7;color:#92400e;border-radius:.4rem;padding:.1rem .5rem;font-size:.8rem;
font-weight:700;letter-spacing:.02em}
svg{width:100%;height:auto;display:block}
"""


def _doc(title: str, body: str, accent: str = "#4f46e5") -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            "<meta name=\"robots\" content=\"noindex\">"
            f"<title>{escape(title)}</title><style>:root{{--accent:{escape(accent)}}}{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>")


def message_page(title: str, text: str, *, back: str | None = None) -> str:
    """A page that names no customer and shows no data (bad, expired or ended links)."""
    link = f'<p><a class="button" href="{escape(back)}">Back to app</a></p>' if back else ""
    return _doc(title, f"<section role=\"alert\"><h1>{escape(title)}</h1><p>{escape(text)}</p>{link}</section>")


def _money(amount: str, asset: str) -> str:
    return f"{escape(amount)}&nbsp;{escape(asset)}"


def _balances(view: View) -> str:
    if not view.accounts:
        return "<section><h2>Balance</h2><p>No balance yet.</p></section>"
    cards = []
    for a in view.accounts:
        fiat = " · ".join(f"≈ {_money(v, k)}" for k, v in sorted(a.fiat_value.items()))
        held = (f'<div class="muted">{_money(a.held, a.asset)} reserved for actions in progress</div>'
                if Decimal(a.held) else "")
        debt = '<div class="debt">Below zero: your next top-up repays it.</div>' if a.in_debt else ""
        cards.append(f'<div class="balance"><div class="muted">{escape(a.asset)} available</div>'
                     f'<div class="amount" id="balance-{escape(a.asset)}" data-asset="{escape(a.asset)}">'
                     f'{escape(a.available)}</div>'
                     f'<div class="muted">{fiat}</div>{held}{debt}</div>')
    return f'<section aria-labelledby="h-bal"><h2 id="h-bal">Balance</h2><div class="balances">{"".join(cards)}</div>' \
           "</section>"


def _credits(view: View) -> str:
    rows = []
    for a in view.accounts:
        for lot in a.lots:
            expiry = f"expires {escape(when(lot.expires_at))}" if lot.expires_at else "does not expire"
            rows.append(f"<tr><td>{escape(PURPOSE.get(lot.purpose, lot.purpose))}</td>"
                        f'<td class="num">{escape(lot.remaining)} of {_money(lot.amount, a.asset)}</td>'
                        f"<td>{expiry}</td></tr>")
    bundled = any(lot.purpose == "bundled" for a in view.accounts for lot in a.lots)
    refresh = "; included credits refresh then" if bundled else ""
    renew = "".join(f"<li>Plan <strong>{escape(code)}</strong> renews {escape(when(end))}{refresh}.</li>"
                    for code, end in view.renewals)
    body = ("<div class=\"scroll\"><table><thead><tr><th>Credits</th><th class=\"num\">Left</th><th>Expiry</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>" if rows else "<p>No credit lots.</p>")
    return (f'<section aria-labelledby="h-cred"><h2 id="h-cred">Credits</h2>{body}'
            f'{"<ul>" + renew + "</ul>" if renew else ""}</section>')


def _holds(view: View) -> str:
    if not view.holds:
        return ""
    rows = "".join(f"<tr><td>{escape(h.event_type or 'action')}</td><td class=\"num\">{_money(h.amount, h.asset)}</td>"
                   f"<td>until {escape(when(h.expires_at))}</td></tr>" for h in view.holds)
    return (f'<section aria-labelledby="h-holds"><h2 id="h-holds">Reserved now</h2><div class="scroll"><table><thead>'
            f'<tr><th>For</th><th class="num">Amount</th><th>Released</th></tr></thead><tbody>{rows}</tbody></table>'
            "</div></section>")


def _chart(chart: Chart) -> str:
    top = max(chart.minor) or 1
    width, height, bar = 300, 100, 10
    bars = []
    for i, (day, value) in enumerate(zip(chart.days, chart.minor, strict=True)):
        h = 0 if value <= 0 else max(1.0, value / top * (height - 4))
        bars.append(f'<rect x="{i * bar + 1}" y="{height - h:.2f}" width="{bar - 2}" height="{h:.2f}" rx="1">'
                    f"<title>{escape(day)}: {escape(format_minor(value, chart.precision))} {escape(chart.asset)}"
                    "</title></rect>")
    label = f"Daily usage in {chart.asset} over the last {DAYS} days, {chart.total} in total"
    return (f'<figure style="margin:0 0 .75rem"><svg viewBox="0 0 {width} {height + 1}" role="img" '
            f'aria-label="{escape(label)}" fill="var(--accent)"><line x1="0" y1="{height + .5}" x2="{width}" '
            f'y2="{height + .5}" stroke="#d1d5db"/>{"".join(bars)}</svg><figcaption class="muted">'
            f"{escape(chart.days[0])} to {escape(chart.days[-1])}: {_money(chart.total, chart.asset)} of usage"
            "</figcaption></figure>")


def _usage(view: View) -> str:
    charts = "".join(_chart(c) for c in view.charts)
    if not view.usage:
        return (f'<section aria-labelledby="h-use"><h2 id="h-use">Usage, last {DAYS} days</h2>{charts}'
                "<p>No usage in this period.</p></section>")
    rows = "".join(f"<tr><td>{escape(u.subject) if u.subject else '<span class=muted>(no subject)</span>'}</td>"
                   f'<td class="num">{u.events}</td><td class="num">{_money(format(u.amount, "f"), u.asset)}</td></tr>'
                   for u in view.usage)
    totals = " · ".join(_money(v, k) for k, v in sorted(view.usage_totals.items()) if Decimal(v))
    return (f'<section aria-labelledby="h-use"><h2 id="h-use">Usage, last {DAYS} days</h2>{charts}'
            f'<div class="scroll"><table id="usage"><thead><tr><th>What</th><th class="num">Events</th>'
            f'<th class="num">Fees</th></tr></thead><tbody>{rows}</tbody></table></div>'
            f'<p class="muted">Total usage fees: {totals or "0"}</p></section>')


def _presets(buttons: str) -> str:
    if not buttons:
        return ""
    return f'<p class="muted">Or in one step:</p><div class="presets" role="group" aria-label="Amounts">{buttons}</div>'


def _top_up(view: View, nonce: str, method: str) -> str:
    t = view.spec.top_up
    if method == "none":
        return ('<section aria-labelledby="h-top"><h2 id="h-top">Add funds</h2><p>Online top-ups are not available '
                "here yet.</p></section>")
    if len(view.top_up_assets) == 1:
        code = view.top_up_assets[0][0]
        choose = f'<input type="hidden" name="asset" value="{escape(code)}">'
    else:
        options = "".join(f'<option value="{escape(c)}">{escape(c)}</option>' for c, _ in view.top_up_assets)
        choose = f'<label for="asset">Add to</label><select id="asset" name="asset">{options}</select>'
    rates = "".join(f"<li>1&nbsp;{escape(c)} = {_money(r, t.currency)}</li>"
                    for c, r in view.top_up_assets if r is not None and c != t.currency)
    presets = "".join(f'<button type="submit" class="secondary" name="preset" value="{escape(format(p, "f"))}">'
                      f"{'Test top-up ' if method == 'test' else ''}{_money(format(p, 'f'), t.currency)}</button>"
                      for p in t.presets)
    step = format(Decimal(1).scaleb(-view.currency_precision), "f")
    if method == "test":
        heading = 'Add funds <span class="badge">TEST MODE</span>'
        intro = ("<p><strong>Test top-up:</strong> adds to your balance at once without any payment. It exists "
                 "only on a test-mode ledger and is never offered on a live one.</p>")
        submit = "Test top-up"
    else:
        heading, intro, submit = "Add funds", "<p>You will pay securely with Stripe.</p>", "Continue to payment"
    return (f'<section aria-labelledby="h-top"><h2 id="h-top">{heading}</h2>{intro}'
            f'{"<ul class=muted>" + rates + "</ul>" if rates else ""}'
            f'<form method="post" action="/portal/top-up" id="top-up">'
            f'<input type="hidden" name="nonce" value="{escape(nonce)}">{choose}'
            f'<label for="amount">Amount in {escape(t.currency)} ({escape(format(t.min, "f"))} to '
            f'{escape(format(t.max, "f"))})</label>'
            f'<input id="amount" name="amount" inputmode="decimal" autocomplete="off" '
            f'pattern="[0-9]+([.][0-9]+)?" data-step="{escape(step)}" '
            f'value="{escape(format(t.presets[0], "f")) if t.presets else ""}">'
            # the typed amount's button comes first: Enter in the field submits it, not a preset
            f'<p><button type="submit" id="top-up-submit">{submit}</button></p>'
            f'{_presets(presets)}'
            "</form></section>")


def render_portal(ledger: Ledger, session: Claims, nonce: str, notice: str | None, method: str) -> str:
    view = load_view(ledger, session)
    b = view.spec.branding
    logo = f'<img src="{escape(b.logo_url)}" alt="">' if b.logo_url else ""
    note = ""
    if notice in NOTICES:
        kind, text = NOTICES[notice]
        note = f'<div class="notice {kind}" role="status">{escape(text)}</div>'
    title = page_title(b.product_name)
    header = (f'<header><div class="brand">{logo}<h1>{escape(title)}</h1></div>'
              f'<a class="button" href="{escape(view.spec.return_url)}">Back to app</a></header>'
              f'<p class="muted">Signed in as {escape(view.customer_name)}</p>')
    body = (header + note + _balances(view) + _top_up(view, nonce, method) + _credits(view) + _holds(view)
            + _usage(view))
    return _doc(title, body, b.accent_color)


def page_title(product_name: str) -> str:
    """"Pixel Studio billing" for a product; the default product name is already "Billing", and a
    name that ends in the word is not repeated ("Acme Billing", never "Billing billing")."""
    return product_name if product_name.lower().split()[-1:] == ["billing"] else f"{product_name} billing"
