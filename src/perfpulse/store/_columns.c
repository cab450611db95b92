/* perfpulse.store._columns: JSON documents into Arrow columns, compiled.

   A flush's browser beacons reach the writer as JSON documents (one
   StoredBeacon each), and the events of agents' batches as column documents
   (`{field: [values]}`). The SQL path parses them with DuckDB's
   json_transform and unnests them into each table's rows. columnize() here
   does the same work in one pass over the bytes, without the GIL, and answers
   each table's rows as the buffers of Arrow arrays, which DuckDB then scans
   as they are.

   What to take is given by a plan, made in Python from the same table of
   fields the SQL path is made from: per table, the path of the list whose
   items are its rows (or none: one row a document), and per column its Arrow
   type and the path of its value, from the document or from the row's item;
   or, for a columnar table, per column the path of the list of its values.
   A path that leads nowhere (a key missing, a null on the way) is a null,
   as json_transform has it; so is a JSON null. A missing or null list has
   no rows.

   A document it cannot take as surely as json_transform would (not JSON, a
   value of the wrong type for its column, an integer column's number with a
   fraction or out of range, a key with an escape, a string that is not
   UTF-8 or holds an unpaired surrogate) is left out whole, and its index
   answered, for the SQL path to store or refuse as it always did. Numbers are
   read correctly rounded, as DuckDB's parser reads them: exactly in integer
   arithmetic when they allow it (decimal()), with strtod otherwise. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A column's Arrow type, and (A_INT_FLOAT64) an integer read into a double. */
enum { A_FLOAT64 = 0, A_INT64 = 1, A_BOOL = 2, A_STRING = 3, A_INT_FLOAT64 = 4 };
enum { N_NULL, N_TRUE, N_FALSE, N_NUM, N_STR, N_LIST, N_OBJECT };

#define MAX_DEPTH 64
#define MAX_PATH 8
#define FAIL (-1)

/* ------------------------------------------------------------------------ */
/* A document as a tape of nodes: a container's members follow it, and its
   `end` is the index past them; an object's members are key, value pairs. */

typedef struct {
    uint8_t type;
    uint8_t escaped; /* N_STR: holds a backslash */
    uint8_t is_int;  /* N_NUM: no fraction, no exponent */
    const char *s;   /* N_STR: the text inside the quotes; N_NUM: the number */
    Py_ssize_t n;
    Py_ssize_t end;
} Node;

typedef struct {
    const char *p, *end;
    Node *nodes;
    Py_ssize_t used, cap;
    int oom; /* a node could not be had */
} Tape;

static Py_ssize_t
node(Tape *t, uint8_t type)
{
    if (t->used == t->cap) {
        Py_ssize_t cap = t->cap ? t->cap * 2 : 256;
        Node *nodes = realloc(t->nodes, (size_t)cap * sizeof(Node));
        if (nodes == NULL) {
            t->oom = 1;
            return FAIL;
        }
        t->nodes = nodes;
        t->cap = cap;
    }
    Node *nd = &t->nodes[t->used];
    memset(nd, 0, sizeof(Node));
    nd->type = type;
    return t->used++;
}

static inline void
ws(Tape *t)
{
    while (t->p < t->end && (*t->p == ' ' || *t->p == '\n' || *t->p == '\r' || *t->p == '\t')) {
        t->p++;
    }
}

static int hex4(const char *s, unsigned *u);
static Py_ssize_t utf8(const unsigned char *s, Py_ssize_t n);

/* A string, p at its opening quote: valid JSON of valid UTF-8 (its escapes
   known, a surrogate escaped only in pairs), wherever it is, as DuckDB's parser
   and the SQL path's decoding of the document require. */
static int
string(Tape *t, Py_ssize_t at)
{
    const char *p = ++t->p;
    uint8_t escaped = 0;
    while (p < t->end && *p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20) {
            return FAIL;
        }
        if (c == '\\') {
            escaped = 1;
            if (++p >= t->end) {
                return FAIL;
            }
            if (*p == 'u') {
                unsigned u, lo;
                if (t->end - p < 5 || hex4(p + 1, &u) < 0 || (u >= 0xdc00 && u <= 0xdfff)) {
                    return FAIL;
                }
                p += 4;
                if (u >= 0xd800 && u <= 0xdbff) { /* its low half must follow */
                    if (t->end - p < 7 || p[1] != '\\' || p[2] != 'u' || hex4(p + 3, &lo) < 0 ||
                        lo < 0xdc00 || lo > 0xdfff) {
                        return FAIL;
                    }
                    p += 6;
                }
            }
            else if (strchr("\"\\/bfnrt", *p) == NULL || *p == '\0') {
                return FAIL;
            }
            p++;
        }
        else if (c >= 0x80) {
            Py_ssize_t k = utf8((const unsigned char *)p, t->end - p);
            if (k == 0) {
                return FAIL;
            }
            p += k;
        }
        else {
            p++;
        }
    }
    if (p >= t->end) {
        return FAIL;
    }
    Node *nd = &t->nodes[at];
    nd->s = t->p;
    nd->n = p - t->p;
    nd->escaped = escaped;
    t->p = p + 1;
    return 0;
}

