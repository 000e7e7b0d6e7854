"""Shared by proxy_cred.py and inference.py (imported, not run): the proxy
applet built with AddressSanitizer, UBSan and LeakSanitizer (host gcc
against build/deps-host, as gateway_asan.sh does for the gateway), so the
same tests can drive it and then check that it stops cleanly on SIGTERM
with no sanitizer report.
"""
import glob
import os
import shutil
import subprocess

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MAIN = r"""
#include "asan_stubs.h"
int main(int argc, char **argv) { return proxy_main(argc, argv); }
"""

ENV = {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:exitcode=86",
       "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}


def build_asan_proxy(tmp):
    """Path of an ASan openshell-proxy built in TMP, or (None, why)."""
    deps = os.path.join(TOP, "build", "deps-host")
    bindir = os.path.dirname(os.environ.get("OPENSHELL_BIN", ""))
    gen = os.path.join(bindir, "gen")
    if not shutil.which("gcc") or not os.path.exists(deps + "/lib/libevent_core.a") or \
            not os.path.exists(gen + "/version.h"):
        return None, "needs gcc, build/deps-host and a built tree"
    with open(tmp + "/asan_main.c", "w") as f:
        f.write(MAIN)
    src = [os.path.join(TOP, p) for p in
           ("applets/proxy/proxy.c", "src/http1.c", "src/tls.c", "src/ca.c", "src/buf.c",
            "src/err.c", "src/log.c", "src/loop.c", "src/xfuncs.c")]
    src += sorted(glob.glob(TOP + "/src/px*.c")) + sorted(glob.glob(TOP + "/src/policy/*.c"))
    out = tmp + "/openshell-proxy-asan"
    r = subprocess.run(
        ["gcc", "-std=gnu11", "-g", "-O1", "-fsanitize=address,undefined",
         "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined", "-D_GNU_SOURCE",
         "-I" + TOP + "/include", "-I" + TOP + "/applets", "-I" + TOP + "/test/e2e",
         "-I" + gen, "-I" + deps + "/include",
         "-o", out, tmp + "/asan_main.c"] + src +
        ["-L" + deps + "/lib", "-lmbedtls", "-lmbedx509", "-lmbedcrypto", "-levent_extra",
         "-levent_core", "-lcjson", "-lyaml", "-lhttp_parser", "-lpthread", "-lm"],
        capture_output=True, text=True, timeout=300)
    if r.returncode:
        return None, "build failed: " + r.stderr[-300:]
    return out, ""


def sanitizer_report(log_path):
    """The first sanitizer line in LOG_PATH, or ''."""
    with open(log_path, errors="replace") as f:
        for line in f:
            if "Sanitizer" in line or "runtime error" in line:
                return line.strip()
    return ""
