//! The buffer exporter behind every payload memoryview: a small Python type, made with
//! `PyType_FromSpec` and the two buffer slots, that points at bytes in a ring (a held frame,
//! or a claim in the tx ring) and counts the buffers it exported.
//!
//! Why by hand: PyO3 offers `__getbuffer__` under the limited API only from Python 3.11,
//! while the wheel is abi3 from 3.9. CPython accepts `Py_bf_getbuffer` and
//! `Py_bf_releasebuffer` in a type spec since 3.9 (bpo-40724); only the limited headers
//! hid the slot numbers until 3.11. The `Py_buffer` layout and `PyBuffer_FillInfo`,
//! `PyObject_GetBuffer` and `PyBuffer_Release` are the same symbols in every CPython 3.
//!
//! The export count is what makes invalidation safe: a view is only invalidated (its
//! pointer dropped) when no buffer obtained from it is alive, so Python never keeps a
//! pointer into ring bytes the daemon may overwrite. The exporter also owns a clone of the
//! segment, so the mapping outlives every view of it.

use agentwire_shm::segment::Segment;
use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

/// `Py_buffer` as CPython lays it out (Include/pybuffer.h, unchanged since 3.3).
#[repr(C)]
pub(crate) struct PyBuffer {
    pub buf: *mut c_void,
    pub obj: *mut ffi::PyObject,
    pub len: ffi::Py_ssize_t,
    pub itemsize: ffi::Py_ssize_t,
    pub readonly: c_int,
    pub ndim: c_int,
    pub format: *mut c_char,
    pub shape: *mut ffi::Py_ssize_t,
    pub strides: *mut ffi::Py_ssize_t,
    pub suboffsets: *mut ffi::Py_ssize_t,
    pub internal: *mut c_void,
}

const PYBUF_SIMPLE: c_int = 0;
const PY_BF_GETBUFFER: c_int = 1;
const PY_BF_RELEASEBUFFER: c_int = 2;

extern "C" {
    fn PyBuffer_FillInfo(
        view: *mut PyBuffer,
        obj: *mut ffi::PyObject,
        buf: *mut c_void,
        len: ffi::Py_ssize_t,
        readonly: c_int,
        flags: c_int,
    ) -> c_int;
    fn PyObject_GetBuffer(obj: *mut ffi::PyObject, view: *mut PyBuffer, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut PyBuffer);
}

/// The exporter's instance layout.
#[repr(C)]
struct RawView {
    ob_base: ffi::PyObject,
    buf: *mut u8,
    len: ffi::Py_ssize_t,
    readonly: c_int,
    /// 0 once invalidated: no new buffer is handed out.
    valid: c_int,
    /// Buffers handed out and not yet released (only touched with the GIL held).
    exports: ffi::Py_ssize_t,
    /// A `Box<Segment>` keeping the mapping alive, or null.
    keep: *mut Segment,
}

static VIEW_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());

unsafe extern "C" fn view_getbuffer(
    obj: *mut ffi::PyObject,
    view: *mut PyBuffer,
    flags: c_int,
) -> c_int {
    let this = obj.cast::<RawView>();
    // SAFETY: CPython calls this slot with an instance of the view type, GIL held.
    unsafe {
        if (*this).valid == 0 {
            ffi::PyErr_SetString(
                ffi::PyExc_ValueError,
                c"agentwire: this message or claim was released; its payload is gone".as_ptr(),
            );
            return -1;
        }
        if PyBuffer_FillInfo(
            view,
            obj,
            (*this).buf.cast(),
            (*this).len,
            (*this).readonly,
            flags,
        ) != 0
        {
            return -1;
        }
        (*this).exports += 1;
    }
    0
}

unsafe extern "C" fn view_releasebuffer(obj: *mut ffi::PyObject, _view: *mut PyBuffer) {
    // SAFETY: called by CPython for a buffer this type exported, GIL held.
    unsafe { (*obj.cast::<RawView>()).exports -= 1 };
}

unsafe extern "C" fn view_dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: the last reference is gone (so no buffer is exported: each holds one); the
    // segment box was made by `new_view`; heap types free through their tp_free and drop
    // the reference each instance holds on its type.
    unsafe {
        let this = obj.cast::<RawView>();
        let keep = std::mem::replace(&mut (*this).keep, std::ptr::null_mut());
        if !keep.is_null() {
            drop(Box::from_raw(keep));
        }
        let tp = ffi::Py_TYPE(obj);
        let free = ffi::PyType_GetSlot(tp, ffi::Py_tp_free);
        let free: ffi::freefunc = std::mem::transmute(free);
        free(obj.cast());
        ffi::Py_DECREF(tp.cast());
    }
}

