/* perfpulse.ingest._beacon: a browser beacon's usual path, compiled.

   perfpulse.ingest.normalize holds the reference path in Python: msgspec
   decodes the body into a Beacon (refusing a bad one with the field named),
   Normalizer.beacon checks its values, redacts its URLs, folds its page and
   encodes the StoredBeacon document the spool keeps. normalize() here does
   the same for the usual beacon in one pass over the body, and answers None
   for anything else, which then takes the Python path; so every refusal,
   every dropped value and its reason, and every odd input stay the Python
   path's.

   What it takes: a JSON object of the wire format (keys in any order, unknown
   keys skipped) whose strings are printable ASCII without escapes, whose
   numbers have at most 19 significant digits and an exponent within 300,
   with no key given twice, no required field missing, every value of its
   field's type and within its constraints (string lengths, literals, counts
   at or above zero), a timestamp within the window, every vital and every
   navigation phase in range, and at most 32 vitals, 64 resource groups and
   64 largest resources. What it does beyond the check, as the Python path:

   - the vitals become StoredVitals: rated by their thresholds, their
     attribution (an object or null) made stored text by the `attribution`
     callable of configure();
   - resource groups and largest resources whose duration is out of range
     are left out; the URLs (the page's, the largest resources', the worst
     script's) pass through `redact`; an empty worst script becomes null;
   - the page is `page(service, url)` (the template, folded at the cap),
     called last, once the beacon is known to be kept.

   Numbers are copied as they came: the document is parsed again by the
   database, which reads the same double from them as msgspec would. The
   values that are compared (the timestamp, the vitals, the durations, the
   sample rate, the memory) are read exactly: digits that fit a double are
   converted with one correctly rounded operation, others approximately, and
   a value that close to a bound is read again by Python's own correctly
   rounded parser. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* The wire format, as the fast path knows it (see schema() and its test).   */

enum { K_STR, K_LIT, K_INT, K_FLOAT, K_BOOL, K_RAW, K_STRUCT, K_LIST };
enum { C_NONE, C_GE0, C_GT0_LE1 };

typedef struct Schema Schema;
typedef struct {
    const char *name;
    uint8_t len;           /* strlen(name) */
    uint8_t kind;
    uint8_t nullable;
    uint8_t required;
    uint8_t cons;          /* K_INT, K_FLOAT: C_GE0 or C_GT0_LE1 */
    int16_t minlen, maxlen; /* K_STR: characters (ASCII here: bytes) */
    const char *dflt;      /* the default as msgspec encodes it (when not required) */
    const Schema *sub;     /* K_STRUCT, K_LIST: the items' schema */
    const char *const *lits; /* K_LIT: the allowed strings, NULL-terminated */
} Field;

struct Schema {
    const char *name;
    int n;
    const Field *f;
};

static const char *const DEVICES[] = {"mobile", "tablet", "desktop", NULL};
static const char *const RESOURCE_TYPES[] = {"image", "script", "stylesheet", "font",
                                             "fetch", "other", NULL};
#define N_VITALS 6
static const char *const VITAL_NAMES[] = {"LCP", "INP", "CLS", "FCP", "TTFB", "FID", NULL};

#define STR(n, lo, hi, d) {n, sizeof(n) - 1, K_STR, 0, 0, 0, lo, hi, d, NULL, NULL}
#define STR_OPT(n, hi) {n, sizeof(n) - 1, K_STR, 1, 0, 0, 0, hi, "null", NULL, NULL}
#define STR_REQ(n, lo, hi) {n, sizeof(n) - 1, K_STR, 0, 1, 0, lo, hi, NULL, NULL, NULL}
#define LIT(n, l, d) {n, sizeof(n) - 1, K_LIT, 0, (d) == NULL, 0, 0, 0, d, NULL, l}
#define INT(n, c, d) {n, sizeof(n) - 1, K_INT, 0, (d) == NULL, c, 0, 0, d, NULL, NULL}
#define INT_OPT(n, c) {n, sizeof(n) - 1, K_INT, 1, 0, c, 0, 0, "null", NULL, NULL}
#define FLOAT(n, c, d) {n, sizeof(n) - 1, K_FLOAT, 0, (d) == NULL, c, 0, 0, d, NULL, NULL}
#define FLOAT_OPT(n) {n, sizeof(n) - 1, K_FLOAT, 1, 0, C_NONE, 0, 0, "null", NULL, NULL}
#define BOOL(n, d) {n, sizeof(n) - 1, K_BOOL, 0, 0, 0, 0, 0, d, NULL, NULL}
#define RAW(n) {n, sizeof(n) - 1, K_RAW, 0, 0, 0, 0, 0, "null", NULL, NULL}
#define STRUCT_OPT(n, s) {n, sizeof(n) - 1, K_STRUCT, 1, 0, 0, 0, 0, "null", &s, NULL}
#define LIST(n, s) {n, sizeof(n) - 1, K_LIST, 0, 0, 0, 0, 0, "[]", &s, NULL}

static const Field vital_f[] = {
    LIT("name", VITAL_NAMES, NULL),
    FLOAT("value", C_NONE, NULL),
    RAW("attribution"),
    STR_OPT("navigation_type", 32),
};
static const Schema VITAL = {"Vital", 4, vital_f};
enum { V_NAME, V_VALUE, V_ATTRIBUTION, V_NAVIGATION_TYPE };

static const Field nav_f[] = {
    STR_OPT("type", 32),
    FLOAT_OPT("dns_ms"),
    FLOAT_OPT("connect_ms"),
    FLOAT_OPT("tls_ms"),
    FLOAT_OPT("request_ms"),
    FLOAT_OPT("response_ms"),
    FLOAT_OPT("dom_interactive_ms"),
    FLOAT_OPT("dom_complete_ms"),
    FLOAT_OPT("load_ms"),
    INT_OPT("transfer_bytes", C_GE0),
};
static const Schema NAVIGATION = {"Navigation", 10, nav_f};
enum { N_FIRST_PHASE = 1, N_LAST_PHASE = 8 };

static const Field group_f[] = {
    LIT("type", RESOURCE_TYPES, NULL),
    INT("count", C_GE0, NULL),
    INT("transfer_bytes", C_GE0, "0"),
    INT("encoded_bytes", C_GE0, "0"),
    INT("decoded_bytes", C_GE0, "0"),
    FLOAT("duration_ms", C_NONE, "0.0"),
    INT("cache_hits", C_GE0, "0"),
    INT("render_blocking", C_GE0, "0"),
    INT("third_party", C_GE0, "0"),
};
static const Schema RESOURCE_GROUP = {"ResourceGroup", 9, group_f};
enum { G_DURATION = 5 };

static const Field entry_f[] = {
    STR_REQ("url", 0, 4096),
    LIT("type", RESOURCE_TYPES, NULL),
    INT("transfer_bytes", C_GE0, "0"),
    INT("encoded_bytes", C_GE0, "0"),
    INT("decoded_bytes", C_GE0, "0"),
    FLOAT("duration_ms", C_NONE, "0.0"),
    BOOL("cached", "false"),
    BOOL("render_blocking", "false"),
    BOOL("third_party", "false"),
};
static const Schema RESOURCE_ENTRY = {"ResourceEntry", 9, entry_f};
enum { E_URL = 0, E_DURATION = 5 };

