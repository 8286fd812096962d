#!/usr/bin/env python3
"""
Raw packets on loopback for the protocol tests (test/integration/protocols.test.ts), for what Node
has no socket API for. Run inside a test namespace (`ip netns exec`); only the standard library.

  rawnet.py send '<json>'   Sends hand-built SCTP (or any IP protocol) packets through raw sockets:
                            the kernel has no SCTP sockets here (CONFIG_IP_SCTP is off), but
                            conntrack's SCTP tracker (CONFIG_NF_CT_PROTO_SCTP) sees raw packets
                            like any others. JSON: {"packets": [{"family": 4|6, "src", "dst",
                            "proto": 132, "sport", "dport", "vtag", "chunks": [...]} | {...,
                            "proto": N, "payload": "hex"}]}. Prints {"sent": N}.
  rawnet.py sniff           Captures TCP segments leaving `lo` (AF_PACKET, outgoing copies only, so
                            each segment once) until stdin closes; prints "ready" when capturing,
                            then one JSON object per segment: addresses, ports, flags, seq, ack,
                            TCP timestamp option and the first bytes of payload.
"""
import json
import select
import socket
import struct
import sys

# ---------------------------------------------------------------------------------------------
# SCTP (RFC 9260): common header, chunks, CRC32c

_CRC32C_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


CHUNK_TYPES = {
    'data': 0, 'init': 1, 'init_ack': 2, 'sack': 3, 'heartbeat': 4, 'heartbeat_ack': 5,
    'abort': 6, 'shutdown': 7, 'shutdown_ack': 8, 'cookie_echo': 10, 'cookie_ack': 11,
    'shutdown_complete': 14,
}


def pad4(b: bytes) -> bytes:
    return b + b'\0' * (-len(b) % 4)


def chunk(kind: str, spec: dict) -> bytes:
    t = CHUNK_TYPES[kind]
    flags = spec.get('flags', 0)
    if kind in ('init', 'init_ack'):
        value = struct.pack('!IIHHI', spec['initTag'], spec.get('rwnd', 65536),
                            spec.get('streams', 10), spec.get('streams', 10), spec.get('tsn', 1))
        if kind == 'init_ack':
            cookie = bytes.fromhex(spec.get('cookie', '00' * 16))
            value += pad4(struct.pack('!HH', 7, 4 + len(cookie)) + cookie)  # State Cookie
    elif kind == 'cookie_echo':
        value = bytes.fromhex(spec.get('cookie', '00' * 16))
    elif kind == 'data':
        payload = spec.get('payload', 'hello').encode()
        flags = spec.get('flags', 3)  # B and E: one unfragmented message
        value = struct.pack('!IHHI', spec.get('tsn', 1), 0, 0, 0) + payload
    elif kind == 'sack':
        value = struct.pack('!IIHH', spec.get('cumTsn', 1), 65536, 0, 0)
    elif kind == 'shutdown':
        value = struct.pack('!I', spec.get('cumTsn', 0))
    elif kind in ('heartbeat', 'heartbeat_ack'):
        info = b'hbinfo00'
        value = struct.pack('!HH', 1, 4 + len(info)) + info
    else:
        value = b''
    return pad4(struct.pack('!BBH', t, flags, 4 + len(value)) + value)


def sctp_packet(p: dict) -> bytes:
    body = b''.join(chunk(c['type'], c) for c in p['chunks'])
    header = struct.pack('!HHII', p['sport'], p['dport'], p['vtag'], 0)
    crc = crc32c(header + body)
    # The checksum field holds the CRC32c in little-endian byte order (as the kernel computes it).
    return header[:8] + struct.pack('<I', crc) + body


