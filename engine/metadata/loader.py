"""Read metadata trees, layer them (system -> base -> industry -> plugins -> site), build the model.

Each document is checked against the JSON Schema of its kind; the layers are merged (a later layer
may add entities, add fields, or override properties, never remove what an earlier one declared);
then field types and cross-references are checked. Every problem is collected with file:line
and reported at once in one ``MetadataError``.

The loader knows two kinds of document of its own, ``entity`` and ``role``; every other kind
(``automation``, ``dashboard``, a plugin's) and every check beyond the structure of entities and
roles (the formula language's, the workflow's) is given to it: ``kinds`` (``DocumentKind``: name,
JSON Schema, check) and ``checks`` (``check(model=, declared=, roles=, problems=, functions=, plugins=)``).
``engine.runtime.load_model_from`` gathers them from the plugins.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import jsonschema
import yaml

from .checks import check_model
from .declared import Declared, Problems
from .errors import Location, MetadataError
from .model import AppModel, Change, Entity, Field, Index, Label, digest_of
from .roles import build_roles, check_roles, merge_roles
from .source import Document, read_documents

if TYPE_CHECKING:
    from engine.fields.base import FieldTypeRegistry
    from engine.plugins import DocumentKind

SCHEMA_DIR = Path(__file__).parent / "schemas"
#: The document kinds the loader builds the model from; every other kind is given to it.
OWN_KINDS = ("entity", "role")
SUFFIXES = {".yaml", ".yml", ".json"}
#: Properties a later layer may not change: they decide how values are stored.
FIXED_FIELD_PROPS = ("type", "to")

__all__ = ["Declared", "Problems", "load_model", "kind_schemas"]


@lru_cache(maxsize=None)
def _validator(path: Path) -> jsonschema.protocols.Validator:
    schema = json.loads(path.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def kind_schemas(kinds: Sequence["DocumentKind"] = ()) -> dict[str, jsonschema.protocols.Validator]:
    """Document kind -> validator: the loader's own kinds (``schemas/<kind>.schema.json``) and ``kinds``."""
    out = {kind: _validator(SCHEMA_DIR / f"{kind}.schema.json") for kind in OWN_KINDS}
    for kind in kinds:
        if kind.name in out:
            raise ValueError(f"document kind {kind.name!r} is registered twice")
        out[kind.name] = _validator(Path(kind.schema))
    return dict(sorted(out.items()))


def load_model(layers: Iterable[tuple[str, Path]], registry: "FieldTypeRegistry", functions=None, *,
               kinds: Sequence["DocumentKind"] = (), checks: Sequence[Callable] = (), plugins=None) -> AppModel:
    """Load and validate every layer into one ``AppModel``; raise ``MetadataError`` listing all problems.

    ``registry`` holds the field types; ``kinds`` the document kinds beyond entities and roles, each
    checked with ``check(model=, documents=, problems=, functions=, plugins=)``; ``checks`` the
    model checks, ``check(model=, declared=, roles=, problems=, functions=, plugins=)``. ``functions``
    (the formula functions) and ``plugins`` (the plugin manager the kinds and checks came from, for
    what other plugins contribute, e.g. automation actions) are handed to the checks. A check may
    accept any subset of those keywords."""
    problems = Problems()
    layers = [(name, Path(path)) for name, path in layers]
    documents = _read_layers(layers, kind_schemas(kinds), problems)
    entities = _merge_entities(documents.pop("entity", []), problems)
    roles = merge_roles(documents.get("role", []), problems)
    model = replace(_build(entities, documents, layers, registry, problems), roles=MappingProxyType(build_roles(roles)))
    check_model(model, entities, problems)
    check_roles(model, roles, problems)
    for check in checks:
        _call(check, model=model, declared=entities, roles=roles, problems=problems, functions=functions,
              plugins=plugins)
    for kind in kinds:
        if kind.check is not None:
            _call(kind.check, model=model, documents=documents.get(kind.name, []), problems=problems,
                  functions=functions, plugins=plugins)
    if problems:
        raise MetadataError(list(problems))
    return model


def _call(check: Callable, **kwargs: Any) -> None:
    """Call ``check`` with the keywords it accepts (all of them if it takes ``**kwargs``), the way
    pluggy calls a hook: adding a keyword never breaks an existing check."""
    params = inspect.signature(check).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    check(**kwargs)


# -- reading ------------------------------------------------------------------------------------

def _read_layers(layers: list[tuple[str, Path]], schemas: dict, problems: Problems) -> dict[str, list[Document]]:
    by_kind: dict[str, list[Document]] = {}
    for layer, folder in layers:
        if not folder.is_dir():
            if layer not in ("system",):
                problems.add(Location(layer, str(folder), 0), f"metadata folder of layer {layer} does not exist")
            continue
        for file in sorted(p for p in folder.rglob("*") if p.suffix in SUFFIXES and p.is_file()):
            for doc in _read_file(file, layer, problems):
                kind = _kind_of(doc, schemas, problems)
                if kind and _schema_ok(doc, schemas[kind], problems):
                    by_kind.setdefault(kind, []).append(doc)
    return by_kind


