// SPC-2 reservations: RESERVE (6) 0x16 and RELEASE (6) 0x17 (SPC-2 5.5 and its
// RESERVE (6) / RELEASE (6) clauses), the reserve/release method older initiators (and
// clusters built on SCSI-2 reservations) use. One nexus holds the whole logical unit; other nexuses may then
// only run the commands that help them find out what is going on.
//
// Invariants:
// - At most one holder, identified by its nexus key (types.ts Nexus). The reservation
//   lives in this gateway's memory only: it is not persistent (SPC-2: a power on loses
//   it) and is not seen by other gateways exporting the same volume; pass one
//   Spc2Reservation to every LU of a gateway that serves the same volume so they agree.
// - Released by RELEASE (6) from the holder, by the holder's I_T nexus loss (the LU's
//   forgetNexus), and by a logical unit reset (the LU's reset()) — SPC-2 5.5.
// - Under a reservation, a nexus other than the holder gets RESERVATION CONFLICT for
//   everything except INQUIRY, REQUEST SENSE, REPORT LUNS and RELEASE (6) (which is
//   GOOD and changes nothing, SPC-2 RELEASE (6)). TEST UNIT READY conflicts too: it is not
//   among SPC-2's exceptions, and that is how an initiator learns the LU is reserved.
// - SPC-2 and persistent reservations exclude each other (SPC-3 5.6.3, kept by SPC-4
//   "Exceptions to SPC-2 RESERVE and RELEASE behavior"): while an SPC-2 reservation
//   exists every PERSISTENT RESERVE IN/OUT conflicts, from the holder too; while any
//   PR registration exists every RESERVE (6) and RELEASE (6) conflicts. Registrations
//   are read through the gate's PR IN READ KEYS, the only view of them the LU has.
//   A PR OUT already admitted when a RESERVE (6) checks the registrations can still
//   commit after it (the check and the commit are not one step); the window is one
//   PR OUT wide and only mixes the two methods, which no sane initiator does.
// - Third-party (3RDPTY) and extent reservations were made obsolete by SPC-2 and are
//   not supported: those bits set → INVALID FIELD IN CDB.
import type { Nexus, ReservationGate, ScsiResult } from './types.js';
import { SAM_GOOD, SAM_RESERVATION_CONFLICT } from './types.js';
import {
  OP_INQUIRY,
  OP_PERSISTENT_RESERVE_IN,
  OP_PERSISTENT_RESERVE_OUT,
  OP_RELEASE_6,
  OP_REPORT_LUNS,
  OP_REQUEST_SENSE,
  be32,
} from './cdb.js';
import { good, invalidFieldInCdb } from './sense.js';

export class Spc2Reservation {
  private holderKey: string | null = null;

  /** The nexus key holding the reservation, or null. */
  get holder(): string | null {
    return this.holderKey;
  }

  /** Whether `opcode` from `nexusKey` must be answered RESERVATION CONFLICT (see the header). */
  conflicts(nexusKey: string, opcode: number): boolean {
    if (this.holderKey === null) return false;
    switch (opcode) {
      case OP_INQUIRY:
      case OP_REQUEST_SENSE:
      case OP_REPORT_LUNS:
      case OP_RELEASE_6:
        return false;
      case OP_PERSISTENT_RESERVE_IN:
      case OP_PERSISTENT_RESERVE_OUT:
        return true;
      default:
        return this.holderKey !== nexusKey;
    }
  }

  /** Takes the reservation for `nexusKey`; false when another nexus holds it. Re-reserving is GOOD. */
  reserve(nexusKey: string): boolean {
    if (this.holderKey !== null && this.holderKey !== nexusKey) return false;
    this.holderKey = nexusKey;
    return true;
  }

  /** Releases it if `nexusKey` holds it; from anyone else it changes nothing (SPC-2 RELEASE (6)). */
  release(nexusKey: string): void {
    if (this.holderKey === nexusKey) this.holderKey = null;
  }

  /** Logical unit reset, hard reset: released whoever holds it. */
  clear(): void {
    this.holderKey = null;
  }
}

function conflict(): ScsiResult {
  return { status: SAM_RESERVATION_CONFLICT, sense: null, dataIn: null };
}

/**
 * Whether the volume has any PR registration, through PR IN READ KEYS (SPC-4 6.15.2:
 * ADDITIONAL LENGTH = 8 × keys). A non-GOOD answer (e.g. NOT READY when the gateway
 * cannot know the PR state) is passed on as the command's answer.
 */
async function registrations(gate: ReservationGate | undefined, nexus: Nexus): Promise<boolean | ScsiResult> {
  if (gate === undefined) return false;
  const readKeys = Buffer.from([OP_PERSISTENT_RESERVE_IN, 0x00, 0, 0, 0, 0, 0, 0, 8, 0]);
  const r = await gate.prIn(nexus, readKeys, 8);
  if (r.status !== SAM_GOOD) return r;
  return r.dataIn !== null && r.dataIn.length >= 8 && be32(r.dataIn, 4) > 0;
}

/** RESERVE (6) 0x16 (SPC-2): logical unit reservation for the sending nexus. */
export async function reserve6(res: Spc2Reservation, gate: ReservationGate | undefined, nexus: Nexus, cdb: Buffer): Promise<ScsiResult> {
  if ((cdb[1] & 0x10) !== 0) return invalidFieldInCdb(1, 4); // 3RDPTY
  if ((cdb[1] & 0x01) !== 0) return invalidFieldInCdb(1, 0); // EXTENT
  const registered = await registrations(gate, nexus);
  if (registered !== false) return registered === true ? conflict() : registered;
  return res.reserve(nexus.key) ? good() : conflict();
}

/** RELEASE (6) 0x17 (SPC-2): ends the sender's reservation; GOOD whoever sends it. */
export async function release6(res: Spc2Reservation, gate: ReservationGate | undefined, nexus: Nexus, cdb: Buffer): Promise<ScsiResult> {
  if ((cdb[1] & 0x10) !== 0) return invalidFieldInCdb(1, 4); // 3RDPTY
  if ((cdb[1] & 0x01) !== 0) return invalidFieldInCdb(1, 0); // EXTENT
  const registered = await registrations(gate, nexus);
  if (registered !== false) return registered === true ? conflict() : registered;
  res.release(nexus.key);
  return good();
}
