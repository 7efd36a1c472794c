"""Small pieces of node wiring shared by the node's parts (field bridge, reference bridge, instruction input, camera
inputs): service callbacks that answer their errors instead of raising, and tearing endpoints down."""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

__all__ = ["answers_errors", "destroy_endpoints"]


def answers_errors(what: str) -> Callable[[Callable], Callable]:
    """Decorator for service callback methods ``(self, req, resp)`` of an object with a ``_node``: an exception is
    logged on the node and answered as ``success=False`` with ``"<what> <name> failed: <Type>: <message>"``
    (``<name>`` is the method name without ``_srv_``) instead of raising, which would stop the node's executor."""
    def decorate(fn: Callable) -> Callable:
        name = f"{what} {fn.__name__.removeprefix('_srv_')}"

        @functools.wraps(fn)
        def wrapper(self, req, resp):
            try:
                return fn(self, req, resp)
            except Exception as e:  # noqa: BLE001 - one bad request never takes the node down
                self._node.get_logger().error(f"{name} failed: {type(e).__name__}: {e}")
                resp.success, resp.message = False, f"{name} failed: {type(e).__name__}: {e}"
                return resp

        return wrapper

    return decorate


def destroy_endpoints(node: Any, *, subscriptions: Iterable[Any] = (), services: Iterable[Any] = ()) -> None:
    """Destroy ``subscriptions`` and ``services`` of ``node`` (the caller then forgets them)."""
    for s in subscriptions:
        node.destroy_subscription(s)
    for s in services:
        node.destroy_service(s)
