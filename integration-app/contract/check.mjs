#!/usr/bin/env node
// Contract check: every element spec under integration-app/ must be one the
// published Membrane SDK (@membranehq/sdk, pinned in package.json) accepts.
//
//   node check.mjs              check the tree (the folder above this one)
//   node check.mjs --root DIR   check another tree laid out the same way
//   node check.mjs --self-test  check copies of the tree, each with one
//                               deliberate defect, and fail unless every
//                               copy is refused and the clean copy passes
//
// Each spec.yaml is classified by its path with the SDK's own
// parseMembraneElementPath (the layout `membrane push` reads) and validated
// with the SDK's zod schemas for that element kind: the export schema
// (WorkspaceElementSpecs[kind].exportPropertiesSchema, what push sends) and
// the create request (Create<Kind>Request, what the API accepts). zod drops
// keys it does not know instead of refusing them; such a dropped key is
// reported here, so a misspelt property fails too. On top of the schemas:
// keys match their folders, references (data source, field mapping,
// integration, universal parent, flow links) resolve, formulas are ones the
// SDK knows, a data action's config keys are those of the data-collection
// request of its type, and flow nodes have a known node type.
//
// Prints one line per failure ("file: what: zod issue") and exits 1 when
// there is any.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import yaml from 'js-yaml';
import * as sdk from '@membranehq/sdk';

const here = path.dirname(fileURLToPath(import.meta.url));
const T = sdk.WorkspaceElementType;

/** The create request schema of each element kind the project uses. */
const CREATE_SCHEMA = {
  [T.Integration]: sdk.CreateIntegrationRequest,
  [T.Action]: sdk.CreateActionRequest,
  [T.DataSource]: sdk.CreateDataSourceRequest,
  [T.FieldMapping]: sdk.CreateFieldMappingRequest,
  [T.Flow]: sdk.CreateFlowRequest,
};

/**
 * For each data action type, the data-collection requests it makes: its
 * config may hold their keys (the arguments), besides dataSource and
 * fieldMapping.
 */
const DATA_ACTION_REQUESTS = {
  'list-data-records': [sdk.DataCollectionListRequest],
  'find-data-record-by-id': [sdk.DataCollectionFindByIdRequest],
  'match-data-record': [sdk.DataCollectionMatchRequest],
  'search-data-record': [sdk.DataCollectionSearchRequest],
  'create-data-record': [sdk.DataCollectionCreateRequest],
  'update-data-record': [sdk.DataCollectionUpdateRequest],
  'delete-data-record': [sdk.DataCollectionDeleteRequest],
  'find-or-create-data-record': [sdk.DataCollectionMatchRequest, sdk.DataCollectionCreateRequest],
};

/** Properties that hold JSON schemas, where `$ref` is not a formula. */
const SCHEMA_KEYS = new Set(['inputSchema', 'customOutputSchema', 'appSchema', 'parametersSchema', 'outputSchema']);

function findSpecs(root) {
  const out = [];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      if (entry.name === 'node_modules' || entry.name === 'contract' || entry.name.startsWith('.')) continue;
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name === 'spec.yaml') out.push(path.relative(root, full).split(path.sep).join('/'));
    }
  };
  walk(root);
  return out.sort();
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Paths of keys present in `input` but gone from zod's parsed `output`. */
function droppedKeys(input, output, at = []) {
  if (Array.isArray(input) && Array.isArray(output)) {
    return input.flatMap((v, i) => droppedKeys(v, output[i], [...at, i]));
  }
  if (!isObject(input) || !isObject(output)) return [];
  return Object.keys(input).flatMap((k) =>
    k in output ? droppedKeys(input[k], output[k], [...at, k]) : [[...at, k].join('.')],
  );
}

function issuePath(issue) {
  return issue.path && issue.path.length ? issue.path.join('.') : '(root)';
}

/** Validates `value` with a zod schema; failures go to `fail(message)`. */
function validate(schema, value, label, fail) {
  const r = schema.safeParse(value);
  if (!r.success) {
    for (const issue of r.error.issues) fail(`${label}: ${issuePath(issue)}: ${issue.message} (${issue.code})`);
    return;
  }
  for (const key of droppedKeys(value, r.data)) fail(`${label}: ${key}: unrecognized key (the schema drops it)`);
}

/** Every object with a `$` key must be a single formula the SDK knows. */
function checkFormulas(value, at, fail) {
  if (Array.isArray(value)) {
    value.forEach((v, i) => checkFormulas(v, [...at, i], fail));
    return;
  }
  if (!isObject(value)) return;
  const ops = Object.keys(value).filter((k) => k.startsWith('$'));
  if (ops.length) {
    const where = at.join('.') || '(root)';
    if (ops.length !== 1 || Object.keys(value).length !== 1) {
      fail(`formula at ${where}: an operator must be the only key of its object (${Object.keys(value).join(', ')})`);
    } else if (!sdk.isFormula(value)) {
      fail(`formula at ${where}: ${ops[0]} is not a formula of the SDK`);
    }
  }
  for (const [k, v] of Object.entries(value)) {
    if (at.length === 0 && SCHEMA_KEYS.has(k)) continue;
    checkFormulas(v, [...at, k], fail);
  }
}

