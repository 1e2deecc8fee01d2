/* CPU kernels for mfzoo's solvers, compiled at first use by mfzoo.native (a C compiler, no
 * torch headers: the kernels take raw pointers to contiguous tensors) and loaded with ctypes,
 * which releases the GIL during each call. Workers are POSIX threads taking rows in chunks;
 * every kernel exists for float (_f32) and double (_f64), from kernels.inc. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* 2: column indices int32, row pointers int64; 3: the data kernels below; 4: text codes */
int mfzoo_native_version(void) { return 4; }

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

/* ---- text ids: the cells of Arrow string arrays coded by a hash table over their trimmed
 * bytes, first seen first (what Arrow's utf8_trim_whitespace then dictionary_encode give, in one
 * pass and without a copy of the column) -------------------------------------------------- */

/* Unicode White_Space as Arrow's utf8_trim_whitespace trims it: ASCII 9-13, 28-32, and these */
static int unicode_space(uint32_t c) {
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static inline int ascii_space(uint8_t c) { return (c >= 9 && c <= 13) || (c >= 28 && c <= 32); }

/* the code point of the UTF-8 sequence at p (its length in *len), or 0xFFFFFFFF when p..end
 * holds no complete multi-byte sequence (Arrow's strings are valid UTF-8; this only stops the
 * trimming) */
static uint32_t decode(const uint8_t *p, const uint8_t *end, int *len) {
    int n = *p >= 0xF0 ? 4 : *p >= 0xE0 ? 3 : *p >= 0xC0 ? 2 : 0;
    if (n == 0 || end - p < n) return 0xFFFFFFFFu;
    uint32_t c = *p & (0x7F >> n);
    for (int k = 1; k < n; k++) c = (c << 6) | (p[k] & 0x3F);
    *len = n;
    return c;
}

/* the cell p..end without leading and trailing whitespace, as `unicode_space` and `ascii_space` */
static void trim(const uint8_t **start, const uint8_t **stop) {
    const uint8_t *p = *start, *end = *stop;
    while (p < end) {
        int len = 1;
        if (*p < 0x80 ? !ascii_space(*p) : !unicode_space(decode(p, end, &len))) break;
        p += len;
    }
    while (end > p) {
        if (end[-1] < 0x80) {
            if (!ascii_space(end[-1])) break;
            end--;
            continue;
        }
        const uint8_t *lead = end - 1; /* back over continuation bytes to the sequence's lead */
        while (lead > p && end - lead < 4 && (*lead & 0xC0) == 0x80) lead--;
        int len = 0;
        uint32_t c = decode(lead, end, &len);
        if (c == 0xFFFFFFFFu || lead + len != end || !unicode_space(c)) break;
        end = lead;
    }
    *start = p, *stop = end;
}

/* the n < 8 bytes at p as a zero-padded word; one load where 8 bytes from p lie in the buffer
 * (before `limit`), little-endian */
static inline uint64_t load_short(const uint8_t *p, int64_t n, const uint8_t *limit) {
    uint64_t w = 0;
    if (n == 0) return 0;
    if (limit - p >= 8) {
        memcpy(&w, p, 8);
        return w & (~0ULL >> (64 - 8 * n));
    }
    for (int64_t k = 0; k < n; k++) w |= (uint64_t)p[k] << (8 * k);
    return w;
}

/* 64-bit hash of n bytes, eight at a time (multiply-xorshift mixing, splitmix64's finaliser);
 * *head gets the first (up to) 8 bytes as a zero-padded word */
static inline uint64_t hash_bytes(const uint8_t *p, int64_t n, const uint8_t *limit,
                                  uint64_t *head) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n, w;
    if (n < 8) {
        w = load_short(p, n, limit);
        *head = w;
        h = (h ^ w) * 0x94D049BB133111EBULL;
    } else {
        memcpy(head, p, 8);
        for (; n >= 8; p += 8, n -= 8) {
            memcpy(&w, p, 8);
            h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
            h ^= h >> 31;
        }
        if (n) h = (h ^ load_short(p, n, limit)) * 0x94D049BB133111EBULL;
    }
    h ^= h >> 30, h *= 0xBF58476D1CE4E5B9ULL, h ^= h >> 27, h *= 0x94D049BB133111EBULL;
    return h ^ (h >> 31);
}

typedef struct {
    int64_t cap;            /* slots, a power of two, at least twice the distinct cells */
    int32_t *slot_code;     /* [cap] the code in the slot, -1: empty */
    uint32_t *slot_hash;    /* [cap] the low 32 bits of its hash (cap <= 2^32) */
    int64_t n, room;        /* distinct cells, and room for them in: */
    const uint8_t **start;  /* [room] first byte of distinct cell j, in the caller's buffers */
    int32_t *length;        /* [room] its length after trimming */
    uint64_t *head;         /* [room] its first (up to) 8 bytes, zero-padded */
    int64_t bytes;          /* the distinct cells' bytes together */
} text_codes;

void mfzoo_text_free(text_codes *t) {
    if (!t) return;
    free(t->slot_code), free(t->slot_hash), free((void *)t->start), free(t->length), free(t->head);
    free(t);
}

