"""GraphQL over HTTP the way Stash's gqlgen server speaks it.

POST /graphql with {"query", "variables", "operationName"} (GET ?query= for queries only).
A document that does not parse or validate, or whose variables do not fit, is answered with
HTTP 422 and {"errors": [...], "data": null}; a body that is not JSON with 400. Errors raised
while resolving come back with HTTP 200 beside the data, each with its path.
"""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from graphql import (
    DocumentNode,
    FieldNode,
    FormattedExecutionResult,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    execute_sync,
    get_operation_ast,
    parse,
    validate,
)

_CACHED_DOCUMENTS = 256


class RequestRefused(Exception):
    """The request gets this HTTP status and these GraphQL errors, and is not executed."""

    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"] if errors else str(status))
        self.status = status
        self.errors = errors

    def response(self) -> web.Response:
        return web.json_response({"errors": self.errors, "data": None}, status=self.status)


@dataclass(frozen=True)
class GraphQLRequest:
    query: str
    variables: dict[str, Any]
    operation_name: str | None
    document: DocumentNode
    operation: OperationDefinitionNode

    @property
    def root_fields(self) -> list[str]:
        return [node.name.value for node in self.operation.selection_set.selections if isinstance(node, FieldNode)]

    @property
    def introspection_only(self) -> bool:
        selections = self.operation.selection_set.selections
        return all(isinstance(node, FieldNode) and node.name.value.startswith("__") for node in selections)


# Every stashapi client runs the same full introspection when it connects; the answer depends on the
# schema alone, and working it out takes a third of a second, so doubles share it.
@functools.lru_cache(maxsize=8)
def introspect(schema: GraphQLSchema, query: str, operation_name: str | None) -> FormattedExecutionResult:
    return execute_sync(schema, parse(query), operation_name=operation_name).formatted


class Documents:
    """Parses and validates documents against one schema, remembering recent ones (clients repeat theirs)."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self._schema = schema
        self._checked: OrderedDict[str, DocumentNode | RequestRefused] = OrderedDict()
        self.received: set[str] = set()  # every distinct document, valid or not

    async def read(self, request: web.Request) -> GraphQLRequest:
        if request.method == "GET":
            given: dict[str, Any] = dict(request.query)
            given["variables"] = _json_param(given.get("variables"))
        else:
            try:
                given = await request.json()
            except ValueError as error:
                raise _refusal(400, f"json request body could not be decoded: {error}") from None
            if not isinstance(given, dict):
                raise _refusal(400, "json request body could not be decoded: not an object")
        query = given.get("query")
        if not isinstance(query, str) or not query.strip():
            raise _refusal(422, "no operation provided", "GRAPHQL_VALIDATION_FAILED")
        self.received.add(query)
        document = self._check(query)
        operation_name = given.get("operationName") or None
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            missing = f'operation "{operation_name}" not found' if operation_name else "operation name is required"
            raise _refusal(422, missing, "GRAPHQL_VALIDATION_FAILED")
        if request.method == "GET" and operation.operation is not OperationType.QUERY:
            raise _refusal(406, "GET requests only allow query operations")
        variables = given.get("variables") or {}
        if not isinstance(variables, dict):
            raise _refusal(422, "variables must be an object", "GRAPHQL_VALIDATION_FAILED")
        return GraphQLRequest(query, variables, operation_name, document, operation)

    def _check(self, query: str) -> DocumentNode:
        checked = self._checked.get(query)
        if checked is None:
            checked = self._parse_and_validate(query)
            self._checked[query] = checked
            if len(self._checked) > _CACHED_DOCUMENTS:
                self._checked.popitem(last=False)
        else:
            self._checked.move_to_end(query)
        if isinstance(checked, RequestRefused):
            raise checked
        return checked

    def _parse_and_validate(self, query: str) -> DocumentNode | RequestRefused:
        try:
            document = parse(query)
        except GraphQLError as error:
            return RequestRefused(422, [_formatted(error, "GRAPHQL_PARSE_FAILED")])
        errors = validate(self._schema, document)
        if errors:
            return RequestRefused(422, [_formatted(error, "GRAPHQL_VALIDATION_FAILED") for error in errors])
        return document


def request_errors(errors: list[GraphQLError]) -> RequestRefused | None:
    """Errors without a path come before any resolver ran (variables that do not fit): gqlgen answers 422."""
    if errors and all(error.path is None for error in errors):
        return RequestRefused(422, [_formatted(error, "GRAPHQL_VALIDATION_FAILED") for error in errors])
    return None


def _formatted(error: GraphQLError, code: str) -> dict[str, Any]:
    formatted: dict[str, Any] = {**error.formatted}
    formatted["extensions"] = {**(error.extensions or {}), "code": code}
    return formatted


def _refusal(status: int, message: str, code: str | None = None) -> RequestRefused:
    error: dict[str, Any] = {"message": message}
    if code:
        error["extensions"] = {"code": code}
    return RequestRefused(status, [error])


def _json_param(text: str | None) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        raise _refusal(400, "variables could not be decoded") from None
