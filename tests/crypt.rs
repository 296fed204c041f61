//! Column encryption end to end: encrypt with a key file, decrypt with the
//! same key id, get every value back; a flipped bit or the wrong key is a
//! data error naming the column, never garbage output.

mod common;
use common::*;

const SM4_KEY: &str = "00112233445566778899aabbccddeeff\n";

fn encrypt_job(s: &Scratch, alg: &str, key_file: &str, out: &str) -> std::path::PathBuf {
    s.write(
        "enc.toml",
        &format!(
            "[job]\nname = \"enc\"\n[source]\ntype = \"csv\"\nurl = {:?}\n\n[[stage]]\ntype = \"encrypt\"\nalgorithm = \"{alg}\"\nkey_id = \"civil-2026\"\nkey = \"file:{key_file}\"\ncolumns = [\"id_card\", \"phone\"]\n\n[sink]\ntype = \"arrow\"\nurl = \"{out}\"\ncompression = \"none\"\n",
            fixtures().join("people.csv").to_str().unwrap()
        ),
    )
}

fn decrypt_job(s: &Scratch, input: &str, key_file: &str, policy: &str) -> std::path::PathBuf {
    s.write(
        "dec.toml",
        &format!(
            "[job]\nname = \"dec\"\n[source]\ntype = \"arrow\"\nurl = \"{input}\"\n\n[[stage]]\ntype = \"decrypt\"\nkeys = {{ civil-2026 = \"file:{key_file}\" }}\ncolumns = [\"id_card\", \"phone\"]\n\n[sink]\ntype = \"csv\"\nurl = \"plain.csv\"\n\n[errors]\npolicy = \"{policy}\"\ndead_letter = \"dead/\"\n"
        ),
    )
}

#[test]
fn encrypt_then_decrypt_restores_every_value() {
    for (alg, key) in [
        ("sm4-gcm", SM4_KEY),
        (
            "aes-256-gcm",
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        ),
    ] {
        let s = Scratch::new();
        s.write("k.key", key);
        s.ok(&[
            "run",
            encrypt_job(&s, alg, "k.key", "enc.arrow").to_str().unwrap(),
        ]);
        let enc = read_batches(&s.path("enc.arrow"));
        assert_eq!(
            enc[0]
                .schema()
                .field_with_name("id_card")
                .unwrap()
                .data_type(),
            &arrow::datatypes::DataType::Binary
        );
        let raw = std::fs::read(s.path("enc.arrow")).unwrap();
        // The first person's id card (in the fixture) is nowhere in the output.
        assert!(std::fs::read_to_string(fixtures().join("people.csv"))
            .unwrap()
            .contains("110101195104085177"));
        assert!(
            !raw.windows(18).any(|w| w == b"110101195104085177"),
            "plaintext id card in the encrypted output"
        );
        s.ok(&[
            "run",
            decrypt_job(&s, "enc.arrow", "k.key", "fail")
                .to_str()
                .unwrap(),
        ]);
        assert_eq!(
            fingerprint(&read_batches(&s.path("plain.csv"))),
            fixture_fingerprint(),
            "{alg}"
        );
    }
}

#[test]
fn tampering_and_wrong_keys_are_detected() {
    let s = Scratch::new();
    s.write("k.key", SM4_KEY);
    s.write("other.key", "ffeeddccbbaa99887766554433221100");
    s.ok(&[
        "run",
        encrypt_job(&s, "sm4-gcm", "k.key", "enc.arrow")
            .to_str()
            .unwrap(),
    ]);
    // Flip one bit inside the first encrypted cell's ciphertext.
    let mut raw = std::fs::read(s.path("enc.arrow")).unwrap();
    let header = b"TX\x01\x02\x0acivil-2026";
    let at = raw
        .windows(header.len())
        .position(|w| w == header)
        .expect("an encrypted cell")
        + header.len()
        + 12
        + 3;
    raw[at] ^= 0x10;
    std::fs::write(s.path("tampered.arrow"), &raw).unwrap();
    let out = s.run(&[
        "run",
        decrypt_job(&s, "tampered.arrow", "k.key", "fail")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        stderr(&out)
    );
    // Under skip exactly that row is set aside; the rest decrypts.
    let sum = summary(
        &s.ok(&[
            "run",
            decrypt_job(&s, "tampered.arrow", "k.key", "skip")
                .to_str()
                .unwrap(),
            "--json",
            "--restart",
        ]),
    );
    assert_eq!(
        (sum["rows"].as_u64(), sum["dirty_rows"].as_u64()),
        (Some(999), Some(1)),
        "{sum}"
    );
    // The wrong key opens nothing.
    let out = s.run(&[
        "run",
        decrypt_job(&s, "enc.arrow", "other.key", "fail")
            .to_str()
            .unwrap(),
        "--restart",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("column `id_card`") && stderr(&out).contains("wrong key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn key_errors_never_show_the_key() {
    let s = Scratch::new();
    s.write("short.key", "00112233");
    let out = s.run(&[
        "run",
        encrypt_job(&s, "sm4-gcm", "short.key", "e.arrow")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("the key is 4 bytes") && !err.contains("00112233"),
        "{err}"
    );
    let out = s.run(&[
        "run",
        encrypt_job(&s, "sm4-gcm", "missing.key", "e.arrow")
            .to_str()
            .unwrap(),
    ]);
    assert!(
        stderr(&out).contains("cannot read key file missing.key"),
        "{}",
        stderr(&out)
    );
}
