//! A sans-IO view of DNS messages (RFC 1035): just enough to read a query's header and question,
//! read the answers of a reply, and build the replies the embedded resolver gives itself. Every
//! read is bounds-checked and every loop is bounded, so any input gives a value or a
//! [`WireError`], never a panic.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Length of the fixed DNS header.
pub const HEADER_LEN: usize = 12;
/// Longest name on the wire (RFC 1035 2.3.4), root byte included.
pub const MAX_NAME_LEN: usize = 255;
/// Longest label (RFC 1035 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Largest UDP reply to a client that did not announce a larger buffer (RFC 1035 4.2.1).
pub const UDP_REPLY_MAX: usize = 512;
/// Most compression pointers followed in one name; real names need a handful.
const MAX_POINTERS: usize = 32;

/// Record type A (an IPv4 address).
pub const TYPE_A: u16 = 1;
/// Record type PTR (a reverse-lookup name).
pub const TYPE_PTR: u16 = 12;
/// Record type AAAA (an IPv6 address).
pub const TYPE_AAAA: u16 = 28;
/// Query type ANY.
pub const TYPE_ANY: u16 = 255;
/// Class IN (internet).
pub const CLASS_IN: u16 = 1;

const FLAG_QR: u16 = 0x8000;
const MASK_OPCODE: u16 = 0x7800;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;

/// Why bytes are not a DNS message this module can read, or a name cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message ends inside a header, name or record.
    #[error("message is truncated")]
    Truncated,
    /// A label type other than a plain label or a compression pointer (EDNS0 extended labels).
    #[error("label type {0:#04x} is not supported")]
    BadLabelType(u8),
    /// A name longer than 255 bytes on the wire.
    #[error("name is longer than 255 bytes")]
    NameTooLong,
    /// A compression pointer that does not point backwards, or too many of them.
    #[error("bad compression pointer")]
    BadPointer,
    /// More than one question (no server answers those).
    #[error("message has {0} questions")]
    QuestionCount(u16),
    /// A label longer than 63 bytes in a name to encode.
    #[error("label is longer than 63 bytes")]
    LabelTooLong,
    /// An empty label (`a..b`) in a name to encode.
    #[error("name has an empty label")]
    EmptyLabel,
}

/// Response codes the resolver sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Rcode {
    /// Success (possibly with no records: "no data").
    NoError = 0,
    /// The query could not be read.
    FormErr = 1,
    /// The upstream resolvers did not answer.
    ServFail = 2,
    /// The name does not exist.
    NxDomain = 3,
    /// An opcode other than QUERY.
    NotImp = 4,
}

/// The fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Transaction id, copied into the reply.
    pub id: u16,
    /// QR, opcode, AA, TC, RD, RA, Z and rcode bits.
    pub flags: u16,
    /// Number of questions.
    pub qdcount: u16,
    /// Number of answer records.
    pub ancount: u16,
    /// Number of authority records.
    pub nscount: u16,
    /// Number of additional records.
    pub arcount: u16,
}

fn be16(buf: &[u8], at: usize) -> Result<u16, WireError> {
    match buf.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(WireError::Truncated),
    }
}

fn be32(buf: &[u8], at: usize) -> Result<u32, WireError> {
    Ok(u32::from(be16(buf, at)?) << 16 | u32::from(be16(buf, at + 2)?))
}

impl Header {
    /// Reads the header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Header, WireError> {
        Ok(Header {
            id: be16(buf, 0)?,
            flags: be16(buf, 2)?,
            qdcount: be16(buf, 4)?,
            ancount: be16(buf, 6)?,
            nscount: be16(buf, 8)?,
            arcount: be16(buf, 10)?,
        })
    }

    /// True for a reply, false for a query.
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }

    /// The opcode (0 = standard query).
    pub fn opcode(&self) -> u8 {
        ((self.flags & MASK_OPCODE) >> 11) as u8
    }

    /// The response code (low 4 bits).
    pub fn rcode(&self) -> u8 {
        (self.flags & 0x000f) as u8
    }

    /// True when the reply was cut to fit (the client should retry over TCP).
    pub fn truncated(&self) -> bool {
        self.flags & FLAG_TC != 0
    }

    /// True when the server claims authority for the answer.
    pub fn authoritative(&self) -> bool {
        self.flags & FLAG_AA != 0
    }
}

