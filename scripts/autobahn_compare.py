#!/usr/bin/env python3
"""Summarize an Autobahn fuzzingclient report and compare it with the expected results.

Usage:
    autobahn_compare.py INDEX_JSON EXPECTED_JSON [--agent NAME] [--record]

INDEX_JSON is the `index.json` that `wstest -m fuzzingclient` writes; EXPECTED_JSON is
`autobahn/expected-results.json` in the repository, shaped like the index's entry for one
agent: {"1.1.1": {"behavior": "OK", "behaviorClose": "OK"}, ...}.

Prints one table row per case group (counts of each `behavior`, plus the cases whose
closing behaviour was not clean), lists every case that is not clean, then compares each
case with its expected entry:

* a regression is a case that was clean and is not now, a case that is now FAILED or
  NON-STRICT (or closes uncleanly) where it was not before, or an expected case that the
  run did not report; any regression makes the exit status 1;
* an improvement (a case that is clean now and was not) is reported but does not fail;
* a case that is not in EXPECTED_JSON is new: it fails only if it is not clean and its
  behaviour is FAILED or NON-STRICT or its closing behaviour is not clean.

"Clean" is the strict-close rule: `behavior` OK or INFORMATIONAL and `behaviorClose` OK or
INFORMATIONAL. NON-STRICT is not clean: RFC 6455 conformance means none of it.

With --record the run's results for the cases it ran are merged into EXPECTED_JSON
(cases of other groups are kept) and nothing fails.

Exit status: 0 (no regression), 1 (regression), 2 (report missing or unreadable).
Standard library only, Python 3.
"""
import argparse
import json
import os
import sys
from collections import Counter, OrderedDict

BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
CLEAN = {"OK", "INFORMATIONAL"}
# Behaviours that are a regression even for a case we have never seen before.
BAD = {"FAILED", "NON-STRICT"}


def case_key(case_id):
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in case_id.split("."))


def group_of(case_id):
    return case_id.split(".", 1)[0]


def is_clean(entry):
    return entry.get("behavior") in CLEAN and entry.get("behaviorClose") in CLEAN


def describe(entry):
    if entry is None:
        return "missing"
    return "behavior={} close={}".format(entry.get("behavior"), entry.get("behaviorClose"))


def load_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print("autobahn: cannot read {} {}: {}".format(what, path, e), file=sys.stderr)
        return None