static const Field tasks_f[] = {
    INT("count", C_GE0, "0"),
    FLOAT("total_ms", C_NONE, "0.0"),
    FLOAT("tbt_ms", C_NONE, "0.0"),
    FLOAT("max_ms", C_NONE, "0.0"),
    INT("loaf_count", C_GE0, "0"),
    FLOAT("loaf_total_ms", C_NONE, "0.0"),
    STR_OPT("worst_script", 4096),
    FLOAT_OPT("worst_script_ms"),
};
static const Schema LONG_TASKS = {"LongTasks", 8, tasks_f};
enum { L_WORST_SCRIPT = 6 };

static const Field memory_f[] = {
    FLOAT("used_bytes", C_GE0, NULL),
    FLOAT_OPT("total_bytes"),
    FLOAT_OPT("limit_bytes"),
    STR("source", 0, 64, "\"\""),
};
static const Schema MEMORY = {"Memory", 4, memory_f};

static const Field beacon_f[] = {
    STR_REQ("id", 1, 128),
    FLOAT("ts", C_NONE, NULL),
    STR_REQ("url", 0, 4096),
    INT("v", C_NONE, "1"),
    BOOL("soft", "false"),
    STR("service", 1, 200, "\"web\""),
    STR("environment", 1, 200, "\"production\""),
    STR("release", 0, 200, "\"\""),
    LIT("device", DEVICES, "\"desktop\""),
    STR("browser", 0, 64, "\"\""),
    STR("connection", 0, 32, "\"\""),
    FLOAT("sample_rate", C_GT0_LE1, "1.0"),
    LIST("vitals", VITAL),
    STRUCT_OPT("nav", NAVIGATION),
    LIST("resources", RESOURCE_GROUP),
    LIST("largest_resources", RESOURCE_ENTRY),
    STRUCT_OPT("long_tasks", LONG_TASKS),
    STRUCT_OPT("memory", MEMORY),
};
static const Schema BEACON = {"Beacon", 18, beacon_f};
enum {
    B_ID, B_TS, B_URL, B_V, B_SOFT, B_SERVICE, B_ENVIRONMENT, B_RELEASE, B_DEVICE,
    B_BROWSER, B_CONNECTION, B_SAMPLE_RATE, B_VITALS, B_NAV, B_RESOURCES, B_LARGEST,
    B_LONG_TASKS, B_MEMORY
};

static const Schema *const SCHEMAS[] = {&BEACON, &VITAL, &NAVIGATION, &RESOURCE_GROUP,
                                        &RESOURCE_ENTRY, &LONG_TASKS, &MEMORY, NULL};

/* ------------------------------------------------------------------------ */
/* Parsing: every value lands in a Val of a pool on the stack.               */

enum { T_ABSENT = 0, T_NULL, T_NUM, T_STR, T_TRUE, T_FALSE, T_STRUCT, T_LIST, T_RAW };

typedef struct {
    uint8_t type;
    uint8_t exact; /* T_NUM: d is the correctly rounded value */
    uint8_t is_int; /* T_NUM: no fraction, no exponent */
    const char *s; /* the value's text (a string's with its quotes) */
    Py_ssize_t n;
    double d;      /* T_NUM */
    int block;     /* T_STRUCT: its fields' first Val; T_LIST: the first item's */
    int count;     /* T_LIST: how many items */
} Val;

#define POOL 640
#define MAX_ITEMS 64
#define MAX_VITALS 32
#define MAX_DEPTH 32

typedef struct {
    const char *p, *end;
    Val pool[POOL];
    int used;
} Parser;

#define FAIL (-1)

static inline void
ws(Parser *ps)
{
    const char *p = ps->p, *end = ps->end;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
        p++;
    }
    ps->p = p;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether any of the 8 bytes in x is a quote, a backslash, a control
   character, DEL or not ASCII (exact as to whether, not which). */
static inline uint64_t
special(uint64_t x)
{
    uint64_t quote = x ^ (ONES * '"'), backslash = x ^ (ONES * '\\');
    return (((quote - ONES) & ~quote) | ((backslash - ONES) & ~backslash) |
            ((x - ONES * 0x20) & ~x) | x | (x + ONES)) &
           HIGHS;
}

/* A string of printable ASCII without escapes; p at its opening quote. */
static inline int
plain_string(Parser *ps, const char **start, Py_ssize_t *len)
{
    const char *p = ps->p + 1, *end = ps->end;
    const char *s = p;
    while (end - p >= 8) { /* eight bytes at a time, up to the one that matters */
        uint64_t x;
        memcpy(&x, p, 8);
        if (special(x)) {
            break;
        }
        p += 8;
    }
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *start = s;
            *len = p - s;
            ps->p = p + 1;
            return 0;
        }
        if (c < 0x20 || c > 0x7e || c == '\\') {
            return FAIL;
        }
        p++;
    }
    return FAIL;
}

static const double P10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                             1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                             1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A JSON number: its text, whether it is an integer, and its value. */
static int
number(Parser *ps, Val *v, int *is_int)
{
    const char *p = ps->p, *end = ps->end, *start = p;
    int neg = 0, digits = 0, exp10 = 0;
    uint64_t sig = 0;
    *is_int = 1;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9') {
        return FAIL;
    }
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9') {
            return FAIL; /* a leading zero */
        }
    }
    else {
        while (p < end && *p >= '0' && *p <= '9') {
            if (digits >= 19) {
                return FAIL;
            }
            sig = sig * 10 + (uint64_t)(*p - '0');
            digits++;
            p++;
        }
    }
    if (p < end && *p == '.') {
        *is_int = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9') {
            return FAIL;
        }
        while (p < end && *p >= '0' && *p <= '9') {
            if (sig == 0 && *p == '0') { /* leading zeros of 0.000x are not significant */
                exp10--;
                p++;
                continue;
            }
            if (digits >= 19) {
                return FAIL;
            }
            sig = sig * 10 + (uint64_t)(*p - '0');
            digits++;
            exp10--;
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        int eneg = 0, e = 0, edigits = 0;
        *is_int = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        if (p >= end || *p < '0' || *p > '9') {
            return FAIL;
        }
        while (p < end && *p >= '0' && *p <= '9') {
            if (++edigits > 3) {
                return FAIL;
            }
            e = e * 10 + (*p - '0');
            p++;
        }
        if (e > 300) {
            return FAIL;
        }
        exp10 += eneg ? -e : e;
    }
    if (exp10 > 300 || exp10 < -300) {
        return FAIL;
    }
    double d;
    int exact = 1;
    if (sig == 0) {
        d = 0.0;
    }
    else if (sig <= (1ULL << 53) && exp10 >= -22 && exp10 <= 22) {
        /* both exact: one correctly rounded operation (Clinger's fast path) */
        d = exp10 < 0 ? (double)sig / P10[-exp10] : (double)sig * P10[exp10];
    }
    else {
        d = (double)sig;
        exact = 0;
        int e = exp10;
        while (e > 22) {
            d *= 1e22;
            e -= 22;
        }
        while (e < -22) {
            d /= 1e22;
            e += 22;
        }
        d = e < 0 ? d / P10[-e] : d * P10[e];
    }
    v->type = T_NUM;
    v->is_int = (uint8_t)*is_int;
    v->d = neg ? -d : d;
    v->exact = (uint8_t)exact;
    v->s = start;
    v->n = p - start;
    ps->p = p;
    return 0;
}

