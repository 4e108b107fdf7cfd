"""Sentences for requests FastAPI could not validate (the 422 `detail`).

FastAPI's own 422 answer is pydantic's list of errors, e.g.
`[{"loc": ["body", "file"], "msg": "Field required", "type": "missing"}]`: the contract
(DESIGN.md) asks for a `detail` that says what was wrong, so here each error becomes a
sentence naming the field, where it goes and what is wrong with it:

    the form field 'file' is missing: send the photo as multipart form field 'file'
    the JSON field 'type' should be 'offer'
    the JSON field 'sdp' is missing: it holds the browser's SDP offer
    the body is not valid JSON (Expecting value at character 0)

What a field holds comes from the route: `File(description=...)`, `Form(description=...)`
or `Field(description=...)` on the body model. Sentences never quote the input.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import UploadFile
from fastapi import params as fastapi_params
from pydantic import BaseModel
from pydantic.fields import FieldInfo

MAX_SENTENCES = 10
_JSON_BODY = "send a JSON object with Content-Type: application/json"
_OBJECT_TYPES = {"model_attributes_type", "model_type", "dict_type"}
# pydantic's "Input should be ...", "String should have ..." read as "<field> should ...".
_SHOULD = re.compile(r"^[A-Z][a-z]+ (should .+)$")


@dataclass(frozen=True)
class RequestField:
    """One field of a request as a sentence names it.

    where: "form field", "JSON field", "query parameter", "path parameter"...
    name: the field's name, nested JSON fields dotted ("effect.name").
    description: what it holds ("the photo"), from the route; None when not given.
    is_file: a file upload (multipart).
    """

    where: str
    name: str
    description: str | None = None
    is_file: bool = False

    def __str__(self) -> str:
        return f"the {self.where} {self.name!r}"


def describe_validation_errors(
    errors: Sequence[Mapping[str, Any]], endpoint: Callable[..., Any] | None
) -> str:
    """One sentence per error (at most MAX_SENTENCES), joined by "; ".

    errors: RequestValidationError.errors(); endpoint: the route's function (for what
    its fields hold), or None.
    """
    parameters = _parameters(endpoint)
    sentences = [_sentence(error, parameters) for error in errors[:MAX_SENTENCES]]
    return "; ".join(dict.fromkeys(sentences)) or "the request is not valid"


def _sentence(error: Mapping[str, Any], parameters: Mapping[str, Any]) -> str:
    loc = tuple(error.get("loc") or ())
    kind = str(error.get("type", ""))
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error")
        at = f" at character {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
        return (
            f"the body is not valid JSON ({reason}{at})" if reason else "the body is not valid JSON"
        )
    if loc == ("body",):
        if kind == "missing":
            return f"the request has no body: {_JSON_BODY}"
        return f"the body is not a JSON object: {_JSON_BODY}"
    field = _field(loc, parameters)
    holds = field.description or "it"
    if kind == "missing" and field.where == "form field":
        return f"{field} is missing: send {holds} as multipart form field {field.name!r}"
    holding = f": it holds {field.description}" if field.description else ""
    if kind == "missing":
        return f"{field} is missing{holding}"
    if field.is_file:
        return (
            f"{field} must be a file, not text: send {holds} as multipart form field {field.name!r}"
        )
    if kind in _OBJECT_TYPES:
        return f"{field} must be a JSON object{holding}"
    return f"{field} {_predicate(str(error.get('msg', '')))}"


def _predicate(message: str) -> str:
    """pydantic's message as the rest of a sentence about the field."""
    should = _SHOULD.match(message)
    if should:
        return should.group(1)
    return f"is not valid: {message.removeprefix('Value error, ')}"


def _field(loc: tuple[Any, ...], parameters: Mapping[str, Any]) -> RequestField:
    """The field at `loc` ("body", "query", "path"... then names and list indices)."""
    source, path = loc[0], list(loc[1:])
    name = _dotted(path) or str(source)
    if source != "body":
        info = _field_info(parameters.get(str(path[0]))) if path else None
        return RequestField(f"{source} parameter", name, info and info.description)
    first = parameters.get(str(path[0])) if path else None
    if first is not None and _is_form(first):
        info = _field_info(first)
        return RequestField("form field", name, info and info.description, _is_upload(first))
    if first is not None and _model(first) is not None:  # an embedded body parameter
        return RequestField("JSON field", _dotted(path[1:]) or name, _describe(first, path[1:]))
    models = [hint for hint in parameters.values() if _model(hint) is not None]
    body = models[0] if len(models) == 1 else None
    return RequestField("JSON field", name, _describe(body, path))


def _describe(hint: Any, path: Sequence[Any]) -> str | None:
    """The description of the field at `path` inside the body model `hint`."""
    description = None
    for step in path:
        model = _model(hint)
        if isinstance(step, int) or model is None:
            continue  # a list index, or below a model: the last description stays
        info = model.model_fields.get(step)
        if info is None:
            return None
        description, hint = info.description, info.annotation
    return description


def _dotted(path: Sequence[Any]) -> str:
    name = ""
    for step in path:
        name += f"[{step}]" if isinstance(step, int) else f".{step}" if name else str(step)
    return name


def _parameters(endpoint: Callable[..., Any] | None) -> dict[str, Any]:
    """The endpoint's parameters and their annotations (Annotated metadata kept)."""
    if endpoint is None:
        return {}
    try:
        hints = typing.get_type_hints(endpoint, include_extras=True)
        names = inspect.signature(endpoint).parameters
    except (NameError, TypeError, ValueError):
        return {}
    return {name: hints[name] for name in names if name in hints}


def _unwrapped(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """(the type, its Annotated metadata)."""
    if typing.get_origin(hint) is typing.Annotated:
        base, *extras = typing.get_args(hint)
        return base, tuple(extras)
    return hint, ()


def _field_info(hint: Any) -> FieldInfo | None:
    return next((x for x in _unwrapped(hint)[1] if isinstance(x, FieldInfo)), None)


def _is_upload(hint: Any) -> bool:
    base = _unwrapped(hint)[0]
    options = typing.get_args(base) or (base,)  # UploadFile | None
    return any(isinstance(option, type) and issubclass(option, UploadFile) for option in options)


def _is_form(hint: Any) -> bool:
    return _is_upload(hint) or isinstance(_field_info(hint), fastapi_params.Form)


def _model(hint: Any) -> type[BaseModel] | None:
    base = _unwrapped(hint)[0]
    return base if isinstance(base, type) and issubclass(base, BaseModel) else None
