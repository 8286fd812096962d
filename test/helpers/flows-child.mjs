// Runs inside a network namespace (`ip netns exec NS node flows-child.mjs MODE SPEC`) and makes
// real loopback traffic for conntrack to track. Plain JS on purpose: it runs under bare `node`,
// without vitest or a TypeScript loader.
//
// MODE `flows`: opens the flows in SPEC (JSON: { flows: [{ kind, family, port? }] }), prints one
// JSON line { flows: [{ kind, family, src, dst, sport, dport }] } on stdout, then keeps every
// socket open until stdin closes (the parent releasing the flows), and exits. Each line `poke` on
// stdin makes every open TCP and UDP flow send one more round trip (one-way flows: one datagram),
// answered by the line `poked` once every reply has arrived.
//
// MODE `fill-udp`: SPEC is { count, port }. Sends `count` one-byte datagrams to 127.0.0.1:port
// from distinct (source port, destination address) pairs, prints { sent, sockets } and exits.

import dgram from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';

const [mode, specText] = process.argv.slice(2);
const spec = JSON.parse(specText ?? '{}');

/** Everything that must stay open until the parent releases the flows. */
const held = [];
/** One function per open flow that sends once more and resolves when the exchange is done. */
const pokers = [];

function loopback(family) {
  return family === 6 ? '::1' : '127.0.0.1';
}

async function listenTcp(family, port) {
  const server = net.createServer((socket) => {
    held.push(socket);
    // Echo, so both directions carry payload (counters) and the entry becomes ASSURED.
    socket.on('data', (chunk) => socket.write(chunk));
    // Half-close from the client: close our side too, so the connection walks through
    // FIN_WAIT / CLOSE_WAIT / LAST_ACK into TIME_WAIT.
    socket.on('end', () => socket.end());
    socket.on('error', () => {});
  });
  held.push(server);
  server.listen({ host: loopback(family), port, exclusive: true, ipv6Only: family === 6 });
  await once(server, 'listening');
  return server;
}

async function openTcp(request, closeAfter) {
  const host = loopback(request.family);
  const server = await listenTcp(request.family, request.port ?? 0);
  const client = net.connect({ host, port: server.address().port });
  client.on('error', () => {});
  held.push(client);
  await once(client, 'connect');
  client.write('hello');
  await once(client, 'data'); // the echo: both directions have carried data
  const flow = {
    kind: request.kind,
    family: request.family,
    src: client.localAddress,
    dst: host,
    sport: client.localPort,
    dport: server.address().port,
  };
  if (!closeAfter) {
    pokers.push(async () => {
      client.write('x');
      await once(client, 'data');
    });
  }
  if (closeAfter) {
    // The client closes first, so the client's (original) side ends in TIME_WAIT.
    const closed = once(client, 'close');
    client.end();
    await closed;
    server.close();
  }
  return flow;
}

async function openUdp(request, withReply) {
  const type = request.family === 6 ? 'udp6' : 'udp4';
  const host = loopback(request.family);
  const server = dgram.createSocket({ type, ipv6Only: request.family === 6 });
  held.push(server);
  server.bind(request.port ?? 0, host);
  await once(server, 'listening');
  const received = once(server, 'message');
  server.on('message', (msg, rinfo) => {
    if (withReply) server.send(msg, rinfo.port, rinfo.address);
  });
  const client = dgram.createSocket(type);
  held.push(client);
  client.bind(0, host);
  await once(client, 'listening');
  client.connect(server.address().port, host);
  await once(client, 'connect');
  const replied = withReply ? once(client, 'message') : undefined;
  client.send('ping');
  await received;
  if (replied) await replied;
  pokers.push(async () => {
    const arrived = once(withReply ? client : server, 'message');
    client.send('again');
    await arrived;
  });
  return {
    kind: request.kind,
    family: request.family,
    src: host,
    dst: host,
    sport: client.address().port,
    dport: server.address().port,
  };
}

async function openFlow(request) {
  switch (request.kind) {
    case 'tcp-established': return openTcp(request, false);
    case 'tcp-time-wait': return openTcp(request, true);
    case 'udp-reply': return openUdp(request, true);
    case 'udp-oneway': return openUdp(request, false);
    default: throw new Error(`unknown flow kind ${JSON.stringify(request.kind)}`);
  }
}

async function openFlows() {
  const flows = [];
  // One after the other: ports and entries stay in the order the caller asked for.
  for (const request of spec.flows ?? []) flows.push(await openFlow(request));
  process.stdout.write(`${JSON.stringify({ flows })}\n`);
  let buffered = '';
  let queue = Promise.resolve();
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => {
    buffered += chunk;
    let newline;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const command = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (command !== 'poke') continue;
      // Sequential, so replies cannot be mistaken for another round's.
      queue = queue.then(async () => {
        for (const poke of pokers) await poke();
        process.stdout.write('poked\n');
      });
    }
  });
  await once(process.stdin, 'end');
  await queue;
  for (const handle of held) {
    if (typeof handle.destroy === 'function') handle.destroy();
    else handle.close?.();
  }
  process.exit(0);
}

/**
 * Many UDP entries, fast: one unconnected socket per batch of destinations. Each socket has its own
 * source port and sends to 127.0.0.1 and 127.x.y.z (all of 127/8 is local), so every datagram is a
 * distinct tuple. Nothing listens on `port`: each datagram is answered by an ICMP port unreachable,
 * which conntrack classes as RELATED to the UDP entry and neither deletes it nor counts it as a reply,
 * so the entry stays UNREPLIED until nf_conntrack_udp_timeout. The sockets are unconnected, so the
 * unreachables are not turned into ECONNREFUSED on the next send. (The kernel rate-limits those ICMP
 * messages; that does not matter, the entries are made on the way out.)
 */
async function fillUdp() {
  const count = spec.count;
  const port = spec.port;
  const perSocket = 50_000;
  let sent = 0;
  let sockets = 0;
  while (sent < count) {
    const socket = dgram.createSocket('udp4');
    socket.bind(0, '0.0.0.0');
    await once(socket, 'listening');
    sockets++;
    const batch = Math.min(perSocket, count - sent);
    const payload = Buffer.from('x');
    // Bounded in-flight sends keep memory flat for large counts.
    const maxInFlight = 512;
    let inFlight = 0;
    let done = 0;
    await new Promise((resolve, reject) => {
      let next = 0;
      const pump = () => {
        while (inFlight < maxInFlight && next < batch) {
          const index = next++;
          // 127.1.0.0 + index: distinct destinations, all routed to lo.
          const address = `127.${1 + (index >>> 16)}.${(index >>> 8) & 255}.${index & 255}`;
          inFlight++;
          socket.send(payload, port, address, (err) => {
            inFlight--;
            done++;
            if (err) { reject(err); return; }
            if (done === batch) resolve();
            else pump();
          });
        }
      };
      pump();
    });
    sent += batch;
    socket.close();
  }
  process.stdout.write(`${JSON.stringify({ sent, sockets })}\n`);
}

try {
  if (mode === 'flows') await openFlows();
  else if (mode === 'fill-udp') await fillUdp();
  else throw new Error(`unknown mode ${JSON.stringify(mode)}`);
} catch (err) {
  process.stderr.write(`flows-child: ${err && err.stack ? err.stack : String(err)}\n`);
  process.exit(1);
}