/// Appends one label in presentation form: lowercase letters, digits, `-` and `_` as they are,
/// every other byte as `\DDD`, so that a label holding a `.` can never match a dotted name.
fn push_label(out: &mut String, label: &[u8]) {
    for &b in label {
        let c = b.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
            out.push(char::from(c));
        } else {
            let _ = write!(out, "\\{b:03}");
        }
    }
}

/// Reads the name at `at` of the message `buf`: its lowercase presentation form without the
/// trailing dot (the root is ""), and where the name ends in `buf` (after its first pointer, if
/// compressed). Pointers must go backwards and not into the header.
pub fn read_name(buf: &[u8], at: usize) -> Result<(String, usize), WireError> {
    let mut name = String::new();
    let mut pos = at;
    let mut end = None;
    let mut wire_len = 1;
    let mut pointers = 0;
    loop {
        let len = *buf.get(pos).ok_or(WireError::Truncated)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                return Ok((name, end.unwrap_or(pos + 1)));
            }
            0x00 => {
                let n = usize::from(len);
                let label = buf.get(pos + 1..pos + 1 + n).ok_or(WireError::Truncated)?;
                wire_len += n + 1;
                if wire_len > MAX_NAME_LEN {
                    return Err(WireError::NameTooLong);
                }
                if !name.is_empty() {
                    name.push('.');
                }
                push_label(&mut name, label);
                pos += n + 1;
            }
            0xc0 => {
                let target = usize::from(be16(buf, pos)? & 0x3fff);
                pointers += 1;
                if target >= pos || target < HEADER_LEN || pointers > MAX_POINTERS {
                    return Err(WireError::BadPointer);
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return Err(WireError::BadLabelType(len)),
        }
    }
}

/// Appends `name` (dotted, an optional trailing dot) in wire form.
pub fn encode_name(name: &str, out: &mut Vec<u8>) -> Result<(), WireError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let start = out.len();
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() {
                out.truncate(start);
                return Err(WireError::EmptyLabel);
            }
            let Ok(n) = u8::try_from(label.len()) else {
                out.truncate(start);
                return Err(WireError::LabelTooLong);
            };
            if usize::from(n) > MAX_LABEL_LEN {
                out.truncate(start);
                return Err(WireError::LabelTooLong);
            }
            out.push(n);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() - start > MAX_NAME_LEN {
        out.truncate(start);
        return Err(WireError::NameTooLong);
    }
    Ok(())
}

/// The question of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// Lowercase presentation form, no trailing dot.
    pub name: String,
    /// Query type (A, AAAA, PTR, ...).
    pub qtype: u16,
    /// Query class (IN).
    pub qclass: u16,
}

/// One resource record of a reply's answer section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Owner name, lowercase presentation form.
    pub name: String,
    /// Record type.
    pub rtype: u16,
    /// Record class.
    pub class: u16,
    /// Time to live in seconds.
    pub ttl: u32,
    /// The record's data as on the wire.
    pub data: Vec<u8>,
}

impl Record {
    /// The address of an A record.
    pub fn a(&self) -> Option<Ipv4Addr> {
        let b: [u8; 4] = self.data.as_slice().try_into().ok()?;
        (self.rtype == TYPE_A).then_some(Ipv4Addr::from(b))
    }

    /// The v6 address of an AAAA record.
    pub fn aaaa(&self) -> Option<Ipv6Addr> {
        let b: [u8; 16] = self.data.as_slice().try_into().ok()?;
        (self.rtype == TYPE_AAAA).then_some(Ipv6Addr::from(b))
    }
}

/// A parsed message: header, at most one question, and where the answers start.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    /// The header.
    pub header: Header,
    /// The question, if the message has one.
    pub question: Option<Question>,
    question_end: usize,
}

/// Parses a message's header and question.
pub fn parse(buf: &[u8]) -> Result<Message<'_>, WireError> {
    let header = Header::parse(buf)?;
    let (question, question_end) = match header.qdcount {
        0 => (None, HEADER_LEN),
        1 => {
            let (name, at) = read_name(buf, HEADER_LEN)?;
            let q = Question {
                name,
                qtype: be16(buf, at)?,
                qclass: be16(buf, at + 2)?,
            };
            (Some(q), at + 4)
        }
        n => return Err(WireError::QuestionCount(n)),
    };
    Ok(Message {
        buf,
        header,
        question,
        question_end,
    })
}

