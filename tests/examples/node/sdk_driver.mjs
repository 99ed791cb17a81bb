// The official Telnyx Node SDK, driven line by line by the Python suite
// (tests/examples/node_driver.py, tests/examples/test_node_sdk_live.py).
//
// stdin, one JSON object a line, handled one after the other:
//   {"id": 1, "call": "calls.actions.startStreaming", "args": ["v3:...", {...}]}
// The method is looked up on the SDK client by its dotted path and called with `args`
// exactly as a Node application would (an omitted body stays omitted).
//
// stdout, one JSON object a line:
//   {"listening": "http://127.0.0.1:PORT/webhooks"}                      once, at start
//   {"id": 1, "status": 200, "result": {...}, "sent": {...}}             a call's answer
//   {"id": 1, "error": {"class": "UnprocessableEntityError", "status": 422, "body": {...}},
//    "sent": {...}}                                                      a call's typed error
//   {"webhook": {...}}     a JSON webhook the SDK verified (client.webhooks.unwrap)
//   {"callback": {...}}    a TeXML status callback (a form, or a GET's query string) the
//                          SDK's TelnyxWebhook verified, as its fields
//   {"rejected": "..."}    a webhook the SDK refused (answered 400)
// `sent` is what the SDK put on the wire: method, path, content type and body (null when
// it sent none), read from the fetch it was given.
//
// Environment: TELNYX_API_KEY, TELNYX_PUBLIC_KEY, TELNYX_BASE_URL. Option: --port.
// The SDK is the one examples/node_sdk locks and installs (npm ci --prefix examples/node_sdk);
// it is imported by path because Node resolves bare ESM names only upward from this file.

import http from 'node:http';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import Telnyx from '../../../examples/node_sdk/node_modules/telnyx/index.mjs';
import { TelnyxWebhook } from '../../../examples/node_sdk/node_modules/telnyx/lib/webhooks.mjs';

// A webhook body larger than this is refused (413).
const MAX_BODY_BYTES = 1 << 20;

const emit = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);

const { values: args } = parseArgs({ options: { port: { type: 'string', default: '0' } } });

let sent = null;
async function recordingFetch(url, init) {
  const { pathname, search } = new URL(url);
  sent = {
    method: init.method,
    path: pathname + search,
    content_type: new Headers(init.headers).get('content-type'),
    body: typeof init.body === 'string' ? init.body : null,
  };
  return fetch(url, init);
}

// apiKey and publicKey come from TELNYX_API_KEY and TELNYX_PUBLIC_KEY; no retries, so
// each call is exactly one request.
const client = new Telnyx({
  baseURL: process.env.TELNYX_BASE_URL, maxRetries: 0, fetch: recordingFetch,
});

function method(path) {
  const names = path.split('.');
  const name = names.pop();
  let owner = client;
  for (const part of names) owner = owner?.[part];
  if (typeof owner?.[name] !== 'function') throw new Error(`the SDK has no method ${path}`);
  return owner[name].bind(owner);
}

async function run({ id, call, args: callArgs = [] }) {
  sent = null;
  try {
    const { data, response } = await method(call)(...callArgs).withResponse();
    emit({ id, status: response.status, result: data, sent });
  } catch (err) {
    const error = err instanceof Telnyx.APIError
      ? { class: err.constructor.name, status: err.status, body: err.error }
      : { class: err.constructor.name, message: String(err) };
    emit({ id, error, sent });
  }
}

async function verify(req, body) {
  const type = (req.headers['content-type'] || '').split(';')[0].trim();
  if (req.method === 'GET' || type === 'application/x-www-form-urlencoded') {
    await new TelnyxWebhook(client.publicKey).verify(body, req.headers);
    return { callback: Object.fromEntries(new URLSearchParams(body)) };
  }
  return { webhook: await client.webhooks.unwrap(body, { headers: req.headers }) };
}

const server = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      res.writeHead(413).end();
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', async () => {
    if (size > MAX_BODY_BYTES) return;
    // Verified as the bytes sent: the body, or for a GET callback its query string.
    const body = req.method === 'GET'
      ? new URL(req.url, 'http://localhost').search.slice(1)
      : Buffer.concat(chunks).toString('utf8');
    try {
      emit(await verify(req, body));
    } catch (err) {
      emit({ rejected: err.message });
      res.writeHead(400).end();
      return;
    }
    res.writeHead(204).end();
  });
});

server.listen(Number(args.port), '127.0.0.1', async () => {
  const { address, port } = server.address();
  emit({ listening: `http://${address}:${port}/webhooks` });
  for await (const line of readline.createInterface({ input: process.stdin })) {
    if (line.trim()) await run(JSON.parse(line));
  }
  // stdin closed: the suite is done with us.
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
