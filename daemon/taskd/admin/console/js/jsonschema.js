// A task's payload JSON Schema (what pydantic's model_json_schema() emits): checked in the
// browser before a trigger is sent, and described as a readable list of fields.
// The checking is @cfworker/json-schema's (vendor/json-schema: no eval, CSP-safe); this module
// turns its output into one short problem per place in the payload.

import { Validator } from "../vendor/json-schema/index.js";

// Formats pydantic reads more leniently than JSON Schema says (a datetime without a zone, a
// uuid without hyphens, "1:30" as a duration...): left to the server, never refused here.
const LENIENT_FORMATS = new Set(["date-time", "time", "duration", "uuid"]);
// Keywords whose values are data, not schemas: never walked.
const DATA_KEYWORDS = new Set(["const", "enum", "default", "examples", "example"]);
// Keywords that only say "something inside failed": dropped when a deeper problem says what.
const WRAPPERS = new Set([
  "properties", "patternProperties", "items", "prefixItems", "additionalItems", "$ref",
  "$recursiveRef", "allOf", "if", "then", "else", "dependentSchemas", "contains",
  "unevaluatedProperties", "unevaluatedItems", "false",
]);

function withoutLenientFormats(schema) {
  if (Array.isArray(schema)) return schema.map(withoutLenientFormats);
  if (schema === null || typeof schema !== "object") return schema;
  const copy = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === "format" && typeof value === "string" && LENIENT_FORMATS.has(value)) continue;
    copy[key] = DATA_KEYWORDS.has(key) ? value : withoutLenientFormats(value);
  }
  return copy;
}

