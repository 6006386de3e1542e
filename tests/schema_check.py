#!/usr/bin/env python3
"""tests/schema_check.py - a JSON Schema validator for the subset slm.h
converts to grammars, written for the tests (shares no code with slm.h).

  schema_check.py SCHEMA.json < DOCUMENT    exit 0 when valid, 1 with the
                                            reasons on stderr (2: bad schema)
  schema_check.py --self-test               the table of valid/invalid documents

Keywords: type (a name or a list of names), properties, required,
additionalProperties (false, true or a schema), enum, const, items (one
schema), minItems, maxItems, $ref to "#/$defs/..." or "#/definitions/..."
(any local JSON pointer); $defs and definitions hold the targets; title,
description, $schema, $id, $comment, default and examples are annotations.
Any other keyword is an error: a validator must not pass what it does not
check. Documents come from Python's json module, strict (tests/grammar_check.py
refuses NaN and Infinity before this runs). One choice stricter than JSON
Schema: "integer" wants an integer literal (1, not 1.0), which is what a
grammar for integers generates.
"""

import json
import os
import sys

ANNOTATIONS = {'title', 'description', '$schema', '$id', '$comment', 'default', 'examples', '$defs', 'definitions'}
KEYWORDS = {'type', 'properties', 'required', 'additionalProperties', 'enum', 'const', 'items', 'minItems',
            'maxItems', '$ref'} | ANNOTATIONS
TYPES = {'object', 'array', 'string', 'number', 'integer', 'boolean', 'null'}


class SchemaError(ValueError):
    pass


def type_of(v):
    if v is None:
        return 'null'
    if isinstance(v, bool):
        return 'boolean'
    if isinstance(v, int):
        return 'integer'
    if isinstance(v, float):
        return 'number'
    if isinstance(v, str):
        return 'string'
    if isinstance(v, list):
        return 'array'
    if isinstance(v, dict):
        return 'object'
    raise SchemaError("not a JSON value: %r" % (v,))


def canon(v):
    """A value to compare JSON values by (1 == 1.0, true != 1, objects unordered)."""
    t = type_of(v)
    if t in ('integer', 'number'):
        return ('n', v)
    if t == 'array':
        return ('a', tuple(canon(x) for x in v))
    if t == 'object':
        return ('o', frozenset((k, canon(x)) for k, x in v.items()))
    return (t, v)


def resolve(root, ref):
    if not ref.startswith('#'):
        raise SchemaError("$ref %r: only local references are supported" % ref)
    node = root
    for part in ref[1:].split('/')[1:] if ref != '#' else []:
        part = part.replace('~1', '/').replace('~0', '~')
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise SchemaError("$ref %r does not resolve" % ref)
    return node


def validate(root, doc):
    """The list of reasons doc is not valid under the schema root (empty: valid)."""
    errors = []
    check(root, root, doc, '$', errors, 0)
    return errors


def check(root, schema, v, path, errors, depth):
    if depth > 200:
        raise SchemaError("$ref loop")
    if schema is True:
        return
    if schema is False:
        errors.append("%s: the schema false admits nothing" % path)
        return
    if not isinstance(schema, dict):
        raise SchemaError("%s: a schema is an object or a boolean" % path)
    for k in schema:
        if k not in KEYWORDS:
            raise SchemaError("unsupported keyword %r" % k)
    if '$ref' in schema:
        check(root, resolve(root, schema['$ref']), v, path, errors, depth + 1)
    t = type_of(v)
    if 'type' in schema:
        want = schema['type'] if isinstance(schema['type'], list) else [schema['type']]
        for w in want:
            if w not in TYPES:
                raise SchemaError("unknown type %r" % w)
        if not (t in want or (t == 'integer' and 'number' in want)):
            errors.append("%s: %s, not %s" % (path, t, ' or '.join(want)))
            return
    if 'enum' in schema:
        if canon(v) not in [canon(e) for e in schema['enum']]:
            errors.append("%s: %r is not one of the enum %r" % (path, v, schema['enum']))
    if 'const' in schema:
        if canon(v) != canon(schema['const']):
            errors.append("%s: %r is not the const %r" % (path, v, schema['const']))
    if t == 'object':
        props = schema.get('properties', {})
        for name in schema.get('required', []):
            if name not in v:
                errors.append("%s: required property %r missing" % (path, name))
        extra = schema.get('additionalProperties', True)
        for name, x in v.items():
            sub = '%s.%s' % (path, name)
            if name in props:
                check(root, props[name], x, sub, errors, depth + 1)
            elif extra is False:
                errors.append("%s: property %r not allowed (additionalProperties false)" % (path, name))
            else:
                check(root, extra, x, sub, errors, depth + 1)
    if t == 'array':
        if 'items' in schema:
            if not isinstance(schema['items'], (dict, bool)):
                raise SchemaError("items: only one schema for all items is supported")
            for i, x in enumerate(v):
                check(root, schema['items'], x, '%s[%d]' % (path, i), errors, depth + 1)
        if 'minItems' in schema and len(v) < schema['minItems']:
            errors.append("%s: %d items, fewer than minItems %d" % (path, len(v), schema['minItems']))
        if 'maxItems' in schema and len(v) > schema['maxItems']:
            errors.append("%s: %d items, more than maxItems %d" % (path, len(v), schema['maxItems']))


