// Drives poolscope-exporter's /mcp endpoint with the official MCP TypeScript
// SDK client and checks what an MCP host would rely on.
//
//   node check_exporter.mjs http://127.0.0.1:PORT/mcp [--expect=up|down]
//
// --expect=up waits (bounded) until the health resource reports a connected
// pool; --expect=down until it reports the connection error of an unreachable
// database, so the password check below covers an error text too.
// Env POOLSCOPE_TEST_DB_PASSWORD: when set, no response body may contain it.
// Prints one line per check and exits non-zero when any check fails.

import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { LATEST_PROTOCOL_VERSION, McpError } from '@modelcontextprotocol/sdk/types.js';

const HEALTH_URI = 'health://connection-pool';
const RESOURCE_NOT_FOUND = -32002;

const endpoint = process.argv[2];
const expectArg = process.argv.slice(3).find((arg) => arg.startsWith('--expect='));
const expected = expectArg ? expectArg.slice('--expect='.length) : null;
if (!endpoint || (expected !== null && !['up', 'down'].includes(expected))) {
  console.error('usage: node check_exporter.mjs http://HOST:PORT/mcp [--expect=up|down]');
  process.exit(2);
}
// Bound on waiting for the pool to reach the expected state.
const STATE_WAIT_MS = 60_000;
const password = process.env.POOLSCOPE_TEST_DB_PASSWORD ?? '';

// Every response body the client or the raw checks receive, for the password scan.
const bodies = [];
async function recordingFetch(url, init) {
  const response = await fetch(url, init);
  const contentType = response.headers.get('content-type') ?? '';
  // Event streams are read incrementally by the transport; the server only
  // sends one to event-stream-only clients, which the SDK is not.
  if (!contentType.startsWith('text/event-stream')) {
    bodies.push(await response.clone().text());
  }
  return response;
}

let passed = 0;
let failed = 0;
async function check(name, body) {
  try {
    await body();
    passed += 1;
    console.log(`ok   ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${name}: ${error?.stack ?? error}`);
  }
}

const isCount = (value) => Number.isInteger(value) && value >= 0;

function checkHealthDocument(doc) {
  assert.ok(['healthy', 'degraded', 'unhealthy'].includes(doc.status), `status ${doc.status}`);
  assert.equal(typeof doc.timestamp, 'string');
  assert.ok(!Number.isNaN(Date.parse(doc.timestamp)), `timestamp ${doc.timestamp}`);
  assert.equal(typeof doc.database, 'object');
  assert.equal(typeof doc.database.status, 'string');
  const pool = doc.database.pool;
  for (const key of ['total', 'idle', 'active', 'waiting']) {
    assert.ok(isCount(pool[key]), `database.pool.${key} = ${pool[key]}`);
  }
  assert.equal(pool.total, pool.idle + pool.active, 'total == idle + active');
  assert.ok(doc.database.latency_ms === null || typeof doc.database.latency_ms === 'number');
  assert.ok(doc.database.last_error === null || typeof doc.database.last_error === 'string');
  assert.ok(isCount(doc.leaks.count), `leaks.count = ${doc.leaks.count}`);
  assert.equal(typeof doc.leaks.oldest_held_seconds, 'number');
  assert.ok(Array.isArray(doc.leaks.connections) && Array.isArray(doc.leaks.sites));
  assert.equal(typeof doc.uptime_seconds, 'number');
  assert.ok(doc.uptime_seconds >= 0);
}

async function rawPost(body, accept = 'application/json, text/event-stream') {
  const response = await recordingFetch(endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept },
    body,
  });
  const text = await response.text();
  return { status: response.status, contentType: response.headers.get('content-type'), text };
}

const client = new Client({ name: 'poolscope-mcp-check', version: '1.0.0' });
const transport = new StreamableHTTPClientTransport(new URL(endpoint), { fetch: recordingFetch });
let transportError = null;
transport.onerror = (error) => {
  transportError = error;
};

let statisticsUri = null;

await check('connect: initialize and the initialized notification', async () => {
  await client.connect(transport);
  assert.equal(transport.protocolVersion, LATEST_PROTOCOL_VERSION);
  const info = client.getServerVersion();
  assert.equal(info?.name, 'poolscope-exporter');
  assert.equal(typeof info?.version, 'string');
  assert.ok(client.getServerCapabilities()?.resources, 'resources capability');
});

await check('ping', async () => {
  await client.ping();
});

await check('resources/list names the health and a statistics resource', async () => {
  const { resources } = await client.listResources();
  const health = resources.find((resource) => resource.uri === HEALTH_URI);
  assert.ok(health, 'health://connection-pool listed');
  assert.equal(health.mimeType, 'application/json');
  assert.equal(typeof health.name, 'string');
  assert.equal(typeof health.description, 'string');
  const statistics = resources.find(
    (resource) => resource.uri !== HEALTH_URI && resource.mimeType === 'application/json');
  assert.ok(statistics, 'a statistics resource listed');
  statisticsUri = statistics.uri;
});

