/**
 * A minimal FTP server and client in one process, for conntrack's FTP helper (and FTP NAT) on
 * loopback. Run inside a test namespace: `node ftp-child.mjs '<json config>'`.
 *
 * Config: { serverAddress, serverPort, connectAddress, connectPort, clientAddress }. The server
 * listens on serverAddress:serverPort; the client, bound to clientAddress, connects to
 * connectAddress:connectPort (the same, or an address DNAT sends to the server).
 *
 * Commands, one per stdin line; one JSON answer per stdout line:
 * - (start)        → { control: { clientLocal, clientRemote, serverLocal, serverRemote } }
 *                    after 220 / USER / 331 / PASS / 230.
 * - `pasv`         → { sent, received }: the client sent PASV; `sent` is the 227 line the server
 *                    wrote, `received` the one the client read (a NAT helper may have rewritten it).
 * - `pasv-connect` → { data: {...} }: the client opens the data connection to the address in the
 *                    227 it received; one line of data flows each way; the connection stays open.
 * - `port`         → { sent, received }: the client listens on clientAddress and sends PORT; the
 *                    server answers 200; `received` is the PORT line as the server read it.
 * - `port-connect` → { data: {...} }: the server connects (from serverAddress) to the address in the
 *                    PORT it received; one line each way; stays open.
 * - `quit`         → { quit: true }: QUIT / 221 on the control connection (sockets stay open).
 * stdin closing ends everything.
 */
import net from 'node:net';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

const config = JSON.parse(process.argv[2] ?? '{}');
const sockets = new Set();
const track = (s) => { sockets.add(s); s.on('error', () => {}); return s; };

/** Reads CRLF-terminated lines from a socket, one at a time. */
function lineReader(socket) {
  let buffered = '';
  const lines = [];
  const waiters = [];
  socket.on('data', (chunk) => {
    buffered += chunk.toString('latin1');
    let i;
    while ((i = buffered.indexOf('\r\n')) >= 0) {
      lines.push(buffered.slice(0, i));
      buffered = buffered.slice(i + 2);
    }
    while (waiters.length > 0 && lines.length > 0) waiters.shift()(lines.shift());
  });
  return () => new Promise((resolve) => {
    if (lines.length > 0) resolve(lines.shift());
    else waiters.push(resolve);
  });
}


function describe(client, server) {
  return {
    clientLocal: `${client.localAddress}:${client.localPort}`,
    clientRemote: `${client.remoteAddress}:${client.remotePort}`,
    serverLocal: `${server.localAddress}:${server.localPort}`,
    serverRemote: `${server.remoteAddress}:${server.remotePort}`,
  };
}

/** "h1,h2,h3,h4,p1,p2" → { host, port }. */
function parseHostPort(text) {
  const m = /(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)/.exec(text);
  if (!m) throw new Error(`no h1,h2,h3,h4,p1,p2 in ${JSON.stringify(text)}`);
  const n = m.slice(1).map(Number);
  return { host: n.slice(0, 4).join('.'), port: n[4] * 256 + n[5] };
}

function hostPort(address, port) {
  return `${address.split('.').join(',')},${port >> 8},${port & 255}`;
}

async function acceptOne(server) {
  const [socket] = await once(server, 'connection');
  return track(socket);
}

async function listen(address) {
  const server = net.createServer();
  server.listen({ host: address, port: 0 });
  await once(server, 'listening');
  return server;
}

/** One line each way on a fresh data connection, then leave it open. */
async function exchange(a, b) {
  const readA = lineReader(a);
  const readB = lineReader(b);
  a.write('data from one side\r\n');
  await readB();
  b.write('data from the other side\r\n');
  await readA();
}

async function main() {
  const controlServer = net.createServer();
  controlServer.listen({ host: config.serverAddress, port: config.serverPort });
  await once(controlServer, 'listening');

  const client = track(net.connect({ host: config.connectAddress, port: config.connectPort, localAddress: config.clientAddress }));
  const serverSide = await acceptOne(controlServer);
  await once(client, 'connect').catch(() => {});
  const clientRead = lineReader(client);
  const serverRead = lineReader(serverSide);

  // Each command and answer is one write, so one segment: the helper parses whole lines.
  const say = async (from, text, read) => {
    from.write(`${text}\r\n`);
    return read();
  };
  await say(serverSide, '220 test FTP server', clientRead);
  await say(client, 'USER anonymous', serverRead);
  await say(serverSide, '331 password please', clientRead);
  await say(client, 'PASS test@', serverRead);
  await say(serverSide, '230 logged in', clientRead);
  const report = (object) => process.stdout.write(`${JSON.stringify(object)}\n`);
  report({ control: describe(client, serverSide) });

  let pasv;
  let port;
  for await (const line of createInterface({ input: process.stdin })) {
    const cmd = line.trim();
    if (cmd === 'pasv') {
      const dataServer = await listen(config.serverAddress);
      const { port: dataPort } = dataServer.address();
      await say(client, 'PASV', serverRead);
      const sent = `227 Entering Passive Mode (${hostPort(config.serverAddress, dataPort)}).`;
      const received = await say(serverSide, sent, clientRead);
      pasv = { dataServer, received };
      report({ sent, received });
    } else if (cmd === 'pasv-connect') {
      const target = parseHostPort(pasv.received);
      const dataClient = track(net.connect({ host: target.host, port: target.port, localAddress: config.clientAddress }));
      const dataServerSide = await acceptOne(pasv.dataServer);
      await exchange(dataClient, dataServerSide);
      report({ data: describe(dataClient, dataServerSide) });
    } else if (cmd === 'port') {
      const dataServer = await listen(config.clientAddress);
      const { port: dataPort } = dataServer.address();
      const sent = `PORT ${hostPort(config.clientAddress, dataPort)}`;
      const received = await say(client, sent, serverRead);
      await say(serverSide, '200 PORT command successful', clientRead);
      port = { dataServer, received };
      report({ sent, received });
    } else if (cmd === 'port-connect') {
      const target = parseHostPort(port.received);
      const dataServerSide = track(net.connect({ host: target.host, port: target.port, localAddress: config.serverAddress }));
      const dataClient = await acceptOne(port.dataServer);
      await exchange(dataServerSide, dataClient);
      report({ data: describe(dataClient, dataServerSide) });
    } else if (cmd === 'quit') {
      await say(client, 'QUIT', serverRead);
      await say(serverSide, '221 bye', clientRead);
      report({ quit: true });
    } else if (cmd !== '') {
      report({ error: `unknown command ${cmd}` });
    }
  }
  for (const s of sockets) s.destroy();
  controlServer.close();
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exit(1);
});
