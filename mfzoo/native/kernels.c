/* CPU kernels for mfzoo's solvers, compiled at first use by mfzoo.native (a C compiler, no
 * torch headers: the kernels take raw pointers to contiguous tensors) and loaded with ctypes,
 * which releases the GIL during each call. Workers are POSIX threads taking rows in chunks;
 * every kernel exists for float (_f32) and double (_f64), from kernels.inc. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define CG_CHUNK 64    /* rows a worker claims at a time */
#ifndef DOT_LANES
#define DOT_LANES 16   /* partial sums of a dot product (16 beat 8 and 32 in A/B builds of the CG kernel) */
#endif
#define BPR_PREFETCH 64 /* leading entries of a sample's rows prefetched (the hardware streams the rest) */
#define MAX_THREADS 256

/* Runs fn(job) on `threads` threads (the calling one among them); 0 on success. */
static int run_workers(void *(*fn)(void *), void *job, int threads) {
    if (threads < 1 || threads > MAX_THREADS) return 2;
    pthread_t ids[MAX_THREADS];
    int started = 0, status = 0;
    for (; started < threads - 1; started++)
        if (pthread_create(&ids[started], NULL, fn, job) != 0) break;
    if (fn(job) != NULL) status = 1;
    for (int t = 0; t < started; t++) {
        void *result;
        pthread_join(ids[t], &result);
        if (result != NULL) status = 1;
    }
    return status;
}

/* xoshiro256** (Blackman & Vigna), seeded by splitmix64 from (seed, stream). */
static inline uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void seed_rng(uint64_t s[4], uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (0xd1b54a32d192ed03ULL * (stream + 1));
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t next_u64(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* uniform in [0, n), n >= 1: Lemire's multiply-shift with rejection (no modulo bias) */
static inline uint64_t below(uint64_t s[4], uint64_t n) {
    __uint128_t m = (__uint128_t)next_u64(s) * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = -n % n;
        while (low < threshold) {
            m = (__uint128_t)next_u64(s) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

/* whether sorted a[0..n) holds v */
static inline int contains(const int32_t *a, int64_t n, int64_t v) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && a[lo] == v;
}

/* the bit of `mfzoo.data.sampling.PairSet`'s filter for the pair (u, j): the top `bits` bits of
 * (u * n_items + j) * 0x9E3779B97F4A7C15 mod 2^64 (Fibonacci hashing) */
static inline uint64_t pair_hash(int64_t u, int64_t j, int64_t n_items, int bits) {
    return ((uint64_t)(u * n_items + j) * 0x9E3779B97F4A7C15ULL) >> (64 - bits);
}

/* whether j is a seen item of u: a clear bit of the filter (most draws) proves it is not;
 * otherwise, or without a filter, a binary search of u's sorted seen items decides */
static inline int seen_pair(const uint8_t *filter, int bits, int64_t u, int64_t j, int64_t n_items,
                            const int32_t *seen, int64_t n_seen) {
    if (filter) {
        uint64_t h = pair_hash(u, j, n_items, bits);
        if (!((filter[h >> 3] >> (h & 7)) & 1)) return 0;
    }
    return contains(seen, n_seen, j);
}

/* 2: column indices int32, row pointers int64; 3: the data kernels below */
int mfzoo_native_version(void) { return 3; }

/* ---- data kernels: single passes over a column while a file is read (no threads here: the
 * caller runs the chunks of a column on its thread pool) ---------------------------------- */

/* The n text cells of an Arrow string array (cell k is data[offsets[k] .. offsets[k + 1]]) as
 * integers written canonically: an optional '-', then 1-19 digits with no leading zero ("0"
 * alone, never "-0"), within int64. Fills out[n]; returns -1 when every cell is canonical, else
 * the first cell that is not (out is then partly written). */
int64_t mfzoo_canonical_ints(const int32_t *offsets, const uint8_t *data, int64_t n,
                             int64_t *out) {
    for (int64_t k = 0; k < n; k++) {
        const uint8_t *p = data + offsets[k], *end = data + offsets[k + 1];
        int negative = p < end && *p == '-';
        p += negative;
        int64_t digits = end - p;
        if (digits < 1 || digits > 19 || (*p == '0' && (digits > 1 || negative))) return k;
        uint64_t v = 0; /* 19 digits stay below 10^19 < 2^64 */
        for (; p < end; p++) {
            unsigned d = (unsigned)(*p - '0');
            if (d > 9) return k;
            v = v * 10 + d;
        }
        if (v > (uint64_t)INT64_MAX + (uint64_t)negative) return k;
        out[k] = negative ? -(int64_t)(v - 1) - 1 : (int64_t)v; /* -2^63 without overflow */
    }
    return -1;
}

/* Codes of n integer ids, all in [low, low + span): the present offsets ranked in order
 * (np.unique's inverse without a sort). rank[span] must be zeroed; on return rank[o] is the
 * code of offset o, or -1 where no id has it. Fills codes[n]; returns the number of ids. */
int64_t mfzoo_dense_codes(const int64_t *ids, int64_t n, int64_t low, int64_t span,
                          int32_t *rank, int32_t *codes) {
    for (int64_t k = 0; k < n; k++) rank[ids[k] - low] = 1;
    int32_t next = 0;
    for (int64_t o = 0; o < span; o++) rank[o] = rank[o] ? next++ : -1;
    for (int64_t k = 0; k < n; k++) codes[k] = rank[ids[k] - low];
    return next;
}

/* Whether some (u[k], i[k]) pair occurs in two rows (codes in [0, n_users) x [0, n_items)):
 * the items are counted into groups by user (a counting sort), then each group's items are
 * marked in a table over the items, which finds a second occurrence in O(1). O(n) time,
 * 4 (n + n_users + n_items) bytes of workspace. Returns 1 or 0, or -1 when the workspace
 * cannot be allocated. */
int mfzoo_pair_repeats(const int32_t *u, const int32_t *i, int64_t n, int64_t n_users,
                       int64_t n_items) {
    int64_t *start = calloc((size_t)n_users + 1, sizeof(int64_t));
    int32_t *grouped = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    int32_t *mark = malloc((size_t)(n_items > 0 ? n_items : 1) * sizeof(int32_t));
    if (!start || !grouped || !mark) {
        free(start), free(grouped), free(mark);
        return -1;
    }
    for (int64_t k = 0; k < n; k++) start[u[k] + 1]++;
    for (int64_t r = 0; r < n_users; r++) start[r + 1] += start[r];
    for (int64_t k = 0; k < n; k++) grouped[start[u[k]]++] = i[k]; /* start[r]: end of group r */
    for (int64_t j = 0; j < n_items; j++) mark[j] = -1;
    int found = 0;
    for (int64_t r = 0, k = 0; r < n_users && !found; r++) {
        for (; k < start[r]; k++) {
            if (mark[grouped[k]] == (int32_t)r) { found = 1; break; }
            mark[grouped[k]] = (int32_t)r;
        }
    }
    free(start), free(grouped), free(mark);
    return found;
}

#define REAL float
#define SUFFIX _f32
#include "kernels.inc"
#undef REAL
#undef SUFFIX

#define REAL double
#define SUFFIX _f64
#include "kernels.inc"
#undef REAL
#undef SUFFIX
