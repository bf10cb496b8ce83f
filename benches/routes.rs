//! The shared listener's decision per connection: reading the host from
//! the first bytes and looking it up, with 10 and with 10,000 names in
//! the table (issue #26: no slower with 10,000).
//!
//! Cases (`routes/…`):
//! - `lookup_exact/{10,10000}`: an exact name, present
//! - `lookup_wildcard/{10,10000}`: a name only a `*.` entry takes
//! - `sniff_and_lookup/{10,10000}`: a curl-like request head read and
//!   routed, as the fast path does it
//! - `sniff_tls`: a 517-byte ClientHello's server name

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use faasd::api::host::HostName;
use faasd::dataplane::routes::Routes;
use faasd::dataplane::sniff::{sniff, Sniffed};

fn table(n: usize) -> Routes<u32> {
    let names: Vec<HostName> = (0..n)
        .map(|i| {
            let text = if i % 10 == 9 {
                format!("*.w{i}.example.com")
            } else {
                format!("h{i}.example.com")
            };
            HostName::parse(&text).expect("name")
        })
        .collect();
    Routes::build(names.iter().zip(0u32..), None)
}

fn routes(c: &mut Criterion) {
    let head = |i: usize| {
        format!("GET /index.html HTTP/1.1\r\nHost: h{i}.example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n")
    };
    for n in [10usize, 10_000] {
        let t = table(n);
        let exact = format!("h{}.example.com", n / 2);
        let wild = format!("api.w{}.example.com", n - 1);
        assert!(t.lookup(&exact).is_some() && t.lookup(&wild).is_some());
        c.bench_with_input(
            BenchmarkId::new("routes/lookup_exact", n),
            &exact,
            |b, name| b.iter(|| t.lookup(std::hint::black_box(name))),
        );
        c.bench_with_input(
            BenchmarkId::new("routes/lookup_wildcard", n),
            &wild,
            |b, name| b.iter(|| t.lookup(std::hint::black_box(name))),
        );
        let request = head(n / 2);
        c.bench_with_input(
            BenchmarkId::new("routes/sniff_and_lookup", n),
            &request,
            |b, req| {
                b.iter(|| match sniff(std::hint::black_box(req.as_bytes())).1 {
                    Sniffed::Name(name) => t.lookup(&name).copied(),
                    _ => None,
                })
            },
        );
    }
    let hello = client_hello("h5.example.com");
    c.bench_function("routes/sniff_tls", |b| {
        b.iter(|| sniff(std::hint::black_box(&hello)))
    });
}

/// A ClientHello of the usual size: a server name, key shares and
/// padding as a browser sends them, in one record.
fn client_hello(name: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    let n = name.len() as u16;
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&(n + 5).to_be_bytes());
    ext.extend_from_slice(&(n + 3).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&n.to_be_bytes());
    ext.extend_from_slice(name.as_bytes());
    ext.extend_from_slice(&[0, 51, 0, 38, 0, 36, 0, 29, 0, 32]);
    ext.extend([9u8; 32]);
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.push(32);
    body.extend([1u8; 32]);
    body.extend_from_slice(&[0, 6, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 1, 0]);
    let pad = 508usize.saturating_sub(body.len() + 2 + ext.len() + 4 + 4);
    ext.extend_from_slice(&[0, 21]);
    ext.extend_from_slice(&(pad as u16).to_be_bytes());
    ext.extend(std::iter::repeat_n(0u8, pad));
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend(hs);
    record
}

criterion_group!(benches, routes);
criterion_main!(benches);
