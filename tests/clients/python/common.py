"""Shared by the client scripts: the server under test comes from the environment that
tests/api/clients.rs sets (a real `fleetauth serve` on loopback). A failed check raises;
the script then exits non-zero and the Rust test fails with this output."""

import os
import sys
import traceback

URL = os.environ["FLEETAUTH_URL"]


def env(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"missing environment variable {name}")
    return value


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def run(checks):
    """Runs each check in order, printing one line per check; stops at the first failure."""
    for check in checks:
        try:
            check()
        except Exception:  # noqa: BLE001 - report any failure with its traceback
            print(f"FAIL {check.__name__}", flush=True)
            traceback.print_exc()
            sys.exit(1)
        print(f"ok   {check.__name__}", flush=True)