await check('resources/read health://connection-pool has the guide\'s schema', async () => {
  const { contents } = await client.readResource({ uri: HEALTH_URI });
  assert.equal(contents.length, 1);
  assert.equal(contents[0].uri, HEALTH_URI);
  assert.equal(contents[0].mimeType, 'application/json');
  checkHealthDocument(JSON.parse(contents[0].text));
});

await check('resources/read of the statistics resource', async () => {
  assert.ok(statisticsUri, 'statistics resource known from resources/list');
  const { contents } = await client.readResource({ uri: statisticsUri });
  assert.equal(contents.length, 1);
  assert.equal(contents[0].uri, statisticsUri);
  assert.equal(contents[0].mimeType, 'application/json');
  const stats = JSON.parse(contents[0].text);
  for (const key of ['total_connections', 'idle_connections', 'active_connections',
                     'waiting_requests', 'total_acquisitions', 'total_releases']) {
    assert.ok(isCount(stats[key]), `${key} = ${stats[key]}`);
  }
  assert.equal(stats.total_connections, stats.idle_connections + stats.active_connections);
});

await check('reading an unknown resource is an McpError -32002', async () => {
  await assert.rejects(client.readResource({ uri: 'health://no-such-pool' }), (error) => {
    assert.ok(error instanceof McpError, `McpError, got ${error?.constructor?.name}: ${error}`);
    assert.equal(error.code, RESOURCE_NOT_FOUND);
    return true;
  });
});

async function readHealth() {
  const { contents } = await client.readResource({ uri: HEALTH_URI });
  return JSON.parse(contents[0].text);
}

async function waitForHealth(predicate) {
  const deadline = Date.now() + STATE_WAIT_MS;
  let health = await readHealth();
  while (!predicate(health) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    health = await readHealth();
  }
  return health;
}

if (expected === 'up') {
  await check('the health resource reports the connected pool', async () => {
    const health = await waitForHealth((doc) => doc.database.status === 'connected');
    assert.equal(health.database.status, 'connected', JSON.stringify(health));
    assert.ok(health.database.pool.total >= 1, JSON.stringify(health));
    assert.notEqual(health.status, 'unhealthy', JSON.stringify(health));
  });
}

if (expected === 'down') {
  await check('the health resource reports the unreachable database', async () => {
    const health = await waitForHealth((doc) => doc.database.last_error !== null);
    assert.equal(health.status, 'unhealthy', JSON.stringify(health));
    assert.notEqual(health.database.status, 'connected', JSON.stringify(health));
    assert.equal(health.database.pool.total, 0, JSON.stringify(health));
    assert.equal(typeof health.database.last_error, 'string', JSON.stringify(health));
  });
}

await check('parallel reads all succeed', async () => {
  const reads = Array.from({ length: 20 }, (_, i) =>
    client.readResource({ uri: i % 2 === 0 ? HEALTH_URI : statisticsUri }));
  const results = await Promise.all(reads);
  for (const result of results) JSON.parse(result.contents[0].text);
});

await check('an unknown method is an McpError -32601', async () => {
  await assert.rejects(client.listTools(), (error) => {
    assert.ok(error instanceof McpError, `McpError, got ${error}`);
    assert.equal(error.code, -32601);
    return true;
  });
});

await check('GET and DELETE answer 405 with Allow: POST', async () => {
  for (const method of ['GET', 'DELETE']) {
    const response = await recordingFetch(endpoint, {
      method, headers: { accept: 'text/event-stream' } });
    await response.body?.cancel();
    assert.equal(response.status, 405, method);
    assert.equal(response.headers.get('allow'), 'POST', method);
  }
});

await check('malformed JSON is a -32700 error with HTTP 200', async () => {
  const { status, contentType, text } = await rawPost('{"jsonrpc": "2.0", "id": 1,');
  assert.equal(status, 200);
  assert.match(contentType ?? '', /^application\/json/);
  const answer = JSON.parse(text);
  assert.equal(answer.id, null);
  assert.equal(answer.error.code, -32700);
});

await check('a batch is a -32600 error', async () => {
  const { status, text } = await rawPost('[{"jsonrpc":"2.0","id":1,"method":"ping"}]');
  assert.equal(status, 200);
  assert.equal(JSON.parse(text).error.code, -32600);
});

await check('no transport error along the way', async () => {
  assert.equal(transportError, null, `${transportError}`);
});

await check('close', async () => {
  await client.close();
});

await check('the database password appears in no response', async () => {
  assert.ok(bodies.length >= 10, `saw ${bodies.length} bodies`);
  if (password === '') {
    console.log('     (POOLSCOPE_TEST_DB_PASSWORD unset: nothing to look for)');
    return;
  }
  for (const body of bodies) {
    assert.ok(!body.includes(password), `password found in: ${body.slice(0, 200)}`);
  }
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