_cache = {}


def load_schema(path):
    s = _cache.get(path)
    if s is None:
        with open(path, 'rb') as f:
            s = _cache[path] = json.loads(f.read().decode('utf-8'))
    return s


SELF_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "score": {"type": "number"},
        "ok": {"type": "boolean"},
        "none": {"type": "null"},
        "color": {"enum": ["red", "green", 3, None]},
        "kind": {"const": "person"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        "child": {"$ref": "#/$defs/node"},
        "old": {"$ref": "#/definitions/old"},
        "either": {"type": ["string", "null"]},
    },
    "required": ["name"],
    "additionalProperties": False,
    "$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "next": {"$ref": "#/$defs/node"}},
                       "required": ["v"], "additionalProperties": False}},
    "definitions": {"old": {"type": "boolean"}},
}

SELF_CASES = [
    ('{"name": "a"}', True),
    ('{}', False),
    ('[]', False),
    ('{"name": 1}', False),
    ('{"name": "a", "extra": 1}', False),
    ('{"name": "a", "age": 3}', True),
    ('{"name": "a", "age": 3.0}', False),
    ('{"name": "a", "age": 3.5}', False),
    ('{"name": "a", "age": true}', False),
    ('{"name": "a", "score": 3}', True),
    ('{"name": "a", "score": -3.5e2}', True),
    ('{"name": "a", "score": "3"}', False),
    ('{"name": "a", "ok": false}', True),
    ('{"name": "a", "ok": 0}', False),
    ('{"name": "a", "none": null}', True),
    ('{"name": "a", "none": 0}', False),
    ('{"name": "a", "color": "red"}', True),
    ('{"name": "a", "color": 3.0}', True),
    ('{"name": "a", "color": null}', True),
    ('{"name": "a", "color": "blue"}', False),
    ('{"name": "a", "color": true}', False),
    ('{"name": "a", "kind": "person"}', True),
    ('{"name": "a", "kind": "Person"}', False),
    ('{"name": "a", "tags": ["x"]}', True),
    ('{"name": "a", "tags": ["x", "y"]}', True),
    ('{"name": "a", "tags": []}', False),
    ('{"name": "a", "tags": ["x", "y", "z"]}', False),
    ('{"name": "a", "tags": [1]}', False),
    ('{"name": "a", "child": {"v": 1}}', True),
    ('{"name": "a", "child": {"v": 1, "next": {"v": 2, "next": {"v": 3}}}}', True),
    ('{"name": "a", "child": {"v": 1, "next": {"next": {"v": 3}}}}', False),
    ('{"name": "a", "child": {"v": 1, "next": {"v": 2, "w": 0}}}', False),
    ('{"name": "a", "old": true}', True),
    ('{"name": "a", "old": "true"}', False),
    ('{"name": "a", "either": null}', True),
    ('{"name": "a", "either": "x"}', True),
    ('{"name": "a", "either": 1}', False),
]

