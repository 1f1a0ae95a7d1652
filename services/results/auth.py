"""Bearer-token authentication for every RPC except health checks.

Health stays open so that Kubernetes probes and load balancers need no secret;
it reveals nothing but SERVING / NOT_SERVING. Reflection needs a token like the
service itself, since it reveals the API.
"""

from __future__ import annotations

import hmac
from typing import Callable, Sequence

import grpc

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: Sequence[str]):
        if not tokens:
            raise ValueError("BearerTokenInterceptor needs at least one token")
        self._tokens = [t.encode() for t in tokens]

    async def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_PREFIXES):
            return handler
        problem = self._problem(handler_call_details.invocation_metadata or ())
        return handler if problem is None else _rejecting(handler, problem)

    def _problem(self, metadata) -> str | None:
        values = [value for key, value in metadata if key == "authorization"]
        if not values:
            return "missing 'authorization: Bearer <token>' metadata"
        scheme, _, token = str(values[0]).partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "authorization metadata must be 'Bearer <token>'"
        # Compare against every token in constant time: timing reveals nothing.
        matches = [hmac.compare_digest(token.strip().encode(), known) for known in self._tokens]
        return None if any(matches) else "invalid bearer token"


def _rejecting(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that fails with UNAUTHENTICATED."""

    async def reject(_request, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def reject_stream(_request, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator, as streaming handlers are

    kwargs = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(reject_stream, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(reject, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(reject_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(reject, **kwargs)
