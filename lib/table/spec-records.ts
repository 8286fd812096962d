/**
 * Entry specs (entry-spec.ts, already validated) written as the fixed-size spec records that
 * createMany() and updateMany() hand to native code (native/record_layout.h spec_slot, read by
 * native/entry_specs.cc): a batch of thousands crosses the binding as one Uint32Array instead of
 * thousands of objects. Every slot and bit comes from the addon's layout.
 */
import { layoutConstant as layout } from '../binding/layout.js';
import type { NativeEntrySpec, NativeNatRange, NativeTupleSpec } from '../binding/native.js';

export const SPEC_SLOTS = layout('specSlot', 'count');
const S_FIELDS = layout('specSlot', 'fields');
const S_FAMILY = layout('specSlot', 'family');
const S_ORIG = layout('specSlot', 'orig');
const S_REPLY = layout('specSlot', 'reply');
const S_ID = layout('specSlot', 'id');
const S_MARK = layout('specSlot', 'mark');
const S_TIMEOUT = layout('specSlot', 'timeout');
const S_STATUS = layout('specSlot', 'status');
const S_TCP_STATE = layout('specSlot', 'tcpState');
const S_ZONE = layout('specSlot', 'zone');
const S_LABELS = layout('specSlot', 'labels');
const S_LABELS_MASK = layout('specSlot', 'labelsMask');
const S_NAT_SRC = layout('specSlot', 'natSrc');
const S_NAT_DST = layout('specSlot', 'natDst');
const T_HAS = layout('specTuple', 'has');
const T_PROTO = layout('specTuple', 'proto');
const T_PORTS = layout('specTuple', 'ports');
const T_ICMP = layout('specTuple', 'icmp');
const T_SRC = layout('specTuple', 'src');
const T_DST = layout('specTuple', 'dst');
const N_MIN = layout('specNat', 'min');
const N_MAX = layout('specNat', 'max');
const N_PORTS = layout('specNat', 'ports');
const N_HAS_PORTS = layout('specNat', 'hasPorts');
const F_ORIG = layout('specField', 'orig');
const F_REPLY = layout('specField', 'reply');
const F_ID = layout('specField', 'id');
const F_MARK = layout('specField', 'mark');
const F_TIMEOUT = layout('specField', 'timeout');
const F_STATUS = layout('specField', 'status');
const F_TCP_STATE = layout('specField', 'tcpState');
const F_ZONE = layout('specField', 'zone');
const F_LABELS = layout('specField', 'labels');
const F_LABELS_MASK = layout('specField', 'labelsMask');
const F_NAT_SRC = layout('specField', 'natSrc');
const F_NAT_DST = layout('specField', 'natDst');
const HAS_PROTO = layout('tupleHas', 'proto');
const HAS_PORTS = layout('tupleHas', 'ports');
const HAS_ICMP = layout('tupleHas', 'icmp');
const HAS_SRC = layout('tupleHas', 'src');
const HAS_DST = layout('tupleHas', 'dst');
const PROTO_SHIFT = layout('tupleWord', 'proto');
const SPORT_SHIFT = layout('tupleWord', 'sport');
const DPORT_SHIFT = layout('tupleWord', 'dport');
const ICMP_TYPE_SHIFT = layout('tupleWord', 'icmpType');
const ICMP_CODE_SHIFT = layout('tupleWord', 'icmpCode');
const ICMP_ID_SHIFT = layout('tupleWord', 'icmpId');

/** A growable batch of spec records: `words` and `bytes` view the same memory. */
export class SpecRecords {
  words: Uint32Array;
  bytes: Uint8Array;
  count = 0;

  constructor(capacity: number) {
    this.words = new Uint32Array(capacity * SPEC_SLOTS);
    this.bytes = new Uint8Array(this.words.buffer);
  }

  get capacity(): number {
    return this.words.length / SPEC_SLOTS;
  }

  /** Appends `spec` as the next record. */
  push(spec: NativeEntrySpec): void {
    const base = this.count * SPEC_SLOTS;
    const w = this.words;
    w.fill(0, base, base + SPEC_SLOTS);
    let fields = 0;
    w[base + S_FAMILY] = spec.family;
    if (spec.orig !== undefined) {
      this.#tuple(base + S_ORIG, spec.orig);
      fields |= F_ORIG;
    }
    if (spec.reply !== undefined) {
      this.#tuple(base + S_REPLY, spec.reply);
      fields |= F_REPLY;
    }
    if (spec.id !== undefined) {
      w[base + S_ID] = spec.id;
      fields |= F_ID;
    }
    if (spec.mark !== undefined) {
      w[base + S_MARK] = spec.mark;
      fields |= F_MARK;
    }
    if (spec.timeout !== undefined) {
      w[base + S_TIMEOUT] = spec.timeout;
      fields |= F_TIMEOUT;
    }
    if (spec.status !== undefined) {
      w[base + S_STATUS] = spec.status;
      fields |= F_STATUS;
    }
    if (spec.tcpState !== undefined) {
      w[base + S_TCP_STATE] = spec.tcpState;
      fields |= F_TCP_STATE;
    }
    if (spec.zone !== undefined) {
      w[base + S_ZONE] = spec.zone;
      fields |= F_ZONE;
    }
    if (spec.labels !== undefined) {
      w.set(spec.labels, base + S_LABELS);
      fields |= F_LABELS;
    }
    if (spec.labelsMask !== undefined) {
      w.set(spec.labelsMask, base + S_LABELS_MASK);
      fields |= F_LABELS_MASK;
    }
    if (spec.natSrc !== undefined) {
      this.#nat(base + S_NAT_SRC, spec.natSrc);
      fields |= F_NAT_SRC;
    }
    if (spec.natDst !== undefined) {
      this.#nat(base + S_NAT_DST, spec.natDst);
      fields |= F_NAT_DST;
    }
    w[base + S_FIELDS] = fields;
    this.count++;
  }

  #tuple(at: number, t: NativeTupleSpec): void {
    const w = this.words;
    let has = HAS_PROTO | HAS_SRC | HAS_DST;
    w[at + T_PROTO] = t.proto << PROTO_SHIFT;
    if (t.sport !== undefined) {
      w[at + T_PORTS] = ((t.sport << SPORT_SHIFT) | ((t.dport ?? 0) << DPORT_SHIFT)) >>> 0;
      has |= HAS_PORTS;
    }
    if (t.icmpType !== undefined) {
      w[at + T_ICMP] = ((t.icmpType << ICMP_TYPE_SHIFT) | ((t.icmpCode ?? 0) << ICMP_CODE_SHIFT) | ((t.icmpId ?? 0) << ICMP_ID_SHIFT)) >>> 0;
      has |= HAS_ICMP;
    }
    w[at + T_HAS] = has;
    this.bytes.set(t.src, (at + T_SRC) * 4);
    this.bytes.set(t.dst, (at + T_DST) * 4);
  }

  #nat(at: number, n: NativeNatRange): void {
    this.bytes.set(n.min, (at + N_MIN) * 4);
    this.bytes.set(n.max, (at + N_MAX) * 4);
    if (n.minPort !== undefined) {
      this.words[at + N_PORTS] = ((n.minPort & 0xffff) | ((n.maxPort ?? n.minPort) << 16)) >>> 0;
      this.words[at + N_HAS_PORTS] = 1;
    }
  }
}
