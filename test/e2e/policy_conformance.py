#!/usr/bin/python3
"""policy_conformance: the conformance data set in test/data/policy/ through
the real binary.

decisions.jsonl: one decision case per line ({name, policy, request, expect,
matched_policy?, l7_decision?, reason?, why}); the requests of each policy
file are piped through `openshell policy check FILE` and every answer is
compared (reason as a substring, like the reference vectors).
reject/*.yaml: policies that must be refused; the header lines
'# reason:' and '# error:' say why and which message `openshell policy
validate` must print.
"""
import glob
import json
import os
import subprocess
import sys

TOP = os.environ.get("OPENSHELL_TOP", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ["OPENSHELL_BIN"]
DATA = os.path.join(TOP, "test", "data", "policy")
points = []


def point(ok, name, diag=None):
    points.append((ok, name, diag))


def decisions():
    cases = [json.loads(l) for l in open(os.path.join(DATA, "decisions.jsonl")) if l.strip()]
    by_policy = {}
    for c in cases:
        by_policy.setdefault(c["policy"], []).append(c)
    for pol, group in sorted(by_policy.items()):
        stdin = "".join(json.dumps(c["request"]) + "\n" for c in group)
        p = subprocess.run([BIN, "policy", "check", os.path.join(DATA, "policies", pol)],
                           input=stdin, capture_output=True, text=True, timeout=60)
        lines = p.stdout.splitlines()
        if p.returncode != 0 or len(lines) != len(group):
            point(False, "policy check %s" % pol,
                  "status %d, %d answers for %d requests: %s" % (p.returncode, len(lines),
                                                                 len(group), p.stderr[:500]))
            continue
        for c, line in zip(group, lines):
            got = json.loads(line)
            bad = []
            if got.get("decision") != c["expect"]:
                bad.append("decision %s, expected %s" % (got.get("decision"), c["expect"]))
            if "matched_policy" in c and got.get("policy") != c["matched_policy"]:
                bad.append("policy %r, expected %r" % (got.get("policy"), c["matched_policy"]))
            if "l7_decision" in c and got.get("l7_decision") != c["l7_decision"]:
                bad.append("l7_decision %r, expected %r" % (got.get("l7_decision"),
                                                            c["l7_decision"]))
            if "reason" in c and c["reason"] not in (got.get("reason") or ""):
                bad.append("reason %r lacks %r" % (got.get("reason"), c["reason"]))
            point(not bad, "decision %s (%s)" % (c["name"], c["why"]),
                  "; ".join(bad) + "\nrequest: " + json.dumps(c["request"]) if bad else None)


def rejects():
    files = sorted(glob.glob(os.path.join(DATA, "reject", "*.yaml")))
    for f in files:
        head = {}
        with open(f, "rb") as fh:
            for raw in fh.read().split(b"\n")[:2]:
                k, _, v = raw.decode("utf-8", "replace").lstrip("# ").partition(": ")
                head[k] = v
        p = subprocess.run([BIN, "policy", "validate", f], capture_output=True, timeout=30)
        err = p.stderr.decode("utf-8", "replace")
        base = os.path.basename(f)
        ok = p.returncode == 1 and head["error"] in err and (base + ":") in err
        point(ok, "reject %s (%s)" % (base, head["reason"]),
              None if ok else "status %d, stderr: %s\nwant: %s" % (p.returncode, err[:600],
                                                                    head["error"]))


def accepts():
    for f in sorted(glob.glob(os.path.join(DATA, "policies", "*.yaml"))):
        p = subprocess.run([BIN, "policy", "validate", f], capture_output=True, text=True,
                           timeout=30)
        want = "%s: ok" % f
        point(p.returncode == 0 and p.stdout.strip() == want, "accept %s" % os.path.basename(f),
              p.stderr[:500])
    p = subprocess.run([BIN, "policy", "default"], capture_output=True, text=True, timeout=30)
    tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), "policy-default-%d.yaml" % os.getpid())
    with open(tmp, "w") as fh:
        fh.write(p.stdout)
    v = subprocess.run([BIN, "policy", "validate", tmp], capture_output=True, text=True,
                       timeout=30)
    os.unlink(tmp)
    point(p.returncode == 0 and v.returncode == 0 and "/dev/urandom" in p.stdout
          and "network_policies: {}" in p.stdout, "default policy prints and validates",
          v.stderr[:300])


decisions()
rejects()
accepts()
print("1..%d" % len(points))
failed = 0
for i, (ok, name, diag) in enumerate(points, 1):
    print("%s %d - %s" % ("ok" if ok else "not ok", i, name))
    if not ok:
        failed += 1
        for l in (diag or "").splitlines():
            print("# " + l)
sys.exit(1 if failed else 0)
