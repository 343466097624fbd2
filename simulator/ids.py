"""Deterministic hashing, fake identifiers, opaque cursors and the fake RSA key.

Everything the simulator invents is a pure function of the seed (and an index or counter), so
two simulators started with the same seed serve the same org, and user N of a million-user org
can be produced without producing users 0..N-1.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import time
from functools import lru_cache

MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_TWO64 = float(1 << 64)
# Byte order of this alphabet is also its numeric order, so fixed-width codes sort like numbers.
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_B62_INDEX = {c: i for i, c in enumerate(B62)}
# Users per id "slot": the id encodes index * ID_SLOT + jitter, so ids look random yet sort by index.
ID_SLOT = 62 ** 3
MAX_USERS = 10_000_000
_MAX_OFFSET = 62 ** 7 - (MAX_USERS + 1) * ID_SLOT


class InvalidCursor(ValueError):
    """An `after`/`PageToken` value that this simulator did not issue."""


def mix64(x: int) -> int:
    """SplitMix64 finaliser: a fast, well-distributed 64-bit hash of an int."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def key_of(*parts: object) -> int:
    """A 64-bit key from arbitrary parts (used once per org, not in hot loops)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def h64(key: int, i: int) -> int:
    """Hash of (key, i); the hot-path primitive behind every per-user choice."""
    return mix64((key ^ mix64((i + _GOLDEN) & MASK64)) & MASK64)


def unit(key: int, i: int) -> float:
    """A uniform float in [0, 1) from (key, i)."""
    return h64(key, i) / _TWO64


class Draw:
    """A tiny deterministic random stream, much cheaper to seed than `random.Random`."""

    __slots__ = ("_s",)

    def __init__(self, key: int, i: int) -> None:
        self._s = h64(key, i)

    def next(self) -> int:
        self._s = (self._s + _GOLDEN) & MASK64
        return mix64(self._s)

    def below(self, n: int) -> int:
        return self.next() % n

    def chance(self, p: float) -> bool:
        return self.next() < p * _TWO64

    def pick(self, seq):
        return seq[self.next() % len(seq)]


_PAIRS = tuple(a + b for a in B62 for b in B62)


def b62(n: int, width: int) -> str:
    """Fixed-width base-62 encoding (sorts like the number in byte order)."""
    if width == 7:  # the hot path (ids): unrolled
        n, r1 = divmod(n, 3844)
        n, r2 = divmod(n, 3844)
        n, r3 = divmod(n, 3844)
        return B62[n % 62] + _PAIRS[r3] + _PAIRS[r2] + _PAIRS[r1]
    pairs = []
    for _ in range(width // 2):
        n, r = divmod(n, 3844)
        pairs.append(_PAIRS[r])
    if width % 2:
        pairs.append(B62[n % 62])
    return "".join(reversed(pairs))


def unb62(text: str) -> int | None:
    n = 0
    for c in text:
        v = _B62_INDEX.get(c)
        if v is None:
            return None
        n = n * 62 + v
    return n


def hex32(key: int, i: int) -> str:
    """32 lowercase hex digits from (key, i): the body of a Twilio SID."""
    return f"{h64(key, i):016x}{h64(key ^ 0x5A5A5A5A, i):016x}"


def id_offset(seed: int) -> int:
    """A per-org shift of the id space so different seeds' ids do not share a prefix."""
    return key_of("id-offset", seed) % _MAX_OFFSET


def okta_id(prefix: str, key: int, i: int, suffix: str, offset: int = 0) -> str:
    """An Okta-style id: 3-char prefix + 17 alphanumerics, ordered by `i`."""
    x = h64(key, i)
    return f"{prefix}{b62(offset + i * ID_SLOT + x % ID_SLOT, 7)}{b62(x >> 20, 7)}{suffix}"


def okta_id_index(ident: str, offset: int = 0) -> int | None:
    """The index encoded in an `okta_id` (callers must re-check the full id)."""
    if len(ident) != 20:
        return None
    n = unb62(ident[3:10])
    if n is None or n < offset:
        return None
    return (n - offset) // ID_SLOT


def token62(key: int, n: int, width: int) -> str:
    """`width` random-looking alphanumerics from (key, n): request ids, error ids."""
    out, k = "", 0
    while len(out) < width:
        out += b62(h64(key + k, n) % (62 ** 10), 10)
        k += 1
    return out[:width]


def org_suffix(seed: int) -> str:
    """The 3-character cell suffix shared by all ids of one org (like Okta's `0g4`)."""
    return b62(key_of("suffix", seed) % (62 ** 3), 3)


