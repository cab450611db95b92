/* perfpulse.agent._speedups: the ASGI middleware's per-request path, compiled.

   perfpulse.agent.asgi holds the reference implementation in Python
   (PythonMiddleware) and uses this one when it was built. Both do the same,
   step for step:

   - PerfpulseMiddleware(app) is called as an ASGI application. Traffic other
     than "http", and every request while the agent is off, goes straight to
     `app`: its own awaitable is returned as it is.
   - Otherwise the call returns a Call: an awaitable that, when first resumed,
     scans the headers for `traceparent` and `Content-Length`, opens the
     request scope (an `_Exchange`) with its ids, makes it the current request
     (the context variable of perfpulse.agent.scope), starts the clock and
     calls `app` with its own `send`, which counts the response's status and
     body bytes. It then hands every resumption (send, throw, close) to the
     application's awaitable, as `await` would in a coroutine.
   - When the application returns or raises, the request ends: the context
     variable is reset and the usual request (no error, no N+1 finding, a sink
     for structs) becomes its HttpEvent, appended to the transport's queue.
     Anything else goes to perfpulse.agent.request.finish in Python. An
     exception is recorded and then propagates untouched.
   - When the request sink is a RequestLog (the transport's, see
     perfpulse.agent.transport), the usual request is appended to it as a C
     record instead of an HttpEvent, and RequestLog.take writes a batch of
     records as the JSON msgspec makes of their structs.

   Only what every request does is here. Sampling below 1.0 and a `traceparent`
   header go through request.begin; errors and N+1 findings through
   request.finish; a route not seen before (or inside a Mount) through
   asgi.starlette_route. The ids come from request's own counter and salt, so
   they stay unique when the Python middlewares run in the same process. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>

/* ------------------------------------------------------------------------ */
/* What setup() hands over: the Python objects the fast path shares.        */

static PyObject *request_ns;   /* perfpulse.agent.request's module namespace */
static PyObject *scope_ns;     /* perfpulse.agent.scope's module namespace */
static PyObject *begin_fn;     /* request.begin */
static PyObject *finish_fn;    /* request.finish */
static PyObject *route_fn;     /* asgi.starlette_route */
static PyObject *failure_fn;   /* scope.internal_failure */
static PyObject *http_event;   /* request.HttpEvent */
static PyTypeObject *exchange; /* asgi._Exchange */
static PyObject *contextvar;   /* scope._current */
static PyObject *plain_routes; /* asgi._plain_routes */
static PyObject *unmatched;    /* request.UNMATCHED */
static long threshold_default; /* nplusone.DEFAULT_THRESHOLD */
static PyObject *zero_float;   /* 0.0 */
static PyObject *finish_kwnames; /* ("request_bytes", "response_bytes") */

enum {
    F_ROUTE, F_REQUEST_ID, F_TRACE_ID, F_DB_TIME_MS, F_DB_COUNT, F_CACHE_HITS,
    F_CACHE_MISSES, F_QUERIES, F_ERROR, F_ASGI_SCOPE, F_NUMBER, N_FIELDS
};
static const char *field_names[N_FIELDS] = {
    "route", "request_id", "trace_id", "db_time_ms", "db_count", "cache_hits",
    "cache_misses", "queries", "error", "asgi_scope", "number",
};
static Py_ssize_t field_offset[N_FIELDS]; /* of each slot in an _Exchange */

#define SLOT(obj, f) (*(PyObject **)((char *)(obj) + field_offset[f]))

static PyObject *s_sample_rate, *s_threshold;
static PyObject *s_type, *s_headers, *s_http, *s_body_type, *s_start_type, *s_body,
    *s_status, *s_route, *s_app_root_path, *s_method, *s_active, *s_request_sink,
    *s_ids, *s_salt, *s_trace_prefix, *s_throw, *s_close, *s_asgi_finish, *s_request_id;

static int
ready(void)
{
    if (request_ns == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "perfpulse.agent._speedups.setup() was not called");
        return 0;
    }
    return 1;
}

static inline int64_t
perf_counter_ns(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t t;
    (void)PyTime_PerfCounterRaw(&t);
    return (int64_t)t;
#else
    return (int64_t)_PyTime_GetPerfCounter();
#endif
}

static inline int64_t
time_ns(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t t;
    (void)PyTime_TimeRaw(&t);
    return (int64_t)t;
#else
    return (int64_t)_PyTime_GetSystemClock();
#endif
}

/* A mapping's item by an interned key: a new reference, NULL when absent (no
   error set) or on an error (set). Any mapping: the ASGI scope and messages are
   dicts in practice, not by contract. */
static inline PyObject *
item(PyObject *mapping, PyObject *key)
{
    if (PyDict_CheckExact(mapping)) {
        return Py_XNewRef(PyDict_GetItemWithError(mapping, key));
    }
    PyObject *value = PyObject_GetItem(mapping, key);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear();
    }
    return value;
}

/* Whether `a` is the string `interned`; `*learned` remembers the last other
   object found equal, as a server's or framework's constant (Starlette's
   "http.response.body" is not interned: it has dots) is the same object from
   one request to the next, and comparing its text costs 100 instructions. */
static inline int
same_str(PyObject *a, PyObject *interned, PyObject **learned)
{
    if (a == interned || a == *learned) {
        return 1;
    }
    if (PyUnicode_CheckExact(a) && PyUnicode_Compare(a, interned) == 0) {
        Py_XSETREF(*learned, Py_NewRef(a));
        return 1;
    }
    return 0;
}

static PyObject *learned_body_type, *learned_start_type, *learned_http;

/* What the fast path reads of the agent's Config (frozen: cached by identity,
   the cached object held so that its id is not reused). */
static PyObject *config_seen;
static double config_sample_rate;
static long config_threshold;

