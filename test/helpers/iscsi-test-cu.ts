// libiscsi's iscsi-test-cu for the conformance tests: its `-v -V` output parsed
// into per-test verdicts (used by iscsi.test.ts and iscsi-cluster.test.ts).
//
// Invariant: a test counts as passed only if CUnit said "passed" and libiscsi
// did not log "[SKIPPED]" for it (libiscsi reports a skip as a pass).

/** One iscsi-test-cu verdict. */
export interface Verdict {
  /** `${suite}.${test}` as printed, e.g. "ALL.PrinReadKeys.Simple". */
  name: string;
  result: 'pass' | 'skip' | 'fail' | 'none';
}

/**
 * Parses `iscsi-test-cu -v -V` output: "Suite: S", "  Test: T ...", log lines, then
 * CUnit's "passed"/"FAILED". libiscsi reports a skip as a pass that logged "[SKIPPED]".
 */
export function parseIscsiTestCu(text: string): Verdict[] {
  const ev = /Suite: (\S+)|Test: (\S+) (?=\.\.\.)|(\[SKIPPED\])|(?:^|\.\.\.)(passed|FAILED)\b/gm;
  const out: Array<Verdict & { skipped: boolean; done: boolean }> = [];
  let suite: string | null = null;
  let cur: (Verdict & { skipped: boolean; done: boolean }) | null = null;
  for (const m of text.matchAll(ev)) {
    if (m[1]) {
      suite = m[1];
      cur = null;
    } else if (m[2] && suite) {
      cur = { name: `${suite}.${m[2]}`, result: 'none', skipped: false, done: false };
      out.push(cur);
    } else if (m[3] && cur && !cur.done) {
      cur.skipped = true;
    } else if (m[4] && cur && !cur.done) {
      cur.done = true;
      cur.result = m[4] === 'FAILED' ? 'fail' : cur.skipped ? 'skip' : 'pass';
    }
  }
  return out.map(({ name, result }) => ({ name, result }));
}

/**
 * The log lines of each test in `iscsi-test-cu -v -V` output, by `${suite}.${test}`
 * (as in parseIscsiTestCu): from its "Test: T ..." line up to the next test or suite.
 */
export function iscsiTestCuSections(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let suite: string | null = null;
  let name: string | null = null;
  let lines: string[] = [];
  const flush = (): void => {
    if (name !== null) out.set(name, lines.join('\n'));
    name = null;
    lines = [];
  };
  for (const line of text.split('\n')) {
    const s = /Suite: (\S+)/.exec(line);
    const t = /Test: (\S+) (?=\.\.\.)/.exec(line);
    if (s) {
      flush();
      suite = s[1];
    } else if (t && suite !== null) {
      flush();
      name = `${suite}.${t[1]}`;
    }
    if (name !== null) lines.push(line);
  }
  flush();
  return out;
}