def send(spec: dict) -> None:
    sockets = {}
    sent = 0
    for p in spec['packets']:
        family = socket.AF_INET6 if p['family'] == 6 else socket.AF_INET
        proto = p.get('proto', 132)
        key = (family, proto, p['src'])
        s = sockets.get(key)
        if s is None:
            s = socket.socket(family, socket.SOCK_RAW, proto)
            s.bind((p['src'], 0))  # the kernel fills in the IP header with this source
            sockets[key] = s
        data = sctp_packet(p) if proto == 132 and 'chunks' in p else bytes.fromhex(p.get('payload', ''))
        s.sendto(data, (p['dst'], 0))
        sent += 1
    for s in sockets.values():
        s.close()
    print(json.dumps({'sent': sent}), flush=True)


# ---------------------------------------------------------------------------------------------
# Sniffer

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def tcp_options(opts: bytes) -> dict:
    out = {}
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts):
            break
        length = opts[i + 1]
        if length < 2:
            break
        if kind == 8 and length == 10:
            out['tsval'], out['tsecr'] = struct.unpack('!II', opts[i + 2:i + 10])
        elif kind == 2 and length == 4:
            out['mss'] = struct.unpack('!H', opts[i + 2:i + 4])[0]
        elif kind == 3 and length == 3:
            out['wscale'] = opts[i + 2]
        elif kind == 4 and length == 2:
            out['sackPerm'] = True
        i += length
    return out


def parse(frame: bytes):
    # lo frames carry a 14-byte Ethernet header of zeros.
    if len(frame) < 14:
        return None
    ethertype = struct.unpack('!H', frame[12:14])[0]
    ip = frame[14:]
    if ethertype == 0x0800 and len(ip) >= 20:
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:
            return None
        total = struct.unpack('!H', ip[2:4])[0]
        src, dst = socket.inet_ntop(socket.AF_INET, ip[12:16]), socket.inet_ntop(socket.AF_INET, ip[16:20])
        tcp = ip[ihl:total]
    elif ethertype == 0x86DD and len(ip) >= 40:
        if ip[6] != 6:  # no extension headers on these test packets
            return None
        plen = struct.unpack('!H', ip[4:6])[0]
        src, dst = socket.inet_ntop(socket.AF_INET6, ip[8:24]), socket.inet_ntop(socket.AF_INET6, ip[24:40])
        tcp = ip[40:40 + plen]
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport, seq, ack, off_flags = struct.unpack('!HHIIH', tcp[:14])
    doff = (off_flags >> 12) * 4
    flags = off_flags & 0x1FF
    names = [n for bit, n in ((0x02, 'S'), (0x10, 'A'), (0x01, 'F'), (0x04, 'R'), (0x08, 'P')) if flags & bit]
    payload = tcp[doff:]
    seg = {'src': src, 'dst': dst, 'sport': sport, 'dport': dport, 'flags': ''.join(names),
           'seq': seq, 'ack': ack, 'len': len(payload), 'payload': payload[:200].decode('latin-1')}
    seg.update(tcp_options(tcp[20:doff]))
    return seg


def sniff() -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind(('lo', 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    print('ready', flush=True)
    segments = []
    stdin = sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([s, stdin], [], [])
        if s in readable:
            frame, addr = s.recvfrom(70000)
            if addr[2] == PACKET_OUTGOING:
                seg = parse(frame)
                if seg is not None:
                    segments.append(seg)
        if stdin in readable:
            # Drain what is already queued, then stop.
            if not __import__('os').read(stdin, 4096):
                s.setblocking(False)
                try:
                    while True:
                        frame, addr = s.recvfrom(70000)
                        if addr[2] == PACKET_OUTGOING:
                            seg = parse(frame)
                            if seg is not None:
                                segments.append(seg)
                except BlockingIOError:
                    pass
                break
    for seg in segments:
        print(json.dumps(seg))
    sys.stdout.flush()


if __name__ == '__main__':
    if len(sys.argv) >= 3 and sys.argv[1] == 'send':
        send(json.loads(sys.argv[2]))
    elif len(sys.argv) == 2 and sys.argv[1] == 'sniff':
        sniff()
    else:
        sys.exit(__doc__)
