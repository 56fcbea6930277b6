# Summarise an Autobahn|Testsuite fuzzingclient report (reports/servers/index.json).
# Works with Python 2.7 and 3.x.  Usage: report.py REPORT_DIR [AGENT]
# Exit 0 when every case passed, 1 when any failed, 2 when the report is missing/empty.
from __future__ import print_function

import json
import os
import sys

PASS = ("OK", "NON-STRICT", "INFORMATIONAL")

try:
    STRING_TYPES = (str, unicode)  # Python 2
except NameError:
    STRING_TYPES = (str,)


def case_key(case_id):
    out = []
    for part in case_id.split("."):
        try:
            out.append((0, int(part), ""))
        except ValueError:
            out.append((1, 0, part))
    return out


def short(value, limit=300):
    text = json.dumps(value, sort_keys=True) if not isinstance(value, STRING_TYPES) else value
    if len(text) > limit:
        text = text[:limit] + "... (%d chars)" % len(text)
    return text


def describe_failure(report_dir, agent, case_id, entry):
    print("FAIL %s: behavior=%s behaviorClose=%s (%s ms)" % (
        case_id, entry.get("behavior"), entry.get("behaviorClose"), entry.get("duration")))
    path = os.path.join(report_dir, entry.get("reportfile") or "")
    try:
        with open(path) as f:
            detail = json.load(f)
    except (IOError, OSError, ValueError) as e:
        print("    (no per-case report %s: %s)" % (path, e))
        return
    desc = (detail.get("description") or "").replace("\n", " ")
    print("    description : %s" % short(desc, 400))
    print("    expectation : %s" % short((detail.get("expectation") or "").replace("\n", " "), 400))
    print("    result      : %s" % short(detail.get("result"), 400))
    print("    resultClose : %s" % short(detail.get("resultClose"), 400))
    print("    server close: code=%s reason=%s; wasClean=%s droppedByMe=%s" % (
        detail.get("remoteCloseCode"), short(detail.get("remoteCloseReason")),
        detail.get("wasClean"), detail.get("droppedByMe")))
    print("    expected    : %s" % short(detail.get("expected")))
    print("    received    : %s" % short(detail.get("received")))
    print("    expectedClose: %s" % short(detail.get("expectedClose")))
    print("    report file : %s" % path)


def main():
    report_dir = sys.argv[1]
    agent = sys.argv[2] if len(sys.argv) > 2 else None
    index_path = os.path.join(report_dir, "index.json")
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (IOError, OSError, ValueError) as e:
        print("autobahn: no usable report at %s: %s" % (index_path, e))
        return 2
    if agent is None:
        if len(index) != 1:
            print("autobahn: expected one agent in %s, found %s" % (index_path, sorted(index)))
            return 2
        agent = list(index)[0]
    cases = index.get(agent) or {}
    if not cases:
        print("autobahn: no cases for agent %r in %s" % (agent, index_path))
        return 2

    counts = {}
    failed = []
    for case_id in sorted(cases, key=case_key):
        entry = cases[case_id]
        b, bc = entry.get("behavior"), entry.get("behaviorClose")
        counts[(b, bc)] = counts.get((b, bc), 0) + 1
        if b not in PASS or bc not in PASS:
            failed.append((case_id, entry))

    # per top-level group summary
    groups = {}
    for case_id in cases:
        g = case_id.split(".")[0]
        ok = cases[case_id].get("behavior") in PASS and cases[case_id].get("behaviorClose") in PASS
        p, n = groups.get(g, (0, 0))
        groups[g] = (p + (1 if ok else 0), n + 1)
    print("autobahn: per group (passed/total): " + ", ".join(
        "%s: %d/%d" % (g, groups[g][0], groups[g][1]) for g in sorted(groups, key=lambda s: case_key(s))))
    print("autobahn: behaviors: " + ", ".join(
        "%s/%s x%d" % (b, bc, n) for (b, bc), n in sorted(counts.items(), key=lambda kv: -kv[1])))
    for case_id, entry in failed:
        describe_failure(report_dir, agent, case_id, entry)
    print("autobahn: %d passed, %d failed" % (len(cases) - len(failed), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