static int
read_config(PyObject *config)
{
    if (config == config_seen) {
        return 0;
    }
    PyObject *rate = PyObject_GetAttr(config, s_sample_rate);
    if (rate == NULL) {
        return -1;
    }
    double sample_rate = PyFloat_AsDouble(rate);
    Py_DECREF(rate);
    if (sample_rate == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *value = PyObject_GetAttr(config, s_threshold);
    if (value == NULL) {
        return -1;
    }
    long threshold = PyLong_AsLong(value);
    Py_DECREF(value);
    if (threshold == -1 && PyErr_Occurred()) {
        return -1;
    }
    Py_XSETREF(config_seen, Py_NewRef(config));
    config_sample_rate = sample_rate;
    config_threshold = threshold;
    return 0;
}

static inline void
set_slot(PyObject *obj, int f, PyObject *value)
{
    Py_XSETREF(SLOT(obj, f), Py_NewRef(value));
}

/* ------------------------------------------------------------------------ */
/* RequestLog: finished requests as C records, for the transport's thread.  */

/* The usual request's http event, as plain values: no Python objects are made
   for it on the application's thread (an HttpEvent struct, two floats, an int,
   the queue's slot) and none are freed on the transport's, which turns a
   batch of records into JSON at once (RequestLog.take). Strings are held by
   reference: the route template and method are shared with the application. */
typedef struct {
    int64_t ts_ns, duration_ns; /* the start (Unix time) and the duration, in ns */
    double db_time_ms;
    PyObject *route, *method, *request_id, *trace_id; /* ids: NULL for JSON null */
    long long number; /* with no ids: the id counter's number to make them of, else -1 */
    long long request_bytes, response_bytes;         /* -1: left out */
    long long db_count, cache_hits, cache_misses;    /* -1: left out (with db_time_ms) */
    long status;
} Record;

typedef struct {
    PyObject_HEAD
    Record *ring;
    Py_ssize_t head, count, size, capacity; /* size: allocated; capacity: the most kept */
    Py_ssize_t crowded;                     /* count at which `wake` is called */
    unsigned long long overflow;            /* records dropped (the oldest) when full */
    unsigned long long skipped;             /* records too big for a batch alone */
    PyObject *wake;                         /* called when `crowded` records wait */
    PyObject *fallback;                     /* called with what is not a record */
} RequestLog;

static PyTypeObject RequestLogType;

static void
record_clear(Record *r)
{
    Py_CLEAR(r->route);
    Py_CLEAR(r->method);
    Py_CLEAR(r->request_id);
    Py_CLEAR(r->trace_id);
}

/* Room for one more record at the tail: grows the ring (doubling, up to
   `capacity`), or, when full, drops the oldest and counts it. 0, or -1 with
   MemoryError. */
static int
log_make_room(RequestLog *log)
{
    if (log->count < log->size) {
        return 0;
    }
    if (log->size < log->capacity) {
        Py_ssize_t size = log->size ? log->size * 2 : 256;
        if (size > log->capacity) {
            size = log->capacity;
        }
        Record *ring = PyMem_Malloc((size_t)size * sizeof(Record));
        if (ring == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < log->count; i++) {
            ring[i] = log->ring[(log->head + i) % log->size];
        }
        PyMem_Free(log->ring);
        log->ring = ring;
        log->head = 0;
        log->size = size;
        return 0;
    }
    record_clear(&log->ring[log->head]);
    log->head = (log->head + 1) % log->size;
    log->count--;
    log->overflow++;
    return 0;
}

/* Append `r` (its references are taken over; cleared on failure). */
static int
log_append(RequestLog *log, Record *r)
{
    if (log_make_room(log) < 0) {
        record_clear(r);
        return -1;
    }
    log->ring[(log->head + log->count) % log->size] = *r;
    log->count++;
    if (log->count == log->crowded && log->wake != NULL && log->wake != Py_None) {
        PyObject *result = PyObject_CallNoArgs(log->wake);
        if (result == NULL) {
            PyErr_WriteUnraisable(log->wake); /* the record is kept all the same */
        }
        Py_XDECREF(result);
    }
    return 0;
}

typedef struct {
    char *data;
    Py_ssize_t size, allocated;
} Buffer;

static int
buffer_reserve(Buffer *b, Py_ssize_t more)
{
    if (b->size + more <= b->allocated) {
        return 0;
    }
    Py_ssize_t allocated = b->allocated ? b->allocated : 4096;
    while (allocated < b->size + more) {
        allocated *= 2;
    }
    char *data = PyMem_Realloc(b->data, (size_t)allocated);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->allocated = allocated;
    return 0;
}

static int
buffer_write(Buffer *b, const char *text, Py_ssize_t size)
{
    if (buffer_reserve(b, size) < 0) {
        return -1;
    }
    memcpy(b->data + b->size, text, (size_t)size);
    b->size += size;
    return 0;
}

#define WRITE_LITERAL(b, text) buffer_write(b, text, (Py_ssize_t)(sizeof(text) - 1))

/* `s` as a JSON string: quotes, backslashes and control characters escaped,
   the rest as UTF-8 (what msgspec writes). */
static int
buffer_json_string(Buffer *b, PyObject *s)
{
    Py_ssize_t size;
    const char *text = PyUnicode_AsUTF8AndSize(s, &size);
    if (text == NULL || buffer_reserve(b, size * 6 + 2) < 0) {
        return -1;
    }
    char *out = b->data + b->size;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\') {
            *out++ = '\\';
            *out++ = (char)c;
        }
        else if (c < 0x20) {
            static const char hex[] = "0123456789abcdef";
            memcpy(out, "\\u00", 4);
            out[4] = hex[c >> 4];
            out[5] = hex[c & 15];
            out += 6;
        }
        else {
            *out++ = (char)c;
        }
    }
    *out++ = '"';
    b->size = out - b->data;
    return 0;
}

/* A finite double as Python's repr writes it (the shortest text that reads
   back the same value), as JSON. */
static int
buffer_double(Buffer *b, double value)
{
    char *text = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (text == NULL) {
        return -1;
    }
    int result = buffer_write(b, text, (Py_ssize_t)strlen(text));
    PyMem_Free(text);
    return result;
}

static int
buffer_long(Buffer *b, long long value)
{
    char text[24];
    char *end = text + sizeof text, *p = end;
    unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value
                                             : (unsigned long long)value;
    do {
        *--p = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0) {
        *--p = '-';
    }
    return buffer_write(b, p, end - p);
}

/* `value` / `unit` in decimal, with `decimals` digits after the point at most
   (1 to log10(unit); truncated), trailing zeros dropped but one: 1500000 ns as
   ms (unit 10**6) is "1.5", 2000000 is "2.0". Exact, and without a float's
   formatting cost. */
static int
buffer_scaled(Buffer *b, int64_t value, int64_t unit, int decimals)
{
    static const int64_t powers[] = {1, 10, 100, 1000, 10000, 100000, 1000000,
                                     10000000, 100000000, 1000000000};
    if (value < 0) {
        if (WRITE_LITERAL(b, "-") < 0) {
            return -1;
        }
    }
    uint64_t magnitude = value < 0 ? 0ULL - (uint64_t)value : (uint64_t)value;
    if (buffer_long(b, (long long)(magnitude / (uint64_t)unit)) < 0
        || buffer_reserve(b, decimals + 1) < 0) {
        return -1;
    }
    uint64_t fraction = (magnitude % (uint64_t)unit) / (uint64_t)(unit / powers[decimals]);
    char *out = b->data + b->size;
    *out = '.';
    for (int i = decimals; i >= 1; i--) {
        out[i] = (char)('0' + fraction % 10);
        fraction /= 10;
    }
    int kept = decimals;
    while (kept > 1 && out[kept] == '0') {
        kept--;
    }
    b->size += kept + 1;
    return 0;
}

/* `value` in lowercase hex, at least `width` digits. */
static int
buffer_hex(Buffer *b, unsigned long long value, int width)
{
    static const char hex[] = "0123456789abcdef";
    char text[16];
    int size = 0;
    do {
        text[15 - size++] = hex[value & 15];
        value >>= 4;
    } while (value);
    if (buffer_reserve(b, (width > size ? width : size)) < 0) {
        return -1;
    }
    for (; width > size; width--) {
        b->data[b->size++] = '0';
    }
    memcpy(b->data + b->size, text + 16 - size, (size_t)size);
    b->size += size;
    return 0;
}

/* What request.make_ids makes the ids of: the process's salt and trace id
   prefix, read once a batch (they change only when the agent starts, and in a
   forked child, whose log starts empty). */
typedef struct {
    unsigned long long salt;
    const char *prefix;
    Py_ssize_t prefix_size;
} IdSeed;

/* The request id of record `r` made from its number (request.make_ids). */
static int
buffer_made_id(Buffer *b, const Record *r, const IdSeed *seed)
{
    unsigned long long n = (unsigned long long)r->number;
    return buffer_hex(b, (n >> 8) ^ seed->salt, 14) < 0 || buffer_hex(b, n & 0xFF, 2) < 0
               ? -1
               : 0;
}

static int
buffer_ids(Buffer *b, const Record *r, const IdSeed *seed)
{
    if (r->number < 0) {
        return WRITE_LITERAL(b, ",\"request_id\":") < 0
                       || (r->request_id ? buffer_json_string(b, r->request_id)
                                         : WRITE_LITERAL(b, "null")) < 0
                       || WRITE_LITERAL(b, ",\"trace_id\":") < 0
                       || (r->trace_id ? buffer_json_string(b, r->trace_id)
                                       : WRITE_LITERAL(b, "null")) < 0
                   ? -1
                   : 0;
    }
    return WRITE_LITERAL(b, ",\"request_id\":\"") < 0 || buffer_made_id(b, r, seed) < 0
                   || WRITE_LITERAL(b, "\",\"trace_id\":\"") < 0
                   || buffer_write(b, seed->prefix, seed->prefix_size) < 0
                   || buffer_made_id(b, r, seed) < 0
                   || WRITE_LITERAL(b, "\"") < 0
               ? -1
               : 0;
}

