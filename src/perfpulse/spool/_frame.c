/* perfpulse.spool._frame: a group of spool records framed in one call.

   perfpulse.spool.file frames each record as

       magic b"PPS1" | payload length u32 | seq u64 | crc32(seq + payload) u32 | payload

   all little-endian, the CRC being zlib's CRC-32 of the seq's eight bytes
   followed by the payload. frame(payloads, seq) returns the records of
   payloads, numbered from seq, one after the other in one bytes object: what
   FileSpool's Python loop builds with struct and zlib.crc32 for each record
   (and still does when this module was not built). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#define HEADER 20

static void
put_le(unsigned char *out, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) {
        out[i] = (unsigned char)(v >> (8 * i));
    }
}

static PyObject *
frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "frame(payloads, seq) takes 2 arguments");
        return NULL;
    }
    PyObject *payloads = args[0];
    if (!PyList_Check(payloads)) {
        PyErr_SetString(PyExc_TypeError, "payloads must be a list of bytes");
        return NULL;
    }
    unsigned long long seq = PyLong_AsUnsignedLongLong(args[1]);
    if (seq == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(payloads), total = 0;
    if (n > 0 && seq > UINT64_MAX - (unsigned long long)(n - 1)) {
        PyErr_SetString(PyExc_OverflowError, "seq past 2**64 - 1");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyList_GET_ITEM(payloads, i);
        if (!PyBytes_CheckExact(p)) {
            PyErr_SetString(PyExc_TypeError, "payloads must be a list of bytes");
            return NULL;
        }
        Py_ssize_t size = PyBytes_GET_SIZE(p);
        if ((uint64_t)size > 0xFFFFFFFFu) {
            PyErr_SetString(PyExc_ValueError, "a spool record holds at most 4 GiB");
            return NULL;
        }
        if (total > PY_SSIZE_T_MAX - HEADER - size) {
            return PyErr_NoMemory();
        }
        total += HEADER + size;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        return NULL;
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++, seq++) {
        PyObject *p = PyList_GET_ITEM(payloads, i);
        const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(p);
        Py_ssize_t size = PyBytes_GET_SIZE(p);
        unsigned char seq_le[8];
        put_le(seq_le, seq, 8);
        uLong crc = crc32(0L, seq_le, 8);
        Py_ssize_t done = 0;
        while (done < size) { /* crc32() takes at most 4 GiB - 1 at a time */
            uInt chunk = size - done > (Py_ssize_t)0x40000000 ? 0x40000000u : (uInt)(size - done);
            crc = crc32(crc, data + done, chunk);
            done += chunk;
        }
        memcpy(o, "PPS1", 4);
        put_le(o + 4, (uint64_t)size, 4);
        memcpy(o + 8, seq_le, 8);
        put_le(o + 16, (uint64_t)crc, 4);
        if (size) {
            memcpy(o + HEADER, data, (size_t)size);
        }
        o += HEADER + size;
    }
    return out;
}

static PyMethodDef module_methods[] = {
    {"frame", (PyCFunction)(void (*)(void))frame, METH_FASTCALL,
     "frame(payloads, seq) -> bytes: the spool records of payloads, numbered from seq, "
     "one after the other."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "perfpulse.spool._frame",
    .m_doc = "A group of spool records framed in one call (see perfpulse.spool.file).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__frame(void)
{
    return PyModule_Create(&module_def);
}
