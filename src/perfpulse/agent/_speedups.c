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

   Only what every request does is here. Sampling below 1.0 and a `traceparent`
   header go through request.begin; errors and N+1 findings through
   request.finish; a route not seen before (or inside a Mount) through
   asgi.starlette_route. The ids come from request's own counter and salt, so
   they stay unique when the Python middlewares run in the same process. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

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
    F_CACHE_MISSES, F_QUERIES, F_ERROR, F_ASGI_SCOPE, N_FIELDS
};
static const char *field_names[N_FIELDS] = {
    "route", "request_id", "trace_id", "db_time_ms", "db_count", "cache_hits",
    "cache_misses", "queries", "error", "asgi_scope",
};
static Py_ssize_t field_offset[N_FIELDS]; /* of each slot in an _Exchange */

#define SLOT(obj, f) (*(PyObject **)((char *)(obj) + field_offset[f]))

static PyObject *s_sample_rate, *s_threshold;
static PyObject *s_type, *s_headers, *s_http, *s_body_type, *s_start_type, *s_body,
    *s_status, *s_route, *s_app_root_path, *s_method, *s_active, *s_request_sink,
    *s_ids, *s_block, *s_salt, *s_low, *s_trace_prefix, *s_throw, *s_close, *s_asgi_finish;

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

static inline int
same_str(PyObject *a, PyObject *interned)
{
    if (a == interned) {
        return 1;
    }
    return PyUnicode_CheckExact(a) && PyUnicode_Compare(a, interned) == 0;
}

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

/* A new _Exchange with the ids of the next request (request.begin, without
   sampling or traceparent: the caller checked), or NULL with an error. */
static PyObject *
new_exchange(void)
{
    PyObject *ids = PyDict_GetItemWithError(request_ns, s_ids);
    PyObject *block = PyDict_GetItemWithError(request_ns, s_block);
    PyObject *low = PyDict_GetItemWithError(request_ns, s_low);
    PyObject *prefix = PyDict_GetItemWithError(request_ns, s_trace_prefix);
    if (ids == NULL || block == NULL || low == NULL || prefix == NULL) {
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
    unsigned long long n = PyLong_AsUnsignedLongLong(number);
    Py_DECREF(number);
    if (n == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    unsigned long long high = n >> 8;
    if (!PyTuple_CheckExact(block) || PyTuple_GET_SIZE(block) != 2 || !PyTuple_CheckExact(low)
        || PyTuple_GET_SIZE(low) != 256) {
        PyErr_SetString(PyExc_RuntimeError, "request ids are not set up");
        return NULL;
    }
    long long known = PyLong_AsLongLong(PyTuple_GET_ITEM(block, 0));
    if (known == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *digits;
    if ((unsigned long long)known != high || known < 0) {
        PyObject *salt = PyDict_GetItemWithError(request_ns, s_salt);
        if (salt == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_RuntimeError, "request ids are not set up");
            }
            return NULL;
        }
        unsigned long long salt_value = PyLong_AsUnsignedLongLong(salt);
        if (salt_value == (unsigned long long)-1 && PyErr_Occurred()) {
            return NULL;
        }
        char text[32];
        snprintf(text, sizeof text, "%014llx", high ^ salt_value);
        PyObject *fresh = Py_BuildValue("(Ks)", high, text);
        if (fresh == NULL || PyDict_SetItem(request_ns, s_block, fresh) < 0) {
            Py_XDECREF(fresh);
            return NULL;
        }
        digits = Py_NewRef(PyTuple_GET_ITEM(fresh, 1));
        Py_DECREF(fresh);
    }
    else {
        digits = Py_NewRef(PyTuple_GET_ITEM(block, 1));
    }
    PyObject *request_id = PyUnicode_Concat(digits, PyTuple_GET_ITEM(low, n & 0xFF));
    Py_DECREF(digits);
    if (request_id == NULL) {
        return NULL;
    }
    PyObject *trace_id = PyUnicode_Concat(prefix, request_id);
    if (trace_id == NULL) {
        Py_DECREF(request_id);
        return NULL;
    }
    /* RequestScope.__init__(None, request_id, trace_id), slot by slot: a test
       compares the result with what the Python constructor makes */
    PyObject *rs = exchange->tp_alloc(exchange, 0);
    if (rs == NULL) {
        Py_DECREF(request_id);
        Py_DECREF(trace_id);
        return NULL;
    }
    SLOT(rs, F_ROUTE) = Py_NewRef(Py_None);
    SLOT(rs, F_REQUEST_ID) = request_id;
    SLOT(rs, F_TRACE_ID) = trace_id;
    SLOT(rs, F_DB_TIME_MS) = Py_NewRef(zero_float);
    PyObject *zero = PyLong_FromLong(0);
    SLOT(rs, F_DB_COUNT) = Py_NewRef(zero);
    SLOT(rs, F_CACHE_HITS) = Py_NewRef(zero);
    SLOT(rs, F_CACHE_MISSES) = zero;
    SLOT(rs, F_QUERIES) = Py_NewRef(Py_None);
    SLOT(rs, F_ERROR) = Py_NewRef(Py_None);
    return rs;
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
        if (!nested && matched != NULL) {
            PyObject *key = PyLong_FromVoidPtr(matched);
            if (key == NULL) {
                return NULL;
            }
            PyObject *known = PyDict_GetItemWithError(plain_routes, key);
            Py_DECREF(key);
            if (known != NULL && PyTuple_CheckExact(known) && PyTuple_GET_SIZE(known) == 2
                && PyTuple_GET_ITEM(known, 0) == matched) {
                return Py_NewRef(PyTuple_GET_ITEM(known, 1));
            }
            if (PyErr_Occurred()) {
                return NULL;
            }
        }
    }
    return PyObject_CallOneArg(route_fn, scope);
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
    PyObject *values[13] = {NULL};
    int n = 9;
    int ok = 0;
    PyObject *event = NULL;
    values[0] = PyFloat_FromDouble((double)(time_ns() - duration_ns) / 1e9);
    if (route == Py_None || PyUnicode_GET_LENGTH(route) == 0) {
        values[1] = Py_NewRef(unmatched);
    }
    else if (PyUnicode_GET_LENGTH(route) > 4096) {
        values[1] = PyUnicode_Substring(route, 0, 4096);
    }
    else {
        values[1] = Py_NewRef(route);
    }
    values[2] = PyUnicode_GET_LENGTH(method) > 16 ? PyUnicode_Substring(method, 0, 16)
                                                 : Py_NewRef(method);
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
    int body_type = same_str(kind, s_body_type);
    int start_type = !body_type && same_str(kind, s_start_type);
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
    int http = same_str(kind, s_http);
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
    INTERN(s_block, "_block");
    INTERN(s_salt, "_salt");
    INTERN(s_low, "_LOW");
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
    if (PyType_Ready(&CallType) < 0 || PyType_Ready(&MiddlewareType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Middleware", (PyObject *)&MiddlewareType) < 0
        || PyModule_AddObjectRef(module, "Call", (PyObject *)&CallType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