static inline int
literal(Parser *ps, const char *word, Py_ssize_t n)
{
    if (ps->end - ps->p < n || memcmp(ps->p, word, (size_t)n) != 0) {
        return FAIL;
    }
    ps->p += n;
    return 0;
}

/* After a member of an array or object: 1 when a comma says another follows,
   0 at the closing `close` (passed over), FAIL at anything else. */
static inline int
more(Parser *ps, char close)
{
    ws(ps);
    if (ps->p < ps->end) {
        char c = *ps->p++;
        if (c == ',') {
            return 1;
        }
        if (c == close) {
            return 0;
        }
    }
    return FAIL;
}

/* Past the opening bracket or brace at p: 1 (and past it) when `close` follows
   at once, an empty array or object; 0 when members follow. */
static inline int
opened(Parser *ps, char close)
{
    ps->p++;
    ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return 1;
    }
    return 0;
}

/* The colon after a member's key. */
static inline int
colon(Parser *ps)
{
    ws(ps);
    if (ps->p >= ps->end || *ps->p != ':') {
        return FAIL;
    }
    ps->p++;
    return 0;
}

/* Any JSON value (of the restricted strings), validated and passed over. */
static int
skip(Parser *ps, int depth)
{
    const char *s;
    Py_ssize_t n;
    int is_int, m;
    Val scratch;
    if (depth > MAX_DEPTH) {
        return FAIL;
    }
    ws(ps);
    if (ps->p >= ps->end) {
        return FAIL;
    }
    switch (*ps->p) {
    case '"':
        return plain_string(ps, &s, &n);
    case 't':
        return literal(ps, "true", 4);
    case 'f':
        return literal(ps, "false", 5);
    case 'n':
        return literal(ps, "null", 4);
    case '[':
        if (opened(ps, ']')) {
            return 0;
        }
        do {
            if (skip(ps, depth + 1) < 0) {
                return FAIL;
            }
        } while ((m = more(ps, ']')) > 0);
        return m;
    case '{':
        if (opened(ps, '}')) {
            return 0;
        }
        do {
            ws(ps);
            if (ps->p >= ps->end || *ps->p != '"' || plain_string(ps, &s, &n) < 0 ||
                colon(ps) < 0 || skip(ps, depth + 1) < 0) {
                return FAIL;
            }
        } while ((m = more(ps, '}')) > 0);
        return m;
    default:
        return number(ps, &scratch, &is_int);
    }
}

static int parse_struct(Parser *ps, const Schema *schema, int block);

/* The value of field f into v. */
static int
parse_value(Parser *ps, const Field *f, Val *v)
{
    ws(ps);
    if (ps->p >= ps->end) {
        return FAIL;
    }
    char c = *ps->p;
    if (c == 'n' && f->kind != K_RAW) { /* a raw value may be null */
        if (!f->nullable || literal(ps, "null", 4) < 0) {
            return FAIL;
        }
        v->type = T_NULL;
        return 0;
    }
    switch (f->kind) {
    case K_STR:
    case K_LIT: {
        const char *s;
        Py_ssize_t n;
        if (c != '"' || plain_string(ps, &s, &n) < 0) {
            return FAIL;
        }
        if (f->kind == K_STR) {
            if (n < f->minlen || n > f->maxlen) {
                return FAIL;
            }
        }
        else {
            const char *const *lit = f->lits;
            for (; *lit != NULL; lit++) {
                if ((Py_ssize_t)strlen(*lit) == n && memcmp(*lit, s, (size_t)n) == 0) {
                    break;
                }
            }
            if (*lit == NULL) {
                return FAIL;
            }
        }
        v->type = T_STR;
        v->s = s - 1;
        v->n = n + 2;
        return 0;
    }
    case K_INT:
    case K_FLOAT: {
        int is_int;
        if (c != '-' && (c < '0' || c > '9')) {
            return FAIL;
        }
        if (number(ps, v, &is_int) < 0) {
            return FAIL;
        }
        if (f->kind == K_INT) {
            /* msgspec takes no fraction or exponent here; "-0" is left to it */
            if (!is_int || (v->s[0] == '-' && (f->cons == C_GE0 || v->d == 0.0))) {
                return FAIL;
            }
        }
        return 0;
    }
    case K_BOOL:
        if (c == 't' && literal(ps, "true", 4) == 0) {
            v->type = T_TRUE;
            return 0;
        }
        if (c == 'f' && literal(ps, "false", 5) == 0) {
            v->type = T_FALSE;
            return 0;
        }
        return FAIL;
    case K_RAW: {
        const char *start = ps->p;
        if (skip(ps, 1) < 0) {
            return FAIL;
        }
        v->type = T_RAW;
        v->s = start;
        v->n = ps->p - start;
        return 0;
    }
    case K_STRUCT: {
        const Schema *sub = f->sub;
        if (c != '{' || ps->used + sub->n > POOL) {
            return FAIL;
        }
        v->type = T_STRUCT;
        v->block = ps->used;
        ps->used += sub->n;
        return parse_struct(ps, sub, v->block);
    }
    case K_LIST: {
        const Schema *sub = f->sub;
        int limit = f->sub == &VITAL ? MAX_VITALS : MAX_ITEMS;
        if (c != '[') {
            return FAIL;
        }
        v->type = T_LIST;
        v->block = ps->used;
        v->count = 0;
        if (opened(ps, ']')) {
            return 0;
        }
        int m;
        do {
            ws(ps);
            /* items are consecutive blocks: their schemas hold no struct or list */
            if (ps->p >= ps->end || *ps->p != '{' || v->count >= limit ||
                ps->used + sub->n > POOL) {
                return FAIL;
            }
            int block = ps->used;
            ps->used += sub->n;
            if (parse_struct(ps, sub, block) < 0) {
                return FAIL;
            }
            v->count++;
        } while ((m = more(ps, ']')) > 0);
        return m;
    }
    }
    return FAIL;
}

