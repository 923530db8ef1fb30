#!/usr/bin/env node
// Runs jambonz's own code for ivrauth-testkit::telephony (never shipped; tests only).
//
//   node jambonz-check.js <install dir> verify    < {"secret": "...", "body_hex": "...", "header": "..."}
//   node jambonz-check.js <install dir> validate  < [ ...verbs... ]
//
// Prints one JSON line: {"ok": true} or {"ok": false, "error": "<what jambonz's code threw>"},
// and exits 0 either way; any other exit means the tool itself failed.
//
// verify: the Jambonz-Signature check of @jambonz/node-client
//   (WebhookResponse.verifyJambonzSignature(secret), an Express middleware), called with a
//   minimal request whose body is the raw bytes (a Buffer, as express.raw() gives).
// validate: @jambonz/verb-specifications' validate(logger, verbs), which throws on error.
'use strict';

const path = require('path');
const { createRequire } = require('module');

function main() {
  const [installDir, command] = process.argv.slice(2);
  if (!installDir || !command) {
    throw new Error('usage: jambonz-check.js <install dir> verify|validate');
  }
  // Resolve the packages from the testkit's `npm ci` copy (package.json + node_modules/),
  // not from this script's folder.
  const req = createRequire(path.join(path.resolve(installDir), 'package.json'));
  const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
  let result;
  if (command === 'verify') {
    result = verify(req, input);
  } else if (command === 'validate') {
    result = validate(req, input);
  } else {
    throw new Error(`unknown command ${command}`);
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

function verify(req, { secret, body_hex: bodyHex, header }) {
  const { WebhookResponse } = req('@jambonz/node-client');
  const middleware = WebhookResponse.verifyJambonzSignature(secret);
  const headers = { 'jambonz-signature': header };
  const request = {
    url: '/ivrauth-testkit',
    body: Buffer.from(bodyHex, 'hex'),
    get: (name) => headers[String(name).toLowerCase()],
  };
  let passed = false;
  try {
    middleware(request, {}, () => { passed = true; });
  } catch (e) {
    return { ok: false, error: String(e && e.message ? e.message : e) };
  }
  return passed ? { ok: true } : { ok: false, error: 'middleware neither threw nor called next()' };
}

function validate(req, verbs) {
  const { validate: validateVerbs } = req('@jambonz/verb-specifications');
  const logger = { debug() {}, info() {}, warn() {}, error() {} };
  try {
    validateVerbs(logger, verbs);
  } catch (e) {
    return { ok: false, error: String(e && e.message ? e.message : e) };
  }
  return { ok: true };
}

try {
  main();
} catch (e) {
  process.stderr.write(`jambonz-check.js: ${e && e.stack ? e.stack : e}\n`);
  process.exit(2);
}
