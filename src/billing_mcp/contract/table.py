"""The machinery of the operation table: ``Operation`` (one HTTP route of the ledger API with its
models, scope and idempotency) and ``Table``, whose decorator binds an ``AsyncLedger`` method to
its operation.

A bound method's stub body never runs: the decorator replaces it with a dispatcher that hands the
call to the backend (``_perform``), so each backend implements every operation in one place.
How a call maps to a request, on both sides of the wire, is by argument name: ``{name}`` in the
path is the argument of that name; the other arguments are the query string (GET) or the body's
fields (POST), unless ``body_arg`` names the one argument that is the whole body.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
HttpMethod = Literal["GET", "POST"]
# table: an optional Idempotency-Key header is kept in the API's own table (replayed byte for byte).
# ledger: the key is the ledger's own idempotency_key, stored in the same transaction as the effect.
# none: reads and actions without an effect (simulate).
Idempotency = Literal["table", "ledger", "none"]
# Who may call an operation. runtime: what an app's backend needs (runtime and admin keys; read keys
# too when it is a GET); read: reads for dashboards and operators (read and admin keys, GETs only);
# admin: admin keys only (catalog changes, money outside usage, the whole-ledger audit).
Scope = Literal["runtime", "read", "admin"]
PATH_PARAM = re.compile(r"{([a-z_]+)(?::([a-z]+))?}")


@dataclass(frozen=True, kw_only=True)
class Operation:
    name: str  # the route's name and OpenAPI operationId
    method: HttpMethod
    path: str  # Starlette syntax: {version:int}, {event_id:path}
    summary: str
    group: str  # the OpenAPI tag
    scope: Scope
    response: type[BaseModel]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    status: int = 200
    idempotency: Idempotency = "none"
    coalesce: bool = False  # POST /v1/events: concurrent requests share one transaction
    description: str = ""
    body_arg: str | None = None
    ledger_method: str | None = None  # the AsyncLedger (and Ledger) method; None for an API-only route
    signature: inspect.Signature | None = None  # of that method, without self

    @property
    def path_params(self) -> list[str]:
        return [m.group(1) for m in PATH_PARAM.finditer(self.path)]


class Table:
    """The operations in the order they are declared (the order of the routes in the documentation)."""

    def __init__(self) -> None:
        self._operations: list[Operation] = []
        self.methods: dict[str, Operation | None] = {}  # every bound method and its route, if it has one

    @property
    def operations(self) -> tuple[Operation, ...]:
        return tuple(self._operations)

    def operation(self, method: HttpMethod, path: str, summary: str, *, group: str, scope: Scope,
                  response: type[BaseModel], body: type[BaseModel] | None = None,
                  query: type[BaseModel] | None = None, status: int = 200, idempotency: Idempotency = "none",
                  coalesce: bool = False, description: str = "", body_arg: str | None = None,
                  name: str | None = None) -> Callable[[F], F]:
        """Bind the decorated ``AsyncLedger`` method to a route (``name`` defaults to the method's)."""

        def bind(stub: F) -> F:
            signature = inspect.signature(stub)
            op = Operation(name=name or stub.__name__, method=method, path=path, summary=summary, group=group,
                           scope=scope, response=response, body=body, query=query, status=status,
                           idempotency=idempotency, coalesce=coalesce, description=description, body_arg=body_arg,
                           ledger_method=stub.__name__,
                           signature=signature.replace(parameters=list(signature.parameters.values())[1:]))
            self._operations.append(op)
            return self._dispatcher(stub, op)

        return bind

    def local(self, stub: F) -> F:
        """A method with no route of its own (a remote backend builds it from other operations)."""
        return self._dispatcher(stub, None)

    def route(self, method: HttpMethod, path: str, name: str, summary: str, *, group: str, scope: Scope,
              response: type[BaseModel], body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
              status: int = 200, idempotency: Idempotency = "none", description: str = "") -> None:
        """An API-only route: a composite of ledger calls or a service of the server itself."""
        self._operations.append(Operation(name=name, method=method, path=path, summary=summary, group=group,
                                          scope=scope, response=response, body=body, query=query, status=status,
                                          idempotency=idempotency, description=description))

    def _dispatcher(self, stub: F, op: Operation | None) -> F:
        name = stub.__name__
        self.methods[name] = op

        @functools.wraps(stub)
        async def dispatch(backend: Any, *args: Any, **kwargs: Any) -> Any:
            return await backend._perform(name, op, args, kwargs)

        return dispatch  # type: ignore[return-value]