/* An object of schema's fields into pool[block ...]; p at its '{'. */
static int
parse_struct(Parser *ps, const Schema *schema, int block)
{
    Val *vals = ps->pool + block;
    int next = 0;
    for (int i = 0; i < schema->n; i++) {
        vals[i].type = T_ABSENT;
        vals[i].count = 0; /* an absent list has no items */
    }
    if (!opened(ps, '}')) {
        for (;;) {
            const char *key;
            Py_ssize_t n;
            ws(ps);
            if (ps->p >= ps->end || *ps->p != '"') {
                return FAIL;
            }
            /* Which field's name, quoted, the text goes on with: keys mostly come
               in the schema's order, so the look starts after the last one. A key
               that is none of them (escapes included) is read as a string. */
            const char *q = ps->p + 1;
            Py_ssize_t room = ps->end - q;
            int i = next, tries = schema->n;
            for (; tries > 0; tries--, i = i + 1 == schema->n ? 0 : i + 1) {
                const Field *f = &schema->f[i];
                if (f->len < room && q[f->len] == '"' && q[0] == f->name[0] &&
                    memcmp(f->name, q, f->len) == 0) {
                    ps->p = q + f->len + 1;
                    break;
                }
            }
            if ((tries == 0 && plain_string(ps, &key, &n) < 0) || colon(ps) < 0) {
                return FAIL;
            }
            if (tries == 0) {
                if (skip(ps, 1) < 0) { /* a key the wire format does not have */
                    return FAIL;
                }
            }
            else {
                if (vals[i].type != T_ABSENT) { /* given twice */
                    return FAIL;
                }
                if (parse_value(ps, &schema->f[i], &vals[i]) < 0) {
                    return FAIL;
                }
                next = i + 1 == schema->n ? 0 : i + 1;
            }
            int m = more(ps, '}');
            if (m < 0) {
                return FAIL;
            }
            if (m == 0) {
                break;
            }
        }
    }
    for (int i = 0; i < schema->n; i++) {
        if (vals[i].type == T_ABSENT && schema->f[i].required) {
            return FAIL;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Comparing values read from text exactly.                                  */

/* v's correctly rounded value, read by Python's parser when not yet exact. */
static int
make_exact(Val *v)
{
    char text[64];
    if (v->exact) {
        return 0;
    }
    if (v->n >= (Py_ssize_t)sizeof(text)) {
        return FAIL;
    }
    memcpy(text, v->s, (size_t)v->n);
    text[v->n] = '\0';
    double d = PyOS_string_to_double(text, NULL, NULL);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return FAIL;
    }
    v->d = d;
    v->exact = 1;
    return 0;
}

/* Whether v's value is at or below bound (1), above it (0), or unknown (-1).
   An approximate value is within a few units in the last place of the true
   one: far enough from the bound, it decides as well. */
static int
at_most(Val *v, double bound)
{
    if (!v->exact && fabs(v->d - bound) <= 1e-12 * fmax(fabs(bound), fabs(v->d))) {
        if (make_exact(v) < 0) {
            return -1;
        }
    }
    return v->d <= bound;
}

/* Whether v's value is at or above bound (1), below it (0), or unknown (-1).
   A nonzero approximate value has the true one's sign, so 0 decides exactly. */
static int
at_least(Val *v, double bound)
{
    if (bound != 0.0 && !v->exact &&
        fabs(v->d - bound) <= 1e-12 * fmax(fabs(bound), fabs(v->d))) {
        if (make_exact(v) < 0) {
            return -1;
        }
    }
    return v->d >= bound;
}

/* Whether lo <= v <= hi (1), not (0), unknown (-1). */
static int
within(Val *v, double lo, double hi)
{
    int above = at_least(v, lo);
    return above != 1 ? above : at_most(v, hi);
}

/* ------------------------------------------------------------------------ */
/* The document, written into a growing buffer.                             */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int
grow(Buf *b, Py_ssize_t more)
{
    Py_ssize_t cap = b->cap * 2;
    if (cap < b->len + more) {
        cap = b->len + more + 256;
    }
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return FAIL;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int
put(Buf *b, const char *s, Py_ssize_t n)
{
    if (b->len + n > b->cap && grow(b, n) < 0) {
        return FAIL;
    }
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define PUT(b, lit) put(b, lit, (Py_ssize_t)sizeof(lit) - 1)

static const char HEX[] = "0123456789abcdef";

/* A Python str as a JSON string (null for None), escaped as msgspec does. */
static int
put_str(Buf *b, PyObject *str)
{
    if (str == Py_None) {
        return PUT(b, "null");
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(str, &n);
    if (s == NULL) {
        return FAIL;
    }
    if (b->len + 6 * n + 2 > b->cap && grow(b, 6 * n + 2) < 0) {
        return FAIL;
    }
    char *out = b->data + b->len;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\n': *out++ = 'n'; break;
        case '\r': *out++ = 'r'; break;
        case '\t': *out++ = 't'; break;
        case '\b': *out++ = 'b'; break;
        case '\f': *out++ = 'f'; break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = HEX[c >> 4];
            *out++ = HEX[c & 15];
        }
    }
    *out++ = '"';
    b->len = out - b->data;
    return 0;
}

static int put_struct(Buf *b, const Parser *ps, const Schema *schema, int block, int given,
                      PyObject *text);

/* A number as it came; an integer in a float field as a float, as msgspec reads
   it (the database then reads the same double from "12.0" as from 12.0). The
   text can differ from msgspec's ("0.020" for 0.02), never the value. */
static int
put_number(Buf *b, const Field *f, const Val *v)
{
    if (f->kind == K_FLOAT && v->is_int && v->n == 2 && v->s[0] == '-' && v->s[1] == '0') {
        return PUT(b, "0.0"); /* the integer -0 is 0, as a float 0.0, not -0.0 */
    }
    if (put(b, v->s, v->n) < 0) {
        return FAIL;
    }
    return f->kind == K_FLOAT && v->is_int ? PUT(b, ".0") : 0;
}

static int
put_field(Buf *b, const Parser *ps, const Field *f, const Val *v)
{
    switch (v->type) {
    case T_ABSENT:
        return put(b, f->dflt, (Py_ssize_t)strlen(f->dflt));
    case T_NULL:
        return PUT(b, "null");
    case T_TRUE:
        return PUT(b, "true");
    case T_FALSE:
        return PUT(b, "false");
    case T_STRUCT:
        return put_struct(b, ps, f->sub, v->block, -1, NULL);
    case T_LIST:
        if (PUT(b, "[") < 0) {
            return FAIL;
        }
        for (int i = 0; i < v->count; i++) {
            if ((i && PUT(b, ",") < 0) ||
                put_struct(b, ps, f->sub, v->block + i * f->sub->n, -1, NULL) < 0) {
                return FAIL;
            }
        }
        return PUT(b, "]");
    case T_NUM:
        return put_number(b, f, v);
    default: /* T_STR: as it came */
        return put(b, v->s, v->n);
    }
}

/* `"name":` of field f, after a comma unless it is the first */
static inline int
put_key(Buf *b, const Field *f, int first)
{
    Py_ssize_t n = f->len;
    if (b->len + n + 4 > b->cap && grow(b, n + 4) < 0) {
        return FAIL;
    }
    char *out = b->data + b->len;
    if (!first) {
        *out++ = ',';
    }
    *out++ = '"';
    memcpy(out, f->name, (size_t)n);
    out += n;
    *out++ = '"';
    *out++ = ':';
    b->len = out - b->data;
    return 0;
}

/* An object of schema's fields from pool[block ...]; the field `given` (or none,
   -1) is written as the str `text` instead (a redacted URL). */
static int
put_struct(Buf *b, const Parser *ps, const Schema *schema, int block, int given,
           PyObject *text)
{
    const Val *vals = ps->pool + block;
    if (PUT(b, "{") < 0) {
        return FAIL;
    }
    for (int i = 0; i < schema->n; i++) {
        if (put_key(b, &schema->f[i], i == 0) < 0 ||
            (i == given ? put_str(b, text) : put_field(b, ps, &schema->f[i], &vals[i])) < 0) {
            return FAIL;
        }
    }
    return PUT(b, "}");
}

/* ------------------------------------------------------------------------ */
/* What configure() hands over.                                             */

static PyObject *redact_fn;      /* perfpulse.ingest.redact.redact_url */
static PyObject *attribution_fn; /* bytes -> str | None, TypeError for a non-object */
/* The cached functions behind those two, called directly for a text of at most
   their length (the Python functions make the same choice), or NULL. */
static PyObject *redact_cached, *attribution_cached;
static Py_ssize_t redact_cached_max, attribution_cached_max;
static double limits[N_VITALS][3]; /* good, poor, largest kept: per VITAL_NAMES */
static double max_duration = -1.0; /* MAX_DURATION_MS; < 0 until configured */

static PyObject *
configure(PyObject *self, PyObject *args)
{
    PyObject *redact, *attribution, *seq, *rc = Py_None, *ac = Py_None;
    Py_ssize_t rmax = 0, amax = 0;
    double maxd;
    if (!PyArg_ParseTuple(args, "OOOd|OnOn:configure", &redact, &attribution, &seq, &maxd,
                          &rc, &rmax, &ac, &amax)) {
        return NULL;
    }
    PyObject *fast = PySequence_Fast(seq, "limits must be a sequence");
    if (fast == NULL) {
        return NULL;
    }
    if (PySequence_Fast_GET_SIZE(fast) != N_VITALS) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "limits must hold %d triples, in the order of %s",
                     N_VITALS, "LCP INP CLS FCP TTFB FID");
        return NULL;
    }
    double parsed[N_VITALS][3];
    for (int i = 0; i < N_VITALS; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyArg_ParseTuple(item, "ddd", &parsed[i][0], &parsed[i][1], &parsed[i][2])) {
            Py_DECREF(fast);
            return NULL;
        }
    }
    Py_DECREF(fast);
    memcpy(limits, parsed, sizeof(limits));
    Py_INCREF(redact);
    Py_XSETREF(redact_fn, redact);
    Py_INCREF(attribution);
    Py_XSETREF(attribution_fn, attribution);
    Py_XSETREF(redact_cached, rc == Py_None ? NULL : (Py_INCREF(rc), rc));
    Py_XSETREF(attribution_cached, ac == Py_None ? NULL : (Py_INCREF(ac), ac));
    redact_cached_max = rmax;
    attribution_cached_max = amax;
    max_duration = maxd;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* normalize()                                                               */

static PyObject *
call1(PyObject *fn, PyObject *arg)
{
    PyObject *args[1] = {arg};
    return PyObject_Vectorcall(fn, args, 1, NULL);
}

static inline PyObject *
text_of(const Val *v)
{
    return PyUnicode_DecodeASCII(v->s + 1, v->n - 2, NULL);
}

static PyObject *
redact(PyObject *url)
{
    if (redact_cached != NULL && PyUnicode_GET_LENGTH(url) <= redact_cached_max) {
        return call1(redact_cached, url);
    }
    return call1(redact_fn, url);
}

/* A URL field's redacted text (None for null), or NULL with an error. */
static PyObject *
redacted(const Val *v)
{
    if (v->type != T_STR) {
        Py_RETURN_NONE;
    }
    PyObject *raw = text_of(v);
    if (raw == NULL) {
        return NULL;
    }
    PyObject *out = redact(raw);
    Py_DECREF(raw);
    return out;
}

/* The kept items of a resource list: duration within 0 to max_duration. */
static int
kept(Parser *ps, const Val *list, const Schema *sub, int duration, uint64_t *keep)
{
    *keep = 0;
    for (int i = 0; i < list->count; i++) {
        Val *d = &ps->pool[list->block + i * sub->n + duration];
        int ok = d->type == T_ABSENT ? 1 : within(d, 0.0, max_duration);
        if (ok < 0) {
            return FAIL;
        }
        if (ok) {
            *keep |= 1ULL << i;
        }
    }
    return 0;
}

#define FALLBACK 1 /* not the usual beacon: answer None */

typedef struct {
    PyObject *attributions[MAX_VITALS];
    int ratings[MAX_VITALS];
    PyObject *url, *page, *worst;
    PyObject *largest[MAX_ITEMS];
    uint64_t keep_groups, keep_largest;
} Work;

/* Everything about the beacon that can still send it the Python way. */
static int
check(Parser *ps, Work *w, double lo, double hi)
{
    Val *beacon = ps->pool;
    int ok = within(&beacon[B_TS], lo, hi);
    if (ok != 1) {
        return ok < 0 ? FAIL : FALLBACK;
    }
    Val *rate = &beacon[B_SAMPLE_RATE];
    if (rate->type == T_NUM) {
        ok = rate->d > 0.0 ? at_most(rate, 1.0) : 0;
        if (ok != 1) {
            return ok < 0 ? FAIL : FALLBACK;
        }
    }
    Val *nav = &beacon[B_NAV];
    if (nav->type == T_STRUCT) {
        for (int i = N_FIRST_PHASE; i <= N_LAST_PHASE; i++) {
            Val *phase = &ps->pool[nav->block + i];
            if (phase->type == T_NUM && (ok = within(phase, 0.0, max_duration)) != 1) {
                return ok < 0 ? FAIL : FALLBACK;
            }
        }
    }
    Val *memory = &beacon[B_MEMORY];
    if (memory->type == T_STRUCT && ps->pool[memory->block].d < 0.0) {
        return FALLBACK;
    }
    Val *vitals = &beacon[B_VITALS];
    for (int i = 0; i < vitals->count; i++) {
        Val *vital = &ps->pool[vitals->block + i * VITAL.n];
        const Val *name = &vital[V_NAME];
        int k = 0;
        while (k < N_VITALS - 1 &&
               !((Py_ssize_t)strlen(VITAL_NAMES[k]) == name->n - 2 &&
                 memcmp(VITAL_NAMES[k], name->s + 1, (size_t)(name->n - 2)) == 0)) {
            k++;
        }
        Val *value = &vital[V_VALUE];
        if ((ok = within(value, 0.0, limits[k][2])) != 1) {
            return ok < 0 ? FAIL : FALLBACK; /* dropped: counted by the Python path */
        }
        int good = at_most(value, limits[k][0]), poor = at_most(value, limits[k][1]);
        if (good < 0 || poor < 0) {
            return FAIL;
        }
        w->ratings[i] = good ? 0 : poor ? 1 : 2;
    }
    if (beacon[B_RESOURCES].type == T_LIST &&
        kept(ps, &beacon[B_RESOURCES], &RESOURCE_GROUP, G_DURATION, &w->keep_groups) < 0) {
        return FAIL;
    }
    if (beacon[B_LARGEST].type == T_LIST &&
        kept(ps, &beacon[B_LARGEST], &RESOURCE_ENTRY, E_DURATION, &w->keep_largest) < 0) {
        return FAIL;
    }
    /* the attributions last: one that is not an object refuses the beacon */
    for (int i = 0; i < vitals->count; i++) {
        const Val *raw = &ps->pool[vitals->block + i * VITAL.n + V_ATTRIBUTION];
        if (raw->type == T_ABSENT) {
            Py_INCREF(Py_None);
            w->attributions[i] = Py_None;
            continue;
        }
        PyObject *text = PyBytes_FromStringAndSize(raw->s, raw->n);
        if (text == NULL) {
            return FAIL;
        }
        w->attributions[i] = call1(
            attribution_cached != NULL && raw->n <= attribution_cached_max ? attribution_cached
                                                                           : attribution_fn,
            text);
        Py_DECREF(text);
        if (w->attributions[i] == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                return FALLBACK;
            }
            return FAIL;
        }
    }
    return 0;
}

