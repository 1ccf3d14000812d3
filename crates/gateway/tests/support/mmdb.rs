//! A tiny MaxMind DB writer for tests: an IPv4 country database with a few networks, in the
//! documented format (a binary search tree of 24-bit records, 16 zero bytes, a data section
//! of `{"country": {"iso_code": ...}}` maps, then the metadata marker and map), so that the
//! geo phase is tested against the real `maxminddb` reader without shipping a binary file.

use std::net::Ipv4Addr;

#[derive(Clone, Copy)]
enum Record {
    Empty,
    Node(usize),
    Data(usize),
}

/// A database mapping each `(network, prefix length)` to its country code.
pub fn country_db(networks: &[(Ipv4Addr, u8, &str)]) -> Vec<u8> {
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty; 2]];
    let mut data = Vec::new();
    for (network, prefix, country) in networks {
        let offset = data.len();
        encode_country(&mut data, country);
        let bits = u32::from(*network);
        let mut node = 0;
        for depth in 0..*prefix {
            let bit = usize::from(bits >> (31 - depth) & 1 == 1);
            if depth + 1 == *prefix {
                nodes[node][bit] = Record::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Record::Node(next) => next,
                    _ => {
                        nodes.push([Record::Empty; 2]);
                        let next = nodes.len() - 1;
                        nodes[node][bit] = Record::Node(next);
                        next
                    }
                };
            }
        }
    }
    let node_count = nodes.len();
    let mut out = Vec::new();
    for pair in &nodes {
        for record in pair {
            let value = match *record {
                Record::Empty => node_count,
                Record::Node(n) => n,
                Record::Data(offset) => node_count + 16 + offset,
            };
            let value = u32::try_from(value).expect("24-bit record");
            out.extend_from_slice(&value.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    map_header(&mut out, 9);
    string(&mut out, "node_count");
    uint(&mut out, 6, u64::try_from(node_count).expect("node count"));
    string(&mut out, "record_size");
    uint(&mut out, 5, 24);
    string(&mut out, "ip_version");
    uint(&mut out, 5, 4);
    string(&mut out, "database_type");
    string(&mut out, "Rollgate-Test-Country");
    string(&mut out, "languages");
    out.extend_from_slice(&[0, 11 - 7]); // empty array (extended type 11)
    string(&mut out, "binary_format_major_version");
    uint(&mut out, 5, 2);
    string(&mut out, "binary_format_minor_version");
    uint(&mut out, 5, 0);
    string(&mut out, "build_epoch");
    out.extend_from_slice(&[0, 9 - 7]); // uint64 zero (extended type 9, no bytes)
    string(&mut out, "description");
    map_header(&mut out, 0);
    out
}

fn encode_country(out: &mut Vec<u8>, iso: &str) {
    map_header(out, 1);
    string(out, "country");
    map_header(out, 1);
    string(out, "iso_code");
    string(out, iso);
}

fn map_header(out: &mut Vec<u8>, entries: u8) {
    assert!(entries < 29);
    out.push(7 << 5 | entries);
}

fn string(out: &mut Vec<u8>, s: &str) {
    let len = u8::try_from(s.len()).expect("short string");
    assert!(len < 29);
    out.push(2 << 5 | len);
    out.extend_from_slice(s.as_bytes());
}

/// An unsigned integer of type 5 (uint16) or 6 (uint32), in as few bytes as it needs.
fn uint(out: &mut Vec<u8>, kind: u8, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let payload = &bytes[skip..];
    out.push(kind << 5 | u8::try_from(payload.len()).expect("size"));
    out.extend_from_slice(payload);
}
