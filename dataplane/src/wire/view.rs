//! What every wire view has in common, written once: the struct over a buffer with its
//! constructors ([`view!`]), and the plain big-endian fields read and written at fixed
//! offsets ([`fields!`]). The macros expand to the same inlined loads and stores a view
//! would write by hand; a view's own logic (length rules, flags, checksums) stays in its file.

use std::net::Ipv4Addr;

use super::WireError;
use super::{read_4, read_mac, read_u16, read_u32, write_mac, write_u16, write_u32, MacAddr};

/// A value that lies in a header at a fixed offset, big-endian: what [`fields!`] reads and
/// writes. Views call it only on offsets their checked constructor guaranteed.
pub(crate) trait Field: Sized {
    /// Reads the value at `at`.
    fn read(b: &[u8], at: usize) -> Self;
    /// Writes the value at `at`.
    fn write(self, b: &mut [u8], at: usize);
}

/// Implements [`Field`] for `$ty` with the reader and the writer given.
macro_rules! field {
    ($ty:ty, $read:path, $write:path) => {
        impl Field for $ty {
            #[inline(always)]
            fn read(b: &[u8], at: usize) -> Self {
                $read(b, at)
            }
            #[inline(always)]
            fn write(self, b: &mut [u8], at: usize) {
                $write(b, at, self);
            }
        }
    };
}

field!(u8, read_u8, write_u8);
field!(u16, read_u16, write_u16);
field!(u32, read_u32, write_u32);
field!(MacAddr, read_mac, write_mac);
field!(Ipv4Addr, read_ipv4, write_ipv4);

#[inline(always)]
fn read_u8(b: &[u8], at: usize) -> u8 {
    b[at]
}

#[inline(always)]
fn write_u8(b: &mut [u8], at: usize, v: u8) {
    b[at] = v;
}

#[inline(always)]
fn read_ipv4(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::from(read_4(b, at))
}

#[inline(always)]
fn write_ipv4(b: &mut [u8], at: usize, ip: Ipv4Addr) {
    b[at..at + 4].copy_from_slice(&ip.octets());
}

/// `Ok` when `b` holds at least `len` bytes, else `Truncated(what)`: the whole check of the
/// views whose header has a fixed length.
#[inline(always)]
pub(crate) fn at_least(b: &[u8], len: usize, what: &'static str) -> Result<(), WireError> {
    if b.len() < len {
        return Err(WireError::Truncated(what));
    }
    Ok(())
}

/// `Ok` when the length `len` a header declares is at least `min` (else `Malformed(bad)`) and
/// ends inside `b` (else `Truncated(what)`): the second check of the views whose header says
/// how long it, or its packet, is.
#[inline(always)]
pub(crate) fn within(
    b: &[u8],
    len: usize,
    min: usize,
    (what, bad): (&'static str, &'static str),
) -> Result<(), WireError> {
    if len < min {
        return Err(WireError::Malformed(bad));
    }
    if len > b.len() {
        return Err(WireError::Truncated(what));
    }
    Ok(())
}

/// Declares the view `$name<T: AsRef<[u8]>>` over a buffer with `new_unchecked`, `into_inner`
/// and `new_checked`, which wraps the buffer only when `$check` (a function of the bytes to
/// `Result<(), WireError>`) accepts it. The doc comments given are the struct's and
/// `new_checked`'s.
macro_rules! view {
    (
        $(#[$doc:meta])*
        pub struct $name:ident;
        $(#[$checked_doc:meta])*
        checked by $check:expr;
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps `buffer` without any check; accessors may panic on a short buffer.
            #[inline(always)]
            pub fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            $(#[$checked_doc])*
            #[inline(always)]
            pub fn new_checked(buffer: T) -> Result<Self, $crate::wire::WireError> {
                ($check)(buffer.as_ref())?;
                Ok($name { buffer })
            }

            /// Gives the buffer back.
            #[inline(always)]
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }
    };
}
pub(crate) use view;

/// Adds to view `$name` a getter and a setter for each plain field: `get, set: Type = offset`
/// (a [`Field`] type at a fixed offset), the doc comments given being the getter's.
macro_rules! fields {
    ($name:ident: $($(#[$doc:meta])* $get:ident, $set:ident: $ty:ty = $at:expr;)+) => {
        impl<T: AsRef<[u8]>> $name<T> {
            $(
                $(#[$doc])*
                #[inline(always)]
                pub fn $get(&self) -> $ty {
                    <$ty as $crate::wire::view::Field>::read(self.buffer.as_ref(), $at)
                }
            )+
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            $(
                #[doc = concat!("Sets the field [`Self::", stringify!($get), "`] reads.")]
                #[inline(always)]
                pub fn $set(&mut self, value: $ty) {
                    $crate::wire::view::Field::write(value, self.buffer.as_mut(), $at);
                }
            )+
        }
    };
}
pub(crate) use fields;

/// Adds to view `$name` the source and destination ports TCP and UDP headers both start with.
macro_rules! ports {
    ($name:ident) => {
        $crate::wire::view::fields! { $name:
            /// Source port.
            src_port, set_src_port: u16 = 0;
            /// Destination port.
            dst_port, set_dst_port: u16 = 2;
        }
    };
}
pub(crate) use ports;