static int
put_vitals(Buf *b, Parser *ps, Work *w)
{
    const Val *vitals = &ps->pool[B_VITALS];
    if (PUT(b, "[") < 0) {
        return FAIL;
    }
    for (int i = 0; i < vitals->count; i++) {
        const Val *vital = &ps->pool[vitals->block + i * VITAL.n];
        char rating[2] = {(char)('0' + w->ratings[i]), '\0'};
        const Val *nt = &vital[V_NAVIGATION_TYPE];
        if ((i && PUT(b, ",") < 0) || PUT(b, "{\"name\":") < 0 ||
            put(b, vital[V_NAME].s, vital[V_NAME].n) < 0 || PUT(b, ",\"value\":") < 0 ||
            put_number(b, &vital_f[V_VALUE], &vital[V_VALUE]) < 0 || PUT(b, ",\"rating\":") < 0 ||
            put(b, rating, 1) < 0 || PUT(b, ",\"navigation_type\":") < 0 ||
            (nt->type == T_STR ? put(b, nt->s, nt->n) : PUT(b, "null")) < 0 ||
            PUT(b, ",\"attribution\":") < 0 || put_str(b, w->attributions[i]) < 0 ||
            PUT(b, "}") < 0) {
            return FAIL;
        }
    }
    return PUT(b, "]");
}

