// Compiles the worker's exported JSON Schema the way the TypeScript backend would (Ajv, draft
// 2020-12, strict mode, all errors, ajv-formats) and validates bodies against its definitions.
// Usage: node validate.mjs SCHEMA.json CASES.json
//   CASES.json: [{"definition": "TranscriptPayload", "body": {...}}, ...]
// Prints one JSON array: [{"valid": bool, "errors": [...]}, ...] in case order. Exits 2 when the
// schema does not compile (strict-mode complaints included), so a loosened schema cannot pass.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const Ajv2020 = require("ajv/dist/2020").default;
const addFormats = require("ajv-formats").default;

const [schemaPath, casesPath] = process.argv.slice(2);
const schema = JSON.parse(readFileSync(schemaPath, "utf8"));
const cases = JSON.parse(readFileSync(casesPath, "utf8"));

const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);

const validators = {};
try {
  ajv.addSchema(schema);
  // Compile every definition, not only the ones a case names: strict mode must accept them all.
  for (const name of Object.keys(schema.$defs)) {
    validators[name] = ajv.compile({ $ref: `${schema.$id}#/$defs/${name}` });
  }
} catch (error) {
  console.error(`schema does not compile: ${error.message}`);
  process.exit(2);
}

const results = cases.map(({ definition, body }) => {
  const validate = validators[definition];
  if (!validate) return { valid: false, errors: [`no definition ${definition}`] };
  const valid = validate(body);
  return {
    valid,
    errors: (validate.errors || []).map((e) => `${e.instancePath || "(root)"} ${e.message}`),
  };
});
console.log(JSON.stringify(results));
