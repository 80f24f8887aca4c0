//! Checking what C passes in: NULL pointers, strings that are not UTF-8, out-pointers.
//! Every failure names the argument.

use crate::status::Failure;
use std::ffi::{c_char, c_void, CStr};

/// Borrows a NUL-terminated UTF-8 string.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid and unchanged for
/// `'a`.
pub(crate) unsafe fn text<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::argument(name, "is NULL"));
    }
    // SAFETY: not NULL, and the caller guarantees a NUL-terminated string living for 'a.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str()
        .map_err(|e| Failure::argument(name, &format!("is not UTF-8 ({e})")))
}

/// Borrows `len` bytes; NULL is accepted only with `len == 0`.
///
/// # Safety
/// `ptr` is NULL or points to `len` readable bytes that stay valid and unchanged for `'a`.
pub(crate) unsafe fn bytes<'a>(
    ptr: *const c_void,
    len: usize,
    name: &str,
) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Failure::argument(name, "is NULL with a non-zero length"))
        };
    }
    if len > isize::MAX as usize {
        return Err(Failure::argument(name, "length exceeds isize::MAX"));
    }
    // SAFETY: not NULL, length within isize::MAX, and the caller guarantees `len` readable
    // bytes living for 'a.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// Borrows `count` values of `T` (an array the caller allocated); NULL is accepted only
/// with `count == 0`.
///
/// # Safety
/// `ptr` is NULL or points to `count` readable, initialised `T`s that stay valid and
/// unchanged for `'a`.
pub(crate) unsafe fn slice<'a, T>(
    ptr: *const T,
    count: usize,
    name: &str,
) -> Result<&'a [T], Failure> {
    let Some(len) = count.checked_mul(std::mem::size_of::<T>()) else {
        return Err(Failure::argument(name, "count is too large"));
    };
    // SAFETY: NULL with 0, or `count` readable T's, which is `len` readable bytes (caller).
    unsafe { bytes(ptr.cast(), len, name) }?;
    if count == 0 {
        return Ok(&[]);
    }
    // SAFETY: `count` readable, initialised T's at `ptr` (caller), not NULL (checked by
    // `bytes`), allocated by the caller as T's, so aligned for them.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
}

/// Borrows a handle mutably.
///
/// # Safety
/// `ptr` is NULL or a handle this library created and has not freed, used by no other
/// thread during `'a`.
pub(crate) unsafe fn handle<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: the caller guarantees a live, unshared handle when not NULL.
    unsafe { ptr.as_mut() }.ok_or_else(|| Failure::argument(name, "is NULL"))
}

/// Borrows a caller's value read-only.
///
/// # Safety
/// `ptr` is NULL or points to a valid, initialised `T` for `'a`.
pub(crate) unsafe fn value<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller guarantees a valid `T` when not NULL.
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::argument(name, "is NULL"))
}

/// Checks an out-pointer before anything is done, so a call with a NULL one changes nothing.
pub(crate) fn out<T>(ptr: *mut T, name: &str) -> Result<*mut T, Failure> {
    if ptr.is_null() {
        Err(Failure::argument(name, "is NULL"))
    } else {
        Ok(ptr)
    }
}
