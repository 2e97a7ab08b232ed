"""Webhook signals: ``POST /webhook`` turns a TradingView-style JSON alert into a PROPOSED
signal (source ``webhook``) whose card goes through the outbox; ``GET /healthz`` answers
a platform's health check. The Telegram face adds its own route to the same server in
webhook mode (``POST /telegram``, see docs/operations.md).

The alert's JSON body (TradingView sends the alert message as the body and cannot set
headers, so the secret travels in the body)::

    {"secret": "...", "symbol": "BTC/USDT", "side": "buy",
     "quantity": "0.01" | "risk_pct": 1,
     "stop_loss": 61000, "take_profit": 66000, "note": "breakout",
     "trail_pct": 1.5, "breakeven_at_r": 1}

``quantity`` is in base units; ``risk_pct`` (percent of equity lost at the stop) sizes the
order instead and needs ``stop_loss`` (see :func:`core.strategies.sizing.size_for_risk`).
``trail_pct`` (percent, 0 < x < 100) and ``breakeven_at_r`` (R, > 0) are optional: a
trailing stop and the move of the stop to the entry (see docs/trades.md).
Prices are in quote currency. Numbers may be JSON numbers or strings; they are read as
exact decimals and bounded by :mod:`core.bounds` (finite, below 10^18, at most 18 decimal
places, positive; ``risk_pct`` at most 100). ``symbol`` (32 characters) and ``note`` (500)
may not contain NUL or other control characters.

Answers (JSON ``{"error": reason}`` on failure; nothing is written on any 4xx):

======  =====================================================================
201     proposed: ``{"signal_id", "status", "symbol", "side", "quantity"}``
400     the body is not UTF-8 JSON, not an object, or nests deeper than 8 levels
401     no ``secret`` in the body
403     wrong secret, or the webhook is disabled (``WEBHOOK_SECRET`` unset)
413     the body exceeds ``WEBHOOK_MAX_BODY_BYTES``
422     a field is missing or out of bounds (``field: reason``), the symbol is unknown
        to the broker, or the stop loss / take profit is on the wrong side of the price
502     the broker refused to quote; 503 it is temporarily unreachable (retry)
======  =====================================================================

The secret is compared in constant time (``hmac.compare_digest``); bodies are never logged.
"""

from __future__ import annotations

import errno
import hmac
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Self

import structlog
from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationError,
    model_validator,
)
from sqlalchemy import text

from core.app import Engine
from core.bounds import Percent, PositiveDecimal, check_json_depth, text_bounds
from core.domain import Side
from core.errors import (
    BrokerError,
    BrokerTemporaryError,
    ConfigError,
    InvalidInputError,
    UnknownSymbolError,
)
from core.services.signals import Proposal
from core.strategies.sizing import size_for_risk

__all__ = ["WebhookAlert", "build_webhook_app", "start_webhook"]

log = structlog.get_logger(__name__)

ENGINE_KEY = web.AppKey("engine", Engine)

#: Bind address for ``$PORT``: platforms route public traffic to it on every interface.
PUBLIC_HOST = "0.0.0.0"  # noqa: S104  (the $PORT contract of Heroku-style platforms)


