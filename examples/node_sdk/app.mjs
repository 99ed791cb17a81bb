// A Call Control webhook app for callstream with the official Telnyx Node SDK.
//
// callstream posts every call event here, signed with Ed25519. This app verifies each
// webhook with the SDK (`client.webhooks.unwrap`, 400 for anything forged), answers every
// incoming call with `client.calls.actions.answer`, asking in the same request for a
// bidirectional media stream to a bot (--bot, by default examples/websockets_bot), and
// prints what happens to each call.
//
// Run it (from the repository root, after `npm ci --prefix examples/node_sdk`):
//
//   export TELNYX_API_KEY=$(callstream keys create --data-dir ./callstream-data)
//   export TELNYX_PUBLIC_KEY=$(callstream keys webhook --data-dir ./callstream-data)
//   node examples/node_sdk/app.mjs                 # http://127.0.0.1:9000/webhooks
//
// Environment: TELNYX_API_KEY and TELNYX_PUBLIC_KEY (required), TELNYX_BASE_URL
// (default http://127.0.0.1:8080/v2). Options: --host, --port (0 picks a free one),
// --bot URL ('' for no stream). See README.md in this folder.

import http from 'node:http';
import { parseArgs } from 'node:util';
import Telnyx from 'telnyx';

const DEFAULT_BASE_URL = 'http://127.0.0.1:8080/v2';
// A webhook body larger than this is refused (413).
const MAX_BODY_BYTES = 1 << 20;
// A call.initiated older than this is not answered: the caller has long given up.
const STALE_CALL_MS = 30_000;
// Event ids remembered to drop redeliveries of an event already handled.
const SEEN_EVENTS = 1000;

const say = (line) => console.log(`node app: ${line}`);

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '9000' },
    bot: { type: 'string', default: 'ws://127.0.0.1:8765' },
  },
});

const missing = ['TELNYX_API_KEY', 'TELNYX_PUBLIC_KEY'].filter((name) => !process.env[name]);
if (missing.length) {
  say(`set ${missing.join(' and ')}: \`callstream keys create\` prints an API key, ` +
      '`callstream keys webhook` the public key webhooks are signed with');
  process.exit(2);
}

// apiKey and publicKey come from TELNYX_API_KEY and TELNYX_PUBLIC_KEY.
const client = new Telnyx({ baseURL: process.env.TELNYX_BASE_URL || DEFAULT_BASE_URL });
const seen = [];

async function answer(call, payload) {
  say(`call ${call} from ${payload.from} to ${payload.to}: answering` +
      (args.bot ? `, streaming to ${args.bot}` : ''));
  const options = args.bot ? {
    stream_url: args.bot,
    stream_track: 'inbound_track', // what the caller says
    stream_codec: 'PCMU',
    stream_bidirectional_mode: 'rtp', // the bot sends raw PCMU back
    stream_bidirectional_codec: 'PCMU',
  } : {};
  await client.calls.actions.answer(call, options);
}

async function handle(event) {
  const { event_type: type, payload = {}, occurred_at: occurredAt } = event.data;
  const call = payload.call_control_id;
  try {
    if (type === 'call.initiated' && payload.direction === 'incoming') {
      const age = Date.now() - Date.parse(occurredAt);
      if (age > STALE_CALL_MS) {
        say(`call ${call}: not answering a call placed ${Math.round(age / 1000)} s ago`);
        return;
      }
      await answer(call, payload);
    } else if (type === 'call.answered') {
      say(`call ${call}: answered`);
    } else if (type === 'streaming.started') {
      say(`call ${call}: stream to ${payload.stream_url} started`);
    } else if (type === 'streaming.stopped' || type === 'streaming.failed') {
      const reason = payload.failure_reason ? ` (${payload.failure_reason})` : '';
      say(`call ${call}: stream ${type.split('.')[1]}${reason}`);
    } else if (type === 'call.transcription') {
      const t = payload.transcription_data || {};
      say(`transcript (${t.is_final ? 'final' : 'interim'}, ${t.transcription_track}): ` +
          t.transcript);
    } else if (type === 'call.hangup') {
      say(`call ${call}: ended (${payload.hangup_cause}, by ${payload.hangup_source})`);
    }
  } catch (err) {
    if (err instanceof Telnyx.APIError) { // e.g. 422 90018: the call ended meanwhile
      say(`call ${call}: ${type} -> HTTP ${err.status} ${JSON.stringify(err.error)}`);
    } else {
      say(`call ${call}: ${type} failed: ${err}`);
    }
  }
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST') {
    res.writeHead(405).end();
    return;
  }
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
    const body = Buffer.concat(chunks).toString('utf8'); // verify the bytes exactly as sent
    let event;
    try {
      event = await client.webhooks.unwrap(body, { headers: req.headers });
    } catch (err) {
      say(`rejected a webhook: ${err.message}`);
      res.writeHead(400).end();
      return;
    }
    res.writeHead(204).end(); // acknowledge first; act afterwards
    if (!event?.data?.event_type || seen.includes(event.data.id)) return; // redelivery
    seen.push(event.data.id);
    if (seen.length > SEEN_EVENTS) seen.shift();
    await handle(event);
  });
});

server.listen(Number(args.port), args.host, () => {
  const { address, port } = server.address();
  say(`listening on http://${address}:${port}/webhooks`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