/* One record as the JSON object msgspec makes of its HttpEvent: the same
   fields, in the same order, None left out where the struct's default is None. */
static int
buffer_record(Buffer *b, const Record *r, const IdSeed *seed)
{
    if (WRITE_LITERAL(b, "{\"kind\":\"http\",\"ts\":") < 0
        || buffer_scaled(b, r->ts_ns, 1000000000, 6) < 0
        || WRITE_LITERAL(b, ",\"route\":") < 0 || buffer_json_string(b, r->route) < 0
        || WRITE_LITERAL(b, ",\"method\":") < 0 || buffer_json_string(b, r->method) < 0
        || WRITE_LITERAL(b, ",\"status\":") < 0 || buffer_long(b, r->status) < 0
        || WRITE_LITERAL(b, ",\"duration_ms\":") < 0
        || buffer_scaled(b, r->duration_ns, 1000000, 6) < 0 || buffer_ids(b, r, seed) < 0) {
        return -1;
    }
    if (r->request_bytes >= 0
        && (WRITE_LITERAL(b, ",\"request_bytes\":") < 0 || buffer_long(b, r->request_bytes) < 0)) {
        return -1;
    }
    if (r->response_bytes >= 0
        && (WRITE_LITERAL(b, ",\"response_bytes\":") < 0
            || buffer_long(b, r->response_bytes) < 0)) {
        return -1;
    }
    if (r->db_count >= 0
        && (WRITE_LITERAL(b, ",\"db_time_ms\":") < 0 || buffer_double(b, r->db_time_ms) < 0
            || WRITE_LITERAL(b, ",\"db_count\":") < 0 || buffer_long(b, r->db_count) < 0)) {
        return -1;
    }
    if (r->cache_hits >= 0
        && (WRITE_LITERAL(b, ",\"cache_hits\":") < 0 || buffer_long(b, r->cache_hits) < 0
            || WRITE_LITERAL(b, ",\"cache_misses\":") < 0
            || buffer_long(b, r->cache_misses) < 0)) {
        return -1;
    }
    return WRITE_LITERAL(b, "}");
}

static PyObject *
log_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"capacity", "crowded", "wake", "fallback", NULL};
    Py_ssize_t capacity, crowded;
    PyObject *wake, *fallback;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "nnOO:RequestLog", keywords, &capacity,
                                     &crowded, &wake, &fallback)) {
        return NULL;
    }
    if (capacity < 1) {
        PyErr_SetString(PyExc_ValueError, "a RequestLog's capacity must be at least 1");
        return NULL;
    }
    RequestLog *log = (RequestLog *)type->tp_alloc(type, 0);
    if (log == NULL) {
        return NULL;
    }
    log->capacity = capacity;
    log->crowded = crowded;
    log->wake = Py_NewRef(wake);
    log->fallback = Py_NewRef(fallback);
    return (PyObject *)log;
}

static void
log_drop_all(RequestLog *log)
{
    for (Py_ssize_t i = 0; i < log->count; i++) {
        record_clear(&log->ring[(log->head + i) % log->size]);
    }
    log->head = log->count = 0;
}

static int
log_traverse(RequestLog *log, visitproc visit, void *arg)
{
    Py_VISIT(log->wake);
    Py_VISIT(log->fallback);
    return 0;
}

static int
log_tp_clear(RequestLog *log)
{
    Py_CLEAR(log->wake);
    Py_CLEAR(log->fallback);
    return 0;
}

static void
log_dealloc(RequestLog *log)
{
    PyObject_GC_UnTrack(log);
    log_drop_all(log);
    PyMem_Free(log->ring);
    log_tp_clear(log);
    Py_TYPE(log)->tp_free((PyObject *)log);
}

static Py_ssize_t
log_length(RequestLog *log)
{
    return log->count;
}

/* log(item): what is not a record (an HttpEvent from Python, a request scope)
   goes to the fallback, the transport's enqueue. */
static PyObject *
log_call(RequestLog *log, PyObject *args, PyObject *kwargs)
{
    if (log->fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the RequestLog was cleared");
        return NULL;
    }
    return PyObject_Call(log->fallback, args, kwargs);
}

static PyObject *
log_take(RequestLog *log, PyObject *args)
{
    Py_ssize_t limit, max_bytes;
    if (!PyArg_ParseTuple(args, "nn:take", &limit, &max_bytes)) {
        return NULL;
    }
    Buffer b = {NULL, 0, 0};
    Py_ssize_t taken = 0;
    IdSeed seed = {0, "", 0};
    PyObject *prefix = NULL;
    if (log->count > 0 && request_ns != NULL) {
        PyObject *salt = PyDict_GetItemWithError(request_ns, s_salt);
        prefix = PyDict_GetItemWithError(request_ns, s_trace_prefix);
        if (salt == NULL || prefix == NULL || !PyUnicode_CheckExact(prefix)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_RuntimeError, "request ids are not set up");
            }
            return NULL;
        }
        seed.salt = PyLong_AsUnsignedLongLong(salt);
        seed.prefix = PyUnicode_AsUTF8AndSize(prefix, &seed.prefix_size);
        if (seed.prefix == NULL || PyErr_Occurred()) {
            return NULL;
        }
        Py_INCREF(prefix); /* its text is read below */
    }
    if (WRITE_LITERAL(&b, "[") < 0) {
        goto fail;
    }
    while (taken < limit && log->count > 0) {
        Record *r = &log->ring[log->head];
        Py_ssize_t mark = b.size;
        if (taken > 0 && WRITE_LITERAL(&b, ",") < 0) {
            goto fail;
        }
        int encoded = buffer_record(&b, r, &seed);
        if (encoded < 0 && PyErr_ExceptionMatches(PyExc_MemoryError)) {
            goto fail;
        }
        if (encoded < 0) { /* not UTF-8 (a lone surrogate): never sendable */
            PyErr_Clear();
            b.size = mark;
            log->skipped++;
        }
        else if (b.size + 1 > max_bytes) {
            b.size = mark;
            if (taken > 0) {
                break; /* the next batch's */
            }
            log->skipped++; /* too big alone: never sendable */
        }
        else {
            taken++;
        }
        record_clear(r);
        log->head = (log->head + 1) % log->size;
        log->count--;
    }
    if (WRITE_LITERAL(&b, "]") < 0) {
        goto fail;
    }
    PyObject *body = PyBytes_FromStringAndSize(b.data, b.size);
    PyMem_Free(b.data);
    Py_XDECREF(prefix);
    if (body == NULL) {
        return NULL;
    }
    return Py_BuildValue("(Nn)", body, taken);

fail:
    PyMem_Free(b.data);
    Py_XDECREF(prefix);
    return NULL;
}

static PyObject *
log_take_dropped(RequestLog *log, PyObject *Py_UNUSED(ignored))
{
    PyObject *result = Py_BuildValue("(KK)", log->overflow, log->skipped);
    log->overflow = log->skipped = 0;
    return result;
}

static PyObject *
log_clear_method(RequestLog *log, PyObject *Py_UNUSED(ignored))
{
    log_drop_all(log);
    log->overflow = log->skipped = 0;
    Py_RETURN_NONE;
}