def fake_uuid(key: int, i: int, published_ms: int) -> str:
    """A v1-looking UUID for a log event (time-ordered prefix, hashed node)."""
    a, b = h64(key, i), h64(key ^ 0x77, i)
    t = (published_ms * 10_000) & ((1 << 60) - 1)
    return (f"{t & 0xFFFFFFFF:08x}-{(t >> 32) & 0xFFFF:04x}-1{(t >> 48) & 0xFFF:03x}-"
            f"{0x8000 | (a & 0x3FFF):04x}-{b & 0xFFFFFFFFFFFF:012x}")


_DAY_PREFIX: dict[int, str] = {}
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(60))
_THREE_DIGITS = tuple(f"{n:03d}" for n in range(1000))


def iso_ms(ms: int) -> str:
    """Okta timestamp format: `2024-05-05T18:15:44.000Z` (hot path: lookup tables only)."""
    day, rem = divmod(ms, 86_400_000)
    prefix = _DAY_PREFIX.get(day)
    if prefix is None:
        prefix = _DAY_PREFIX[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86_400))
    sec, milli = divmod(rem, 1000)
    minute, sec = divmod(sec, 60)
    hour, minute = divmod(minute, 60)
    return f"{prefix}{_TWO_DIGITS[hour]}:{_TWO_DIGITS[minute]}:{_TWO_DIGITS[sec]}.{_THREE_DIGITS[milli]}Z"


def iso_s(ms: int) -> str:
    """Twilio timestamp format: `2017-05-30T23:05:29Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


# --- opaque cursors ---------------------------------------------------------------------------

def seal(key: int, payload: object) -> str:
    """Encode a cursor so clients cannot read or build it (but we can check we issued it)."""
    raw = json.dumps(payload, separators=(",", ":")).encode()
    kb = key.to_bytes(8, "big")
    tag = hashlib.blake2b(raw, key=kb, digest_size=6).digest()
    stream = hashlib.blake2b(tag, key=kb, digest_size=64).digest()
    while len(stream) < len(raw):
        stream += hashlib.blake2b(stream[-64:], key=kb, digest_size=64).digest()
    body = bytes(a ^ b for a, b in zip(raw, stream))
    return base64.urlsafe_b64encode(tag + body).decode().rstrip("=")


def unseal(key: int, token: str) -> object:
    """Decode a `seal`ed cursor; raise InvalidCursor when it was tampered with or made up."""
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError):
        raise InvalidCursor("cursor is not valid") from None
    if len(data) < 7:
        raise InvalidCursor("cursor is not valid")
    kb = key.to_bytes(8, "big")
    tag, body = data[:6], data[6:]
    stream = hashlib.blake2b(tag, key=kb, digest_size=64).digest()
    while len(stream) < len(body):
        stream += hashlib.blake2b(stream[-64:], key=kb, digest_size=64).digest()
    raw = bytes(a ^ b for a, b in zip(body, stream))
    if hashlib.blake2b(raw, key=kb, digest_size=6).digest() != tag:
        raise InvalidCursor("cursor is not valid")
    return json.loads(raw)


# --- the fake service-app key ------------------------------------------------------------------

_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % q for q in range(2, int(math.isqrt(p)) + 1))]
_SMALL_PRODUCT = math.prod(_SMALL_PRIMES)


def _probable_prime(n: int, rng: random.Random, rounds: int = 8) -> bool:
    if math.gcd(n, _SMALL_PRODUCT) != 1:
        return False
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(rng: random.Random, bits: int) -> int:
    while True:
        c = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if (c - 1) % 65537 and _probable_prime(c, rng):
            return c


@lru_cache(maxsize=16)
def rsa_private_key_pem(seed: int, bits: int = 2048) -> str:
    """A deterministic RSA key for (seed): the same fake service-app key on every start.

    `cryptography` cannot generate keys from a seed, so the primes are found here with
    Miller-Rabin over a seeded PRNG. It is a test key and must never protect anything real.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rng = random.Random(f"okta-flex-sync-simulator-fake-rsa:{seed}:{bits}")
    e = 65537
    while True:
        p, q = _prime(rng, bits // 2), _prime(rng, bits // 2)
        if p != q and math.gcd(e, (p - 1) * (q - 1)) == 1:
            break
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p, q=q, d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p), dmq1=rsa.rsa_crt_dmq1(d, q), iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    )
    key = numbers.private_key()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