/* A resource list, its kept items only; URLs redacted for the largest. */
static int
put_items(Buf *b, Parser *ps, const Val *list, const Schema *sub, uint64_t keep,
          PyObject **urls)
{
    int first = 1;
    if (PUT(b, "[") < 0) {
        return FAIL;
    }
    for (int i = 0; list->type == T_LIST && i < list->count; i++) {
        if (!(keep & (1ULL << i))) {
            continue;
        }
        if ((!first && PUT(b, ",") < 0) ||
            put_struct(b, ps, sub, list->block + i * sub->n, urls ? E_URL : -1,
                       urls ? urls[i] : NULL) < 0) {
            return FAIL;
        }
        first = 0;
    }
    return PUT(b, "]");
}

static int
put_beacon(Buf *b, Parser *ps, Work *w)
{
    const Val *vals = ps->pool;
    if (PUT(b, "{\"page\":") < 0 || put_str(b, w->page) < 0 || PUT(b, ",\"vitals\":") < 0 ||
        put_vitals(b, ps, w) < 0 || PUT(b, ",\"beacon\":{") < 0) {
        return FAIL;
    }
    for (int i = 0; i < BEACON.n; i++) {
        const Field *f = &BEACON.f[i];
        if (put_key(b, f, i == 0) < 0) {
            return FAIL;
        }
        int r;
        switch (i) {
        case B_URL:
            r = put_str(b, w->url);
            break;
        case B_VITALS:
            r = PUT(b, "[]"); /* the kept ones are the document's own */
            break;
        case B_RESOURCES:
            r = put_items(b, ps, &vals[i], &RESOURCE_GROUP, w->keep_groups, NULL);
            break;
        case B_LARGEST:
            r = put_items(b, ps, &vals[i], &RESOURCE_ENTRY, w->keep_largest, w->largest);
            break;
        case B_LONG_TASKS:
            r = vals[i].type != T_STRUCT
                    ? PUT(b, "null")
                    : put_struct(b, ps, &LONG_TASKS, vals[i].block, L_WORST_SCRIPT, w->worst);
            break;
        default:
            r = put_field(b, ps, f, &vals[i]);
        }
        if (r < 0) {
            return FAIL;
        }
    }
    return PUT(b, "}}");
}

/* The usual beacon's StoredBeacon document, written into b (empty, and freed by
   the caller): 1, with its id (the raw JSON string, quotes included, valid until
   ps is freed, so copied out before) and how many vitals it keeps; 0 when it is
   not the usual beacon; FAIL with an error set. */
