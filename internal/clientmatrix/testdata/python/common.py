"""Shared parts of the client matrix's Python programs (internal/clientmatrix).

Each program reads the contract's environment (see harness_test.go), opens
one long-lived connection, sets up session state, runs its work in
iterations until CM_SECONDS have passed and CM_MIN_ITERATIONS have run, and
prints its RESULT line. A mismatch raises Mismatch, which ends the program
with status 1.
"""

import hashlib
import os
import time


class Mismatch(AssertionError):
    """An answer differed from what the program expected."""


def short(value):
    """A printable form of value, shortened when it is large."""
    text = repr(value)
    if len(text) > 200:
        return "%s… (%d characters, md5 %s)" % (text[:120], len(text), hashlib.md5(text.encode()).hexdigest())
    return text


def expect(ok, what):
    """Raise Mismatch(what) unless ok."""
    if not ok:
        raise Mismatch(what)


def equal(got, want, what):
    """Raise Mismatch unless got == want."""
    if got != want:
        raise Mismatch("%s: got %s, want %s" % (what, short(got), short(want)))


class Config:
    """The contract's environment."""

    def __init__(self):
        env = os.environ
        self.host = env["CM_HOST"]
        self.port = int(env["CM_PORT"])
        self.user = env["CM_USER"]
        self.password = env["CM_PASSWORD"]
        self.database = env["CM_DATABASE"]
        self.backend_users = env["CM_BACKEND_USERS"].split(",")
        self.seconds = float(env.get("CM_SECONDS", "0"))
        self.min_iterations = int(env.get("CM_MIN_ITERATIONS", "2"))
        self.min_changes = int(env.get("CM_MIN_USER_CHANGES", "0"))
        self.max_seconds = float(env.get("CM_MAX_SECONDS", "60"))
        self.pause = int(env.get("CM_PAUSE_MS", "0")) / 1000.0


class Users:
    """The backend users the long-lived connection ran as, in order."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.seen = []

    def observe(self, user):
        """Record that the connection runs as user now."""
        expect(user in self.cfg.backend_users, "current_user %r is not one of the backend users" % user)
        if not self.seen or self.seen[-1] != user:
            self.seen.append(user)


def run(name, cfg, iteration):
    """Call iteration(i, users) until the work is done (CM_SECONDS passed,
    CM_MIN_ITERATIONS ran and current_user changed CM_MIN_USER_CHANGES
    times, or CM_MAX_SECONDS passed), then check that current_user changed
    often enough and print the RESULT line."""
    users = Users(cfg)
    start = time.monotonic()
    i = 0
    while True:
        i += 1
        iteration(i, users)
        elapsed = time.monotonic() - start
        if (i >= cfg.min_iterations and elapsed >= cfg.seconds and len(users.seen) - 1 >= cfg.min_changes
                or elapsed >= cfg.max_seconds):
            break
        time.sleep(cfg.pause)
    changes = len(users.seen) - 1
    expect(changes >= cfg.min_changes,
           "current_user changed %d times (%s), want at least %d" % (changes, " -> ".join(users.seen), cfg.min_changes))
    print("RESULT client=%s iterations=%d users=%s" % (name, i, ",".join(users.seen)), flush=True)


def big_text(i):
    """A text of about 1.5 MiB (UTF-8) with multi-byte characters, different for each i."""
    unit = "%06d credswap client matrix: é ß € ✓ 😀 " % i
    return unit * (1572864 // len(unit.encode()) + 1)


def big_bytes(i):
    """1.5 MiB of every byte value, rotated by i."""
    block = bytes((b + i) % 256 for b in range(256))
    return block * 6144