static PyMethodDef log_methods[] = {
    {"take", (PyCFunction)log_take, METH_VARARGS,
     "take(limit, max_bytes) -> (bytes, int)\n--\n\n"
     "Up to `limit` of the oldest records as one JSON array of http events, no\n"
     "longer than `max_bytes`, and how many it holds; they leave the log. A\n"
     "record too big alone is dropped and counted (see take_dropped)."},
    {"take_dropped", (PyCFunction)log_take_dropped, METH_NOARGS,
     "take_dropped() -> (int, int)\n--\n\n"
     "Records dropped since the last call: the oldest, when the log was full, and\n"
     "those too big for a batch; both counts start again at 0."},
    {"clear", (PyCFunction)log_clear_method, METH_NOARGS,
     "Drop every record and the counts (a forked child starts empty)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef log_members[] = {
    {"capacity", T_PYSSIZET, offsetof(RequestLog, capacity), READONLY,
     "The most records kept; past it the oldest is dropped."},
    {"crowded", T_PYSSIZET, offsetof(RequestLog, crowded), READONLY,
     "How many waiting records make the log call `wake`."},
    {"overflow", T_ULONGLONG, offsetof(RequestLog, overflow), READONLY,
     "Records dropped (the oldest) for want of room since take_dropped() last ran."},
    {"skipped", T_ULONGLONG, offsetof(RequestLog, skipped), READONLY,
     "Records dropped as too big for a batch since take_dropped() last ran."},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods log_as_sequence = {
    .sq_length = (lenfunc)log_length,
};

static PyTypeObject RequestLogType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "perfpulse.agent._speedups.RequestLog",
    .tp_doc = "RequestLog(capacity, crowded, wake, fallback)\n--\n\n"
              "The transport's queue of finished usual requests as C records (see\n"
              "perfpulse.agent.transport). As the request sink, calling it hands the\n"
              "item to `fallback`; the compiled middleware appends records instead.",
    .tp_basicsize = sizeof(RequestLog),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = log_new,
    .tp_dealloc = (destructor)log_dealloc,
    .tp_traverse = (traverseproc)log_traverse,
    .tp_clear = (inquiry)log_tp_clear,
    .tp_call = (ternaryfunc)log_call,
    .tp_methods = log_methods,
    .tp_members = log_members,
    .tp_as_sequence = &log_as_sequence,
};

/* ------------------------------------------------------------------------ */
/* Call: one request's awaitable.                                           */

enum { NEW, RUNNING, DONE };

typedef struct {
    PyObject_HEAD
    PyObject *app, *scope, *receive, *downstream;
    PyObject *rs;     /* the _Exchange; NULL for a request passed through */
    PyObject *inner;  /* what the application's awaitable iterates with */
    PyObject *token;  /* of the context variable */
    PyObject *length; /* the Content-Length header's value */
    int64_t started;
    int64_t sent;
    long status;
    int state;
} Call;

static PyTypeObject CallType;
static PyMethodDef asgi_send_def;

/* A new _Exchange for the next request (request.begin, without sampling or
   traceparent: the caller checked), or NULL with an error. Its ids are the id
   counter's next number, made into strings only when read (_Exchange's
   properties) or sent (RequestLog). */
static PyObject *
new_exchange(void)
{
    PyObject *ids = PyDict_GetItemWithError(request_ns, s_ids);
    if (ids == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "request ids are not set up");
        }
        return NULL;
    }
    PyObject *number = PyIter_Next(ids);
    if (number == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "request ids ran out");
        }
        return NULL;
    }
    /* RequestScope.__init__(None, None, None), slot by slot, and the number: a
       test compares the result with what the Python constructor makes */
    PyObject *rs = exchange->tp_alloc(exchange, 0);
    if (rs == NULL) {
        Py_DECREF(number);
        return NULL;
    }
    SLOT(rs, F_ROUTE) = Py_NewRef(Py_None);
    SLOT(rs, F_REQUEST_ID) = Py_NewRef(Py_None);
    SLOT(rs, F_TRACE_ID) = Py_NewRef(Py_None);
    SLOT(rs, F_NUMBER) = number;
    SLOT(rs, F_DB_TIME_MS) = Py_NewRef(zero_float);
    PyObject *zero = PyLong_FromLong(0);
    SLOT(rs, F_DB_COUNT) = Py_NewRef(zero);
    SLOT(rs, F_CACHE_HITS) = Py_NewRef(zero);
    SLOT(rs, F_CACHE_MISSES) = zero;
    SLOT(rs, F_QUERIES) = Py_NewRef(Py_None);
    SLOT(rs, F_ERROR) = Py_NewRef(Py_None);
    return rs;
}

/* The exchange's id strings made, if they were left to be (see new_exchange):
   0, or -1 with an error. */
static int
make_ids(PyObject *rs)
{
    PyObject *number = SLOT(rs, F_NUMBER);
    if (number == NULL || number == Py_None) {
        return 0;
    }
    PyObject *made = PyObject_GetAttr(rs, s_request_id); /* the property makes both */
    Py_XDECREF(made);
    return made == NULL ? -1 : 0;
}

static int
is_header(PyObject *name, const char *wanted, Py_ssize_t size)
{
    return PyBytes_CheckExact(name) && PyBytes_GET_SIZE(name) == size
           && memcmp(PyBytes_AS_STRING(name), wanted, (size_t)size) == 0;
}

/* The first resumption: open the request and call the application. */
static int
call_start(Call *self)
{
    PyObject *traceparent = NULL, *length = NULL, *rs = NULL, *awaitable = NULL;
    PyObject *headers = item(self->scope, s_headers);
    if (headers == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, s_headers);
        }
        return -1;
    }
    PyObject *seq = PySequence_Fast(headers, "the ASGI scope's headers are not iterable");
    Py_DECREF(headers);
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **pairs = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = pairs[i];
        PyObject *name, *value;
        if (PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2) {
            name = PyTuple_GET_ITEM(pair, 0);
            value = PyTuple_GET_ITEM(pair, 1);
        }
        else if (PyList_CheckExact(pair) && PyList_GET_SIZE(pair) == 2) {
            name = PyList_GET_ITEM(pair, 0);
            value = PyList_GET_ITEM(pair, 1);
        }
        else {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "an ASGI header is not a (name, value) pair");
            return -1;
        }
        if (is_header(name, "traceparent", 11)) {
            traceparent = value;
        }
        else if (is_header(name, "content-length", 14)) {
            length = value;
        }
    }
    Py_XINCREF(traceparent);
    Py_XINCREF(length);
    Py_DECREF(seq);

    PyObject *config = PyDict_GetItemWithError(request_ns, s_active);
    int sampled_in_python = traceparent != NULL;
    if (config != NULL && config != Py_None && !sampled_in_python) {
        if (read_config(config) < 0) {
            goto fail;
        }
        sampled_in_python = config_sample_rate < 1.0;
    }
    if (config == NULL || config == Py_None) {
        if (PyErr_Occurred()) {
            goto fail;
        }
        rs = Py_NewRef(Py_None); /* turned off since the call: pass it through */
    }
    else if (sampled_in_python) {
        PyObject *args[2] = {traceparent ? traceparent : Py_None, (PyObject *)exchange};
        rs = PyObject_Vectorcall(begin_fn, args, 2, NULL);
    }
    else {
        rs = new_exchange();
    }
    if (rs == NULL) {
        goto fail;
    }
    if (rs == Py_None) { /* not sampled: the application with the server's send */
        Py_CLEAR(rs);
        PyObject *args[3] = {self->scope, self->receive, self->downstream};
        awaitable = PyObject_Vectorcall(self->app, args, 3, NULL);
    }
    else {
        set_slot(rs, F_ASGI_SCOPE, self->scope);
        self->token = PyContextVar_Set(contextvar, rs);
        if (self->token == NULL) {
            goto fail;
        }
        self->rs = rs;
        rs = NULL;
        self->length = length;
        length = NULL;
        PyObject *send = PyCFunction_New(&asgi_send_def, (PyObject *)self);
        if (send == NULL) {
            goto fail;
        }
        self->started = perf_counter_ns();
        PyObject *args[3] = {self->scope, self->receive, send};
        awaitable = PyObject_Vectorcall(self->app, args, 3, NULL);
        Py_DECREF(send);
    }
    Py_CLEAR(traceparent);
    Py_CLEAR(length);
    if (awaitable == NULL) {
        return -1;
    }
    if (PyCoro_CheckExact(awaitable)) {
        self->inner = awaitable;
        return 0;
    }
    PyAsyncMethods *am = Py_TYPE(awaitable)->tp_as_async;
    if (am == NULL || am->am_await == NULL) {
        PyErr_Format(PyExc_TypeError, "the ASGI application returned %.100s, not an awaitable",
                     Py_TYPE(awaitable)->tp_name);
        Py_DECREF(awaitable);
        return -1;
    }
    self->inner = am->am_await(awaitable);
    Py_DECREF(awaitable);
    if (self->inner == NULL) {
        return -1;
    }
    if (!PyIter_Check(self->inner)) {
        PyErr_Format(PyExc_TypeError, "__await__() returned a non-iterator of type '%.100s'",
                     Py_TYPE(self->inner)->tp_name);
        Py_CLEAR(self->inner);
        return -1;
    }
    return 0;

