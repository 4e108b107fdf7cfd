"""Error answers that cannot themselves fail on hostile input.

A 4xx answer often quotes what the client sent. FastAPI's default 422 handler
echoes the offending input verbatim, so a body like `Infinity` or a string with
a lone surrogate (`"\\udbfd"`, valid JSON) made the error response itself fail
to encode and the client got a 500. Here every answer is encoded as ASCII JSON,
non-finite numbers become strings, and validation errors never echo the input.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)

_MAX_ERRORS = 10
_MAX_TEXT = 300


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats as strings and long strings cut (for error bodies)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value[:_MAX_TEXT]
    if isinstance(value, dict):
        return {str(k)[:_MAX_TEXT]: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)[:_MAX_TEXT]


class SafeJSONResponse(JSONResponse):
    """A JSONResponse that always encodes: ASCII with escapes, no NaN/Infinity."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(
            json_safe(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")
        )
        return text.encode("ascii")


async def validation_error(request: Request, error: Exception) -> SafeJSONResponse:
    """422 for a body or parameter of the wrong shape: `detail` says where and what in
    sentences (stream.request_errors), `errors` lists them for programs; never the input."""
    from stream.request_errors import describe_validation_errors

    errors = error.errors() if isinstance(error, RequestValidationError) else []
    listed = [
        {"loc": list(item.get("loc", ())), "msg": item.get("msg", ""), "type": item.get("type", "")}
        for item in errors[:_MAX_ERRORS]
    ]
    try:
        detail = describe_validation_errors(errors, request.scope.get("endpoint"))
    except Exception:  # a sentence that cannot be made must not turn this 422 into a 500
        logger.exception("describing the validation errors of %s failed", request.url.path)
        detail = "the request is not valid: " + "; ".join(
            f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in listed
        )
    return SafeJSONResponse({"detail": detail, "errors": listed}, status_code=422)