/* A new, empty coder (NULL when memory runs out). */
text_codes *mfzoo_text_new(void) {
    text_codes *t = calloc(1, sizeof(text_codes));
    if (!t) return NULL;
    t->cap = 1024, t->room = 512;
    t->slot_code = malloc(t->cap * sizeof(int32_t));
    t->slot_hash = malloc(t->cap * sizeof(uint32_t));
    t->start = malloc(t->room * sizeof(uint8_t *));
    t->length = malloc(t->room * sizeof(int32_t));
    t->head = malloc(t->room * sizeof(uint64_t));
    if (!t->slot_code || !t->slot_hash || !t->start || !t->length || !t->head) {
        mfzoo_text_free(t);
        return NULL;
    }
    memset(t->slot_code, 0xFF, t->cap * sizeof(int32_t));
    return t;
}

/* twice the slots, the codes placed again by their stored hashes; 0 on success */
static int grow_slots(text_codes *t) {
    int64_t cap = t->cap * 2;
    if (cap > ((int64_t)1 << 32)) return 1;
    int32_t *code = malloc(cap * sizeof(int32_t));
    uint32_t *hash = malloc(cap * sizeof(uint32_t));
    if (!code || !hash) return free(code), free(hash), 1;
    memset(code, 0xFF, cap * sizeof(int32_t));
    for (int64_t s = 0; s < t->cap; s++) {
        if (t->slot_code[s] < 0) continue;
        int64_t j = t->slot_hash[s] & (cap - 1);
        while (code[j] >= 0) j = (j + 1) & (cap - 1);
        code[j] = t->slot_code[s], hash[j] = t->slot_hash[s];
    }
    free(t->slot_code), free(t->slot_hash);
    t->slot_code = code, t->slot_hash = hash, t->cap = cap;
    return 0;
}

/* Codes of the n cells of an Arrow string array (cell k is data[offsets[k] .. offsets[k + 1]])
 * into codes[n]: each cell trimmed of whitespace, equal cells one code, new cells the next code
 * (the coder's state carries across calls: the chunks of one column, in order). The cells'
 * bytes must outlive the coder. Returns -1 when every cell was coded, the index of the first
 * cell that is empty after trimming (codes before it are written), or -2 when memory runs out
 * or there are 2^31 - 1 distinct cells. */
int64_t mfzoo_text_encode(text_codes *t, const int32_t *offsets, const uint8_t *data, int64_t n,
                          int32_t *codes) {
    const uint8_t *limit = data + offsets[n]; /* the end of these cells' bytes */
    for (int64_t k = 0; k < n; k++) {
        const uint8_t *p = data + offsets[k], *end = data + offsets[k + 1];
        /* most cells start and end with a printable ASCII byte: nothing to trim */
        if (p == end || (uint8_t)(*p - 33) > 93 || (uint8_t)(end[-1] - 33) > 93) trim(&p, &end);
        int64_t len = end - p;
        if (len == 0) return k;
        uint64_t head;
        uint32_t h = (uint32_t)hash_bytes(p, len, limit, &head);
        int64_t s = h & (t->cap - 1);
        int32_t code;
        for (;;) {
            code = t->slot_code[s];
            if (code < 0) break;
            if (t->slot_hash[s] == h && t->length[code] == len && t->head[code] == head &&
                (len <= 8 || !memcmp(t->start[code] + 8, p + 8, len - 8)))
                break;
            s = (s + 1) & (t->cap - 1);
        }
        if (code < 0) { /* a new cell */
            if (t->n >= INT32_MAX - 1) return -2;
            if (t->n == t->room) {
                int64_t room = t->room * 2;
                const uint8_t **start = realloc((void *)t->start, room * sizeof(uint8_t *));
                if (!start) return -2;
                t->start = start;
                int32_t *length = realloc(t->length, room * sizeof(int32_t));
                if (!length) return -2;
                t->length = length;
                uint64_t *heads = realloc(t->head, room * sizeof(uint64_t));
                if (!heads) return -2;
                t->head = heads, t->room = room;
            }
            code = (int32_t)t->n++;
            t->start[code] = p, t->length[code] = (int32_t)len, t->head[code] = head;
            t->bytes += len;
            t->slot_code[s] = code, t->slot_hash[s] = h;
            if (2 * t->n > t->cap && grow_slots(t)) return -2;
        }
        codes[k] = code;
    }
    return -1;
}

/* The number of distinct cells so far, and their bytes together (*bytes). */
int64_t mfzoo_text_count(const text_codes *t, int64_t *bytes) {
    *bytes = t->bytes;
    return t->n;
}

/* The distinct cells in code order as an Arrow large_string array's buffers: offsets[n + 1]
 * (int64) and their bytes in data[bytes]. */
void mfzoo_text_cells(const text_codes *t, int64_t *offsets, uint8_t *data) {
    int64_t at = 0;
    for (int64_t j = 0; j < t->n; j++) {
        offsets[j] = at;
        memcpy(data + at, t->start[j], (size_t)t->length[j]);
        at += t->length[j];
    }
    offsets[t->n] = at;
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