fail:
    Py_XDECREF(traceparent);
    Py_XDECREF(length);
    Py_XDECREF(rs);
    return -1;
}

/* The templates of the routes Starlette matched outside a Mount, by the
   route's address: a request's route found without making an int key and
   looking it up in asgi._plain_routes. A route's template never changes; the
   cache holds its route, so no other route gets its address while cached. */
#define ROUTE_CACHE_SIZE 256
typedef struct {
    PyObject *route, *name;
} RouteCached;
static RouteCached route_cache[ROUTE_CACHE_SIZE];

/* Caches `name` for `route` in `slot` (its previous entry goes); returns a new
   reference to `name`. */
static PyObject *
route_cache_put(RouteCached *slot, PyObject *route, PyObject *name)
{
    PyObject *old_route = slot->route, *old_name = slot->name;
    slot->route = Py_NewRef(route);
    slot->name = Py_NewRef(name);
    Py_XDECREF(old_route);
    Py_XDECREF(old_name);
    return Py_NewRef(name);
}

/* The route of the finished request: its scope's route, else the template of
   the route Starlette matched (asgi.starlette_route, whose cache is read here
   first). A new reference, or NULL with an error. */
static PyObject *
route_of(Call *self)
{
    PyObject *route = SLOT(self->rs, F_ROUTE);
    if (route != NULL && route != Py_None && PyObject_IsTrue(route) == 1) {
        return Py_NewRef(route);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *scope = self->scope;
    if (PyDict_CheckExact(scope)) {
        int nested = PyDict_Contains(scope, s_app_root_path);
        if (nested < 0) {
            return NULL;
        }
        PyObject *matched = PyDict_GetItemWithError(scope, s_route);
        if (matched == NULL && PyErr_Occurred()) {
            return NULL;
        }
        RouteCached *cached = NULL;
        if (!nested && matched != NULL) {
            cached = &route_cache[((uintptr_t)matched >> 4) % ROUTE_CACHE_SIZE];
            if (cached->route == matched) {
                return Py_NewRef(cached->name);
            }
            PyObject *key = PyLong_FromVoidPtr(matched);
            if (key == NULL) {
                return NULL;
            }
            PyObject *known = PyDict_GetItemWithError(plain_routes, key);
            Py_DECREF(key);
            if (known != NULL && PyTuple_CheckExact(known) && PyTuple_GET_SIZE(known) == 2
                && PyTuple_GET_ITEM(known, 0) == matched) {
                return route_cache_put(cached, matched, PyTuple_GET_ITEM(known, 1));
            }
            if (PyErr_Occurred()) {
                return NULL;
            }
        }
        Py_XINCREF(matched); /* the call may take it out of the scope */
        PyObject *name = PyObject_CallOneArg(route_fn, scope);
        if (cached != NULL && name != NULL && PyUnicode_CheckExact(name)) {
            Py_SETREF(name, route_cache_put(cached, matched, name));
        }
        Py_XDECREF(matched);
        return name;
    }
    return PyObject_CallOneArg(route_fn, scope);
}

/* The event's route and method, as the wire format bounds them (what
   request._http_event does): no route is `unmatched`, a route is cut at 4,096
   characters and a method at 16. New references, or NULL with an error. */
static PyObject *
event_route(PyObject *route)
{
    if (route == Py_None || PyUnicode_GET_LENGTH(route) == 0) {
        return Py_NewRef(unmatched);
    }
    return PyUnicode_GET_LENGTH(route) > 4096 ? PyUnicode_Substring(route, 0, 4096)
                                              : Py_NewRef(route);
}

static PyObject *
event_method(PyObject *method)
{
    return PyUnicode_GET_LENGTH(method) > 16 ? PyUnicode_Substring(method, 0, 16)
                                             : Py_NewRef(method);
}

/* The usual request as a record in `log`: 1 when done, -1 on an error, 0 when
   a value is not of the type a record holds (finish_fast then makes the
   HttpEvent struct and calls the log, which hands it to its fallback). */
static int
log_record(RequestLog *log, PyObject *rs, PyObject *route, PyObject *method, long status,
           int64_t duration_ns, PyObject *request_bytes, PyObject *response_bytes, long queries)
{
    Record r = {0};
    PyObject *request_id = SLOT(rs, F_REQUEST_ID), *trace_id = SLOT(rs, F_TRACE_ID);
    PyObject *hits = SLOT(rs, F_CACHE_HITS), *misses = SLOT(rs, F_CACHE_MISSES);
    PyObject *db_time = SLOT(rs, F_DB_TIME_MS);
    if ((request_id != Py_None && !PyUnicode_CheckExact(request_id))
        || (trace_id != Py_None && !PyUnicode_CheckExact(trace_id))
        || (request_bytes != Py_None && !PyLong_CheckExact(request_bytes))
        || !PyLong_CheckExact(response_bytes) || !PyLong_CheckExact(hits)
        || !PyLong_CheckExact(misses)
        || (queries && !PyFloat_CheckExact(db_time) && !PyLong_CheckExact(db_time))) {
        return 0;
    }
    r.request_bytes = request_bytes == Py_None ? -1 : PyLong_AsLongLong(request_bytes);
    r.response_bytes = PyLong_AsLongLong(response_bytes);
    r.db_count = r.cache_hits = r.cache_misses = -1;
    if (queries) {
        r.db_count = queries;
        r.db_time_ms = PyFloat_AsDouble(db_time);
    }
    long long hit_count = PyLong_AsLongLong(hits), miss_count = PyLong_AsLongLong(misses);
    if (PyErr_Occurred()) {
        PyErr_Clear(); /* too big for a record: the struct takes it */
        return 0;
    }
    if (r.request_bytes < -1 || r.response_bytes < 0 || hit_count < 0 || miss_count < 0
        || !isfinite(r.db_time_ms)) {
        return 0;
    }
    if (hit_count || miss_count) {
        r.cache_hits = hit_count;
        r.cache_misses = miss_count;
    }
    r.ts_ns = time_ns() - duration_ns;
    r.duration_ns = duration_ns;
    r.status = status;
    r.route = event_route(route);
    r.method = event_method(method);
    if (r.route == NULL || r.method == NULL) {
        record_clear(&r);
        return -1;
    }
    PyObject *number = SLOT(rs, F_NUMBER);
    r.number = -1;
    if (request_id == Py_None && trace_id == Py_None && number != NULL && number != Py_None) {
        /* the ids were not made: the record makes them when sent */
        r.number = PyLong_AsLongLong(number);
        if (r.number < 0) {
            PyErr_Clear(); /* past 2**63 ids: the struct path makes the strings */
            record_clear(&r);
            return 0;
        }
    }
    else {
        r.request_id = request_id == Py_None ? NULL : Py_NewRef(request_id);
        r.trace_id = trace_id == Py_None ? NULL : Py_NewRef(trace_id);
    }
    /* what JSON cannot hold (a lone surrogate) goes the struct's way, where the
       transport skips and counts it; this also caches each string's UTF-8 */
    PyObject *texts[4] = {r.route, r.method, r.request_id, r.trace_id};
    for (int i = 0; i < 4; i++) {
        if (texts[i] != NULL && PyUnicode_AsUTF8AndSize(texts[i], NULL) == NULL) {
            PyErr_Clear();
            record_clear(&r);
            return 0;
        }
    }
    return log_append(log, &r) < 0 ? -1 : 1;
}

/* The usual request's HttpEvent into the sink: 1 when done, 0 when it is not
   the usual request (request.finish takes it), -1 on an error. */
static int
finish_fast(Call *self, PyObject *route, PyObject *method, long status, int64_t now,
            PyObject *request_bytes, PyObject *response_bytes)
{
    PyObject *rs = self->rs;
    PyObject *sink = PyDict_GetItemWithError(scope_ns, s_request_sink);
    if (sink == NULL || sink == Py_None || SLOT(rs, F_ERROR) != Py_None) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *config = PyDict_GetItemWithError(request_ns, s_active);
    long threshold = threshold_default;
    if (config != NULL && config != Py_None) {
        if (read_config(config) < 0) {
            return -1;
        }
        threshold = config_threshold;
    }
    else if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *db_count = SLOT(rs, F_DB_COUNT);
    PyObject *hits = SLOT(rs, F_CACHE_HITS), *misses = SLOT(rs, F_CACHE_MISSES);
    if (db_count == NULL || hits == NULL || misses == NULL || !PyLong_CheckExact(db_count)
        || !PyUnicode_CheckExact(method) || (route != Py_None && !PyUnicode_CheckExact(route))) {
        return 0;
    }
    long queries = PyLong_AsLong(db_count);
    if (queries == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (queries >= threshold) {
        return 0; /* N+1 findings */
    }
    int64_t duration_ns = now - self->started;
    if (Py_IS_TYPE(sink, &RequestLogType)) {
        int logged = log_record((RequestLog *)sink, rs, route, method, status, duration_ns,
                                request_bytes, response_bytes, queries);
        if (logged != 0) {
            return logged;
        }
    }
    if (make_ids(rs) < 0) {
        return -1;
    }
    PyObject *values[13] = {NULL};
    int n = 9;
    int ok = 0;
    PyObject *event = NULL;
    values[0] = PyFloat_FromDouble((double)(time_ns() - duration_ns) / 1e9);
    values[1] = event_route(route);
    values[2] = event_method(method);
    values[3] = PyLong_FromLong(status);
    values[4] = PyFloat_FromDouble((double)duration_ns / 1e6);
    values[5] = Py_NewRef(SLOT(rs, F_REQUEST_ID));
    values[6] = Py_NewRef(SLOT(rs, F_TRACE_ID));
    values[7] = Py_NewRef(request_bytes);
    values[8] = Py_NewRef(response_bytes);
    int cached = PyObject_IsTrue(hits) || PyObject_IsTrue(misses);
    if (queries || cached) {
        n = 13;
        values[9] = Py_NewRef(queries ? SLOT(rs, F_DB_TIME_MS) : Py_None);
        values[10] = Py_NewRef(queries ? db_count : Py_None);
        values[11] = Py_NewRef(cached ? hits : Py_None);
        values[12] = Py_NewRef(cached ? misses : Py_None);
    }
    for (int i = 0; i < n; i++) {
        if (values[i] == NULL) {
            goto done;
        }
    }
    event = PyObject_Vectorcall(http_event, values, n, NULL);
    if (event != NULL) {
        PyObject *result = PyObject_CallOneArg(sink, event);
        ok = result != NULL;
        Py_XDECREF(result);
    }
done:
    for (int i = 0; i < n; i++) {
        Py_XDECREF(values[i]);
    }
    Py_XDECREF(event);
    return ok ? 1 : -1;
}

/* The request ended (the application returned, raised or was closed): what
   the Python middleware's ``finally`` does. Keeps a pending exception. */
static void
call_finish(Call *self)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    int64_t now = perf_counter_ns();
    self->state = DONE;
    Py_CLEAR(self->inner);
    if (self->rs != NULL) {
        if (self->token != NULL && PyContextVar_Reset(contextvar, self->token) < 0) {
            PyErr_Clear(); /* closed from another context (by the garbage collector) */
        }
        Py_CLEAR(self->token);
        PyObject *route = route_of(self);
        PyObject *method = route ? item(self->scope, s_method) : NULL;
        PyObject *request_bytes = NULL, *response_bytes = NULL;
        long status = self->status ? self->status : 499; /* nginx's code: the client went */
        int handled = -1;
        if (method != NULL) {
            PyObject *length = self->length;
            if (length != NULL && PyBytes_CheckExact(length) && PyBytes_GET_SIZE(length) > 0) {
                const char *digits = PyBytes_AS_STRING(length);
                Py_ssize_t i = 0, size = PyBytes_GET_SIZE(length);
                while (i < size && digits[i] >= '0' && digits[i] <= '9') {
                    i++;
                }
                request_bytes = i == size ? PyLong_FromString(digits, NULL, 10)
                                          : Py_NewRef(Py_None);
            }
            else {
                request_bytes = Py_NewRef(Py_None);
            }
            response_bytes = PyLong_FromLongLong(self->sent);
            if (request_bytes != NULL && response_bytes != NULL) {
                handled = finish_fast(self, route, method, status, now, request_bytes,
                                      response_bytes);
            }
        }
        if (handled == 0) {
            PyObject *status_obj = PyLong_FromLong(status);
            PyObject *started = PyLong_FromLongLong(self->started);
            if (status_obj != NULL && started != NULL) {
                PyObject *args[7] = {self->rs, route, method, status_obj, started,
                                     request_bytes, response_bytes};
                PyObject *result = PyObject_Vectorcall(finish_fn, args, 5, finish_kwnames);
                handled = result != NULL ? 1 : -1;
                Py_XDECREF(result);
            }
            Py_XDECREF(status_obj);
            Py_XDECREF(started);
        }
        if (handled < 0) {
            PyErr_Clear();
            PyObject *result = PyObject_CallOneArg(failure_fn, s_asgi_finish);
            if (result == NULL) {
                PyErr_Clear();
            }
            Py_XDECREF(result);
        }
        Py_XDECREF(route);
        Py_XDECREF(method);
        Py_XDECREF(request_bytes);
        Py_XDECREF(response_bytes);
        /* the record waits in the queue, not the exchange (the scope, the
           server's per-request objects behind its send) */
        set_slot(self->rs, F_ASGI_SCOPE, Py_None);
    }
    Py_CLEAR(self->downstream);
    Py_CLEAR(self->scope);
    Py_CLEAR(self->receive);
    Py_CLEAR(self->app);
    Py_CLEAR(self->length);
    PyErr_Restore(type, value, traceback);
}

/* The application raised (the pending exception): an Exception is the
   request's error (and a 500 when no response started); the request ends and
   the exception propagates. */
static void
call_failed(Call *self)
{
    if (self->rs != NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL && value != NULL) {
            PyException_SetTraceback(value, traceback);
        }
        if (value != NULL) {
            set_slot(self->rs, F_ERROR, value);
        }
        if (self->status == 0) {
            self->status = 500;
        }
        PyErr_Restore(type, value, traceback);
    }
    call_finish(self);
}

