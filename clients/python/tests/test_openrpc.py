"""The client's result types against the server's OpenRPC document (``rpc.discover`` of a
real ``fabric serve``): each dataclass has exactly the members of the schemas it is read
from, may be absent (``Optional``, or an empty default) exactly where the document lets the
server leave a member out, and has the JSON type the document gives each member."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Any, Dict, List, Optional

import pytest

from fabric_client import Attempt, Client, Module, Stats, Submitted, Task, TaskEvent, TaskPage, Usage

SCHEMAS = "#/components/schemas/"

#: Each result type and where the document describes what it is read from: schemas of
#: ``components.schemas`` by name, or the params of a notification of ``x-notifications``.
MODELS = {
    Task: ["Task"],
    Attempt: ["Attempt"],
    Usage: ["Usage"],
    Submitted: ["Submitted"],
    TaskPage: ["TaskPage"],
    # module.list entries and module.put's result (which has no created_at or name).
    Module: ["ModuleEntry", "ModulePutResult"],
    Stats: ["FabricStats"],
    TaskEvent: ["notification:task.event", "notification:task.events_dropped"],
}

#: Members a class has that are not the JSON object's: the notification's method name.
ENVELOPE = {TaskEvent: {"method"}}


@pytest.fixture(scope="module")
def document(server) -> Dict[str, Any]:
    with Client(server.url, timeout=30) as client:
        return client.call("rpc.discover")


def resolve(document: Dict[str, Any], schema: Dict[str, Any]) -> Dict[str, Any]:
    """The schema a ``$ref`` (or a one-member ``allOf`` around one) points at."""
    while True:
        if "$ref" in schema:
            assert schema["$ref"].startswith(SCHEMAS), schema
            schema = document["components"]["schemas"][schema["$ref"][len(SCHEMAS):]]
        elif len(schema.get("allOf", [])) == 1:
            schema = schema["allOf"][0]
        else:
            return schema


def schema_of(document: Dict[str, Any], where: str) -> Dict[str, Any]:
    if where.startswith("notification:"):
        name = where[len("notification:"):]
        found = [n for n in document["x-notifications"] if n["name"] == name]
        assert found, f"{name} is not in x-notifications"
        return resolve(document, found[0]["x-params"])
    assert where in document["components"]["schemas"], f"no schema {where}"
    return resolve(document, document["components"]["schemas"][where])


def json_type(document: Dict[str, Any], schema: Dict[str, Any]) -> Optional[str]:
    """The one JSON type a schema allows besides null, when it says one."""
    schema = resolve(document, schema)
    if "anyOf" in schema:
        types = {json_type(document, s) for s in schema["anyOf"]} - {"null"}
        return types.pop() if len(types) == 1 else None
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        types = [t for t in types if t != "null"]
        return types[0] if len(types) == 1 else None
    values = schema.get("enum") or [s.get("const") for s in schema.get("oneOf", [])]
    if values and all(isinstance(v, str) for v in values):
        return "string"
    return None


def unwrap_optional(hint: Any) -> typing.Tuple[Any, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return hint, False


def python_json_type(hint: Any) -> Optional[str]:
    origin = typing.get_origin(hint) or hint
    if hint is Any:
        return None
    if dataclasses.is_dataclass(hint) or origin in (dict, Dict):
        return "object"
    return {str: "string", datetime: "string", bool: "boolean", int: "integer",
            float: "number", list: "array", List: "array"}.get(origin)


def members(cls) -> Dict[str, Any]:
    hints = typing.get_type_hints(cls)
    skip = {"raw"} | ENVELOPE.get(cls, set())
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(cls) if f.name not in skip}


def may_be_absent(hint: Any, field: dataclasses.Field) -> bool:
    """Whether the class represents a member the server left out: ``Optional``, or a
    collection, flag or count that is then empty (its default)."""
    inner, optional = unwrap_optional(hint)
    if optional:
        return True
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = field.default_factory()  # type: ignore[misc]
    else:
        default = field.default
    origin = typing.get_origin(inner) or inner
    return origin in (list, List, dict, Dict, bool, int) and not default


def problems(document: Dict[str, Any], cls: type, where: List[str]) -> List[str]:
    """Where ``cls`` and the schemas it is read from disagree: members only on one side,
    ``Optional`` where the server always sends the member or no way to be absent where it
    may leave it out, another JSON type."""
    found = []
    schemas = [schema_of(document, w) for w in where]
    ours = members(cls)
    described = set().union(*(s.get("properties", {}) for s in schemas))
    for name in sorted(set(ours) - described):
        found.append(f"{name}: only in the client")
    for name in sorted(described - set(ours)):
        found.append(f"{name}: only in the document")
    for name, (hint, field) in ours.items():
        if name not in described:
            continue
        always = all(name in s.get("required", []) for s in schemas)
        inner, optional = unwrap_optional(hint)
        if optional and always:
            found.append(f"{name}: Optional, but the server always sends it")
        if not always and not may_be_absent(hint, field):
            found.append(f"{name}: may be absent, but {hint} has no value for that")
        python = python_json_type(inner)
        for schema in schemas:
            if name in schema.get("properties", {}) and python is not None:
                theirs = json_type(document, schema["properties"][name])
                if theirs not in (None, python):
                    found.append(f"{name}: {python} here, {theirs} in the document")
    return found


@pytest.mark.parametrize("cls", list(MODELS), ids=lambda cls: cls.__name__)
def test_each_result_type_matches_the_schemas_it_is_read_from(document, cls):
    assert problems(document, cls, MODELS[cls]) == []


def test_a_class_that_drifted_from_the_document_is_caught(document):
    @dataclasses.dataclass
    class Drifted:
        raw: Dict[str, Any] = dataclasses.field(default_factory=dict)
        id: int = 0
        state: Optional[str] = None
        shiny: bool = False

    assert problems(document, Drifted, ["Submitted"]) == [
        "shiny: only in the client",
        "deduplicated: only in the document",
        "id: integer here, string in the document",
        "state: Optional, but the server always sends it",
    ]