// "#/address/city" -> ["address", "city"] (cfworker's pointers are URI-encoded).
function pointerParts(pointer) {
  return pointer
    .replace(/^#\/?/, "")
    .split("/")
    .filter((part, index, all) => !(part === "" && all.length === 1))
    .map((part) => decodeURIComponent(part).replace(/~1/g, "/").replace(/~0/g, "~"));
}

// ["address", "items", "0"] -> "address.items[0]"; [] -> "" (the payload itself).
export function pathText(parts) {
  let text = "";
  for (const part of parts) {
    if (/^\d+$/.test(part)) text += `[${part}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(part)) text += text ? `.${part}` : part;
    else text += `[${JSON.stringify(part)}]`;
  }
  return text;
}

function localRef(root, ref) {
  if (typeof ref !== "string" || !ref.startsWith("#")) return undefined;
  let node = root;
  for (const part of pointerParts(ref)) {
    if (node === null || typeof node !== "object") return undefined;
    node = node[part];
  }
  return node;
}

// The subschema a keywordLocation points into ("$ref" segments follow the reference).
function schemaAt(root, keywordLocation) {
  const parts = pointerParts(keywordLocation);
  parts.pop(); // the keyword itself
  let node = root;
  for (const part of parts) {
    if (node === null || typeof node !== "object") return undefined;
    node = part === "$ref" ? localRef(root, node.$ref) : node[part];
  }
  return node;
}

function valueAt(instance, parts) {
  let node = instance;
  for (const part of parts) {
    if (node === null || typeof node !== "object") return undefined;
    node = node[part];
  }
  return node;
}

const TYPE_WORDS = {
  string: "a string", integer: "an integer", number: "a number", boolean: "true or false",
  object: "an object", array: "an array", null: "null",
};

function typeWords(type) {
  const types = Array.isArray(type) ? type : [type];
  return types.map((t) => TYPE_WORDS[t] || String(t)).join(" or ");
}

function isNullSchema(schema) {
  return schema && typeof schema === "object" && schema.type === "null";
}

function jsonList(values) {
  return values.map((v) => JSON.stringify(v)).join(", ");
}

function message(keyword, sub, value, fallback) {
  if (!sub || typeof sub !== "object") return fallback;
  switch (keyword) {
    case "type": return `must be ${typeWords(sub.type)}`;
    case "enum": return `must be one of ${jsonList(sub.enum)}`;
    case "const": return `must be ${JSON.stringify(sub.const)}`;
    case "minimum": return `must be ≥ ${sub.minimum}`;
    case "maximum": return `must be ≤ ${sub.maximum}`;
    case "exclusiveMinimum": return `must be > ${sub.exclusiveMinimum}`;
    case "exclusiveMaximum": return `must be < ${sub.exclusiveMaximum}`;
    case "multipleOf": return `must be a multiple of ${sub.multipleOf}`;
    case "minLength": return `must have at least ${sub.minLength} character${sub.minLength === 1 ? "" : "s"}`;
    case "maxLength": return `must have at most ${sub.maxLength} character${sub.maxLength === 1 ? "" : "s"}`;
    case "pattern": return `must match the pattern ${sub.pattern}`;
    case "format": return `must be a valid ${sub.format}`;
    case "minItems": return `must have at least ${sub.minItems} item${sub.minItems === 1 ? "" : "s"}`;
    case "maxItems": return `must have at most ${sub.maxItems} item${sub.maxItems === 1 ? "" : "s"}`;
    case "uniqueItems": return "must not repeat an item";
    case "minProperties": return `must have at least ${sub.minProperties} properties`;
    case "maxProperties": return `must have at most ${sub.maxProperties} properties`;
    case "not": return "must not match the excluded form";
    case "oneOf": return "must match exactly one of the allowed forms";
    case "anyOf": return "must match one of the allowed forms";
    default: return fallback;
  }
}

// A checker for one schema: check(value) -> [{path: [..], where: "amount" | "", message}].
// A null/absent schema accepts any JSON.
export function compile(schema) {
  if (schema === null || schema === undefined || (typeof schema === "object" && Object.keys(schema).length === 0)) {
    return { check: () => [] };
  }
  const relaxed = withoutLenientFormats(schema);
  const validator = new Validator(relaxed, "2020-12", false);
  return { check: (value) => problemsOf(relaxed, value, validator.validate(value).errors) };
}

function problemsOf(root, instance, errors) {
  const dropped = new Set();
  const nullableAt = new Set(); // instance locations whose anyOf allows null
  const problems = [];
  const seen = new Set();
  const add = (parts, text) => {
    const key = `${parts.join("\u0000")}\u0001${text}`;
    if (seen.has(key)) return;
    seen.add(key);
    problems.push({ path: parts, where: pathText(parts), message: text });
  };
  // anyOf / oneOf first, outermost first: they decide which of their branches' errors count.
  const unions = errors
    .map((error, index) => ({ error, index }))
    .filter(({ error }) => error.keyword === "anyOf" || error.keyword === "oneOf")
    .sort((a, b) => a.error.keywordLocation.length - b.error.keywordLocation.length);
  for (const { error, index } of unions) {
    if (dropped.has(index)) continue;
    const sub = schemaAt(root, error.keywordLocation);
    const branches = sub && Array.isArray(sub[error.keyword]) ? sub[error.keyword] : [];
    const prefix = `${error.keywordLocation}/`;
    const inside = errors.map((e, i) => ({ e, i })).filter(({ e }) => e.keywordLocation.startsWith(prefix));
    const nonNull = branches.map((b, i) => ({ b, i })).filter(({ b }) => !isNullSchema(b));
    const matchedMany = error.keyword === "oneOf" && inside.length === 0;
    if (!matchedMany && nonNull.length === 1 && branches.length === 2) {
      // Optional[X]: the problems of X, "or null" added to a wrong type.
      dropped.add(index);
      const keep = `${prefix}${nonNull[0].i}`;
      for (const { e, i } of inside) {
        if (e.keywordLocation !== keep && !e.keywordLocation.startsWith(`${keep}/`)) dropped.add(i);
      }
      nullableAt.add(error.instanceLocation);
    } else {
      for (const { i } of inside) dropped.add(i);
    }
  }
  errors.forEach((error, index) => {
    if (dropped.has(index)) return;
    const parts = pointerParts(error.instanceLocation);
    const sub = schemaAt(root, error.keywordLocation);
    const value = valueAt(instance, parts);
    if (error.keyword === "required" && sub && Array.isArray(sub.required) && value && typeof value === "object") {
      for (const name of sub.required) if (!(name in value)) add([...parts, name], "is required");
      return;
    }
    if (error.keyword === "additionalProperties" && sub && sub.additionalProperties === false) {
      const known = new Set(Object.keys(sub.properties || {}));
      const patterns = Object.keys(sub.patternProperties || {}).map((p) => new RegExp(p, "u"));
      for (const name of Object.keys(value || {})) {
        if (!known.has(name) && !patterns.some((re) => re.test(name))) add([...parts, name], "is not an allowed property");
      }
      return;
    }
    if (error.keyword === "oneOf" || error.keyword === "anyOf") {
      add(parts, message(error.keyword, sub, value, error.error));
      return;
    }
    if (WRAPPERS.has(error.keyword) || error.keyword === "additionalProperties") {
      const deeper = errors.some(
        (other, i) => i !== index && !dropped.has(i) && other.keywordLocation.startsWith(`${error.keywordLocation}/`),
      );
      if (deeper || error.keyword === "false" || error.keyword === "additionalProperties") {
        const said = problems.some((p) => p.path.join("\u0000") === parts.join("\u0000"));
        if (!deeper && !said && error.keyword === "false") add(parts, "is not allowed");
        return;
      }
    }
    let text = message(error.keyword, sub, value, error.error);
    if (error.keyword === "type" && nullableAt.has(error.instanceLocation)) text += " or null";
    add(parts, text);
  });
  return problems;
}

// ---- JSON text ----------------------------------------------------------------------------

// Where JSON text goes wrong: {at, expected} (Chromium's JSON.parse message says neither the
// line nor the column). A scanner for syntax only: JSON.parse builds the value.
function syntaxError(text) {
  let i = 0;
  const fail = (expected) => {
    throw { at: i, expected };
  };
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i])) i += 1;
  };
  const NUMBER = /-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
  const value = (depth) => {
    ws();
    const c = text[i];
    if (c === "{") {
      i += 1;
      ws();
      if (text[i] === "}") { i += 1; return; }
      for (;;) {
        ws();
        if (text[i] !== '"') fail("a property name in double quotes");
        string();
        ws();
        if (text[i] !== ":") fail("':' after the property name");
        i += 1;
        value(depth + 1);
        ws();
        if (text[i] === ",") { i += 1; continue; }
        if (text[i] === "}") { i += 1; return; }
        fail("',' or '}'");
      }
    } else if (c === "[") {
      i += 1;
      ws();
      if (text[i] === "]") { i += 1; return; }
      for (;;) {
        value(depth + 1);
        ws();
        if (text[i] === ",") { i += 1; continue; }
        if (text[i] === "]") { i += 1; return; }
        fail("',' or ']'");
      }
    } else if (c === '"') {
      string();
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      NUMBER.lastIndex = i;
      const match = NUMBER.exec(text);
      if (!match || match[0] === "-") fail("a number");
      i += match[0].length;
    } else {
      for (const word of ["true", "false", "null"]) {
        if (text.startsWith(word, i)) { i += word.length; return; }
      }
      fail(i >= text.length ? "a value (the text ends here)" : "a value: an object, array, string, number, true, false or null");
    }
  };
  const string = () => {
    i += 1; // the opening quote
    while (i < text.length) {
      const c = text[i];
      if (c === '"') { i += 1; return; }
      if (c === "\\") {
        const next = text[i + 1];
        if (next === "u") {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail("four hex digits after \\u");
          i += 6;
        } else if (next !== undefined && '"\\/bfnrt'.includes(next)) {
          i += 2;
        } else {
          fail("a valid escape (\\\", \\\\, \\n, \\t, \\uXXXX...)");
        }
      } else if (c < " ") {
        fail("no raw line break or control character inside a string (write \\n)");
      } else {
        i += 1;
      }
    }
    fail("the closing double quote of the string");
  };
  try {
    value(0);
    ws();
    if (i < text.length) fail("the end of the text after the JSON value");
  } catch (error) {
    if (error && typeof error.at === "number") return error;
    throw error;
  }
  return null;
}

// JSON.parse with the place of a syntax error: {ok: true, value} or {ok: false, message}.
export function parseJson(text) {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    const found = syntaxError(text);
    if (!found) return { ok: false, message: `Not valid JSON: ${error.message}` };
    const before = text.slice(0, found.at);
    const line = before.split("\n").length;
    const column = before.length - before.lastIndexOf("\n");
    return { ok: false, message: `Not valid JSON at line ${line}, column ${column}: expected ${found.expected}.` };
  }
}

// ---- describing a schema ------------------------------------------------------------------

function resolve(root, schema, seenRefs) {
  let node = schema;
  const refs = [...seenRefs];
  while (node && typeof node === "object" && typeof node.$ref === "string") {
    if (refs.includes(node.$ref)) return { node: { title: node.$ref.split("/").pop() }, refs, recursive: true };
    refs.push(node.$ref);
    const target = localRef(root, node.$ref);
    const { $ref, ...rest } = node;
    node = { ...(target || {}), ...rest };
  }
  return { node: node || {}, refs, recursive: false };
}

function label(root, schema, refs, depth = 0) {
  const { node, recursive } = resolve(root, schema, refs);
  if (recursive) return `${node.title} (recursive)`;
  if (depth > 3) return "…";
  for (const keyword of ["anyOf", "oneOf"]) {
    if (Array.isArray(node[keyword])) {
      return node[keyword].map((b) => label(root, b, refs, depth + 1)).join(" or ");
    }
  }
  if (Array.isArray(node.allOf) && node.allOf.length === 1) return label(root, node.allOf[0], refs, depth + 1);
  if ("const" in node) return JSON.stringify(node.const);
  const type = node.type;
  if (type === "array") {
    if (Array.isArray(node.prefixItems)) return `[${node.prefixItems.map((b) => label(root, b, refs, depth + 1)).join(", ")}]`;
    return node.items ? `array of ${label(root, node.items, refs, depth + 1)}` : "array";
  }
  if (type === "object") {
    if (node.title && node.properties) return node.title;
    if (node.additionalProperties && typeof node.additionalProperties === "object") {
      return `object of ${label(root, node.additionalProperties, refs, depth + 1)}`;
    }
    return "object";
  }
  if (type) {
    const base = Array.isArray(type) ? type.join(" or ") : type;
    return node.format ? `${base} (${node.format})` : base;
  }
  return Array.isArray(node.enum) ? "enum" : "any JSON";
}

function constraints(node) {
  const out = [];
  if (Array.isArray(node.enum)) out.push(`one of ${jsonList(node.enum)}`);
  const pairs = [
    ["minimum", "≥"], ["exclusiveMinimum", ">"], ["maximum", "≤"], ["exclusiveMaximum", "<"],
    ["multipleOf", "multiple of"], ["minLength", "min length"], ["maxLength", "max length"],
    ["minItems", "min items"], ["maxItems", "max items"], ["pattern", "pattern"],
  ];
  for (const [key, word] of pairs) if (key in node) out.push(`${word} ${node[key]}`);
  if (node.uniqueItems) out.push("unique items");
  if (node.additionalProperties === false) out.push("no other properties");
  if ("default" in node) out.push(`default ${JSON.stringify(node.default)}`);
  return out;
}

// The nullable anyOf's other branch, for the constraints of Optional[X].
function nonNullBranch(root, node, refs) {
  const union = node.anyOf || node.oneOf;
  if (!Array.isArray(union)) return null;
  const rest = union.filter((b) => !isNullSchema(b));
  return rest.length === 1 && union.length === 2 ? resolve(root, rest[0], refs) : null;
}

// The fields of a schema, flattened: [{path, type, required, notes: [..], description}].
// Nested objects show as "address.city", array items as "items[]"; at most 5 levels.
export function describe(schema) {
  if (!schema || typeof schema !== "object") return [];
  const rows = [];
  const walk = (node0, parts, refs, depth) => {
    const { node, refs: seen, recursive } = resolve(schema, node0, refs);
    if (recursive || depth > 5) return;
    const inner = nonNullBranch(schema, node, seen);
    const target = inner ? inner.node : node;
    const targetRefs = inner ? inner.refs : seen;
    if (inner && inner.recursive) return;
    if (target.type === "object" && target.properties) {
      const required = new Set(target.required || []);
      for (const [name, child] of Object.entries(target.properties)) {
        const resolved = resolve(schema, child, targetRefs).node;
        const childInner = nonNullBranch(schema, resolved, targetRefs);
        const notes = constraints(resolved);
        if (childInner) notes.push(...constraints(childInner.node).filter((n) => !notes.includes(n)));
        rows.push({
          path: pathText([...parts, name]),
          type: label(schema, child, targetRefs),
          required: required.has(name),
          notes,
          description: resolved.description || (childInner && childInner.node.description) || "",
        });
        walk(child, [...parts, name], targetRefs, depth + 1);
      }
    } else if (target.type === "array" && target.items) {
      const { node: item } = resolve(schema, target.items, targetRefs);
      if (item.type === "object" && item.properties) walk(target.items, [...parts.slice(0, -1), `${parts[parts.length - 1] ?? ""}[]`], targetRefs, depth + 1);
    }
  };
  const { node: top } = resolve(schema, schema, []);
  if (!(top.type === "object" && top.properties)) {
    rows.push({ path: "", type: label(schema, schema, []), required: true, notes: constraints(top), description: top.description || "" });
    return rows;
  }
  walk(schema, [], [], 0);
  return rows;
}

// A starting payload: the required fields with their default or a value of their type.
export function skeleton(schema, refs = [], depth = 0, root = schema) {
  if (!schema || typeof schema !== "object" || depth > 5) return null;
  const { node, refs: seen, recursive } = resolve(root, schema, refs);
  if (recursive) return null;
  if ("default" in node) return node.default;
  if ("const" in node) return node.const;
  if (Array.isArray(node.enum) && node.enum.length) return node.enum[0];
  const union = node.anyOf || node.oneOf;
  if (Array.isArray(union)) {
    return union.some(isNullSchema) ? null : skeleton(union[0], seen, depth + 1, root);
  }
  const type = Array.isArray(node.type) ? node.type[0] : node.type;
  switch (type) {
    case "object": {
      const out = {};
      for (const name of node.required || []) {
        out[name] = skeleton((node.properties || {})[name] || {}, seen, depth + 1, root);
      }
      return out;
    }
    case "array": return [];
    case "string": return "";
    case "integer":
    case "number": return node.minimum ?? (node.exclusiveMinimum !== undefined ? node.exclusiveMinimum + 1 : 0);
    case "boolean": return false;
    default: return null;
  }
}