/// Creates the exporter type; called once at module init.
pub(crate) fn init_type(py: Python<'_>) -> PyResult<()> {
    if !VIEW_TYPE.load(Ordering::Acquire).is_null() {
        return Ok(());
    }
    let mut slots = [
        ffi::PyType_Slot {
            slot: PY_BF_GETBUFFER,
            pfunc: view_getbuffer as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: PY_BF_RELEASEBUFFER,
            pfunc: view_releasebuffer as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_dealloc,
            pfunc: view_dealloc as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: 0,
            pfunc: std::ptr::null_mut(),
        },
    ];
    let mut spec = ffi::PyType_Spec {
        name: c"agentwire._native.PayloadBuffer".as_ptr(),
        basicsize: std::mem::size_of::<RawView>() as c_int,
        itemsize: 0,
        flags: ffi::Py_TPFLAGS_DEFAULT as _,
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: the spec and slots are valid for the call (CPython copies what it keeps).
    let tp = unsafe { ffi::PyType_FromSpec(&mut spec) };
    if tp.is_null() {
        return Err(PyErr::fetch(py));
    }
    // The type lives as long as the process (one reference kept here on purpose).
    VIEW_TYPE.store(tp.cast(), Ordering::Release);
    Ok(())
}

/// A new exporter over `len` bytes at `buf`; `keep` is kept alive with it.
pub(crate) fn new_view<'py>(
    py: Python<'py>,
    buf: *mut u8,
    len: usize,
    readonly: bool,
    keep: Option<Segment>,
) -> PyResult<Bound<'py, PyAny>> {
    let tp = VIEW_TYPE.load(Ordering::Acquire);
    assert!(!tp.is_null(), "the module initialises the view type");
    // SAFETY: tp is a live heap type whose basicsize is RawView's; GenericAlloc zeroes the
    // instance and takes a reference on the type.
    unsafe {
        let obj = ffi::PyType_GenericAlloc(tp, 0);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        let this = obj.cast::<RawView>();
        (*this).buf = buf;
        (*this).len = len as ffi::Py_ssize_t;
        (*this).readonly = c_int::from(readonly);
        (*this).valid = 1;
        (*this).exports = 0;
        (*this).keep = keep.map_or(std::ptr::null_mut(), |s| Box::into_raw(Box::new(s)));
        Ok(Bound::from_owned_ptr(py, obj))
    }
}

fn raw(view: &Bound<'_, PyAny>) -> *mut RawView {
    debug_assert_eq!(
        view.get_type().as_ptr().cast::<ffi::PyTypeObject>(),
        VIEW_TYPE.load(Ordering::Relaxed)
    );
    view.as_ptr().cast()
}

/// Whether the view still hands out its bytes.
pub(crate) fn is_valid(view: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `view` is one of ours (every caller passes an object from `new_view`), GIL held.
    unsafe { (*raw(view)).valid != 0 }
}

/// The address of the bytes (0 once invalidated).
pub(crate) fn address(view: &Bound<'_, PyAny>) -> usize {
    // SAFETY: as in `is_valid`.
    unsafe { (*raw(view)).buf as usize }
}

/// Drops the pointer, or says how many buffers are still exported (then nothing changes).
pub(crate) fn invalidate(view: &Bound<'_, PyAny>) -> Result<(), isize> {
    // SAFETY: as in `is_valid`.
    unsafe {
        let this = raw(view);
        if (*this).exports > 0 {
            return Err((*this).exports);
        }
        (*this).valid = 0;
        (*this).buf = std::ptr::null_mut();
        (*this).len = 0;
    }
    Ok(())
}

/// A memoryview onto the exporter.
pub(crate) fn memoryview<'py>(view: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: PyMemoryView_FromObject takes a borrowed reference, returns a new one.
    unsafe {
        let mv = ffi::PyMemoryView_FromObject(view.as_ptr());
        if mv.is_null() {
            return Err(PyErr::fetch(view.py()));
        }
        Ok(Bound::from_owned_ptr(view.py(), mv))
    }
}

/// Calls `f` with the bytes of any object exporting a contiguous buffer (bytes, bytearray,
/// memoryview, array): no copy. `bytes` objects take the direct path.
pub(crate) fn with_bytes<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(b) = obj.cast::<pyo3::types::PyBytes>() {
        return Ok(f(b.as_bytes()));
    }
    let mut buffer = std::mem::MaybeUninit::<PyBuffer>::uninit();
    // SAFETY: PyObject_GetBuffer fills `buffer` on success; the bytes stay valid and
    // unmoved until PyBuffer_Release (the exporter is pinned while exported).
    unsafe {
        if PyObject_GetBuffer(obj.as_ptr(), buffer.as_mut_ptr(), PYBUF_SIMPLE) != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        let mut buffer = buffer.assume_init();
        let bytes = if buffer.len == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(buffer.buf.cast::<u8>(), buffer.len as usize)
        };
        let out = f(bytes);
        PyBuffer_Release(&mut buffer);
        Ok(out)
    }
}
