"""ASGI guard in front of every route: API key check and request body size limit.

Written as plain ASGI (not a FastAPI dependency) so that it covers every path, unknown ones
included, and so that an oversized body is refused while it is read, before any of it is parsed.
"""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse

from .errors import error_body


class Guard:
    """401 without ``Authorization: Bearer <api_key>`` (when a key is set); 413 over ``max_body_bytes``."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key is not None and not self._authorised(headers.get("authorization", "")):
            message = ("missing API key: send 'Authorization: Bearer <key>'" if "authorization" not in headers
                       else "invalid API key")
            response = JSONResponse(error_body(401, message, code="invalid_api_key"), status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._too_large(scope, receive, send)
        # Read the body here, counting bytes, so a client that lies about (or omits) its length
        # is cut off at the limit; then hand the body to the app as if freshly received.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return await self._too_large(scope, receive, send)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _authorised(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        # The bytes the client sent (headers were decoded as latin-1) against the key's, which
        # ServeConfig keeps to printable ASCII. compare_digest: the time taken must not reveal how
        # much of the key matched.
        sent = token.strip().encode("latin-1")
        return scheme.lower() == "bearer" and hmac.compare_digest(sent, self.api_key.encode("ascii"))

    async def _too_large(self, scope, receive, send):
        message = f"request body is larger than this server's limit of {self.max_body_bytes} bytes"
        response = JSONResponse(error_body(413, message, code="request_too_large"), status_code=413)
        await response(scope, receive, send)