static int
number(Tape *t, Py_ssize_t at)
{
    const char *p = t->p, *start = p;
    int is_int = 1;
    if (p < t->end && *p == '-') {
        p++;
    }
    if (p >= t->end || *p < '0' || *p > '9') {
        return FAIL;
    }
    if (*p == '0') {
        p++;
    }
    else {
        while (p < t->end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (p < t->end && *p == '.') {
        is_int = 0;
        if (++p >= t->end || *p < '0' || *p > '9') {
            return FAIL;
        }
        while (p < t->end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (p < t->end && (*p == 'e' || *p == 'E')) {
        is_int = 0;
        p++;
        if (p < t->end && (*p == '+' || *p == '-')) {
            p++;
        }
        if (p >= t->end || *p < '0' || *p > '9') {
            return FAIL;
        }
        while (p < t->end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    Node *nd = &t->nodes[at];
    nd->s = start;
    nd->n = p - start;
    nd->is_int = (uint8_t)is_int;
    t->p = p;
    return 0;
}

static int
word(Tape *t, const char *w, Py_ssize_t n)
{
    if (t->end - t->p < n || memcmp(t->p, w, (size_t)n) != 0) {
        return FAIL;
    }
    t->p += n;
    return 0;
}

static int
value(Tape *t, int depth)
{
    Py_ssize_t at;
    ws(t);
    if (t->p >= t->end || depth > MAX_DEPTH) {
        return FAIL;
    }
    switch (*t->p) {
    case '"':
        return (at = node(t, N_STR)) < 0 ? FAIL : string(t, at);
    case 't':
        return node(t, N_TRUE) < 0 ? FAIL : word(t, "true", 4);
    case 'f':
        return node(t, N_FALSE) < 0 ? FAIL : word(t, "false", 5);
    case 'n':
        return node(t, N_NULL) < 0 ? FAIL : word(t, "null", 4);
    case '[':
    case '{': {
        int object = *t->p == '{';
        char close = object ? '}' : ']';
        if ((at = node(t, object ? N_OBJECT : N_LIST)) < 0) {
            return FAIL;
        }
        t->p++;
        ws(t);
        if (t->p < t->end && *t->p == close) {
            t->p++;
        }
        else {
            for (;;) {
                if (object) {
                    Py_ssize_t key;
                    ws(t);
                    if (t->p >= t->end || *t->p != '"' || (key = node(t, N_STR)) < 0 ||
                        string(t, key) < 0) {
                        return FAIL;
                    }
                    ws(t);
                    if (t->p >= t->end || *t->p != ':') {
                        return FAIL;
                    }
                    t->p++;
                }
                if (value(t, depth + 1) < 0) {
                    return FAIL;
                }
                ws(t);
                if (t->p >= t->end) {
                    return FAIL;
                }
                char c = *t->p++;
                if (c == close) {
                    break;
                }
                if (c != ',') {
                    return FAIL;
                }
            }
        }
        t->nodes[at].end = t->used;
        return 0;
    }
    default:
        return (at = node(t, N_NUM)) < 0 ? FAIL : number(t, at);
    }
}

/* The whole document into the tape; FAIL unless it is one JSON value. */
static int
parse(Tape *t, const char *s, Py_ssize_t n)
{
    t->p = s;
    t->end = s + n;
    t->used = 0;
    t->oom = 0;
    if (value(t, 0) < 0) {
        return FAIL;
    }
    ws(t);
    return t->p == t->end ? 0 : FAIL;
}

static inline Py_ssize_t
next(const Tape *t, Py_ssize_t i)
{
    uint8_t type = t->nodes[i].type;
    return type == N_LIST || type == N_OBJECT ? t->nodes[i].end : i + 1;
}

/* The value at `path` (keys) from node i: its index, NOWHERE when the path
   leads nowhere (a key missing, something else than an object on the way),
   UNSURE for a key with an escape on the way (not compared here). A key
   given twice is found where it is first, as DuckDB finds it. */
#define NOWHERE (-1)
#define UNSURE (-2)

/* Whether n bytes at a and b are the same: keys are short, and a call to
   memcmp cost more than comparing them here. */
static inline int
same(const char *a, const char *b, Py_ssize_t n)
{
    for (Py_ssize_t k = 0; k < n; k++) {
        if (a[k] != b[k]) {
            return 0;
        }
    }
    return 1;
}

static inline int
is(const Node *key, const char *want, Py_ssize_t len)
{
    return key->n == len && (len == 0 || (key->s[0] == want[0] && same(key->s, want, len)));
}

/* The values the last lookup from node `from` found on its way: `at[d]` is
   where keys[0..d] lead. Columns side by side share their paths' first keys
   (`beacon`, `nav`, ...): the next lookup from the same node takes up where
   the shared part of its path ends. Valid for one tape. */
typedef struct {
    Py_ssize_t from; /* NOWHERE: nothing remembered */
    int depth;
    const char *keys[MAX_PATH];
    Py_ssize_t lens[MAX_PATH];
    Py_ssize_t at[MAX_PATH];
} Memo;

static Py_ssize_t
lookup(const Tape *t, Py_ssize_t i, PyObject *const *path, const Py_ssize_t *lens, int depth,
       Memo *memo)
{
    int d = 0;
    if (memo->from == i) { /* the path's first keys as the last one's: from where they led */
        while (d < memo->depth && d < depth - 1 && lens[d] == memo->lens[d] &&
               same(PyBytes_AS_STRING(path[d]), memo->keys[d], lens[d])) {
            d++;
        }
        if (d > 0) {
            i = memo->at[d - 1];
        }
    }
    else {
        memo->from = i;
    }
    memo->depth = d;
    for (; d < depth; d++) {
        if (i < 0 || t->nodes[i].type != N_OBJECT) {
            return NOWHERE;
        }
        const char *want = PyBytes_AS_STRING(path[d]);
        Py_ssize_t len = lens[d], end = t->nodes[i].end, k = i + 1, found = NOWHERE;
        while (k < end) {
            const Node *key = &t->nodes[k];
            if (key->escaped) {
                return UNSURE;
            }
            if (is(key, want, len)) {
                found = k + 1;
                break;
            }
            k = next(t, k + 1);
        }
        i = found;
        if (i < 0) {
            return NOWHERE;
        }
        memo->keys[d] = want;
        memo->lens[d] = len;
        memo->at[d] = i;
        memo->depth = d + 1;
    }
    return i;
}

/* ------------------------------------------------------------------------ */
/* Columns being built: growable buffers, truncated back when a document
   turns out not to be taken. */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int
reserve(Buf *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap) {
        return 0;
    }
    Py_ssize_t cap = b->cap ? b->cap * 2 : 1024;
    while (cap < b->len + more) {
        cap *= 2;
    }
    char *data = realloc(b->data, (size_t)cap);
    if (data == NULL) {
        return FAIL;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int
put(Buf *b, const void *s, Py_ssize_t n)
{
    if (n == 0) {
        return 0;
    }
    if (reserve(b, n) < 0) {
        return FAIL;
    }
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

typedef struct {
    int kind;
    int from_item;
    int depth;
    PyObject *path[MAX_PATH]; /* bytes, borrowed from the plan */
    Py_ssize_t lens[MAX_PATH];
    Buf validity, data, offsets; /* validity and bool data: one bit a row */
    Py_ssize_t nulls;
} Column;

typedef struct {
    int depth; /* of the items' list; 0: one row a document */
    int columnar; /* each column's path leads to a list of its values, row by row */
    PyObject *path[MAX_PATH];
    Py_ssize_t lens[MAX_PATH];
    int n;
    Column *cols;
    Py_ssize_t *cursor; /* columnar: each column's next value (or NOWHERE) */
    Py_ssize_t rows;
} Table;

static int
set_bit(Buf *b, Py_ssize_t row, int on)
{
    Py_ssize_t byte = row >> 3;
    if (byte >= b->len) {
        if (reserve(b, byte + 1 - b->len) < 0) {
            return FAIL;
        }
        memset(b->data + b->len, 0, (size_t)(byte + 1 - b->len));
        b->len = byte + 1;
    }
    unsigned char mask = (unsigned char)(1u << (row & 7));
    if (on) {
        b->data[byte] |= mask;
    }
    else {
        b->data[byte] &= (unsigned char)~mask;
    }
    return 0;
}

/* Four hex digits at s into *u. */
static int
hex4(const char *s, unsigned *u)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (unsigned)(c - '0');
        }
        else if (c >= 'a' && c <= 'f') {
            v |= (unsigned)(c - 'a' + 10);
        }
        else if (c >= 'A' && c <= 'F') {
            v |= (unsigned)(c - 'A' + 10);
        }
        else {
            return FAIL;
        }
    }
    *u = v;
    return 0;
}

/* The number of bytes of the UTF-8 sequence at s (at most n), 0 if invalid. */
static Py_ssize_t
utf8(const unsigned char *s, Py_ssize_t n)
{
    unsigned c = s[0];
    Py_ssize_t len;
    unsigned min;
    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, min = 0x80;
    }
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3, min = 0x800;
    }
    else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, min = 0x10000;
    }
    else {
        return 0;
    }
    if (n < len) {
        return 0;
    }
    unsigned cp = c & (0x7f >> len);
    for (Py_ssize_t k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return len;
}

static void
put_code(char *out, Py_ssize_t *len, unsigned cp)
{
    char *o = out + *len;
    if (cp < 0x80) {
        o[0] = (char)cp;
        *len += 1;
    }
    else if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        *len += 2;
    }
    else if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        *len += 3;
    }
    else {
        o[0] = (char)(0xf0 | (cp >> 18));
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[3] = (char)(0x80 | (cp & 0x3f));
        *len += 4;
    }
}

/* A string node's text, unescaped, appended to b: FAIL unless it makes valid
   UTF-8, NOMEM when memory ran out. */
#define NOMEM (-2)

static int
text(Buf *b, const Node *nd)
{
    const unsigned char *s = (const unsigned char *)nd->s, *end = s + nd->n;
    if (reserve(b, nd->n) < 0) { /* unescaping never lengthens */
        return NOMEM;
    }
    char *out = b->data;
    Py_ssize_t len = b->len;
    while (s < end) {
        unsigned c = *s;
        if (c == '\\') {
            c = s[1];
            s += 2;
            switch (c) {
            case '"':
            case '\\':
            case '/':
                out[len++] = (char)c;
                break;
            case 'b':
                out[len++] = '\b';
                break;
            case 'f':
                out[len++] = '\f';
                break;
            case 'n':
                out[len++] = '\n';
                break;
            case 'r':
                out[len++] = '\r';
                break;
            case 't':
                out[len++] = '\t';
                break;
            case 'u': {
                unsigned cp, lo;
                if (end - s < 4 || hex4((const char *)s, &cp) < 0) {
                    return FAIL;
                }
                s += 4;
                if (cp >= 0xdc00 && cp <= 0xdfff) {
                    return FAIL; /* a low surrogate alone */
                }
                if (cp >= 0xd800 && cp <= 0xdbff) { /* needs its low half: \uDC00.. */
                    if (end - s < 6 || s[0] != '\\' || s[1] != 'u' ||
                        hex4((const char *)s + 2, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff) {
                        return FAIL;
                    }
                    s += 6;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                put_code(out, &len, cp); /* at most as long as its escape */
                break;
            }
            default:
                return FAIL;
            }
        }
        else if (c < 0x80) {
            out[len++] = (char)c;
            s++;
        }
        else {
            Py_ssize_t k = utf8(s, end - s);
            if (k == 0) {
                return FAIL;
            }
            memcpy(out + len, s, (size_t)k);
            len += k;
            s += k;
        }
    }
    b->len = len;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Numbers into doubles. Most of a document's numbers are short decimals (a
   count, "420.0") or the shortest text of a double as ingest wrote it (up to
   17 digits); strtod reads each through its arbitrary-precision path, a third
   of columnize's time. decimal() reads them exactly in 64 and 128-bit integer
   arithmetic instead and leaves the rest (more than 19 digits, a large
   exponent, a halfway case) to strtod: its answer is always strtod's. */

static const double P10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static inline unsigned __int128
pow10_128(int k) /* k <= 38 */
{
    unsigned __int128 p = 1;
    while (k-- > 0) {
        p *= 10;
    }
    return p;
}

/* Where the exact m / 10^k lies against the halfway points around the double
   d (positive, normal, its significand not a power of two): -1 below the lower
   one, 1 above the upper one, 0 strictly between (d is the nearest double), 2
   on one of them or out of reach of 128 bits (strtod decides). */
static int
placed(uint64_t m, int k, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    int biased = (int)(bits >> 52) & 0x7ff;
    uint64_t frac = bits & ((UINT64_C(1) << 52) - 1);
    if (biased == 0 || biased == 0x7ff || frac == 0) {
        return 2;
    }
    uint64_t sig = frac | (UINT64_C(1) << 52);
    int s = biased - 1075 - 1; /* the halfway points are (2 sig -+ 1) 2^s */
    unsigned __int128 p = pow10_128(k), lo = (unsigned __int128)(2 * sig - 1) * p,
                      hi = (unsigned __int128)(2 * sig + 1) * p, x = m;
    /* compare m 2^-s with (2 sig -+ 1) 10^k, or m with them 2^s */
    if (s < 0) {
        if (-s > 63) { /* m < 2^64: the shift must keep it within 128 bits */
            return 2;
        }
        x <<= -s;
    }
    else {
        if (s > 9) { /* 2^54 10^19 2^9 < 2^127 */
            return 2;
        }
        lo <<= s;
        hi <<= s;
    }
    if (x < lo) {
        return -1;
    }
    if (x > hi) {
        return 1;
    }
    return x == lo || x == hi ? 2 : 0;
}

/* The number text s (n bytes, JSON's grammar) as the nearest double, into
   *out; 0 when done, FAIL when strtod is to read it. */
static int
decimal(const char *s, Py_ssize_t n, double *out)
{
    const char *p = s, *end = s + n;
    int negative = *p == '-';
    p += negative;
    uint64_t m = 0;
    int digits = 0, scale = 0; /* significant digits taken; the point's place */
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (digits || *p != '0') {
            if (++digits > 19) {
                return FAIL;
            }
            m = m * 10 + (uint64_t)(*p - '0');
        }
    }
    if (p < end && *p == '.') {
        for (p++; p < end && *p >= '0' && *p <= '9'; p++) {
            if (digits || *p != '0') {
                if (++digits > 19) {
                    return FAIL;
                }
                m = m * 10 + (uint64_t)(*p - '0');
            }
            scale--;
        }
    }
    if (p < end) { /* an exponent */
        p++;
        int minus = p < end && *p == '-';
        p += p < end && (*p == '-' || *p == '+');
        int e = 0;
        for (; p < end; p++) {
            if (e > 1000) {
                return FAIL;
            }
            e = e * 10 + (*p - '0');
        }
        scale += minus ? -e : e;
    }
    double d;
    if (m == 0) {
        d = 0.0;
    }
    else if (m <= (UINT64_C(1) << 53) && scale >= -22 && scale <= 22) {
        /* both exact as doubles: one correctly rounded operation */
        d = scale < 0 ? (double)m / P10[-scale] : (double)m * P10[scale];
    }
    else if (scale == 0) {
        d = (double)m; /* the conversion rounds to nearest */
    }
    else if (scale < 0 && scale >= -19) {
        int k = -scale, moved = 0;
        d = (double)m / P10[k]; /* within a few units in the last place */
        for (;;) {
            int where = placed(m, k, d);
            if (where == 0) {
                break;
            }
            if (where == 2 || ++moved > 4) {
                return FAIL;
            }
            d = nextafter(d, where < 0 ? 0.0 : HUGE_VAL);
        }
    }
    else {
        return FAIL;
    }
    *out = negative ? -d : d;
    return 0;
}

/* Node i (or NOWHERE: a null) as the next value of column c; FAIL when the
   document is not to be taken, NOMEM when memory ran out. */
static int
append(Column *c, const Tape *t, Py_ssize_t i, Py_ssize_t row)
{
    const Node *nd = i >= 0 ? &t->nodes[i] : NULL;
    int null = nd == NULL || nd->type == N_NULL;
    if (set_bit(&c->validity, row, !null) < 0) {
        return NOMEM;
    }
    c->nulls += null;
    switch (c->kind) {
    case A_FLOAT64: {
        double d = 0.0;
        if (!null) {
            char digits[64];
            if (nd->type != N_NUM) {
                return FAIL;
            }
            if (decimal(nd->s, nd->n, &d) == 0) {
                d = nd->is_int && d == 0.0 ? 0.0 : d; /* an integer -0 is DuckDB's integer 0 */
                return put(&c->data, &d, sizeof d) < 0 ? NOMEM : 0;
            }
            if (nd->n >= (Py_ssize_t)sizeof(digits)) {
                return FAIL;
            }
            memcpy(digits, nd->s, (size_t)nd->n);
            digits[nd->n] = '\0';
            char *stop;
            errno = 0;
            d = strtod(digits, &stop);
            if (nd->is_int && d == 0.0) {
                d = 0.0; /* an integer -0 is DuckDB's integer 0 */
            }
            if (stop != digits + nd->n || (errno == ERANGE && (d > 1.0 || d < -1.0))) {
                return FAIL; /* beyond a double (or a locale's other point): the SQL path */
            }
        }
        return put(&c->data, &d, sizeof d) < 0 ? NOMEM : 0;
    }
    case A_INT64:
    case A_INT_FLOAT64: {
        int64_t v = 0;
        if (!null) {
            if (nd->type != N_NUM || !nd->is_int) {
                return FAIL;
            }
            const char *s = nd->s, *end = s + nd->n;
            int negative = *s == '-';
            uint64_t u = 0;
            for (s += negative; s < end; s++) {
                unsigned digit = (unsigned)(*s - '0');
                if (u > (UINT64_MAX - digit) / 10) {
                    return FAIL;
                }
                u = u * 10 + digit;
            }
            if (u > (uint64_t)INT64_MAX + (uint64_t)negative) {
                return FAIL;
            }
            v = negative ? (int64_t)(0 - u) : (int64_t)u;
        }
        if (c->kind == A_INT_FLOAT64) { /* as DuckDB casts a BIGINT to a DOUBLE */
            double d = (double)v;
            return put(&c->data, &d, sizeof d) < 0 ? NOMEM : 0;
        }
        return put(&c->data, &v, sizeof v) < 0 ? NOMEM : 0;
    }
    case A_BOOL:
        if (!null && nd->type != N_TRUE && nd->type != N_FALSE) {
            return FAIL;
        }
        return set_bit(&c->data, row, !null && nd->type == N_TRUE) < 0 ? NOMEM : 0;
    default: { /* A_STRING */
        if (c->offsets.len == 0) {
            int32_t zero = 0;
            if (put(&c->offsets, &zero, sizeof zero) < 0) {
                return NOMEM;
            }
        }
        if (!null) {
            if (nd->type != N_STR) {
                return FAIL;
            }
            Py_ssize_t before = c->data.len;
            if (!nd->escaped) {
                const unsigned char *s = (const unsigned char *)nd->s;
                for (Py_ssize_t k = 0; k < nd->n;) { /* ASCII runs fast, the rest checked */
                    Py_ssize_t m = s[k] < 0x80 ? 1 : utf8(s + k, nd->n - k);
                    if (m == 0) {
                        return FAIL;
                    }
                    k += m;
                }
                if (put(&c->data, nd->s, nd->n) < 0) {
                    return NOMEM;
                }
            }
            else {
                int rc = text(&c->data, nd);
                if (rc < 0) {
                    c->data.len = before;
                    return rc;
                }
            }
        }
        if (c->data.len > INT32_MAX) {
            return NOMEM; /* past Arrow's 32-bit string offsets (the caller's to handle) */
        }
        int32_t end = (int32_t)c->data.len;
        return put(&c->offsets, &end, sizeof end) < 0 ? NOMEM : 0;
    }
    }
}

static inline int
get_bit(const Buf *b, Py_ssize_t row)
{
    return (b->data[row >> 3] >> (row & 7)) & 1;
}

/* Row `row` of column c the same as the row before it. */
static int
repeat(Column *c, Py_ssize_t row)
{
    int valid = get_bit(&c->validity, row - 1);
    if (set_bit(&c->validity, row, valid) < 0) {
        return NOMEM;
    }
    c->nulls += !valid;
    switch (c->kind) {
    case A_BOOL:
        return set_bit(&c->data, row, get_bit(&c->data, row - 1)) < 0 ? NOMEM : 0;
    case A_STRING: {
        int32_t ends[2];
        memcpy(ends, c->offsets.data + (row - 1) * 4, sizeof ends);
        Py_ssize_t n = ends[1] - ends[0];
        if (reserve(&c->data, n) < 0 || reserve(&c->offsets, 4) < 0) {
            return NOMEM;
        }
        if (n > 0) {
            memcpy(c->data.data + c->data.len, c->data.data + ends[0], (size_t)n);
            c->data.len += n;
        }
        if (c->data.len > INT32_MAX) {
            return NOMEM;
        }
        int32_t end = (int32_t)c->data.len;
        return put(&c->offsets, &end, sizeof end) < 0 ? NOMEM : 0;
    }
    default: /* eight bytes */
        if (reserve(&c->data, 8) < 0) {
            return NOMEM;
        }
        memcpy(c->data.data + c->data.len, c->data.data + c->data.len - 8, 8);
        c->data.len += 8;
        return 0;
    }
}

/* The rows of a columnar document (`{column: [values]}`, as the rows of an
   agent's batch are kept): row i holds the i-th value of every list. A list
   missing (or null) is a column of nulls, as DuckDB's unnest side by side
   has it; lists of different lengths are left to DuckDB. */
static int
take_columns(Table *tb, const Tape *t, Memo *memo)
{
    Py_ssize_t rows = -1;
    for (int j = 0; j < tb->n; j++) {
        Column *c = &tb->cols[j];
        Py_ssize_t at = lookup(t, 0, c->path, c->lens, c->depth, memo);
        if (at == UNSURE || (at >= 0 && t->nodes[at].type != N_LIST &&
                             t->nodes[at].type != N_NULL)) {
            return FAIL;
        }
        tb->cursor[j] = NOWHERE;
        if (at >= 0 && t->nodes[at].type == N_LIST) {
            Py_ssize_t count = 0, end = t->nodes[at].end;
            for (Py_ssize_t i = at + 1; i < end; i = next(t, i)) {
                count++;
            }
            if (rows >= 0 && count != rows) {
                return FAIL;
            }
            rows = count;
            tb->cursor[j] = count ? at + 1 : NOWHERE;
        }
    }
    for (Py_ssize_t r = 0; r < rows; r++) {
        for (int j = 0; j < tb->n; j++) {
            Py_ssize_t at = tb->cursor[j];
            int rc = append(&tb->cols[j], t, at, tb->rows);
            if (rc < 0) {
                return rc;
            }
            if (at >= 0) {
                tb->cursor[j] = next(t, at);
            }
        }
        tb->rows++;
    }
    return 0;
}

/* Every row of document `t` into `tables`; FAIL (nothing kept) when it is not
   to be taken, NOMEM when memory ran out. */
static int
take(Table *tables, int n_tables, const Tape *t)
{
    if (t->nodes[0].type != N_OBJECT) {
        return FAIL;
    }
    Memo memo = {.from = NOWHERE};
    for (int k = 0; k < n_tables; k++) {
        Table *tb = &tables[k];
        if (tb->columnar) {
            int rc = take_columns(tb, t, &memo);
            if (rc < 0) {
                return rc;
            }
            continue;
        }
        Py_ssize_t first = NOWHERE, stop = NOWHERE;
        if (tb->depth) {
            Py_ssize_t list = lookup(t, 0, tb->path, tb->lens, tb->depth, &memo);
            if (list == UNSURE) {
                return FAIL;
            }
            if (list >= 0 && t->nodes[list].type == N_LIST) {
                first = list + 1;
                stop = t->nodes[list].end;
            }
            else if (list >= 0 && t->nodes[list].type != N_NULL) {
                return FAIL;
            }
        }
        else {
            first = 0; /* one row: the document itself */
            stop = 1;
        }
        for (Py_ssize_t item = first, again = 0; item >= 0 && item < stop; again = 1) {
            for (int j = 0; j < tb->n; j++) {
                Column *c = &tb->cols[j];
                int rc;
                if (!c->from_item && again) { /* the document's value, as the row before */
                    rc = repeat(c, tb->rows);
                }
                else {
                    Py_ssize_t at = c->from_item && t->nodes[item].type == N_NULL
                                        ? NOWHERE
                                        : lookup(t, c->from_item ? item : 0, c->path,
                                                 c->lens, c->depth, &memo);
                    rc = at == UNSURE ? FAIL : append(c, t, at, tb->rows);
                }
                if (rc < 0) {
                    return rc;
                }
            }
            tb->rows++;
            item = tb->depth ? next(t, item) : stop;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */

static int
path_of(PyObject *seq, PyObject **path, Py_ssize_t *lens, int *depth)
{
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    if (n > MAX_PATH) {
        PyErr_SetString(PyExc_ValueError, "a path of at most 8 keys");
        return FAIL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *key = PyTuple_GET_ITEM(seq, k);
        if (!PyBytes_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "a path's keys are bytes");
            return FAIL;
        }
        path[k] = key;
        lens[k] = PyBytes_GET_SIZE(key);
    }
    *depth = (int)n;
    return 0;
}

/* The bytes of the answer are made (with the GIL) before they are filled:
   each is a copy to make, done for all of them at once without the GIL, so
   the megabytes of a big flush are not copied while the event loop waits. */
typedef struct {
    char *to;
    const char *from;
    Py_ssize_t len;
} Copy;

typedef struct {
    Copy *copies;
    Py_ssize_t used;
} Copies;

static PyObject *
buffer(const Buf *b, Py_ssize_t len, Copies *copies)
{
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, len);
    if (bytes != NULL && len > 0) {
        copies->copies[copies->used++] = (Copy){PyBytes_AS_STRING(bytes), b->data, len};
    }
    return bytes;
}

/* The Python value of table tb: (rows, [(validity | None, *data buffers)]),
   its buffers' contents left to `copies`. */
static PyObject *
answer(const Table *tb, Copies *copies)
{
    PyObject *cols = PyList_New(tb->n);
    if (cols == NULL) {
        return NULL;
    }
    Py_ssize_t bits = (tb->rows + 7) / 8;
    for (int j = 0; j < tb->n; j++) {
        const Column *c = &tb->cols[j];
        PyObject *validity = c->nulls ? buffer(&c->validity, bits, copies) : Py_NewRef(Py_None);
        PyObject *item = NULL;
        if (validity != NULL) {
            switch (c->kind) {
            case A_STRING:
                if (tb->rows == 0) {
                    int32_t zero = 0;
                    item = Py_BuildValue("(Ny#y#)", validity, (const char *)&zero,
                                         (Py_ssize_t)sizeof zero, "", (Py_ssize_t)0);
                }
                else {
                    item = Py_BuildValue("(NNN)", validity,
                                         buffer(&c->offsets, c->offsets.len, copies),
                                         buffer(&c->data, c->data.len, copies));
                }
                break;
            case A_BOOL:
                item = Py_BuildValue("(NN)", validity, buffer(&c->data, bits, copies));
                break;
            default:
                item = Py_BuildValue("(NN)", validity, buffer(&c->data, c->data.len, copies));
            }
        }
        if (item == NULL) {
            Py_DECREF(cols);
            return NULL;
        }
        PyList_SET_ITEM(cols, j, item);
    }
    return Py_BuildValue("(nN)", tb->rows, cols);
}

static void
release(Table *tables, int n_tables)
{
    for (int k = 0; k < n_tables; k++) {
        for (int j = 0; tables[k].cols != NULL && j < tables[k].n; j++) {
            Column *c = &tables[k].cols[j];
            free(c->validity.data);
            free(c->data.data);
            free(c->offsets.data);
        }
        free(tables[k].cols);
        free(tables[k].cursor);
    }
    free(tables);
}

typedef struct {
    Py_ssize_t rows, validity, data, offsets, nulls;
} Mark;

static PyObject *
columnize(PyObject *self, PyObject *args)
{
    PyObject *docs_arg, *plan;
    if (!PyArg_ParseTuple(args, "OO!", &docs_arg, &PyTuple_Type, &plan)) {
        return NULL;
    }
    PyObject *docs = PySequence_Tuple(docs_arg); /* held: the bytes stay alive */
    if (docs == NULL) {
        return NULL;
    }
    Py_ssize_t n_docs = PyTuple_GET_SIZE(docs);
    for (Py_ssize_t d = 0; d < n_docs; d++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(docs, d))) {
            Py_DECREF(docs);
            PyErr_SetString(PyExc_TypeError, "documents are bytes");
            return NULL;
        }
    }
    int n_tables = (int)PyTuple_GET_SIZE(plan);
    Table *tables = calloc((size_t)(n_tables ? n_tables : 1), sizeof(Table));
    Mark *marks = NULL;
    char *left = NULL;
    Tape tape = {0};
    PyObject *out = NULL;
    int n_cols = 0, failed = 0;
    if (tables == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (int k = 0; k < n_tables; k++) {
        /* (list path | None, ((kind, from_item, path), ...)[, columnar]) */
        PyObject *spec = PyTuple_GET_ITEM(plan, k), *list, *cols;
        Table *tb = &tables[k];
        if (!PyTuple_Check(spec)) {
            PyErr_SetString(PyExc_TypeError, "a table's plan is a tuple");
            goto done;
        }
        if (!PyArg_ParseTuple(spec, "OO!|p", &list, &PyTuple_Type, &cols, &tb->columnar)) {
            goto done;
        }
        if (tb->columnar && list != Py_None) {
            PyErr_SetString(PyExc_ValueError, "a columnar table has no list path");
            goto done;
        }
        if (list != Py_None &&
            (!PyTuple_Check(list) || path_of(list, tb->path, tb->lens, &tb->depth) < 0)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "a list path is a tuple of bytes or None");
            }
            goto done;
        }
        tb->n = (int)PyTuple_GET_SIZE(cols);
        tb->cols = calloc((size_t)(tb->n ? tb->n : 1), sizeof(Column));
        tb->cursor = calloc((size_t)(tb->n ? tb->n : 1), sizeof(Py_ssize_t));
        if (tb->cols == NULL || tb->cursor == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        n_cols += tb->n;
        for (int j = 0; j < tb->n; j++) {
            Column *c = &tb->cols[j];
            PyObject *path;
            if (!PyArg_ParseTuple(PyTuple_GET_ITEM(cols, j), "iiO!", &c->kind, &c->from_item,
                                  &PyTuple_Type, &path) ||
                path_of(path, c->path, c->lens, &c->depth) < 0) {
                goto done;
            }
            if (c->kind < A_FLOAT64 || c->kind > A_INT_FLOAT64) {
                PyErr_SetString(PyExc_ValueError, "an unknown column kind");
                goto done;
            }
        }
    }
    marks = malloc((size_t)(n_cols + n_tables + 1) * sizeof(Mark));
    left = calloc((size_t)(n_docs ? n_docs : 1), 1);
    if (marks == NULL || left == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t d = 0; d < n_docs && !failed; d++) {
        PyObject *doc = PyTuple_GET_ITEM(docs, d);
        Mark *m = marks;
        for (int k = 0; k < n_tables; k++) {
            (m++)->rows = tables[k].rows;
            for (int j = 0; j < tables[k].n; j++, m++) {
                const Column *c = &tables[k].cols[j];
                m->validity = c->validity.len;
                m->data = c->data.len;
                m->offsets = c->offsets.len;
                m->nulls = c->nulls;
            }
        }
        int rc = parse(&tape, PyBytes_AS_STRING(doc), PyBytes_GET_SIZE(doc));
        if (rc == 0) {
            rc = take(tables, n_tables, &tape);
        }
        else if (tape.oom) {
            rc = NOMEM;
        }
        if (rc == NOMEM) {
            failed = 1;
        }
        else if (rc < 0) { /* back to where the document began (bits past rows are rewritten) */
            left[d] = 1;
            m = marks;
            for (int k = 0; k < n_tables; k++) {
                tables[k].rows = (m++)->rows;
                for (int j = 0; j < tables[k].n; j++, m++) {
                    Column *c = &tables[k].cols[j];
                    c->data.len = m->data;
                    c->offsets.len = m->offsets;
                    c->nulls = m->nulls;
                    c->validity.len = m->validity;
                }
            }
        }
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject *result = PyList_New(n_tables), *leftover = PyList_New(0);
    if (result == NULL || leftover == NULL) {
        Py_XDECREF(result);
        Py_XDECREF(leftover);
        goto done;
    }
    Py_ssize_t most = 0; /* three buffers a column at most */
    for (int k = 0; k < n_tables; k++) {
        most += 3 * (Py_ssize_t)tables[k].n;
    }
    Copies copies = {malloc((size_t)(most ? most : 1) * sizeof(Copy)), 0};
    if (copies.copies == NULL) {
        Py_DECREF(result);
        Py_DECREF(leftover);
        PyErr_NoMemory();
        goto done;
    }
    for (int k = 0; k < n_tables; k++) {
        PyObject *item = answer(&tables[k], &copies);
        if (item == NULL) {
            free(copies.copies);
            Py_DECREF(result);
            Py_DECREF(leftover);
            goto done;
        }
        PyList_SET_ITEM(result, k, item);
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < copies.used; i++) {
        memcpy(copies.copies[i].to, copies.copies[i].from, (size_t)copies.copies[i].len);
    }
    Py_END_ALLOW_THREADS
    free(copies.copies);
    for (Py_ssize_t d = 0; d < n_docs; d++) {
        if (left[d]) {
            PyObject *index = PyLong_FromSsize_t(d);
            if (index == NULL || PyList_Append(leftover, index) < 0) {
                Py_XDECREF(index);
                Py_DECREF(result);
                Py_DECREF(leftover);
                goto done;
            }
            Py_DECREF(index);
        }
    }
    out = Py_BuildValue("(NN)", result, leftover);
done:
    free(tape.nodes);
    free(marks);
    free(left);
    if (tables != NULL) {
        release(tables, n_tables);
    }
    Py_DECREF(docs);
    return out;
}

static PyMethodDef module_methods[] = {
    {"columnize", columnize, METH_VARARGS,
     "columnize(documents, plan) -> (tables, leftover): the rows of JSON documents "
     "(bytes) as Arrow buffers. plan holds per table (list path | None, columns"
     "[, columnar]), a column being (kind, from_item, path): kind 0 float64, 1 "
     "int64, 2 bool, 3 string, 4 an integer as float64; a path is a tuple of "
     "bytes keys; a columnar table's paths lead to lists of its columns' values. "
     "Each table answers (rows, [(validity | None, *buffers)]); leftover lists "
     "the documents not taken."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "perfpulse.store._columns",
    .m_doc = "JSON documents into Arrow columns, compiled (see perfpulse.store.duckdb.sql).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__columns(void)
{
    return PyModule_Create(&module_def);
}