/* StopIteration's value, the exception cleared; NULL (an error) when another
   exception is pending. */
static PyObject *
stop_value(void)
{
    if (!PyErr_ExceptionMatches(PyExc_StopIteration)) {
        return NULL;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    PyObject *result = Py_NewRef(value ? ((PyStopIterationObject *)value)->value : Py_None);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    return result;
}

static PySendResult
call_am_send(Call *self, PyObject *arg, PyObject **result)
{
    if (self->state == NEW) {
        self->state = RUNNING;
        if (call_start(self) < 0) {
            call_failed(self);
            *result = NULL;
            return PYGEN_ERROR;
        }
    }
    else if (self->state == DONE) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        *result = NULL;
        return PYGEN_ERROR;
    }
    PySendResult status = PyIter_Send(self->inner, arg, result);
    if (status == PYGEN_RETURN) {
        call_finish(self);
    }
    else if (status == PYGEN_ERROR) {
        call_failed(self);
    }
    return status;
}

/* The result of a resumption as an iterator's next() or a generator's send()
   gives it: the value, or NULL with StopIteration (or the error) set. */
static PyObject *
as_iteration(PySendResult status, PyObject *result)
{
    if (status != PYGEN_RETURN) {
        return result;
    }
    if (result != Py_None) {
        PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
        if (stop != NULL) {
            PyErr_SetObject(PyExc_StopIteration, stop);
            Py_DECREF(stop);
        }
    }
    Py_DECREF(result);
    return NULL;
}

