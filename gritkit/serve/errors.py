"""OpenAI-style error objects and the handlers that turn every failure into one.

Every error the server answers has the body ``{"error": {"message", "type", "param", "code"}}``
that OpenAI clients parse, so a client sees e.g. ``openai.BadRequestError`` with a message
naming the field at fault rather than a bare status line.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("gritkit.serve")

# HTTP status -> the OpenAI error "type" a client expects with it.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "invalid_request_error", 503: "overloaded_error",
               500: "server_error"}


class APIError(Exception):
    """A failure answered to the client with ``status`` and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """The JSON body of an error response."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error_body(error.status, error.message, error.param, error.code), status_code=error.status,
                        headers=error.headers)


# Names pydantic puts into an error location for the members of a union ("input.str..."):
# they say which alternative failed, not where, so they are left out of the location shown.
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _location(loc: tuple) -> str:
    # ("body", "messages", 0, "content") -> "messages[0].content"
    text = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier() and part not in _UNION_TAGS:
            text += f".{part}" if text else part
    return text or "body"


def _describe(errors: list[dict]) -> tuple[str, str]:
    """One message for the first field at fault, with every alternative it failed.

    A validator's own error (type ``value_error``, e.g. a lone surrogate in a text) says exactly
    what is wrong, so it alone is shown, rather than the type mismatches of a union's other
    alternatives ("input: Input should be a valid string or ...").
    """
    chosen = [e for e in errors if e.get("type") == "value_error"][:1] or errors
    where = _location(tuple(chosen[0].get("loc", ())))
    reasons = list(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in chosen
                                 if _location(tuple(e.get("loc", ()))) == where))
    return where, f"{where}: {' or '.join(reasons)}"


def install_error_handlers(app: FastAPI) -> None:
    """Answer validation failures with 400, HTTP errors and crashes with OpenAI-style bodies."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        # FastAPI answers 422 by default; OpenAI answers a malformed request with 400.
        errors = exc.errors() or [{"loc": ("body",), "msg": "invalid request", "type": "invalid"}]
        if errors[0].get("type") == "json_invalid":
            detail = errors[0].get("ctx", {}).get("error", errors[0]["msg"])
            return error_response(APIError(400, f"request body is not valid JSON: {detail}", code="invalid_json"))
        where, message = _describe(errors)
        return error_response(APIError(400, message, param=where, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        return error_response(APIError(exc.status_code, message, headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        # A bug answers 500 for this request only; the process and the model worker carry on.
        # The exception is logged, never shown: its text may name files, settings or model internals.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(APIError(500, "internal error (the server log has the details)", code="internal_error"))