def _read_file(file: Path, layer: str, problems: Problems) -> list[Document]:
    try:
        return read_documents(file, layer, _display(file))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problems.add(Location(layer, _display(file), line), f"not valid YAML/JSON: {exc.problem or exc}")
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        problems.add(Location(layer, _display(file), 0), f"cannot be read: {exc}")
    return []


def _display(file: Path) -> str:
    try:
        return str(file.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(file)


def _kind_of(doc: Document, schemas: dict, problems: Problems) -> str | None:
    if not isinstance(doc.data, dict):
        problems.add(Location(doc.layer, doc.file, doc.start_line), "a document must be a mapping")
        return None
    kinds = [k for k in schemas if k in doc.data]
    if len(kinds) != 1:
        problems.add(Location(doc.layer, doc.file, doc.start_line),
                     f"a document must have exactly one of the keys {', '.join(sorted(schemas))} "
                     f"naming its kind; found {', '.join(kinds) or 'none'}")
        return None
    return kinds[0]


def _schema_ok(doc: Document, validator, problems: Problems) -> bool:
    ok = True
    for error in sorted(validator.iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path))):
        path = list(error.absolute_path)
        if "propertyNames" in error.schema_path:
            path.append(error.instance)
            message = f"name {error.instance!r} must be snake_case (lower-case letters, digits, _)"
        elif error.validator == "additionalProperties":
            message = f"unknown property: {error.message.split('(')[-1].rstrip(')')}"
        else:
            message = error.message
        problems.add(Location(doc.layer, doc.file, doc.line(path), "/".join(map(str, path))), message)
        ok = False
    return ok


# -- merging ------------------------------------------------------------------------------------

def _merge_entities(docs: list[Document], problems: Problems) -> dict[str, Declared]:
    entities: dict[str, Declared] = {}
    seen: dict[tuple[str, str], Location] = {}
    for doc in docs:
        name = doc.data["entity"]
        here = Location(doc.layer, doc.file, doc.start_line, "")
        first = seen.setdefault((name, doc.layer), here)
        if first is not here:
            problems.add(here, f"entity {name!r} is declared twice in layer {doc.layer} "
                               f"(first at {first.file}:{first.line}); a layer declares an entity once")
            continue
        decl = entities.get(name)
        if decl is None:
            decl = entities[name] = Declared(name, here)
        changed = []
        for key, value in doc.data.items():
            if key in ("entity", "fields"):
                continue
            if key in ("validations", "indexes") and key in decl.props:
                value = _merge_named(decl.props[key], value)
            elif key == "layouts" and key in decl.props:
                value = {**decl.props[key], **value}   # per layout: a new list view keeps the form
            if key in decl.props and decl.props[key] != value:
                changed.append(key)
            decl.props[key] = value
            decl.where[key] = (doc, (key,))
        for fname, fprops in (doc.data.get("fields") or {}).items():
            _merge_field(decl, fname, fprops or {}, doc, problems, changed)
        if decl.origin is not here and changed:
            decl.changes.append(Change(here, tuple(changed)))
    for decl in entities.values():
        _title_formula(decl, problems)
    return entities


#: The field a title formula is stored in (``title: {formula: ...}``).
TITLE_FIELD = "display_name"


def _title_formula(decl: Declared, problems: Problems) -> None:
    """``title: {formula: "..."}`` becomes a stored, searchable text formula field ``display_name``
    and the title names it: lists, lookups, search and exports read titles from one column."""
    title = decl.props.get("title")
    if not isinstance(title, dict):
        return
    doc, base = decl.where.get("title", (None, ()))
    if TITLE_FIELD in decl.fields and decl.fields[TITLE_FIELD].props.get("type") != "formula":
        problems.add(decl.loc("title"), f"entity {decl.name}: a title formula is stored in the field "
                                        f"{TITLE_FIELD!r}, which the entity already declares")
        return
    field = decl.fields.setdefault(TITLE_FIELD, Declared(TITLE_FIELD, decl.loc("title")))
    field.props.update({"type": "formula", "returns": "text", "expr": title.get("formula", ""),
                        "searchable": True, "label": title.get("label") or {"en": "Name", "zh": "名称"}})
    if doc is not None:
        for key in ("type", "returns", "searchable", "label"):
            field.where[key] = (doc, base)
        field.where["expr"] = (doc, (*base, "formula"))
    decl.props["title"] = TITLE_FIELD


