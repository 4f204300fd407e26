"""A checker of the JSON Schema subset kvm/schema/*.json uses (type, const, enum, properties,
required, additionalProperties: false, items, minimum, minItems): what a validator of draft
2020-12 would say of these keywords, without a dependency. Any other keyword is refused, so a
schema file cannot lean on one this checker would silently ignore."""

KNOWN = {"$schema", "$id", "title", "type", "const", "enum", "properties", "required",
         "additionalProperties", "items", "minimum", "minItems"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(value, name):
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, TYPES[name])


def errors(value, schema, where="$"):
    """[text] of every way value breaks schema (empty: it conforms)."""
    unknown = set(schema) - KNOWN
    if unknown:
        return [f"{where}: schema keyword(s) this checker does not know: {sorted(unknown)}"]
    out = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, n) for n in names):
            return [f"{where}: {value!r} is not of type {names}"]
    if "const" in schema and (value != schema["const"] or type(value) is not type(schema["const"])):
        out.append(f"{where}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and _is(value, "number") and value < schema["minimum"]:
        out.append(f"{where}: {value!r} is below {schema['minimum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out += [f"{where}: {key!r} is missing" for key in schema.get("required", []) if key not in value]
        if schema.get("additionalProperties") is False:
            out += [f"{where}: {key!r} is not allowed" for key in value if key not in props]
        for key, sub in props.items():
            if key in value:
                out += errors(value[key], sub, f"{where}.{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{where}: fewer than {schema['minItems']} items")
        for i, item in enumerate(value):
            out += errors(item, schema.get("items", {}), f"{where}[{i}]")
    return out
