// Operating errors returned (not thrown) by the raft core, e.g. from propose().
// Stable codes; the caller maps them to client redirects or back-pressure.
// ERR_RAFT_NOT_LEADER is raft-specific and not (yet) in stdx ErrorCode; ERR_LIMIT
// matches the stdx code of the same meaning.

export type RaftErrorCode =
  | 'ERR_RAFT_NOT_LEADER' // this node is not the leader; leaderId is a hint (NONE if unknown)
  | 'ERR_LIMIT'; // too many uncommitted proposals, or an entry larger than a message may carry

export class RaftError extends Error {
  readonly code: RaftErrorCode;
  /** For ERR_RAFT_NOT_LEADER: the leader this node knows of, or 0 (NONE). */
  readonly leaderId: number;
  constructor(code: RaftErrorCode, message: string, leaderId = 0) {
    super(message);
    this.code = code;
    this.leaderId = leaderId;
    this.name = 'RaftError';
  }
}