/** Checks the tree at `root`; returns the failure lines. */
export function checkTree(root) {
  const failures = [];
  const elements = [];
  for (const rel of findSpecs(root)) {
    const fail = (msg) => failures.push(`${rel}: ${msg}`);
    const where = sdk.parseMembraneElementPath(rel);
    if (!where) {
      fail('not an element path membrane knows (<kind>/<key>/spec.yaml or integrations/<integration>/<kind>/<key>/spec.yaml)');
      continue;
    }
    if (!CREATE_SCHEMA[where.type]) {
      fail(`element kind ${where.type} is not one the project uses`);
      continue;
    }
    let spec;
    try {
      spec = yaml.load(fs.readFileSync(path.join(root, rel), 'utf8'));
    } catch (e) {
      fail(`YAML: ${e.message}`);
      continue;
    }
    if (!isObject(spec)) {
      fail('the spec is not a mapping');
      continue;
    }
    elements.push({ rel, fail, spec, ...where });
  }

  const has = (type, key, integrationKey) =>
    elements.some((e) => e.type === type && e.key === key && e.integrationKey === integrationKey);

  for (const { fail, spec, type, key, integrationKey } of elements) {
    const exportSchema = sdk.WorkspaceElementSpecs[type].exportPropertiesSchema;
    validate(exportSchema, spec, `export schema of ${type}`, fail);
    const create = integrationKey ? { ...spec, integrationKey } : spec;
    validate(CREATE_SCHEMA[type], create, `create request of ${type}`, fail);
    checkFormulas(spec, [], fail);

    if (spec.key !== key) fail(`key ${JSON.stringify(spec.key)} differs from its folder ${JSON.stringify(key)}`);
    if (typeof spec.name !== 'string' || !spec.name.trim()) fail('name is missing');
    if (integrationKey) {
      if (!has(T.Integration, integrationKey, undefined)) {
        fail(`integration ${integrationKey} has no integrations/${integrationKey}/spec.yaml`);
      }
      // A data source or field mapping of an integration customizes the
      // universal one the app names; an action may be the integration's
      // own (an api-request-to-external-app the other integrations lack).
      if (type !== T.Action && !has(type, key, undefined)) {
        fail(`no universal ${type} ${key} for this integration-level one`);
      }
    }

    if (type === T.DataSource && integrationKey && typeof spec.collectionKey !== 'string') {
      fail('an integration-level data source names its collectionKey');
    }
    if (type === T.FieldMapping) {
      if (!spec.dataSourceKey) fail('dataSourceKey is missing');
      else if (!has(T.DataSource, spec.dataSourceKey, undefined)) {
        fail(`dataSourceKey ${spec.dataSourceKey}: no data-sources/${spec.dataSourceKey}/spec.yaml`);
      }
    }
    if (type === T.Action) checkAction(spec, integrationKey, has, fail);
    if (type === T.Flow) checkFlow(spec, has, fail);
  }
  return failures;
}

function checkDataUnits(config, integrationKey, has, fail, where) {
  if (!isObject(config.dataSource)) {
    fail(`${where}config.dataSource is required`);
  } else {
    validate(sdk.DataSourceUnitConfig, config.dataSource, `${where}config.dataSource`, fail);
    const k = config.dataSource.key;
    if (typeof k === 'string' && !has(T.DataSource, k, undefined) && !has(T.DataSource, k, integrationKey)) {
      fail(`${where}config.dataSource.key ${k}: no such data source`);
    }
  }
  if (config.fieldMapping !== undefined) {
    if (!isObject(config.fieldMapping)) {
      fail(`${where}config.fieldMapping must be an object`);
      return;
    }
    validate(sdk.FieldMappingUnitConfig, config.fieldMapping, `${where}config.fieldMapping`, fail);
    const k = config.fieldMapping.key;
    if (typeof k === 'string' && !has(T.FieldMapping, k, undefined) && !has(T.FieldMapping, k, integrationKey)) {
      fail(`${where}config.fieldMapping.key ${k}: no such field mapping`);
    }
  }
}

function checkAction(spec, integrationKey, has, fail) {
  if (!spec.type) {
    fail('type is missing');
    return;
  }
  const requests = DATA_ACTION_REQUESTS[spec.type];
  if (!requests) return;
  const config = isObject(spec.config) ? spec.config : {};
  checkDataUnits(config, integrationKey, has, fail, '');
  const allowed = new Set(['dataSource', 'fieldMapping']);
  for (const r of requests) for (const k of Object.keys(r.shape)) if (k !== 'parameters') allowed.add(k);
  for (const k of Object.keys(config)) {
    if (!allowed.has(k)) {
      fail(`config.${k}: not an argument of ${spec.type} (accepted: ${[...allowed].join(', ')})`);
    }
  }
}

