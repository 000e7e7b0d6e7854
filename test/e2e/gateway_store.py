#!/usr/bin/python3
"""E2E: openshell-gateway and its state file: migration of a schema-1
database written by an older gateway, refusal of a newer schema, of a
corrupt file, and of a locked database, each with one clear error line.
Prints TAP."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

import e2elib

BIN = os.environ["OPENSHELL_BIN"]
T = tempfile.mkdtemp(prefix="openshell-gw-store.")
GW = os.path.join(T, "openshell-gateway")
os.symlink(BIN, GW)
tap = e2elib.Tap()

# Schema 1, as the first gateway release wrote it.
SCHEMA1 = """
CREATE TABLE schema_migrations(version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL);
CREATE TABLE objects(
 id TEXT PRIMARY KEY NOT NULL, object_type TEXT NOT NULL, name TEXT,
 workspace TEXT NOT NULL DEFAULT '', resource_version INTEGER NOT NULL DEFAULT 1,
 payload TEXT NOT NULL CHECK (json_valid(payload)),
 labels TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(labels) AND json_type(labels) = 'object'),
 created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL);
CREATE UNIQUE INDEX objects_name_uq ON objects(object_type, workspace, name)
 WHERE name IS NOT NULL;
CREATE INDEX objects_type_created ON objects(object_type, created_at_ms);
INSERT INTO schema_migrations VALUES (1, 0);
"""


def run_once(state, timeout=10):
    """Start a gateway expected to fail; returns (rc, stderr)."""
    p = subprocess.run([GW, "--state-dir", state, "--socket", os.path.join(T, "x.sock"),
                        "--listen", "none", "--log-format", "text"], capture_output=True,
                       timeout=timeout)
    return p.returncode, p.stderr.decode(errors="replace")


def curl(sock, path):
    p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--unix-socket", sock,
                        "--max-time", "5", "-w", "\n%{http_code}", "http://x" + path],
                       capture_output=True)
    text, _, code = p.stdout.decode().rpartition("\n")
    return int(code or 0), text


def main():
    # --- migration from schema 1
    st = os.path.join(T, "old")
    os.mkdir(st, 0o700)
    db = sqlite3.connect(os.path.join(st, "openshell.db"))
    db.executescript(SCHEMA1)
    db.execute("INSERT INTO objects(id, object_type, name, workspace, resource_version, payload,"
               " labels, created_at_ms, updated_at_ms) VALUES ('11111111-2222-4333-8444-"
               "555555555555', 'sandbox', 'legacy', 'default', 4, '{\"annotations\":{},"
               "\"spec\":{\"command\":[\"/bin/true\"]},\"status\":{\"phase\":\"provisioning\"}}',"
               " '{\"gen\":\"old\"}', 1000, 2000)")
    db.commit()
    db.close()
    sock = os.path.join(T, "old.sock")
    gw = subprocess.Popen([GW, "--state-dir", st, "--socket", sock, "--listen", "none",
                           "--compute-driver", "none"],
                          stderr=subprocess.DEVNULL)
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.02)
    code, text = curl(sock, "/v1/workspaces/default/sandboxes/legacy")
    j = json.loads(text) if code == 200 else {}
    tap(code == 200 and j["metadata"]["resource_version"] == 4 and
        j["metadata"]["labels"] == {"gen": "old"}, "a schema-1 record is served after migration",
        text)
    code, _ = curl(sock, "/v1/workspaces/default/sandboxes/legacy/policy/revisions")
    tap(code == 200, "the migrated database takes the new columns (policy revisions)")
    code, text = curl(sock, "/v1/gateway")
    tap(code == 200 and json.loads(text)["schema_version"] == 2, "schema version now 2", text)
    gw.terminate()
    gw.wait(10)
    db = sqlite3.connect(os.path.join(st, "openshell.db"))
    rows = db.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    db.close()
    tap(rows == [(1,), (2,)], "schema_migrations records 1 and 2", rows)

    # --- a database from a newer gateway
    db = sqlite3.connect(os.path.join(st, "openshell.db"))
    db.execute("INSERT INTO schema_migrations VALUES (3, 0)")
    db.commit()
    db.close()
    rc, err = run_once(st)
    tap(rc == 1 and "schema version 3 is newer than this binary's 2" in err and
        len(err.strip().splitlines()) == 1, "a newer schema is refused with one clear line", err)

    # --- a corrupt file
    st2 = os.path.join(T, "corrupt")
    os.mkdir(st2, 0o700)
    with open(os.path.join(st2, "openshell.db"), "wb") as f:
        f.write(b"definitely not sqlite\n" * 500)
    rc, err = run_once(st2)
    tap(rc == 1 and "not a database" in err and "openshell.db" in err,
        "a corrupt database is refused and named", err)

    # --- a locked database (another process holds the write lock)
    st3 = os.path.join(T, "locked")
    os.mkdir(st3, 0o700)
    db = sqlite3.connect(os.path.join(st3, "openshell.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY,"
               " applied_at_ms INTEGER NOT NULL)")
    db.execute("BEGIN IMMEDIATE")
    t0 = time.time()
    rc, err = run_once(st3, timeout=20)
    took = time.time() - t0
    db.execute("ROLLBACK")
    db.close()
    tap(rc == 1 and "locked" in err and 4 <= took < 15,
        "a locked database: waits for the busy timeout, then one clear error (%.1fs)" % took,
        err)

    # --- unwritable state directory
    if os.geteuid() != 0:
        st4 = os.path.join(T, "ro")
        os.mkdir(st4, 0o500)
        rc, err = run_once(st4)
        tap(rc == 1 and "ro" in err, "an unwritable state directory is refused", err)
    else:
        tap(True, "unwritable state directory # SKIP root writes anywhere")


try:
    main()
except Exception:
    import traceback
    tap(False, "test raised", traceback.format_exc())
finally:
    shutil.rmtree(T, ignore_errors=True)
sys.exit(tap.plan())