impl Message<'_> {
    /// The answer section's records.
    pub fn answers(&self) -> Result<Vec<Record>, WireError> {
        let mut at = self.question_end;
        let mut out = Vec::new();
        for _ in 0..self.header.ancount {
            let (name, end) = read_name(self.buf, at)?;
            let len = usize::from(be16(self.buf, end + 8)?);
            let data = self
                .buf
                .get(end + 10..end + 10 + len)
                .ok_or(WireError::Truncated)?;
            out.push(Record {
                name,
                rtype: be16(self.buf, end)?,
                class: be16(self.buf, end + 2)?,
                ttl: be32(self.buf, end + 4)?,
                data: data.to_vec(),
            });
            at = end + 10 + len;
        }
        Ok(out)
    }

    /// The header and question bytes as they came, for replies that echo the question.
    fn head(&self) -> &[u8] {
        self.buf.get(..self.question_end).unwrap_or(&[])
    }
}

/// A record the resolver answers with; its owner is the question's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// An address (A).
    A(Ipv4Addr),
    /// A v6 address (AAAA).
    Aaaa(Ipv6Addr),
    /// A reverse-lookup name (PTR), dotted.
    Ptr(&'a str),
}

/// Writes into `out` the reply to `query`: its id, opcode, RD bit and question, `rcode`, and
/// the `answers` that fit in `max_len` bytes (TC set when some did not). Answers are
/// authoritative; recursion is available (unknown names are forwarded).
pub fn reply(
    query: &Message<'_>,
    rcode: Rcode,
    answers: &[Answer<'_>],
    ttl: u32,
    max_len: usize,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(query.head());
    let flags =
        FLAG_QR | (query.header.flags & (MASK_OPCODE | FLAG_RD)) | FLAG_AA | FLAG_RA | rcode as u16;
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[6..12].fill(0);
    let mut count: u16 = 0;
    let mut rdata = Vec::new();
    for a in answers {
        rdata.clear();
        let rtype = match a {
            Answer::A(ip) => {
                rdata.extend_from_slice(&ip.octets());
                TYPE_A
            }
            Answer::Aaaa(ip) => {
                rdata.extend_from_slice(&ip.octets());
                TYPE_AAAA
            }
            Answer::Ptr(name) => {
                if encode_name(name, &mut rdata).is_err() {
                    continue;
                }
                TYPE_PTR
            }
        };
        if out.len() + 12 + rdata.len() > max_len || count == u16::MAX {
            let f = flags | FLAG_TC;
            out[2..4].copy_from_slice(&f.to_be_bytes());
            break;
        }
        out.extend_from_slice(&[0xc0, HEADER_LEN as u8]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
        count += 1;
    }
    out[6..8].copy_from_slice(&count.to_be_bytes());
}

/// Writes into `out` a header-only FORMERR reply to a query whose header could be read but
/// whose question could not; None when `query` has no header or is itself a reply.
pub fn format_error(query: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let h = Header::parse(query).ok()?;
    if h.is_response() {
        return None;
    }
    let flags = FLAG_QR | (h.flags & (MASK_OPCODE | FLAG_RD)) | FLAG_RA | Rcode::FormErr as u16;
    out.clear();
    out.extend_from_slice(&h.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    Some(())
}

/// Writes into `out` a recursive query for `name` of type `qtype` (what a stub resolver
/// sends; the tests and health checks use it).
pub fn build_query(id: u16, name: &str, qtype: u16, out: &mut Vec<u8>) -> Result<(), WireError> {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&FLAG_RD.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    encode_name(name, out)?;
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = Vec::new();
        build_query(0x1234, name, qtype, &mut q).unwrap();
        q
    }

    #[test]
    fn query_parses() {
        let q = query("Web.Example.", TYPE_A);
        let m = parse(&q).unwrap();
        assert_eq!(m.header.id, 0x1234);
        assert!(!m.header.is_response());
        assert_eq!(m.header.opcode(), 0);
        let qu = m.question.unwrap();
        assert_eq!(qu.name, "web.example");
        assert_eq!((qu.qtype, qu.qclass), (TYPE_A, CLASS_IN));
    }

    #[test]
    fn odd_bytes_are_escaped() {
        let mut q = query("ab", TYPE_A);
        q[13] = b'.';
        assert_eq!(parse(&q).unwrap().question.unwrap().name, "\\046b");
    }

    #[test]
    fn compressed_names_are_followed() {
        // "web" at 12, then a name "x" + pointer to 12 at 17.
        let mut b = vec![0u8; 12];
        b.extend_from_slice(&[3, b'w', b'e', b'b', 0, 1, b'x', 0xc0, 12]);
        assert_eq!(read_name(&b, 12).unwrap(), ("web".to_string(), 17));
        assert_eq!(read_name(&b, 17).unwrap(), ("x.web".to_string(), 21));
    }

    #[test]
    fn pointer_loops_are_refused() {
        let mut b = vec![0u8; 12];
        b.extend_from_slice(&[0xc0, 12]);
        assert_eq!(read_name(&b, 12), Err(WireError::BadPointer));
        let mut b = vec![0u8; 12];
        b.extend_from_slice(&[1, b'a', 0xc0, 12]);
        assert_eq!(read_name(&b, 12), Err(WireError::BadPointer));
        let mut b = vec![0u8; 12];
        b.extend_from_slice(&[0xc0, 2]);
        assert_eq!(
            read_name(&b, 12),
            Err(WireError::BadPointer),
            "into the header"
        );
        let mut b = vec![0u8; 12];
        b.extend_from_slice(&[0x40]);
        assert_eq!(read_name(&b, 12), Err(WireError::BadLabelType(0x40)));
    }

    #[test]
    fn long_names_are_refused() {
        let label = "a".repeat(63);
        let ok = [label.as_str(); 3].join(".");
        assert!(encode_name(&ok, &mut Vec::new()).is_ok());
        let long = [label.as_str(); 4].join(".");
        assert_eq!(
            encode_name(&long, &mut Vec::new()),
            Err(WireError::NameTooLong)
        );
        assert_eq!(
            encode_name(&"a".repeat(64), &mut Vec::new()),
            Err(WireError::LabelTooLong)
        );
        assert_eq!(
            encode_name("a..b", &mut Vec::new()),
            Err(WireError::EmptyLabel)
        );
        let mut root = Vec::new();
        encode_name(".", &mut root).unwrap();
        assert_eq!(root, [0]);
    }

    #[test]
    fn a_reply_has_question_and_answers() {
        let q = query("web", TYPE_A);
        let m = parse(&q).unwrap();
        let mut out = Vec::new();
        let ips = [
            Answer::A(Ipv4Addr::new(10, 0, 0, 2)),
            Answer::A(Ipv4Addr::new(10, 0, 0, 3)),
        ];
        reply(&m, Rcode::NoError, &ips, 600, UDP_REPLY_MAX, &mut out);
        let r = parse(&out).unwrap();
        assert!(r.header.is_response() && r.header.authoritative());
        assert_eq!(r.header.id, 0x1234);
        assert_eq!(r.header.rcode(), 0);
        assert_eq!(r.header.flags & FLAG_RD, FLAG_RD);
        assert_eq!(r.question, m.question);
        let ans = r.answers().unwrap();
        assert_eq!(ans.len(), 2);
        assert_eq!(ans[0].name, "web");
        assert_eq!(ans[0].ttl, 600);
        assert_eq!(ans[1].a(), Some(Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn too_many_answers_set_tc() {
        let q = query("web", TYPE_A);
        let m = parse(&q).unwrap();
        let ips: Vec<Answer> = (0..100u8)
            .map(|i| Answer::A(Ipv4Addr::new(10, 0, 0, i)))
            .collect();
        let mut out = Vec::new();
        reply(&m, Rcode::NoError, &ips, 600, UDP_REPLY_MAX, &mut out);
        assert!(out.len() <= UDP_REPLY_MAX);
        let r = parse(&out).unwrap();
        assert!(r.header.truncated());
        assert_eq!(r.answers().unwrap().len(), (UDP_REPLY_MAX - q.len()) / 16);
    }

    #[test]
    fn nxdomain_and_formerr() {
        let q = query("nope", TYPE_A);
        let mut out = Vec::new();
        reply(
            &parse(&q).unwrap(),
            Rcode::NxDomain,
            &[],
            0,
            UDP_REPLY_MAX,
            &mut out,
        );
        let r = parse(&out).unwrap();
        assert_eq!(r.header.rcode(), 3);
        assert_eq!(r.header.ancount, 0);
        format_error(&[0xab, 0xcd, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0], &mut out).unwrap();
        let h = Header::parse(&out).unwrap();
        assert_eq!((h.id, h.rcode(), h.qdcount), (0xabcd, 1, 0));
        assert!(
            format_error(&out.clone(), &mut out).is_none(),
            "replies get no reply"
        );
        assert!(format_error(&[1, 2, 3], &mut out).is_none());
    }

    #[test]
    fn replies_read_with_simple_dns() {
        let q = query("db.net1", TYPE_A);
        let m = parse(&q).unwrap();
        let mut out = Vec::new();
        reply(
            &m,
            Rcode::NoError,
            &[Answer::A(Ipv4Addr::new(172, 18, 0, 5))],
            600,
            UDP_REPLY_MAX,
            &mut out,
        );
        let p = simple_dns::Packet::parse(&out).unwrap();
        assert_eq!(p.id(), 0x1234);
        assert_eq!(p.questions[0].qname.to_string(), "db.net1");
        assert_eq!(p.answers.len(), 1);
        assert_eq!(p.answers[0].name.to_string(), "db.net1");
        match &p.answers[0].rdata {
            simple_dns::rdata::RData::A(a) => {
                assert_eq!(Ipv4Addr::from(a.address), Ipv4Addr::new(172, 18, 0, 5))
            }
            other => panic!("not an A record: {other:?}"),
        }
        reply(
            &m,
            Rcode::NoError,
            &[Answer::Ptr("db.net1")],
            600,
            UDP_REPLY_MAX,
            &mut out,
        );
        let p = simple_dns::Packet::parse(&out).unwrap();
        match &p.answers[0].rdata {
            simple_dns::rdata::RData::PTR(n) => assert_eq!(n.0.to_string(), "db.net1"),
            other => panic!("not a PTR record: {other:?}"),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(m) = parse(&b) {
                let _ = m.answers();
                let mut out = Vec::new();
                reply(&m, Rcode::NoError, &[Answer::A(Ipv4Addr::LOCALHOST), Answer::Ptr("x.y")], 1, UDP_REPLY_MAX, &mut out);
                prop_assert!(parse(&out).is_ok());
            }
            let _ = format_error(&b, &mut Vec::new());
            for at in 0..b.len().min(40) {
                let _ = read_name(&b, at);
            }
        }

        #[test]
        fn damaged_queries_never_panic(
            edits in proptest::collection::vec((0usize..40, any::<u8>()), 1..6),
            cut in 0usize..40,
        ) {
            let mut b = query("web.front.example", TYPE_A);
            for (at, v) in edits {
                if let Some(x) = b.get_mut(at) {
                    *x = v;
                }
            }
            b.truncate(b.len().saturating_sub(cut % 8));
            if let Ok(m) = parse(&b) {
                let _ = m.answers();
                let mut out = Vec::new();
                reply(&m, Rcode::NxDomain, &[Answer::A(Ipv4Addr::LOCALHOST)], 1, UDP_REPLY_MAX, &mut out);
                let r = parse(&out);
                prop_assert!(r.is_ok());
                prop_assert_eq!(r.map(|r| r.question), Ok(m.question.clone()));
            }
            let _ = format_error(&b, &mut Vec::new());
        }

        #[test]
        fn built_queries_round_trip(
            labels in proptest::collection::vec("[a-zA-Z0-9_-]{1,20}", 1..6),
            id in any::<u16>(),
            qtype in proptest::sample::select(vec![TYPE_A, TYPE_PTR, TYPE_AAAA, TYPE_ANY, 16, 33]),
        ) {
            let name = labels.join(".");
            let mut q = Vec::new();
            build_query(id, &name, qtype, &mut q).unwrap();
            let m = parse(&q).unwrap();
            prop_assert_eq!(m.header.id, id);
            let qu = m.question.unwrap();
            prop_assert_eq!(qu.name, name.to_ascii_lowercase());
            prop_assert_eq!(qu.qtype, qtype);
            let sd = simple_dns::Packet::parse(&q).unwrap();
            prop_assert_eq!(sd.questions[0].qname.to_string().to_ascii_lowercase(), name.to_ascii_lowercase());
        }
    }
}