static PyObject *
call_iternext(Call *self)
{
    PyObject *result = NULL;
    PySendResult status = call_am_send(self, Py_None, &result);
    return as_iteration(status, result);
}

static PyObject *
call_send(Call *self, PyObject *arg)
{
    PyObject *result = NULL;
    PySendResult status = call_am_send(self, arg, &result);
    return as_iteration(status, result);
}

/* Set the exception throw(typ[, val[, tb]]) was given, as raised here. */
static void
raise_thrown(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *typ = args[0], *val = nargs > 1 && args[1] != Py_None ? args[1] : NULL;
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    }
    else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val);
    }
    else {
        PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
    }
}

static PyObject *
call_throw(Call *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw() takes 1 to 3 arguments");
        return NULL;
    }
    if (self->state != RUNNING) { /* nothing ran, or it ended: raise it here */
        self->state = DONE;
        raise_thrown(args, nargs);
        return NULL;
    }
    PyObject *throw = PyObject_GetAttr(self->inner, s_throw);
    if (throw == NULL) { /* an iterator without throw(): the exception is raised here */
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            raise_thrown(args, nargs);
        }
        call_failed(self);
        return NULL;
    }
    PyObject *result = PyObject_Vectorcall(throw, args, (size_t)nargs, NULL);
    Py_DECREF(throw);
    if (result != NULL) {
        return result;
    }
    PyObject *value = stop_value();
    if (value != NULL) {
        call_finish(self);
        return as_iteration(PYGEN_RETURN, value);
    }
    call_failed(self);
    return NULL;
}

static PyObject *
call_close(Call *self, PyObject *Py_UNUSED(ignored))
{
    if (self->state != RUNNING) {
        self->state = DONE;
        Py_RETURN_NONE;
    }
    PyObject *close = PyObject_GetAttr(self->inner, s_close);
    if (close == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            call_failed(self);
            return NULL;
        }
        PyErr_Clear();
        call_finish(self);
        Py_RETURN_NONE;
    }
    PyObject *result = PyObject_CallNoArgs(close);
    Py_DECREF(close);
    if (result == NULL) {
        call_failed(self);
        return NULL;
    }
    Py_DECREF(result);
    call_finish(self);
    Py_RETURN_NONE;
}

static PyObject *
call_await(Call *self)
{
    return Py_NewRef(self);
}

/* The ``send`` the application gets: counts the response, then the server's. */
static PyObject *
asgi_send(Call *self, PyObject *message)
{
    PyObject *kind = item(message, s_type);
    if (kind == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, s_type);
        }
        return NULL;
    }
    if (self->downstream == NULL) {
        PyErr_Format(PyExc_RuntimeError, "ASGI message %R sent after the response completed",
                     kind);
        Py_DECREF(kind);
        return NULL;
    }
    int body_type = same_str(kind, s_body_type, &learned_body_type);
    int start_type = !body_type && same_str(kind, s_start_type, &learned_start_type);
    Py_DECREF(kind);
    if (body_type) {
        PyObject *body = item(message, s_body);
        if (body != NULL) {
            Py_ssize_t size = PyObject_Length(body);
            Py_DECREF(body);
            if (size < 0) {
                return NULL;
            }
            self->sent += size;
        }
        else if (PyErr_Occurred()) {
            return NULL;
        }
    }
    else if (start_type) {
        PyObject *status = item(message, s_status);
        if (status == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetObject(PyExc_KeyError, s_status);
            }
            return NULL;
        }
        long code = PyLong_AsLong(status);
        Py_DECREF(status);
        if (code == -1 && PyErr_Occurred()) {
            PyErr_Clear(); /* not a number: the server will say so */
            code = 0;
        }
        self->status = code;
    }
    return PyObject_CallOneArg(self->downstream, message);
}

static PyMethodDef asgi_send_def = {"send", (PyCFunction)asgi_send, METH_O,
                                    "Send an ASGI message, counting the response."};

static int
call_traverse(Call *self, visitproc visit, void *arg)
{
    Py_VISIT(self->app);
    Py_VISIT(self->scope);
    Py_VISIT(self->receive);
    Py_VISIT(self->downstream);
    Py_VISIT(self->rs);
    Py_VISIT(self->inner);
    Py_VISIT(self->token);
    Py_VISIT(self->length);
    return 0;
}

static int
call_clear(Call *self)
{
    Py_CLEAR(self->app);
    Py_CLEAR(self->scope);
    Py_CLEAR(self->receive);
    Py_CLEAR(self->downstream);
    Py_CLEAR(self->rs);
    Py_CLEAR(self->inner);
    Py_CLEAR(self->token);
    Py_CLEAR(self->length);
    return 0;
}

/* Collected while running (the server dropped it): closed, as a coroutine is. */
static void
call_finalize(Call *self)
{
    if (self->state != RUNNING) {
        return;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *result = call_close(self, NULL);
    if (result == NULL) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(result);
    PyErr_Restore(type, value, traceback);
}

static void
call_dealloc(Call *self)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0) {
        return; /* resurrected */
    }
    PyObject_GC_UnTrack(self);
    call_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyAsyncMethods call_async = {
    .am_await = (unaryfunc)call_await,
    .am_send = (sendfunc)call_am_send,
};

static PyMethodDef call_methods[] = {
    {"send", (PyCFunction)call_send, METH_O, "Resume with a value."},
    {"throw", (PyCFunction)(void (*)(void))call_throw, METH_FASTCALL,
     "Raise an exception where the application waits."},
    {"close", (PyCFunction)call_close, METH_NOARGS, "Close the application's awaitable."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "perfpulse.agent._speedups.Call",
    .tp_doc = "One request through the middleware: an awaitable (see the module).",
    .tp_basicsize = sizeof(Call),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)call_dealloc,
    .tp_traverse = (traverseproc)call_traverse,
    .tp_clear = (inquiry)call_clear,
    .tp_finalize = (destructor)call_finalize,
    .tp_as_async = &call_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)call_iternext,
    .tp_methods = call_methods,
};

/* ------------------------------------------------------------------------ */
/* PerfpulseMiddleware.                                                     */

typedef struct {
    PyObject_HEAD
    PyObject *app;
    vectorcallfunc vectorcall;
} Middleware;

