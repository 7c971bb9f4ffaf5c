"""The cookbook's Python: check a password against a salted hash, in a thread."""

import hashlib
import hmac

SALT = b"cookbook"  # one salt for the example; give each user their own
ROUNDS = 100_000
# user -> PBKDF2 hash of the password. In real use, read from a file or a database
# (in this function, or once at import); here one user, "ada", password "lovelace".
USERS = {"ada": hashlib.pbkdf2_hmac("sha256", b"lovelace", SALT, ROUNDS).hex()}


def check(line, match):
    """`work: {function: passwords:check, in: thread}`: hashing is slow on purpose,
    so it runs in the thread pool while the server serves other clients."""
    want = USERS.get(match["user"], "")
    got = hashlib.pbkdf2_hmac("sha256", match["password"].encode(), SALT, ROUNDS).hex()
    return "ok" if hmac.compare_digest(got, want) and want else "denied"
