//! What ICMPv4, ICMPv6 and NDP messages share, written once: the type, code and checksum every
//! ICMP message starts with ([`icmp_head!`]), the second word of the 8-byte ICMPv4/ICMPv6
//! header and the payload after it ([`icmp_header!`]), and the ICMPv6 checksum over the
//! pseudo-header ([`icmpv6_checksum!`]).

/// Offsets of the fields ICMP messages share.
pub(crate) mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    /// The rest-of-header word (ICMPv6's message body): echo identifier, then sequence number,
    /// next-hop MTU or pointer; unused (0) for the other errors.
    pub const REST: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
}

/// Length of the ICMPv4 and ICMPv6 header (type, code, checksum, 4 bytes of rest-of-header).
pub const HEADER_LEN: usize = 8;

/// Adds to view `$name` the type, code and checksum of an ICMP message (v4, v6, NDP).
macro_rules! icmp_head {
    ($name:ident) => {
        $crate::wire::view::fields! { $name:
            /// Message type.
            msg_type, set_msg_type: u8 = $crate::wire::icmp::field::TYPE;
            /// Message code.
            code, set_code: u8 = $crate::wire::icmp::field::CODE;
            /// Checksum field.
            checksum, set_checksum: u16 = $crate::wire::icmp::field::CHECKSUM;
        }
    };
}
pub(crate) use icmp_head;

/// Adds to view `$name` the whole 8-byte ICMPv4/ICMPv6 header: [`icmp_head!`], the echo
/// identifier and sequence number, the rest-of-header word whatever the type, and the payload.
macro_rules! icmp_header {
    ($name:ident) => {
        $crate::wire::icmp::icmp_head!($name);

        $crate::wire::view::fields! { $name:
            /// Echo identifier (bytes 4..6); NAT maps it like a port.
            echo_ident, set_echo_ident: u16 = $crate::wire::icmp::field::ECHO_IDENT;
            /// Echo sequence number (bytes 6..8).
            echo_seq, set_echo_seq: u16 = $crate::wire::icmp::field::ECHO_SEQ;
            /// The rest-of-header word (bytes 4..8), whatever the type: 0 for most errors.
            rest_of_header, set_rest_of_header: u32 = $crate::wire::icmp::field::REST;
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Bytes after the 8-byte header: the echo data, or the quoted datagram of an error.
            #[inline]
            pub fn payload(&self) -> &[u8] {
                &self.buffer.as_ref()[$crate::wire::icmp::HEADER_LEN..]
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Mutable access to the bytes after the header.
            #[inline]
            pub fn payload_mut(&mut self) -> &mut [u8] {
                &mut self.buffer.as_mut()[$crate::wire::icmp::HEADER_LEN..]
            }
        }
    };
}
pub(crate) use icmp_header;

/// Adds to view `$name` (an ICMPv6 message, NDP included) the checksum over the IPv6
/// pseudo-header of `src` -> `dst` and the whole message.
macro_rules! icmpv6_checksum {
    ($name:ident) => {
        impl<T: AsRef<[u8]>> $name<T> {
            /// True when the checksum over the pseudo-header of `src` -> `dst` and the whole
            /// message is correct.
            #[inline]
            pub fn verify_checksum(
                &self,
                src: std::net::Ipv6Addr,
                dst: std::net::Ipv6Addr,
            ) -> bool {
                $crate::wire::icmpv6::message_sum(self.buffer.as_ref(), src, dst) == 0xffff
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Recomputes the checksum over the pseudo-header of `src` -> `dst` and the whole
            /// message.
            #[inline]
            pub fn fill_checksum(&mut self, src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr) {
                self.set_checksum(0);
                let c = !$crate::wire::icmpv6::message_sum(self.buffer.as_ref(), src, dst);
                self.set_checksum(c);
            }
        }
    };
}
pub(crate) use icmpv6_checksum;