static int
document(Parser *ps, const char *buf, Py_ssize_t len, double lo, double hi, PyObject *page_fn,
         Buf *b, const Val **id, int *vitals)
{
    int result = FAIL;
    Work w;
    memset(&w, 0, sizeof(w));
    ps->p = buf;
    ps->end = buf + len;
    ps->used = BEACON.n;
    ws(ps);
    if (ps->p >= ps->end || *ps->p != '{' || parse_struct(ps, &BEACON, 0) < 0) {
        goto fallback;
    }
    ws(ps);
    if (ps->p != ps->end) {
        goto fallback;
    }
    int r = check(ps, &w, lo, hi);
    if (r == FALLBACK) {
        goto fallback;
    }
    if (r < 0) {
        if (!PyErr_Occurred()) {
            goto fallback; /* a value too close to a bound that could not be read again */
        }
        goto done;
    }
    Val *vals = ps->pool;
    /* the beacon is kept: its URLs redacted, its page made (and folded) last */
    if ((w.url = text_of(&vals[B_URL])) == NULL) {
        goto done;
    }
    if (vals[B_LARGEST].type == T_LIST) {
        for (int i = 0; i < vals[B_LARGEST].count; i++) {
            if ((w.keep_largest & (1ULL << i)) &&
                (w.largest[i] = redacted(
                     &ps->pool[vals[B_LARGEST].block + i * RESOURCE_ENTRY.n + E_URL])) == NULL) {
                goto done;
            }
        }
    }
    if (vals[B_LONG_TASKS].type == T_STRUCT) {
        const Val *worst = &ps->pool[vals[B_LONG_TASKS].block + L_WORST_SCRIPT];
        if (worst->type == T_STR && worst->n > 2) {
            if ((w.worst = redacted(worst)) == NULL) {
                goto done;
            }
        }
        else {
            Py_INCREF(Py_None);
            w.worst = Py_None;
        }
    }
    PyObject *service = vals[B_SERVICE].type == T_STR ? text_of(&vals[B_SERVICE])
                                                      : PyUnicode_FromString("web");
    if (service == NULL) {
        goto done;
    }
    PyObject *page_args[2] = {service, w.url};
    w.page = PyObject_Vectorcall(page_fn, page_args, 2, NULL);
    Py_DECREF(service);
    if (w.page == NULL) {
        goto done;
    }
    PyObject *url = redact(w.url);
    if (url == NULL) {
        goto done;
    }
    Py_SETREF(w.url, url);
    if (!PyUnicode_Check(w.page) || !PyUnicode_Check(w.url)) {
        PyErr_SetString(PyExc_TypeError, "page() and redact() must return str");
        goto done;
    }
    b->cap = len + 1024;
    if ((b->data = PyMem_Malloc((size_t)b->cap)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (put_beacon(b, ps, &w) < 0) {
        goto done;
    }
    *id = &vals[B_ID];
    *vitals = vals[B_VITALS].count;
    result = 1;
    goto done;
fallback:
    result = 0;
done:
    for (int i = 0; i < MAX_VITALS; i++) {
        Py_XDECREF(w.attributions[i]);
    }
    for (int i = 0; i < MAX_ITEMS; i++) {
        Py_XDECREF(w.largest[i]);
    }
    Py_XDECREF(w.url);
    Py_XDECREF(w.page);
    Py_XDECREF(w.worst);
    return result;
}

static int
configured(void)
{
    if (redact_fn == NULL || max_duration < 0) {
        PyErr_SetString(PyExc_RuntimeError, "configure() was not called");
        return 0;
    }
    return 1;
}

static PyObject *
normalize(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "normalize(body, lo, hi, page) takes 4 arguments");
        return NULL;
    }
    if (!configured()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    Buf b = {NULL, 0, 0};
    double lo = PyFloat_AsDouble(args[1]), hi = PyFloat_AsDouble(args[2]);
    Parser *ps = NULL;
    if ((lo == -1.0 || hi == -1.0) && PyErr_Occurred()) {
        goto done;
    }
    if ((ps = PyMem_Malloc(sizeof(Parser))) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const Val *id_val;
    int vitals;
    int r = document(ps, view.buf, view.len, lo, hi, args[3], &b, &id_val, &vitals);
    if (r == 0) {
        result = Py_NewRef(Py_None);
    }
    else if (r == 1) {
        PyObject *id = text_of(id_val);
        PyObject *doc = id == NULL ? NULL : PyBytes_FromStringAndSize(b.data, b.len);
        if (doc != NULL) {
            result = Py_BuildValue("(NiN)", id, vitals, doc);
        }
        else {
            Py_XDECREF(id);
        }
    }
done:
    PyMem_Free(b.data);
    PyMem_Free(ps);
    PyBuffer_Release(&view);
    return result;
}

/* ------------------------------------------------------------------------ */
/* head() and record(): POST /api/v1/rum's usual request, compiled.          */
/* perfpulse.ingest.receiver holds the reference path: these answer None for */
/* anything it would answer otherwise than 202, or might.                    */

static PyObject *s_headers, *s_query_string, *s_type, *s_http_request, *s_more_body, *s_body;

static int
strings(void)
{
    if (s_body != NULL) { /* the last one made: all are */
        return 1;
    }
    PyObject **slots[] = {&s_headers, &s_query_string, &s_type, &s_http_request, &s_more_body,
                          &s_body};
    const char *texts[] = {"headers", "query_string", "type", "http.request", "more_body", "body"};
    for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
        if (*slots[i] == NULL && (*slots[i] = PyUnicode_InternFromString(texts[i])) == NULL) {
            return 0;
        }
    }
    return 1;
}

static inline int
named(PyObject *name, const char *lit, Py_ssize_t n)
{
    return PyBytes_GET_SIZE(name) == n && memcmp(PyBytes_AS_STRING(name), lit, (size_t)n) == 0;
}

#define NAMED(name, lit) named(name, lit, (Py_ssize_t)sizeof(lit) - 1)

static PyObject *
head(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "head(scope, origins, public_key, limit) takes 4 arguments");
        return NULL;
    }
    PyObject *scope = args[0], *origins = args[1], *key = args[2];
    Py_ssize_t limit = PyLong_AsSsize_t(args[3]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyDict_Check(scope) || !PyDict_Check(origins) || !PyBytes_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "head() takes a dict, a dict and bytes");
        return NULL;
    }
    if (!strings()) {
        return NULL;
    }
    PyObject *headers = PyDict_GetItemWithError(scope, s_headers);
    PyObject *query = headers == NULL ? NULL : PyDict_GetItemWithError(scope, s_query_string);
    if (query == NULL || !PyList_Check(headers) || !PyBytes_CheckExact(query)) {
        goto fallback;
    }
    /* the first of each header, as the receiver reads them */
    PyObject *origin = NULL, *length = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *item = PyList_GET_ITEM(headers, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            goto fallback;
        }
        PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
        if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value)) {
            goto fallback; /* uvicorn's are bytes; a subclass could run code in the lookup */
        }
        if (NAMED(name, "origin")) {
            if (origin == NULL) {
                origin = value;
            }
        }
        else if (NAMED(name, "content-length")) {
            if (length == NULL) {
                length = value;
            }
        }
        else if (NAMED(name, "content-encoding")) {
            goto fallback; /* gzip, identity or a wrong one: the receiver's to read */
        }
    }
    if (length != NULL) { /* digits only, within the limit */
        Py_ssize_t n = PyBytes_GET_SIZE(length);
        const char *s = PyBytes_AS_STRING(length);
        if (n == 0 || n > 15) {
            goto fallback;
        }
        long long size = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (s[i] < '0' || s[i] > '9') {
                goto fallback;
            }
            size = size * 10 + (s[i] - '0');
        }
        if (size > limit) {
            goto fallback;
        }
    }
    /* the query is exactly key=<the public key>: ASCII, nothing to unquote */
    const char *q = PyBytes_AS_STRING(query);
    Py_ssize_t qn = PyBytes_GET_SIZE(query);
    if (qn < 5 || memcmp(q, "key=", 4) != 0) {
        goto fallback;
    }
    for (Py_ssize_t i = 0; i < qn; i++) {
        unsigned char c = (unsigned char)q[i];
        if (c >= 0x80 || c == '&' || c == ';' || c == '%' || c == '+') {
            goto fallback;
        }
    }
    const unsigned char *given = (const unsigned char *)q + 4;
    const unsigned char *expected = (const unsigned char *)PyBytes_AS_STRING(key);
    Py_ssize_t kn = PyBytes_GET_SIZE(key);
    if (qn - 4 != kn) {
        goto fallback;
    }
    unsigned char differ = 0; /* compared in constant time */
    for (Py_ssize_t i = 0; i < kn; i++) {
        differ |= given[i] ^ expected[i];
    }
    if (differ != 0 || origin == NULL) {
        goto fallback;
    }
    PyObject *cors = PyDict_GetItemWithError(origins, origin);
    if (cors == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        goto fallback;
    }
    return Py_NewRef(cors);
fallback:
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static char *
put_be(char *out, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        *out++ = (char)(v >> (8 * i));
    }
    return out;
}