class WebhookAlert(BaseModel):
    """The validated alert, without its secret. Unknown fields are refused, so a typo such
    as ``stoploss`` is a 422 instead of a trade without a stop."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: Annotated[str, text_bounds(32), StringConstraints(min_length=1)]
    side: Side
    quantity: PositiveDecimal | None = None
    risk_pct: Percent | None = None
    stop_loss: PositiveDecimal | None = None
    take_profit: PositiveDecimal | None = None
    note: Annotated[str, text_bounds(500)] = ""
    #: below 100 is checked where every proposal is (SignalService.propose)
    trail_pct: Percent | None = None
    breakeven_at_r: PositiveDecimal | None = None

    @model_validator(mode="before")
    @classmethod
    def _lower_side(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("side"), str):
            data = {**data, "side": data["side"].strip().lower()}
        return data

    @model_validator(mode="after")
    def _sized_once(self) -> Self:
        if (self.quantity is None) == (self.risk_pct is None):
            raise ValueError("give exactly one of quantity or risk_pct")
        if self.risk_pct is not None and self.stop_loss is None:
            raise ValueError("risk_pct needs a stop_loss to size the order")
        return self


def build_webhook_app(engine: Engine, *, client_max_size: int = 0) -> web.Application:
    """The aiohttp application: ``POST /webhook`` and ``GET /healthz``.

    aiohttp itself refuses bodies over ``WEBHOOK_MAX_BODY_BYTES`` (or ``client_max_size``
    bytes, if larger: another route on the same server takes bigger ones) while reading
    them; ``/webhook`` also refuses what it read beyond ``WEBHOOK_MAX_BODY_BYTES``.
    """
    if engine.settings.webhook_secret is None:
        log.warning("webhook disabled: WEBHOOK_SECRET is not set; POST /webhook answers 403")
    limit = max(engine.settings.webhook_max_body_bytes, client_max_size)
    app = web.Application(client_max_size=limit)
    app[ENGINE_KEY] = engine
    app.router.add_post("/webhook", _webhook)
    app.router.add_get("/healthz", _healthz)
    return app


async def start_webhook(
    engine: Engine,
    port: int,
    host: str = PUBLIC_HOST,
    *,
    add_routes: Callable[[web.Application], None] | None = None,
    client_max_size: int = 0,
) -> web.AppRunner:
    """Serve :func:`build_webhook_app` on ``host:port``, with the routes ``add_routes``
    adds to it (the bot's Telegram webhook, whose bodies may reach ``client_max_size``
    bytes); the caller awaits ``runner.cleanup()`` to stop (it waits for requests in
    flight).

    Raises:
        ConfigError: ``PORT 8080 is in use`` (or why else it cannot be bound).
    """
    app = build_webhook_app(engine, client_max_size=client_max_size)
    if add_routes is not None:
        add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"PORT {port} is in use") from None
        raise ConfigError(f"PORT {port}: cannot listen on {host} ({exc.strerror})") from None
    except BaseException:
        await runner.cleanup()
        raise
    log.info("webhook listening", host=host, port=port)
    return runner


def _refuse(status: int, reason: str) -> web.Response:
    log.warning("webhook refused", status=status, reason=reason)
    return web.json_response({"error": reason}, status=status)


async def _webhook(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    settings = engine.settings
    limit = settings.webhook_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _refuse(413, f"body larger than {limit} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _refuse(413, f"body larger than {limit} bytes")
    if len(body) > limit:  # chunked, under the server's larger limit
        return _refuse(413, f"body larger than {limit} bytes")
    try:
        text = body.decode("utf-8")
        check_json_depth(text)
        # every number as an exact Decimal: no float rounding, and no int() of 5,000 digits
        data = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _refuse(400, f"body is not valid JSON: {exc}")
    except InvalidInputError as exc:
        return _refuse(400, str(exc))
    if not isinstance(data, dict):
        return _refuse(400, "body must be a JSON object")
    given = data.pop("secret", None)
    if settings.webhook_secret is None:
        return _refuse(403, "webhook disabled: WEBHOOK_SECRET is not set")
    if not isinstance(given, str) or not given:
        return _refuse(401, "missing secret")
    expected = settings.webhook_secret.get_secret_value()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return _refuse(403, "wrong secret")
    try:
        alert = WebhookAlert.model_validate(data)
    except ValidationError as exc:
        return _refuse(422, _validation_reason(exc))
    try:
        proposal = await _proposal(engine, alert)
        signal = await engine.signals.propose(proposal)
    except (UnknownSymbolError, InvalidInputError) as exc:
        return _refuse(422, str(exc))
    except BrokerTemporaryError as exc:
        return _refuse(503, f"broker temporarily unavailable: {exc}")
    except BrokerError as exc:
        return _refuse(502, f"broker error: {exc}")
    log.info("webhook proposed", signal_id=signal.id, symbol=signal.symbol, side=signal.side)
    return web.json_response(
        {
            "signal_id": signal.id,
            "status": signal.status.value,
            "symbol": signal.symbol,
            "side": signal.side.value,
            "quantity": str(signal.quantity),
        },
        status=201,
    )


async def _proposal(engine: Engine, alert: WebhookAlert) -> Proposal:
    """The proposal for ``alert``; a ``risk_pct`` alert is sized from the broker's equity
    and last price (capped by ``MAX_ORDER_QUANTITY`` and ``MAX_ORDER_NOTIONAL``).

    Raises UnknownSymbolError (checked first), InvalidInputError, BrokerError.
    """
    quote = await engine.broker.quote(alert.symbol)
    quantity = alert.quantity
    if alert.risk_pct is not None:
        assert alert.stop_loss is not None
        equity = (await engine.broker.account()).equity
        quantity = size_for_risk(
            equity,
            alert.risk_pct,
            quote.last,
            alert.stop_loss,
            max_quantity=engine.settings.max_order_quantity,
            max_notional=engine.settings.max_order_notional,
        )
    assert quantity is not None
    return Proposal(
        source="webhook",
        symbol=alert.symbol,
        side=alert.side,
        quantity=quantity,
        stop_loss=alert.stop_loss,
        take_profit=alert.take_profit,
        note=alert.note,
        trail_pct=alert.trail_pct,
        breakeven_at_r=alert.breakeven_at_r,
    )


def _validation_reason(exc: ValidationError) -> str:
    """``field: message`` per error, without echoing the input."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


async def _healthz(request: web.Request) -> web.Response:
    """200 when the database answers, else 503."""
    engine = request.app[ENGINE_KEY]
    try:
        async with engine.db.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any database failure means unhealthy
        log.error("health check failed", error=type(exc).__name__)
        return web.json_response({"status": "unhealthy", "database": "down"}, status=503)
    return web.json_response({"status": "ok"})