static PyObject *
middleware_vectorcall(Middleware *self, PyObject *const *args, size_t nargsf,
                      PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 3 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0)) {
        PyErr_SetString(PyExc_TypeError,
                        "an ASGI application takes three arguments: scope, receive, send");
        return NULL;
    }
    if (!ready()) {
        return NULL;
    }
    PyObject *scope = args[0];
    PyObject *kind = item(scope, s_type);
    if (kind == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, s_type);
        }
        return NULL;
    }
    int http = same_str(kind, s_http, &learned_http);
    Py_DECREF(kind);
    PyObject *config = PyDict_GetItemWithError(request_ns, s_active);
    if (config == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (config == NULL || config == Py_None || !http) {
        return PyObject_Vectorcall(self->app, args, 3, NULL); /* passed through */
    }
    Call *call = PyObject_GC_New(Call, &CallType);
    if (call == NULL) {
        return NULL;
    }
    call->app = Py_NewRef(self->app);
    call->scope = Py_NewRef(scope);
    call->receive = Py_NewRef(args[1]);
    call->downstream = Py_NewRef(args[2]);
    call->rs = call->inner = call->token = call->length = NULL;
    call->started = call->sent = 0;
    call->status = 0;
    call->state = NEW;
    PyObject_GC_Track(call);
    return (PyObject *)call;
}

static int
middleware_init(Middleware *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"app", NULL};
    PyObject *app;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:PerfpulseMiddleware", keywords, &app)) {
        return -1;
    }
    Py_XSETREF(self->app, Py_NewRef(app));
    self->vectorcall = (vectorcallfunc)middleware_vectorcall;
    return 0;
}

static PyObject *
middleware_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Middleware *self = (Middleware *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->vectorcall = (vectorcallfunc)middleware_vectorcall;
    }
    return (PyObject *)self;
}

static int
middleware_traverse(Middleware *self, visitproc visit, void *arg)
{
    Py_VISIT(self->app);
    return 0;
}

static int
middleware_clear(Middleware *self)
{
    Py_CLEAR(self->app);
    return 0;
}

static void
middleware_dealloc(Middleware *self)
{
    PyObject_GC_UnTrack(self);
    middleware_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
middleware_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0) {
        PyErr_SetString(PyExc_TypeError,
                        "an ASGI application takes three arguments: scope, receive, send");
        return NULL;
    }
    return middleware_vectorcall((Middleware *)self, &PyTuple_GET_ITEM(args, 0),
                                 (size_t)PyTuple_GET_SIZE(args), NULL);
}

static PyMemberDef middleware_members[] = {
    {"app", T_OBJECT_EX, offsetof(Middleware, app), 0, "The wrapped ASGI application."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject MiddlewareType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "perfpulse.agent._speedups.Middleware",
    .tp_doc = "Middleware(app)\n--\n\n"
              "The compiled base of perfpulse.agent.asgi.PerfpulseMiddleware.",
    .tp_basicsize = sizeof(Middleware),
    .tp_vectorcall_offset = offsetof(Middleware, vectorcall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
                | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = middleware_new,
    .tp_init = (initproc)middleware_init,
    .tp_dealloc = (destructor)middleware_dealloc,
    .tp_traverse = (traverseproc)middleware_traverse,
    .tp_clear = (inquiry)middleware_clear,
    .tp_call = middleware_call,
    .tp_members = middleware_members,
};

/* ------------------------------------------------------------------------ */
/* setup() and the module.                                                  */

static PyObject *
setup(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"request_ns", "scope_ns", "begin", "finish", "route",
                               "failure", "http_event", "exchange", "contextvar",
                               "plain_routes", "unmatched", "threshold", NULL};
    PyObject *o[11];
    long threshold;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$O!O!OOOOOO!OO!Ul:setup", keywords,
                                     &PyDict_Type, &o[0], &PyDict_Type, &o[1], &o[2], &o[3],
                                     &o[4], &o[5], &o[6], &PyType_Type, &o[7], &o[8],
                                     &PyDict_Type, &o[9], &o[10], &threshold)) {
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)o[7];
    Py_ssize_t offsets[N_FIELDS];
    for (int f = 0; f < N_FIELDS; f++) {
        PyObject *descr = PyObject_GetAttrString(o[7], field_names[f]);
        if (descr != NULL && !Py_IS_TYPE(descr, &PyMemberDescr_Type) && type->tp_base != NULL) {
            /* a property in front of the base's slot (the lazy ids) */
            Py_SETREF(descr, PyObject_GetAttrString((PyObject *)type->tp_base, field_names[f]));
        }
        if (descr == NULL) {
            return NULL;
        }
        int is_slot = Py_IS_TYPE(descr, &PyMemberDescr_Type)
                      && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        offsets[f] = is_slot ? ((PyMemberDescrObject *)descr)->d_member->offset : -1;
        Py_DECREF(descr);
        if (!is_slot) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, field_names[f]);
            return NULL;
        }
    }
    memcpy(field_offset, offsets, sizeof offsets);
    Py_XSETREF(request_ns, Py_NewRef(o[0]));
    Py_XSETREF(scope_ns, Py_NewRef(o[1]));
    Py_XSETREF(begin_fn, Py_NewRef(o[2]));
    Py_XSETREF(finish_fn, Py_NewRef(o[3]));
    Py_XSETREF(route_fn, Py_NewRef(o[4]));
    Py_XSETREF(failure_fn, Py_NewRef(o[5]));
    Py_XSETREF(http_event, Py_NewRef(o[6]));
    Py_XSETREF(exchange, (PyTypeObject *)Py_NewRef(o[7]));
    Py_XSETREF(contextvar, Py_NewRef(o[8]));
    Py_XSETREF(plain_routes, Py_NewRef(o[9]));
    Py_XSETREF(unmatched, Py_NewRef(o[10]));
    threshold_default = threshold;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"setup", (PyCFunction)(void (*)(void))setup, METH_VARARGS | METH_KEYWORDS,
     "Hand over the Python objects the fast path shares (perfpulse.agent.asgi does)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "perfpulse.agent._speedups",
    .m_doc = "The ASGI middleware's per-request path, compiled (see perfpulse.agent.asgi).",
    .m_size = -1,
    .m_methods = module_methods,
};

#define INTERN(var, text)                                                                     \
    if ((var = PyUnicode_InternFromString(text)) == NULL) {                                   \
        return NULL;                                                                           \
    }

PyMODINIT_FUNC
PyInit__speedups(void)
{
    INTERN(s_type, "type");
    INTERN(s_headers, "headers");
    INTERN(s_http, "http");
    INTERN(s_body_type, "http.response.body");
    INTERN(s_start_type, "http.response.start");
    INTERN(s_body, "body");
    INTERN(s_status, "status");
    INTERN(s_route, "route");
    INTERN(s_app_root_path, "app_root_path");
    INTERN(s_method, "method");
    INTERN(s_active, "active");
    INTERN(s_request_sink, "request_sink");
    INTERN(s_ids, "_ids");
    INTERN(s_salt, "_salt");
    INTERN(s_request_id, "request_id");
    INTERN(s_trace_prefix, "_trace_prefix");
    INTERN(s_sample_rate, "sample_rate");
    INTERN(s_threshold, "n_plus_one_threshold");
    INTERN(s_throw, "throw");
    INTERN(s_close, "close");
    INTERN(s_asgi_finish, "asgi.finish");
    if ((zero_float = PyFloat_FromDouble(0.0)) == NULL) {
        return NULL;
    }
    if ((finish_kwnames = Py_BuildValue("(ss)", "request_bytes", "response_bytes")) == NULL) {
        return NULL;
    }
    if (PyType_Ready(&CallType) < 0 || PyType_Ready(&MiddlewareType) < 0
        || PyType_Ready(&RequestLogType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Middleware", (PyObject *)&MiddlewareType) < 0
        || PyModule_AddObjectRef(module, "Call", (PyObject *)&CallType) < 0
        || PyModule_AddObjectRef(module, "RequestLog", (PyObject *)&RequestLogType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
