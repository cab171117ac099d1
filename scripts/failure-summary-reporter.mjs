// A node:test reporter that collects failed tests and yields, at the end, one short
// entry per failure: file, test name and the first lines of its error. run-tests.mjs
// prints it after the spec reporter's output, so a CI log whose tail is all that is
// shown still names every failure and why (the spec reporter's own summary prints
// whole messages, and one test's daemon-log dump can push the others out of sight).
const LINES_MAX = 12;
const LINE_CHARS_MAX = 300;

function describe(err) {
  const e = err?.cause ?? err;
  const text = String(e?.message ?? e ?? 'unknown error');
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .slice(0, LINES_MAX)
    .map((l) => (l.length > LINE_CHARS_MAX ? `${l.slice(0, LINE_CHARS_MAX)}…` : l))
    .join('\n    ');
}

export default async function* failureSummary(source) {
  const failures = [];
  for await (const ev of source) {
    if (ev.type !== 'test:fail') continue;
    // A todo test (a known gap kept as a reproducer) does not fail the run.
    if (ev.data.todo !== undefined && ev.data.todo !== false) continue;
    const err = ev.data.details?.error;
    // A suite that failed because a test in it failed adds nothing.
    if (err?.failureType === 'subtestsFailed') continue;
    failures.push(`- ${ev.data.file ?? '?'}\n  ${ev.data.name}\n    ${describe(err)}`);
  }
  if (failures.length > 0) yield `\n=== ${failures.length} failed test(s), first lines of each error ===\n${failures.join('\n')}\n`;
}