DATA_CASES = {
    'person.json': [('{"name": "Ann", "age": 30}', True), ('{"name": "Ann", "age": 30, "email": "a@b", "height": 1.7}', True),
                    ('{"name": "Ann"}', False), ('{"name": "Ann", "age": 30, "x": 1}', False),
                    ('{"name": "Ann", "age": 30.5}', False)],
    'enums_consts.json': [('{"color": "red", "size": null, "kind": "shirt", "version": 2}', True),
                          ('{"color": "red", "size": true, "kind": "shirt", "version": 2.0}', True),
                          ('{"color": "pink", "size": 1, "kind": "shirt", "version": 2}', False),
                          ('{"color": "red", "size": false, "kind": "shirt", "version": 2}', False),
                          ('{"color": "red", "size": 1, "kind": "shirt", "version": 3}', False)],
    'arrays.json': [('{"tags": ["a"], "pair": [1, 2], "any_length": []}', True),
                    ('{"tags": [], "pair": [1, 2], "any_length": []}', False),
                    ('{"tags": ["a", "b", "c", "d"], "pair": [1, 2], "any_length": []}', False),
                    ('{"tags": ["a"], "pair": [1], "any_length": [true]}', False)],
    'nested.json': [('{"id": 1, "address": {"city": "X", "geo": {"lat": 1.5, "lon": -2}}}', True),
                    ('{"id": 1, "address": {"city": "X", "geo": {"lat": 1.5}}}', False),
                    ('{"id": 1, "address": {"city": "X", "geo": {"lat": 1, "lon": 2, "alt": 3}}}', False)],
    'tree_ref.json': [('{"root": {"label": "a", "child": {"label": "b", "child": {"label": "c"}}}}', True),
                      ('{"root": {"label": "a", "child": {"child": {"label": "c"}}}}', False),
                      ('{"root": {"label": "a", "child": {"label": "b", "kids": []}}}', False)],
    'scalars.json': [('{"n": 1e3, "i": -4, "b": false, "z": null, "s": ""}', True),
                     ('{"n": 1e3, "i": 4.0, "b": false, "z": null, "s": ""}', False),
                     ('{"n": 1e3, "i": 4, "b": false, "z": 0, "s": ""}', False)],
    'definitions_list.json': [('[{"sku": "a", "qty": 1}]', True), ('[]', False),
                              ('[{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}, {"sku": "c", "qty": 3}]', False)],
    'top_integer.json': [('7', True), ('-0', True), ('7.5', False), ('"7"', False)],
}

BAD_SCHEMAS = [
    ({"type": "string", "pattern": "^a$"}, '"a"', "unsupported keyword 'pattern'"),
    ({"$ref": "#/$defs/missing"}, '1', "does not resolve"),
    ({"type": "strin"}, '1', "unknown type"),
    ({"items": [{"type": "string"}]}, '["a"]', "only one schema"),
]


def self_test():
    n = bad = 0
    for text, want in SELF_CASES:
        n += 1
        errors = validate(SELF_SCHEMA, json.loads(text))
        if (not errors) != want:
            bad += 1
            print("FAIL %s: want %s, got %s" % (text, "valid" if want else "invalid", errors or "valid"))
    for schema, text, want in BAD_SCHEMAS:
        n += 1
        try:
            validate(schema, json.loads(text))
            got = "no error"
        except SchemaError as e:
            got = str(e)
        if want not in got:
            bad += 1
            print("FAIL schema %s: want an error with %r, got %r" % (json.dumps(schema), want, got))
    # the schema cases of tests/data/schemas, when they are beside this file
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'schemas')
    for name, docs in DATA_CASES.items():
        path = os.path.join(here, name)
        if not os.path.exists(path):
            continue
        for text, want in docs:
            n += 1
            try:
                errors = validate(load_schema(path), json.loads(text))
            except SchemaError as e:
                errors = ["schema error: %s" % e]
                want = not want  # always a failure
            if (not errors) != want:
                bad += 1
                print("FAIL %s on %s: want %s, got %s" % (name, text, "valid" if want else "invalid", errors or "valid"))
    print("schema_check self-test: %d cases, %d failed" % (n, bad))
    return 1 if bad else 0


def main(argv):
    if argv == ['--self-test']:
        return self_test()
    if len(argv) != 1:
        sys.stderr.write(__doc__)
        return 2
    try:
        schema = load_schema(argv[0])
        data = sys.stdin.buffer.read().decode('utf-8')
        doc = json.loads(data, parse_constant=lambda c: (_ for _ in ()).throw(ValueError("%s is not JSON" % c)))
    except (OSError, ValueError) as e:
        sys.stderr.write("schema_check: %s\n" % e)
        return 1
    try:
        errors = validate(schema, doc)
    except SchemaError as e:
        sys.stderr.write("schema_check: %s: %s\n" % (argv[0], e))
        return 2
    for e in errors:
        sys.stderr.write("schema_check: %s\n" % e)
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