static PyObject *
record(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "record(message, lo, hi, received, page, limit) takes 6 arguments");
        return NULL;
    }
    if (!configured() || !strings()) {
        return NULL;
    }
    PyObject *message = args[0];
    double lo = PyFloat_AsDouble(args[1]), hi = PyFloat_AsDouble(args[2]);
    double received = PyFloat_AsDouble(args[3]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[5]);
    if (((lo == -1.0 || hi == -1.0 || received == -1.0) && PyErr_Occurred()) ||
        (limit == -1 && PyErr_Occurred())) {
        return NULL;
    }
    if (!PyDict_Check(message)) {
        PyErr_SetString(PyExc_TypeError, "record() takes an ASGI message (a dict)");
        return NULL;
    }
    PyObject *type = PyDict_GetItemWithError(message, s_type);
    if (type == NULL || !PyUnicode_Check(type) ||
        PyUnicode_Compare(type, s_http_request) != 0) {
        goto fallback;
    }
    PyObject *more = PyDict_GetItemWithError(message, s_more_body);
    if (more != NULL) {
        int truth = PyObject_IsTrue(more);
        if (truth != 0) {
            goto fallback;
        }
    }
    else if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *body = PyDict_GetItemWithError(message, s_body);
    if (body == NULL || !PyBytes_CheckExact(body) || PyBytes_GET_SIZE(body) > limit) {
        goto fallback;
    }
    /* held: the callables document() calls could drop the message's reference */
    Py_INCREF(body);
    Parser *ps = PyMem_Malloc(sizeof(Parser));
    if (ps == NULL) {
        Py_DECREF(body);
        return PyErr_NoMemory();
    }
    Buf b = {NULL, 0, 0};
    const Val *id;
    int vitals;
    PyObject *result = NULL;
    int r = document(ps, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), lo, hi, args[4], &b,
                     &id, &vitals);
    if (r == 0 || (r == 1 && (uint64_t)b.len > 0xFFFFFFFFu)) {
        result = Py_NewRef(Py_None); /* (a document past 4 GiB: MessagePack's bin32) */
    }
    else if (r == 1) {
        /* the dedupe key, and the SpoolRecord as msgspec's MessagePack has it:
           [key, received, {}, {}, [document], {}] */
        static const char PREFIX[] = "public:";
        Py_ssize_t idn = id->n - 2, kn = (Py_ssize_t)sizeof(PREFIX) - 1 + idn;
        PyObject *key = PyUnicode_New(kn, 127);
        PyObject *out = NULL;
        if (key != NULL) {
            char *k = (char *)PyUnicode_DATA(key);
            memcpy(k, PREFIX, sizeof(PREFIX) - 1);
            memcpy(k + sizeof(PREFIX) - 1, id->s + 1, (size_t)idn);
            char head[32];
            char *h = head;
            *h++ = (char)0x96;
            if (kn < 32) {
                *h++ = (char)(0xa0 | kn);
            }
            else if (kn < 256) {
                *h++ = (char)0xd9;
                h = put_be(h, (uint64_t)kn, 1);
            }
            else {
                *h++ = (char)0xda; /* a key is short: ids are at most 128 characters */
                h = put_be(h, (uint64_t)kn, 2);
            }
            Py_ssize_t before = h - head; /* the key's text goes here */
            char mid[32];
            char *m = mid;
            uint64_t bits;
            memcpy(&bits, &received, sizeof(bits));
            *m++ = (char)0xcb;
            m = put_be(m, bits, 8);
            *m++ = (char)0x80;
            *m++ = (char)0x80;
            *m++ = (char)0x91;
            if (b.len < 256) {
                *m++ = (char)0xc4;
                m = put_be(m, (uint64_t)b.len, 1);
            }
            else if (b.len < 65536) {
                *m++ = (char)0xc5;
                m = put_be(m, (uint64_t)b.len, 2);
            }
            else {
                *m++ = (char)0xc6;
                m = put_be(m, (uint64_t)b.len, 4);
            }
            Py_ssize_t between = m - mid;
            out = PyBytes_FromStringAndSize(NULL, before + kn + between + b.len + 1);
            if (out != NULL) {
                char *o = PyBytes_AS_STRING(out);
                memcpy(o, head, (size_t)before);
                memcpy(o + before, k, (size_t)kn);
                memcpy(o + before + kn, mid, (size_t)between);
                memcpy(o + before + kn + between, b.data, (size_t)b.len);
                o[before + kn + between + b.len] = (char)0x80;
                result = Py_BuildValue("(NNi)", key, out, 1 + vitals);
            }
            else {
                Py_DECREF(key);
            }
        }
    }
    PyMem_Free(b.data);
    PyMem_Free(ps);
    Py_DECREF(body);
    return result;
fallback:
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* schema(): the wire format as compiled, for the test that holds it to     */
/* perfpulse.model.events.                                                   */

static PyObject *
schema(PyObject *self, PyObject *unused)
{
    static const char *const KINDS[] = {"str", "literal", "int", "float",
                                        "bool", "raw", "struct", "list"};
    static const char *const CONS[] = {"", "ge0", "gt0_le1"};
    PyObject *out = PyDict_New();
    if (out == NULL) {
        return NULL;
    }
    for (const Schema *const *s = SCHEMAS; *s != NULL; s++) {
        PyObject *fields = PyList_New((*s)->n);
        if (fields == NULL || PyDict_SetItemString(out, (*s)->name, fields) < 0) {
            Py_XDECREF(fields);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(fields);
        for (int i = 0; i < (*s)->n; i++) {
            const Field *f = &(*s)->f[i];
            PyObject *lits = PyTuple_New(0);
            if (f->lits != NULL) {
                Py_ssize_t n = 0;
                while (f->lits[n] != NULL) {
                    n++;
                }
                Py_SETREF(lits, PyTuple_New(n));
                for (Py_ssize_t k = 0; lits != NULL && k < n; k++) {
                    PyTuple_SET_ITEM(lits, k, PyUnicode_FromString(f->lits[k]));
                }
            }
            PyObject *item = lits == NULL ? NULL
                                          : Py_BuildValue(
                                                "{s:s,s:s,s:O,s:O,s:s,s:i,s:i,s:z,s:z,s:N}",
                                                "name", f->name, "kind", KINDS[f->kind],
                                                "nullable", f->nullable ? Py_True : Py_False,
                                                "required", f->required ? Py_True : Py_False,
                                                "constraint", CONS[f->cons], "min_length",
                                                f->minlen, "max_length", f->maxlen, "default",
                                                f->dflt, "items", f->sub ? f->sub->name : NULL,
                                                "literals", lits);
            if (item == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            PyList_SET_ITEM(fields, i, item);
        }
    }
    return out;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(redact, attribution, limits, max_duration_ms, redact_cached=None, "
     "redact_cached_max=0, attribution_cached=None, attribution_cached_max=0): the "
     "callables and bounds normalize() uses; limits is (good, poor, largest) per "
     "vital, in the order LCP INP CLS FCP TTFB FID; the cached functions, when "
     "given, are called directly for texts up to their length."},
    {"normalize", (PyCFunction)(void (*)(void))normalize, METH_FASTCALL,
     "normalize(body, lo, hi, page) -> (id, vitals, document) | None: the usual "
     "beacon's StoredBeacon document and how many vitals it keeps; None sends the "
     "beacon the Python way."},
    {"head", (PyCFunction)(void (*)(void))head, METH_FASTCALL,
     "head(scope, origins, public_key, limit) -> origins[origin] | None: for the usual "
     "request of POST /api/v1/rum (the public key as the only query parameter, an "
     "allowed origin already seen, a plain body within the limit), the value origins "
     "holds for its Origin header (its bytes); None sends the request the Python way."},
    {"record", (PyCFunction)(void (*)(void))record, METH_FASTCALL,
     "record(message, lo, hi, received, page, limit) -> (key, record, events) | None: "
     "for the usual beacon in one ASGI message, its dedupe key, its SpoolRecord as "
     "MessagePack and how many events it holds; None sends it the Python way."},
    {"schema", schema, METH_NOARGS, "The wire format as compiled, struct by struct."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "perfpulse.ingest._beacon",
    .m_doc = "A browser beacon's usual path, compiled (see perfpulse.ingest.normalize).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__beacon(void)
{
    return PyModule_Create(&module_def);
}