def print_table(cases):
    by_group = OrderedDict()
    for cid in sorted(cases, key=case_key):
        by_group.setdefault(group_of(cid), []).append(cid)
    header = ["group", "cases"] + BEHAVIORS + ["unclean close"]
    rows = []
    totals = Counter()
    for group, ids in by_group.items():
        counts = Counter(cases[c].get("behavior") for c in ids)
        unclean = sum(1 for c in ids if cases[c].get("behaviorClose") not in CLEAN)
        row = [group, len(ids)] + [counts.get(b, 0) for b in BEHAVIORS] + [unclean]
        other = len(ids) - sum(counts.get(b, 0) for b in BEHAVIORS)
        if other:
            row[-1] = "{} (+{} other behaviour)".format(unclean, other)
        rows.append(row)
        totals.update({"cases": len(ids), "unclean close": unclean})
        totals.update({b: counts.get(b, 0) for b in BEHAVIORS})
    rows.append(["all", totals["cases"]] + [totals[b] for b in BEHAVIORS]
                + [totals["unclean close"]])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "| " + " | ".join(str(x).rjust(w) for x, w in zip(r, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for r in rows:
        print(line(r))


def print_not_clean(cases, report):
    """Lists the cases that are not clean, one line per behaviour pair; a subgroup (say
    12.1) whose cases all share that pair is written `12.1.*`."""
    subgroup = lambda cid: cid.rsplit(".", 1)[0]
    members = {}
    for cid in cases:
        members.setdefault(subgroup(cid), set()).add(cid)
    by_pair = OrderedDict()
    for cid in sorted(cases, key=case_key):
        if not is_clean(cases[cid]):
            by_pair.setdefault(describe(cases[cid]), []).append(cid)
    for pair, ids in by_pair.items():
        names, done = [], set()
        for cid in ids:
            sub = subgroup(cid)
            if sub in done:
                continue
            if sub != cid.split(".", 1)[0] and members[sub] <= set(ids):
                names.append(sub + ".*")
                done.add(sub)
            else:
                code = report[cid].get("remoteCloseCode")
                names.append(cid if code is None else "{} (close code {})".format(cid, code))
        print("  not clean, {}: {} case(s): {}".format(pair, len(ids), ", ".join(names)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("index")
    ap.add_argument("expected")
    ap.add_argument("--agent", default="wshub")
    ap.add_argument("--record", action="store_true",
                    help="merge this run's results into the expected file")
    args = ap.parse_args()

    index = load_json(args.index, "report")
    if index is None:
        return 2
    if args.agent not in index:
        print("autobahn: agent {!r} not in report (agents: {})".format(
            args.agent, ", ".join(sorted(index)) or "none"), file=sys.stderr)
        return 2
    cases = {cid: {"behavior": c.get("behavior"), "behaviorClose": c.get("behaviorClose")}
             for cid, c in index[args.agent].items()}
    if not cases:
        print("autobahn: the report holds no case", file=sys.stderr)
        return 2

    print_table(cases)
    print_not_clean(cases, index[args.agent])

    expected = {}
    try:
        with open(args.expected) as f:
            expected = json.load(f)
    except FileNotFoundError:
        if not args.record:
            print("autobahn: no expected results at {} (run with --record to create them)"
                  .format(args.expected), file=sys.stderr)
    except ValueError as e:
        print("autobahn: cannot parse {}: {}".format(args.expected, e), file=sys.stderr)
        return 2

    if args.record:
        expected.update(cases)
        ordered = OrderedDict((c, expected[c]) for c in sorted(expected, key=case_key))
        with open(args.expected, "w") as f:
            json.dump(ordered, f, indent=1)
            f.write("\n")
        print("autobahn: recorded {} cases into {} ({} in all)".format(
            len(cases), os.path.relpath(args.expected), len(ordered)))

    # Only the groups this run covered are compared: running "1" must not report 2..13 missing.
    groups = {group_of(c) for c in cases}
    regressions, improvements, changed = [], [], []
    compared = sorted(set(cases) | {c for c in expected if group_of(c) in groups}, key=case_key)
    for cid in compared:
        now, was = cases.get(cid), expected.get(cid)
        if now is None:
            regressions.append((cid, was, now))
        elif was is None:
            if not is_clean(now) and (now.get("behavior") in BAD
                                      or now.get("behaviorClose") not in CLEAN):
                regressions.append((cid, was, now))
        elif now == was:
            continue
        elif is_clean(was) and not is_clean(now):
            regressions.append((cid, was, now))
        elif now.get("behavior") in BAD and was.get("behavior") not in BAD:
            regressions.append((cid, was, now))
        elif now.get("behaviorClose") not in CLEAN and was.get("behaviorClose") in CLEAN:
            regressions.append((cid, was, now))
        elif is_clean(now) and not is_clean(was):
            improvements.append((cid, was, now))
        else:
            changed.append((cid, was, now))

    for title, items in (("improved", improvements), ("changed", changed),
                         ("REGRESSION", regressions)):
        for cid, was, now in items:
            print("  {} {}: expected {}, got {}".format(title, cid, describe(was), describe(now)))
    if improvements:
        print("autobahn: {} case(s) improved; record them with scripts/autobahn.sh --record"
              .format(len(improvements)))
    # The closing line: passed = clean cases; failed = regressions; skipped = known gaps, i.e.
    # cases that are not clean but no worse than recorded (say UNIMPLEMENTED compression, or
    # a recorded NON-STRICT case: both are listed above), so that they do not fail the run.
    failed = {cid for cid, _, _ in regressions}
    passed = sum(1 for c in cases if c not in failed and is_clean(cases[c]))
    skipped = sum(1 for c in cases if c not in failed and not is_clean(cases[c]))
    print("autobahn: {} passed, {} failed, {} skipped".format(passed, len(failed), skipped))
    if regressions:
        print("autobahn: {} regression(s) against {}".format(len(regressions), args.expected),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