function checkFlow(spec, has, fail) {
  const nodes = isObject(spec.nodes) ? spec.nodes : {};
  const nodeTypes = new Set(Object.values(sdk.FlowNodeType));
  for (const [nodeKey, node] of Object.entries(nodes)) {
    const where = `nodes.${nodeKey}: `;
    if (!isObject(node)) continue;
    if (!nodeTypes.has(node.type)) fail(`${where}type ${JSON.stringify(node.type)} is not a flow node type of the SDK`);
    for (const link of node.links ?? []) {
      if (isObject(link) && !(link.key in nodes)) fail(`${where}links to ${JSON.stringify(link.key)}, no such node`);
    }
    if (isObject(node.config) && (node.config.dataSource !== undefined || node.config.fieldMapping !== undefined)) {
      checkDataUnits(node.config, undefined, has, fail, where);
    }
  }
}

// ---------------------------------------------------------------- self-test

/** Each defect must make the check fail on a copy of the tree. */
const DEFECTS = [
  ['an action type the SDK does not have', 'actions/upsert-contact/spec.yaml', (s) => { s.type = 'upsert-data-record'; }],
  ['a config key the list type does not take', 'actions/list-contacts/spec.yaml', (s) => { s.config.limit = { $var: '$.input.limit' }; }],
  ['a misspelt field mapping property', 'integrations/hubspot/field-mappings/contacts/spec.yaml', (s) => {
    s.dataSourceKye = s.dataSourceKey;
    delete s.dataSourceKey;
  }],
  ['a direction outside the enum', 'field-mappings/contacts/spec.yaml', (s) => { s.direction = 'sideways'; }],
  ['a collection key of the wrong type', 'integrations/pipedrive/data-sources/contacts/spec.yaml', (s) => { s.collectionKey = 42; }],
  ['an unknown formula', 'actions/get-contact/spec.yaml', (s) => { s.config.id = { $lookupId: '$.input.id' }; }],
  ['a data source that does not exist', 'actions/find-contact/spec.yaml', (s) => { s.config.dataSource.key = 'people'; }],
  ['a key differing from its folder', 'actions/delete-contact/spec.yaml', (s) => { s.key = 'remove-contact'; }],
  ['an unknown data source unit property', 'actions/update-contact/spec.yaml', (s) => { s.config.dataSource.collection = 'contacts'; }],
  ['an invalid OAuth callback URI', 'integrations/hubspot/spec.yaml', (s) => { s.oAuthCallbackUri = 'not a url'; }],
  ['an unknown flow node type', 'flows/receive-contact-events/spec.yaml', (s) => {
    s.nodes['contact-created'].type = 'data-record-changed-trigger';
  }],
  ['an input schema that is not a schema', 'actions/get-contact/spec.yaml', (s) => { s.inputSchema = 'object'; }],
];

function copyTree(from, to) {
  fs.cpSync(from, to, {
    recursive: true,
    filter: (src) => !['contract', 'node_modules'].includes(path.basename(src)),
  });
}

function selfTest(root) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'membrane-contract-'));
  let ok = true;
  try {
    const clean = path.join(tmp, 'clean');
    copyTree(root, clean);
    const cleanFailures = checkTree(clean);
    if (cleanFailures.length) {
      ok = false;
      console.error('self-test: the unmodified copy fails:');
      for (const f of cleanFailures) console.error(`  ${f}`);
    }
    DEFECTS.forEach(([what, rel, mutate], i) => {
      const dir = path.join(tmp, `defect-${i}`);
      copyTree(root, dir);
      const file = path.join(dir, rel);
      const spec = yaml.load(fs.readFileSync(file, 'utf8'));
      mutate(spec);
      fs.writeFileSync(file, yaml.dump(spec));
      const failures = checkTree(dir).filter((f) => f.startsWith(`${rel}: `));
      if (failures.length) {
        console.log(`self-test: refused ${what}: ${failures[0]}`);
      } else {
        ok = false;
        console.error(`self-test: NOT refused: ${what} in ${rel}`);
      }
    });
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return ok;
}

// --------------------------------------------------------------------- main

function main(argv) {
  let root = path.resolve(here, '..');
  const i = argv.indexOf('--root');
  if (i >= 0) root = path.resolve(argv[i + 1] ?? '.');
  if (argv.includes('--self-test')) {
    const ok = selfTest(root);
    console.log(ok ? `self-test: all ${DEFECTS.length} defects refused` : 'self-test FAILED');
    return ok ? 0 : 1;
  }
  const specs = findSpecs(root);
  if (!specs.length) {
    console.error(`no spec.yaml under ${root}`);
    return 1;
  }
  const failures = checkTree(root);
  for (const f of failures) console.error(f);
  if (failures.length) {
    console.error(`${failures.length} failure(s) in ${specs.length} element(s) under ${root}`);
    return 1;
  }
  console.log(`${specs.length} element(s) under ${root} match @membranehq/sdk ${sdkVersion()}`);
  return 0;
}

function sdkVersion() {
  const pkg = path.join(here, 'node_modules', '@membranehq', 'sdk', 'package.json');
  try {
    return JSON.parse(fs.readFileSync(pkg, 'utf8')).version;
  } catch {
    return '(version unknown)';
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}
