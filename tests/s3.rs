//! File connectors on S3: a real S3-compatible server (moto's, from PyPI)
//! on loopback, configured through the usual AWS_* variables.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .or_else(|_| {
            Command::new("python3")
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .expect(
            "the S3 tests need moto's server: pip install 'moto[server]' (.ci/run installs it)",
        );
    // Ready once it answers HTTP: a server that already listens can still
    // reset the first connections while it starts up.
    let t = Instant::now();
    while !http(port, "GET", "/").is_ok_and(|r| r.starts_with("HTTP/")) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "moto_server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto { child, port }
}

/// The raw response to a bodiless request.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp)
}

fn http_put(port: u16, path: &str) {
    let resp = http(port, "PUT", path).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"),
        "{resp}"
    );
}

fn s3_cmd(s: &Scratch, moto: &Moto, args: &[&str]) -> std::process::Output {
    let out = s
        .cmd()
        .args(args)
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{}", moto.port))
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "tidex {args:?}: {}", stderr(&out));
    out
}

#[test]
fn csv_to_s3_parts_and_back_and_globs_on_s3() {
    let moto = start_moto();
    http_put(moto.port, "/tidex-e2e");
    let s = Scratch::new();
    let people = fixtures().join("people.csv");
    let expected = fixture_fingerprint();

    // Local CSV -> Parquet parts on S3 -> local CSV.
    let o = s3_cmd(
        &s,
        &moto,
        &[
            "copy",
            people.to_str().unwrap(),
            "s3://tidex-e2e/people/",
            "--json",
        ],
    );
    assert_eq!(summary(&o)["rows"], 1000);
    s3_cmd(&s, &moto, &["copy", "s3://tidex-e2e/people/", "back.csv"]);
    assert_eq!(fingerprint(&read_batches(&s.path("back.csv"))), expected);

    // A CSV object on S3 read through a glob, written as one Parquet object, read back.
    s3_cmd(
        &s,
        &moto,
        &[
            "copy",
            people.to_str().unwrap(),
            "s3://tidex-e2e/raw/people.csv",
        ],
    );
    s3_cmd(
        &s,
        &moto,
        &[
            "copy",
            "s3://tidex-e2e/raw/*.csv",
            "s3://tidex-e2e/out/people.parquet",
        ],
    );
    s3_cmd(
        &s,
        &moto,
        &["copy", "s3://tidex-e2e/out/people.parquet", "final.parquet"],
    );
    assert_eq!(
        fingerprint(&read_batches(&s.path("final.parquet"))),
        expected
    );

    // Overwrite on S3 leaves exactly the new run's parts and no staging.
    s3_cmd(
        &s,
        &moto,
        &["copy", people.to_str().unwrap(), "s3://tidex-e2e/people/"],
    );
    s3_cmd(
        &s,
        &moto,
        &["copy", "s3://tidex-e2e/people/", "again.jsonl"],
    );
    assert_eq!(fingerprint(&read_batches(&s.path("again.jsonl"))), expected);
}

#[test]
fn blob_trees_go_to_s3_encrypted_and_decrypt_back_from_it() {
    let moto = start_moto();
    http_put(moto.port, "/tidex-blobs");
    let s = Scratch::new();
    s.write("k.key", "00112233445566778899aabbccddeeff\n");
    s.write("src/a.txt", "same\n");
    s.write("src/copy/a-again.txt", "same\n");
    s.write("src/empty", "");
    s.write("src/中文/报告.txt", "民政局\n");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(s.path("src/big.bin"), &big).unwrap();
    let up = [
        "copy",
        "src/",
        "s3://tidex-blobs/enc/",
        "--compress",
        "zstd:3",
        "--encrypt",
        "sm4-gcm",
        "--key",
        "k.key",
    ];
    s3_cmd(&s, &moto, &up);
    s3_cmd(
        &s,
        &moto,
        &[
            "decrypt",
            "s3://tidex-blobs/enc/",
            "back/",
            "--key",
            "k.key",
        ],
    );
    assert_eq!(tree_hashes(&s.path("back")), tree_hashes(&s.path("src")));
    // Overwrite on S3: the second run's tree exactly, nothing of the first.
    std::fs::remove_file(s.path("src/big.bin")).unwrap();
    s.write("src/new.txt", "new\n");
    s3_cmd(&s, &moto, &up);
    s3_cmd(
        &s,
        &moto,
        &[
            "decrypt",
            "s3://tidex-blobs/enc/",
            "back2/",
            "--key",
            "k.key",
        ],
    );
    assert_eq!(tree_hashes(&s.path("back2")), tree_hashes(&s.path("src")));
}