def _merge_field(entity: Declared, name: str, props: dict, doc: Document, problems: Problems,
                 changed: list[str]) -> None:
    path = ("fields", name)
    here = Location(doc.layer, doc.file, doc.line(path), "/".join(path))
    decl = entity.fields.get(name)
    if decl is None:
        decl = entity.fields[name] = Declared(name, here)
        if entity.origin.layer != doc.layer:
            changed.append(f"fields/{name}")
    else:
        for key in FIXED_FIELD_PROPS:
            if key in props and key in decl.props and props[key] != decl.props[key] \
                    and not _widens_targets(decl.props[key], props[key]):
                problems.add(Location(doc.layer, doc.file, doc.line((*path, key)), "/".join((*path, key))),
                             f"field {entity.name}.{name} was declared with {key} {decl.props[key]!r} at "
                             f"{decl.origin.file}:{decl.origin.line}; a later layer cannot change its {key}")
                props = {k: v for k, v in props.items() if k != key}   # keep the earlier one: no knock-on errors
        keys = tuple(k for k in props if decl.props.get(k) != props[k])
        if keys:
            decl.changes.append(Change(here, keys))
            changed.append(f"fields/{name}")
    for key, value in props.items():
        decl.props[key] = value
        decl.where[key] = (doc, (*path, key))


def _widens_targets(old, new) -> bool:
    """A reference's ``to`` list may grow in a later layer: nothing stored changes."""
    return isinstance(old, list) and isinstance(new, list) and set(new) >= set(old)


def _merge_named(old: list, new: list) -> list:
    """Lists of named items merge by name: a later item with the same name replaces the earlier."""
    merged = {item.get("name") or id(item): item for item in old}
    merged.update({item.get("name") or id(item): item for item in new})
    return list(merged.values())


# -- building -----------------------------------------------------------------------------------

def _build(entities: dict[str, Declared], documents: dict[str, list[Document]],
           layers: list[tuple[str, Path]], registry: "FieldTypeRegistry", problems: Problems) -> AppModel:
    built = {}
    for name, decl in entities.items():
        fields = {}
        for fname, fdecl in decl.fields.items():
            made = _build_field(decl, fdecl, registry, problems)
            if made is not None:
                fields[fname] = made
        for fname, made in list(fields.items()):
            if made.type.computed and "expr" in made.props and made.type.stored:
                on_read = made.type.reads_other_records(made, fields)
                fields[fname] = replace(made, stored_here=not on_read)
        props = decl.props
        indexes = tuple(Index(i.get("name"), tuple(i["fields"]), bool(i.get("unique")))
                        for i in props.get("indexes", ()))
        built[name] = Entity(
            name=name,
            label=Label.of(props.get("label"), name),
            plural=Label.of(props.get("plural") or props.get("label"), name),
            fields=MappingProxyType(fields),
            title=props.get("title") or ("name" if "name" in fields else "id"),
            module=props.get("module", "general"),
            indexes=indexes,
            layouts=MappingProxyType(dict(props.get("layouts") or {})),
            validations=tuple(props.get("validations") or ()),
            workflow=props.get("workflow"),
            demo=MappingProxyType(dict(props.get("demo") or {})),
            origin=decl.origin,
            changes=tuple(decl.changes),
            props=MappingProxyType(dict(props)),
        )
    _resolve(built)
    raw = {"entities": {n: {"props": d.props, "fields": {f: fd.props for f, fd in d.fields.items()}}
                        for n, d in sorted(entities.items())},
           "documents": {k: [d.data for d in v] for k, v in sorted(documents.items())}}
    return AppModel(
        entities=MappingProxyType(built),
        documents=MappingProxyType({k: tuple(d.data for d in v) for k, v in documents.items()}),
        layers=tuple((n, str(p)) for n, p in layers),
        digest=digest_of(raw),
    )


def _resolve(built: dict[str, Entity]) -> None:
    """Give each field type the whole model once built (a rollup finds the child field it aggregates)."""
    for name, ent in list(built.items()):
        fields = {fname: made.type.resolve(made, built) for fname, made in ent.fields.items()}
        if any(fields[f] is not ent.fields[f] for f in fields):
            built[name] = replace(ent, fields=MappingProxyType(fields))


def _build_field(entity: Declared, decl: Declared, registry: "FieldTypeRegistry", problems: Problems) -> Field | None:
    type_name = decl.props.get("type")
    if type_name is None:
        problems.add(decl.origin, f"field {entity.name}.{decl.name} has no type "
                                  f"(a later layer can only change fields an earlier layer declared)")
        return None
    ftype = registry.get(type_name)
    if ftype is None:
        problems.add(decl.loc("type"), f"unknown field type {type_name!r}; known types: {', '.join(registry.names())}")
        return None
    ok = True
    for key in decl.props:
        if key not in ftype.allowed_props():
            problems.add(decl.loc(key), f"property {key!r} does not apply to {_a(type_name)} field")
            ok = False
    for key in ftype.required_props:
        if key not in decl.props:
            problems.add(decl.loc("type"), f"{_a(type_name).capitalize()} field needs the property {key!r}")
            ok = False
    for key, schema in ftype.props.items():
        if key in decl.props:
            for error in jsonschema.Draft202012Validator(schema).iter_errors(decl.props[key]):
                problems.add(decl.loc(key, *error.absolute_path), f"{key}: {error.message}")
                ok = False
    if not ok:
        return None
    return Field(name=decl.name, type=ftype, label=Label.of(decl.props.get("label"), decl.name),
                 props=MappingProxyType(dict(decl.props)), origin=decl.origin, changes=tuple(decl.changes))


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"
