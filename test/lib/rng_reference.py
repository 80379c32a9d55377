"""Independent reference for test/lib/rng.test.ts: xoshiro128** seeded through splitmix32, as lib/rng.ts documents it.

Run: python3 test/lib/rng_reference.py   (prints the first four 32-bit draws of each case the test pins)
"""
M = 0xffffffff
def imul(a, b): return (a * b) & M
def rotl(x, k): return ((x << k) | (x >> (32 - k))) & M
def seeds(seed, stream=None):
    lo = seed & M; hi = (seed >> 32) & M
    w = lo ^ imul(hi, 0x165667b1)
    if stream is not None: w ^= imul((stream + 1) & M, 0x27d4eb2f)
    s = w; out = []
    for _ in range(4):
        s = (s + 0x9e3779b9) & M; z = s
        z = imul(z ^ (z >> 16), 0x85ebca6b); z = imul(z ^ (z >> 13), 0xc2b2ae35)
        out.append(z ^ (z >> 16))
    return out
def draws(seed, stream=None, n=4):
    a, b, c, d = seeds(seed, stream); r = []
    for _ in range(n):
        r.append(imul(rotl(imul(b, 5), 7), 9)); t = (b << 9) & M
        c ^= a; d ^= b; b ^= c; a ^= d; c ^= t; d = rotl(d, 11)
    return r

if __name__ == "__main__":
    for seed, stream in [(42, None), (42, 0), (42, 3), (2**40 + 5, 1)]:
        print(seed, stream, draws(seed, stream))
